"""Conversions between ROS messages and the tracker's numpy arrays.

Image decoding (``sam2_ros.images``) and what a result becomes on the outputs
(``sam2_ros.outputs``) are ROS-free core code, shared with ``sam2-ros track --bag``; this module
only moves them in and out of messages (cv_bridge for outgoing images). Every function validates
its input first and raises :class:`ImageConversionError` (a ValueError) whose message says what is
wrong, so bad camera data never reaches cv_bridge or the tracker half-understood.
"""

from __future__ import annotations

import numpy as np
from cv_bridge import CvBridge
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

# ImageConversionError, INPUT_ENCODINGS, label_image and overlay_image are also used from here (node, clients)
from sam2_ros.errors import ImageConversionError
from sam2_ros.images import INPUT_ENCODINGS, MASK_ENCODINGS, compressed_image_to_rgb, packed_pixels, raw_image_to_rgb  # noqa: F401
from sam2_ros.outputs import label_image, object_mask, object_values, overlay_image  # noqa: F401
from sam2_ros.tracker import FrameResult

_bridge = CvBridge()


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (0 stays 0)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) -> [H, W, 3] uint8 RGB."""
    return raw_image_to_rgb(msg.data, msg.height, msg.width, msg.step, msg.encoding)


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ...) -> [H, W, 3] uint8 RGB."""
    return compressed_image_to_rgb(msg.data, msg.format)


def mask_msg_to_bool(msg: Image) -> np.ndarray | None:
    """Prompt mask: empty message -> None; mono8/8UC1 -> [H, W] bool (nonzero = object)."""
    if msg.width == 0 and msg.height == 0 and len(msg.data) == 0:
        return None
    if msg.encoding not in MASK_ENCODINGS:
        raise ImageConversionError(f"mask encoding must be mono8 (or 8UC1), got {msg.encoding!r}")
    return packed_pixels(msg.data, msg.height, msg.width, msg.step, 1, msg.encoding)[:, :, 0] > 0


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """numpy image -> sensor_msgs/Image with ``header`` (cv_bridge)."""
    msg = _bridge.cv2_to_imgmsg(np.ascontiguousarray(array), encoding=encoding)
    msg.header = header
    return msg


def empty_image(header: Header | None = None) -> Image:
    return Image(header=header or Header())


def fill_tracked_object(obj, result: FrameResult, index: int, label: str, header: Header, with_mask: bool):
    """Fill a sam2_ros_interfaces/TrackedObject from row ``index`` of ``result``."""
    for name, value in object_values(result, index, label).items():
        setattr(obj, name, value)
    obj.mask = array_to_image_msg(object_mask(result, index), "mono8", header) if with_mask else empty_image(header)
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
