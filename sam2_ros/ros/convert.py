"""Conversions between ROS messages and the tracker's numpy arrays (cv_bridge underneath).

Every function validates its input first and raises :class:`ImageConversionError` (a
ValueError) whose message says what is wrong, so bad camera data never reaches cv_bridge
or the tracker half-understood.
"""

from __future__ import annotations

import cv2
import numpy as np
from cv_bridge import CvBridge, CvBridgeError
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sam2_ros.palette import object_color
from sam2_ros.tracker import FrameResult

#: Encodings accepted on the `image` topic -> (channels, OpenCV conversion to RGB or None).
INPUT_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}
#: Encodings accepted for a prompt mask.
MASK_ENCODINGS = ("mono8", "8UC1")

_bridge = CvBridge()


class ImageConversionError(ValueError):
    """An image message that cannot be turned into the array the tracker needs."""


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (0 stays 0)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _packed_view(msg: Image, channels: int) -> Image:
    """Validate sizes; return ``msg`` or a copy without row padding (cv_bridge ignores ``step``)."""
    h, w = int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise ImageConversionError(f"image has zero size ({w}x{h})")
    row = w * channels
    step = int(msg.step)
    if step < row:
        raise ImageConversionError(
            f"image step {step} is smaller than width*channels = {row} for {msg.encoding} {w}x{h}"
        )
    need = step * (h - 1) + row
    if len(msg.data) < need:
        raise ImageConversionError(
            f"truncated image data: {len(msg.data)} bytes for {msg.encoding} {w}x{h} with step {step} "
            f"(need {need})"
        )
    if step == row and len(msg.data) == row * h:
        return msg
    buf = np.frombuffer(msg.data, np.uint8)
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    packed = Image(header=msg.header, height=h, width=w, encoding=msg.encoding, is_bigendian=msg.is_bigendian, step=row)
    packed.data = np.ascontiguousarray(rows).tobytes()
    return packed


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) -> [H, W, 3] uint8 RGB."""
    enc = msg.encoding
    if enc not in INPUT_ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {enc!r}; use one of {', '.join(INPUT_ENCODINGS)}"
        )
    channels, _ = INPUT_ENCODINGS[enc]
    msg = _packed_view(msg, channels)
    try:
        return np.ascontiguousarray(_bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except (CvBridgeError, KeyError, TypeError, ValueError, cv2.error) as e:
        raise ImageConversionError(f"cannot convert {enc} image: {e}") from e


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ...) -> [H, W, 3] uint8 RGB."""
    if len(msg.data) == 0:
        raise ImageConversionError("compressed image has no data")
    im = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if im is None or im.size == 0:
        raise ImageConversionError(
            f"cannot decode compressed image (format {msg.format!r}, {len(msg.data)} bytes): corrupt or unsupported"
        )
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def mask_msg_to_bool(msg: Image) -> np.ndarray | None:
    """Prompt mask: empty message -> None; mono8/8UC1 -> [H, W] bool (nonzero = object)."""
    if msg.width == 0 and msg.height == 0 and len(msg.data) == 0:
        return None
    if msg.encoding not in MASK_ENCODINGS:
        raise ImageConversionError(f"mask encoding must be mono8 (or 8UC1), got {msg.encoding!r}")
    msg = _packed_view(msg, 1)
    return np.frombuffer(msg.data, np.uint8, count=msg.height * msg.width).reshape(msg.height, msg.width) > 0


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """numpy image -> sensor_msgs/Image with ``header`` (cv_bridge)."""
    msg = _bridge.cv2_to_imgmsg(np.ascontiguousarray(array), encoding=encoding)
    msg.header = header
    return msg


def empty_image(header: Header | None = None) -> Image:
    return Image(header=header or Header())


def label_image(result: FrameResult, max_objects: int) -> tuple[np.ndarray, str]:
    """Pixel = 1 + index of the object in ``result``; 0 = background. Where masks overlap,
    the object with the higher object score wins. mono16 when max_objects > 255."""
    h, w = result.masks.shape[1:] if result.masks.ndim == 3 else (0, 0)
    dtype, enc = (np.uint8, "mono8") if max_objects <= 255 else (np.uint16, "mono16")
    labels = np.zeros((h, w), dtype)
    for i in np.argsort(result.scores, kind="stable"):
        labels[result.masks[i]] = i + 1
    return labels, enc


def overlay_image(rgb: np.ndarray, result: FrameResult, labels: dict[int, str] | None = None) -> np.ndarray:
    """The frame with each visible object's mask tinted, its box and ``id label`` drawn."""
    out = rgb.copy()
    for i, oid in enumerate(result.object_ids):
        if not result.scores[i] > 0:
            continue
        color = np.array(object_color(oid), np.float32)
        m = result.masks[i]
        out[m] = (0.5 * out[m] + 0.5 * color).astype(np.uint8)
        box = result.boxes[i]
        if np.isfinite(box).all():
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            c = tuple(int(v) for v in color)
            cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), c, 2)
            text = f"{oid} {labels.get(oid, '')}".strip() if labels else str(oid)
            cv2.putText(out, text, (x0 + 2, max(12, y0 + 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1, cv2.LINE_AA)
    return out


def fill_tracked_object(obj, result: FrameResult, index: int, label: str, header: Header, with_mask: bool):
    """Fill a sam2_ros_interfaces/TrackedObject from row ``index`` of ``result``."""
    obj.id = int(result.object_ids[index])
    obj.label = label
    obj.score = float(result.scores[index])
    obj.visible = bool(result.scores[index] > 0)
    obj.iou = float(result.ious[index])
    obj.x0, obj.y0, obj.x1, obj.y1 = (float(v) for v in result.boxes[index])
    if with_mask:
        obj.mask = array_to_image_msg(result.masks[index].astype(np.uint8) * 255, "mono8", header)
    else:
        obj.mask = empty_image(header)
    return obj


def tracked_objects_msg(header: Header, result: FrameResult, labels: dict[int, str], with_masks: bool):
    """sam2_ros_interfaces/TrackedObjects for one frame, with exactly the input image's header."""
    from sam2_ros_interfaces.msg import TrackedObject, TrackedObjects

    msg = TrackedObjects(header=header, frame_index=int(result.frame_index))
    msg.objects = [
        fill_tracked_object(TrackedObject(), result, i, labels.get(oid, ""), header, with_masks)
        for i, oid in enumerate(result.object_ids)
    ]
    return msg


def mask_from_image_msg(msg: Image) -> np.ndarray:
    """TrackedObject.mask (mono8) -> [H, W] bool (for clients)."""
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width] > 0
