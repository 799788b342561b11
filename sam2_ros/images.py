"""Camera images as bytes -> RGB arrays: the encodings every image input accepts (the node's topics,
rosbags read by ``sam2-ros track --bag``). numpy and OpenCV only: no ROS, no torch.

Every function validates its input first and raises :class:`ImageConversionError` whose message
says what is wrong, so bad camera data never reaches the tracker half-understood.
"""

from __future__ import annotations

import cv2
import numpy as np

from sam2_ros.errors import ImageConversionError
from sam2_ros.limits import MAX_COMPRESSED_BYTES, check_pixels

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
    too_big = check_pixels(w, h, f"{encoding} image".strip())
    if too_big:
        raise ImageConversionError(too_big)
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
    if buf.size > step * h:
        raise ImageConversionError(
            f"oversized image data: {buf.size} bytes for {encoding} {w}x{h} with step {step} (at most "
            f"step*height = {step * h})"
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
    if buf.size > MAX_COMPRESSED_BYTES:
        raise ImageConversionError(f"compressed image of {buf.size} bytes is over the limit of "
                                   f"{MAX_COMPRESSED_BYTES} bytes (sam2_ros.limits.MAX_COMPRESSED_BYTES)")
    wh = compressed_size(buf)
    too_big = wh and check_pixels(*wh, f"compressed image ({fmt})")
    if too_big:
        raise ImageConversionError(too_big)
    im = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if im is None or im.size == 0:
        raise ImageConversionError(
            f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes): corrupt or unsupported"
        )
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def compressed_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, without decoding; None for other or broken data."""
    head = buf[:32].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    data, i = buf, 2
    while i + 9 < data.size:  # walk the JPEG segments to the first frame header (SOF0..SOF15 but DHT/JPG/DAC)
        if data[i] != 0xFF:
            return None
        marker = int(data[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int(data[i + 2]) << 8 | int(data[i + 3])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int(data[i + 7]) << 8 | int(data[i + 8]), int(data[i + 5]) << 8 | int(data[i + 6])
        i += 2 + length
    return None
