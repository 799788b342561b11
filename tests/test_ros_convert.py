"""Image and message conversions of the node, on real frames of bedroom.mp4 (cv_bridge, OpenCV)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

import cv2  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from ros_support import image_msg, mask_of, video_frames  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sam2_ros.ros import convert as rc  # noqa: E402
from sam2_ros.tracker import FrameResult  # noqa: E402
from sam2_ros_interfaces.msg import TrackedObjects  # noqa: E402


@pytest.fixture(scope="module")
def rgb(shared_data):
    return video_frames(shared_data, 1, (321, 181))[0]  # odd width: rows of rgb8 are not 4-byte aligned


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_color_encodings_give_the_same_rgb(rgb, encoding):
    out = rc.image_msg_to_rgb(image_msg(rgb, 5, encoding))
    assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_mono8_becomes_grey_rgb(rgb):
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = rc.image_msg_to_rgb(image_msg(rgb, 5, "mono8"))
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


def test_row_padding_is_honoured(rgb):
    h, w, _ = rgb.shape
    step = w * 3 + 13
    padded = np.full((h, step), 77, np.uint8)
    padded[:, : w * 3] = rgb.reshape(h, w * 3)
    msg = Image(height=h, width=w, encoding="rgb8", step=step)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(rc.image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"encoding": "16UC1"}, "unsupported image encoding '16UC1'"),
        ({"encoding": "yuv422"}, "unsupported image encoding"),
        ({"width": 0, "height": 0, "data": b""}, "zero size"),
        ({"data": b"\x00" * 100}, "truncated image data: 100 bytes"),
        ({"step": 10}, "step 10 is smaller than width"),
    ],
)
def test_bad_images_raise_clear_errors(rgb, change, error):
    msg = image_msg(rgb, 5, "rgb8")
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(rc.ImageConversionError, match=error):
        rc.image_msg_to_rgb(msg)


def test_compressed_png_is_lossless_and_corrupt_data_is_refused(rgb):
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format="png")
    msg.data = png.tobytes()
    np.testing.assert_array_equal(rc.compressed_msg_to_rgb(msg), rgb)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format="jpeg")
    msg.data = jpg.tobytes()
    assert np.abs(rc.compressed_msg_to_rgb(msg).astype(int) - rgb).mean() < 8
    msg.data = jpg.tobytes()[:50]
    with pytest.raises(rc.ImageConversionError, match="cannot decode compressed image"):
        rc.compressed_msg_to_rgb(msg)
    with pytest.raises(rc.ImageConversionError, match="no data"):
        rc.compressed_msg_to_rgb(CompressedImage(format="jpeg"))


def test_prompt_masks(rgb):
    assert rc.mask_msg_to_bool(Image()) is None
    m = np.zeros((181, 321), np.uint8)
    m[10:50, 20:90] = 1
    msg = Image(height=181, width=321, encoding="mono8", step=321)
    msg.data = m.tobytes()
    np.testing.assert_array_equal(rc.mask_msg_to_bool(msg), m > 0)
    with pytest.raises(rc.ImageConversionError, match="mask encoding must be mono8"):
        rc.mask_msg_to_bool(image_msg(rgb, 1, "rgb8"))


def _result(masks: np.ndarray, scores, ids) -> FrameResult:
    n = len(ids)
    boxes = np.full((n, 4), np.nan, np.float32)
    for i in range(n):
        ys, xs = np.nonzero(masks[i])
        if len(xs):
            boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return FrameResult(
        frame_index=3, object_ids=list(ids), masks=masks, scores=np.float32(scores),
        ious=np.float32([0.5] * n), boxes=boxes, low_res_logits=np.zeros((n, 4, 4), np.float32),
    )


def test_label_image_and_objects_message_follow_the_result(rgb):
    masks = np.zeros((3, 181, 321), bool)
    masks[0, 0:100, 0:100] = True
    masks[1, 50:150, 50:150] = True  # overlaps object 0, higher score: wins the overlap
    result = _result(masks, [0.5, 2.0, -1.0], [2, 7, 9])  # object 9: empty mask, not visible
    labels, enc = rc.label_image(result, max_objects=8)  # pixel = object id, stable across frames
    assert enc == "mono8" and labels.dtype == np.uint8
    assert labels[10, 10] == 2 and labels[60, 60] == 7 and labels[160, 300] == 0
    assert (labels == 9).sum() == 0 and set(np.unique(labels)) == {0, 2, 7}
    labels16, enc16 = rc.label_image(result, max_objects=300)
    assert enc16 == "mono16" and labels16.dtype == np.uint16
    np.testing.assert_array_equal(labels16, labels)
    big = _result(masks, [0.5, 2.0, -1.0], [2, 700, 65535])  # ids above 255: mono16 whatever max_objects
    labels_big, enc_big = rc.label_image(big, max_objects=8)
    assert enc_big == "mono16" and labels_big[60, 60] == 700 and labels_big[10, 10] == 2
    with pytest.raises(ValueError, match="does not fit a mono16 label image"):
        rc.label_image(_result(masks, [0.5, 2.0, -1.0], [2, 7, 65536]), max_objects=8)

    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = rc.tracked_objects_msg(header, result, {7: "cup"}, with_masks=True)
    msg = deserialize_message(serialize_message(msg), TrackedObjects)  # what goes on the wire
    assert msg.header == header and msg.frame_index == 3
    assert [o.id for o in msg.objects] == [2, 7, 9]
    assert [o.label for o in msg.objects] == ["", "cup", ""]
    assert [o.visible for o in msg.objects] == [True, True, False]
    assert (msg.objects[1].x0, msg.objects[1].y0, msg.objects[1].x1, msg.objects[1].y1) == (50, 50, 150, 150)
    assert np.isnan(msg.objects[2].x0)
    for i, o in enumerate(msg.objects):
        assert o.mask.header == header and o.mask.encoding == "mono8"
        np.testing.assert_array_equal(mask_of(o), masks[i])
    lean = rc.tracked_objects_msg(header, result, {}, with_masks=False)
    assert all(o.mask.width == 0 and len(o.mask.data) == 0 for o in lean.objects)

    over = rc.overlay_image(rgb, result, {7: "cup"})
    assert over.shape == rgb.shape and not np.array_equal(over, rgb)
    np.testing.assert_array_equal(over[170:, 200:], rgb[170:, 200:])  # no object there
