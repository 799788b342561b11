"""Absurd sizes on the node's inputs (sam2_ros.limits, docs/ROS.md "Limits"): a 16k x 16k image
message (raw and PNG), a 100-megapixel mask prompt, a prompt of a million points, a label of
1 MB. Each is refused with the limit named, before it is converted: the peak resident memory of
this process grows by far less than the converted input would take (measured with the kernel's
peak RSS counter, which also sees OpenCV's allocations)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import Point32  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from sam2_ros.errors import ImageConversionError  # noqa: E402
from sam2_ros.images import compressed_size  # noqa: E402
from sam2_ros.limits import MAX_COMPRESSED_BYTES, MAX_LABEL_CHARS, MAX_PROMPT_POINTS  # noqa: E402
from sam2_ros.ros import convert as rc  # noqa: E402
from sam2_ros.ros.camera import parse_prompt  # noqa: E402
from sam2_ros_interfaces.srv import AddPrompt  # noqa: E402

SIDE = 16384
MIB = 2**20


class PeakRss:
    """Growth of this process' peak resident memory (VmHWM) over a block, in bytes."""

    def _status(self, key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(key)

    def __enter__(self):
        Path("/proc/self/clear_refs").write_text("5")  # peak := current
        self.start = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        self.growth = self._status("VmHWM") - self.start


def test_a_16k_raw_image_message_is_refused_before_conversion():
    msg = Image(height=SIDE, width=SIDE, encoding="rgb8", step=3 * SIDE)
    msg.data = bytes(3 * SIDE * SIDE)  # a real 768 MiB message
    with PeakRss() as peak, pytest.raises(ImageConversionError, match=r"rgb8 image of 16384x16384 = 268.4 megapixels "
                                                                      r"is over the limit of 50 megapixels"):
        rc.image_msg_to_rgb(msg)
    assert peak.growth < 16 * MIB, peak.growth  # the conversion would take another 768 MiB


def _png_16k() -> bytes:
    """A real 16384 x 16384 grey PNG (1.1 MB; OpenCV decodes it into 256 MiB)."""
    z = zlib.compressobj(1)
    rows = bytes(SIDE + 1) * 256  # filter byte + a row of zeros
    idat = b"".join([z.compress(rows) for _ in range(SIDE // 256)] + [z.flush()])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_16k_compressed_image_is_refused_before_decoding():
    import cv2

    msg = CompressedImage(format="png")
    msg.data = _png_16k()
    with PeakRss() as peak, pytest.raises(ImageConversionError, match="16384x16384 = 268.4 megapixels is over"):
        rc.compressed_msg_to_rgb(msg)
    assert peak.growth < 16 * MIB, peak.growth
    # the header reader finds the size of ordinary PNG and JPEG frames
    small = np.zeros((270, 480, 3), np.uint8)
    for ext in (".png", ".jpg"):
        buf = cv2.imencode(ext, small)[1]
        assert compressed_size(buf) == (480, 270), ext
        assert rc.compressed_msg_to_rgb(CompressedImage(format=ext[1:], data=buf.tobytes())).shape == (270, 480, 3)
    msg.data = bytes(MAX_COMPRESSED_BYTES + 1)
    with pytest.raises(ImageConversionError, match="over the limit of 67108864 bytes"):
        rc.compressed_msg_to_rgb(msg)


def test_oversized_image_data_is_refused():
    msg = rc.array_to_image_msg(np.zeros((4, 6, 3), np.uint8), "rgb8", Image().header)
    msg.data = bytes(msg.step * msg.height + 1)
    with pytest.raises(ImageConversionError, match=r"oversized image data: 73 bytes .* \(at most step\*height = 72\)"):
        rc.image_msg_to_rgb(msg)


def request(**fields) -> AddPrompt.Request:
    return AddPrompt.Request(object_id=AddPrompt.Request.NEW_OBJECT, **fields)


def test_a_100_megapixel_mask_prompt_is_refused_before_conversion():
    mask = Image(height=10_000, width=10_000, encoding="mono8", step=10_000)
    mask.data = bytes(10_000 * 10_000)
    with PeakRss() as peak, pytest.raises(ImageConversionError, match="mono8 image of 10000x10000 = 100.0 megapixels"):
        parse_prompt(request(mask=mask))
    assert peak.growth < 16 * MIB, peak.growth  # the bool mask would take another 95 MiB


def test_a_prompt_of_a_million_points_and_a_label_of_1_mb_are_refused():
    n = 1_000_000
    # the request is built outside the measured block: its million-entry lists are the sender's
    # (DDS has deserialized them before any callback); what is measured is the refusal
    huge = request(points=[Point32(x=1.0, y=1.0)] * n, labels=[1] * n)
    with PeakRss() as peak, pytest.raises(ValueError, match=f"{n} prompt points are over the limit of "
                                                            f"{MAX_PROMPT_POINTS} per prompt"):
        parse_prompt(huge)
    assert peak.growth < 8 * MIB, peak.growth  # an [n, 2] float64 array alone is 15 MiB
    with pytest.raises(ValueError, match=f"label of {MIB} characters is over the limit of {MAX_LABEL_CHARS}"):
        parse_prompt(request(box=[1.0, 1.0, 9.0, 9.0], label="x" * MIB))
    with pytest.raises(ValueError, match="control or unprintable characters"):
        parse_prompt(request(box=[1.0, 1.0, 9.0, 9.0], label="bed\x00\x1b[2J"))
    # at the limits: accepted
    ok = parse_prompt(request(points=[Point32(x=1.0, y=1.0)] * MAX_PROMPT_POINTS, labels=[1] * MAX_PROMPT_POINTS,
                              label="ü" * MAX_LABEL_CHARS))
    assert ok["points"].shape == (MAX_PROMPT_POINTS, 2)


def test_a_16k_depth_image_is_refused_before_conversion():
    from sam2_ros.depth import DepthError
    from sam2_ros.ros.vision import depth_msg_to_metres

    msg = Image(height=SIDE, width=SIDE, encoding="16UC1", step=2 * SIDE)
    msg.data = bytes(2 * SIDE * SIDE)
    with PeakRss() as peak, pytest.raises(DepthError, match="depth image of 16384x16384 = 268.4 megapixels"):
        depth_msg_to_metres(msg)
    assert peak.growth < 16 * MIB, peak.growth  # metres as float32 would take 1 GiB
