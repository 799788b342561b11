"""Camera images as bytes -> RGB arrays: the encodings every image input accepts (the node's topics,
rosbags read by ``sam2-ros track --bag``). numpy and OpenCV only: no ROS, no torch.

Every function validates its input first and raises :class:`ImageConversionError` whose message
says what is wrong, so bad camera data never reaches the tracker half-understood.
"""

from __future__ import annotations

import cv2
import numpy as np

from sam2_ros.errors import ImageConversionError

#: Raw (sensor_msgs/Image) encodings accepted -> (channels, OpenCV conversion to RGB or None).
INPUT_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}
#: Encodings accepted for a prompt mask.
MASK_ENCODINGS = ("mono8", "8UC1")


def packed_pixels(data, height: int, width: int, step: int, channels: int, encoding: str = "") -> np.ndarray:
    """[H, W, channels] uint8 view of raw image bytes whose rows are ``step`` bytes apart (padding honoured)."""
    h, w, step = int(height), int(width), int(step)
    if h == 0 or w == 0:
        raise ImageConversionError(f"image has zero size ({w}x{h})")
    row = w * channels
    if step < row:
        raise ImageConversionError(
            f"image step {step} is smaller than width*channels = {row} for {encoding} {w}x{h}"
        )
    buf = np.frombuffer(data, np.uint8)
    need = step * (h - 1) + row
    if buf.size < need:
        raise ImageConversionError(
            f"truncated image data: {buf.size} bytes for {encoding} {w}x{h} with step {step} (need {need})"
        )
    return np.lib.stride_tricks.as_strided(buf, shape=(h, w, channels), strides=(step, channels, 1), writeable=False)


def raw_image_to_rgb(data, height: int, width: int, step: int, encoding: str) -> np.ndarray:
    """Raw image bytes (rgb8, bgr8, mono8, rgba8, bgra8) -> [H, W, 3] uint8 RGB, a new C-contiguous array."""
    if encoding not in INPUT_ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; use one of {', '.join(INPUT_ENCODINGS)}"
        )
    channels, conversion = INPUT_ENCODINGS[encoding]
    pixels = packed_pixels(data, height, width, step, channels, encoding)
    if conversion is None:
        return np.array(pixels, order="C")
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def compressed_image_to_rgb(data, fmt: str) -> np.ndarray:
    """Compressed image bytes (jpeg, png, anything OpenCV decodes) -> [H, W, 3] uint8 RGB."""
    buf = np.frombuffer(data, np.uint8)
    if buf.size == 0:
        raise ImageConversionError("compressed image has no data")
    im = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if im is None or im.size == 0:
        raise ImageConversionError(
            f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes): corrupt or unsupported"
        )
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
