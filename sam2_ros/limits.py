"""Size limits of every input, in one place (docs/ROS.md "Limits").

An input over a limit is refused before it is converted or copied, with a message that names
the limit, so absurd sizes (a prompt of a million points, a 16k x 16k image) cost neither time
nor memory. ROS-free; the node and the core share these values.
"""

from __future__ import annotations

#: Pixels of a camera frame, an image message or a prompt mask (50 MP: 8K UHD is 33 MP; the
#: model sees at most 1024 x 1024 anyway).
MAX_IMAGE_PIXELS = 50_000_000
#: Bytes of a compressed image message (JPEG / PNG of a frame within MAX_IMAGE_PIXELS).
MAX_COMPRESSED_BYTES = 64 * 2**20
#: Points (with their labels) of one prompt; a box counts as 2 more.
MAX_PROMPT_POINTS = 256
#: Characters of an object's label (AddPrompt label, a detection's class id).
MAX_LABEL_CHARS = 256


def check_pixels(width: int, height: int, what: str = "image") -> str | None:
    """Why a ``width`` x ``height`` ``what`` is over :data:`MAX_IMAGE_PIXELS` (None if within)."""
    pixels = int(width) * int(height)
    if pixels > MAX_IMAGE_PIXELS:
        return (f"{what} of {int(width)}x{int(height)} = {pixels / 1e6:.1f} megapixels is over the limit of "
                f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (sam2_ros.limits.MAX_IMAGE_PIXELS)")
    return None


def check_points(n: int) -> str | None:
    """Why a prompt of ``n`` points is over :data:`MAX_PROMPT_POINTS` (None if within)."""
    if n > MAX_PROMPT_POINTS:
        return f"{n} prompt points are over the limit of {MAX_PROMPT_POINTS} per prompt (sam2_ros.limits.MAX_PROMPT_POINTS)"
    return None


def check_label(label: str) -> str | None:
    """Why ``label`` is no acceptable object label: too long, or with control characters (None if fine)."""
    if len(label) > MAX_LABEL_CHARS:
        return (f"label of {len(label)} characters is over the limit of {MAX_LABEL_CHARS} "
                "(sam2_ros.limits.MAX_LABEL_CHARS)")
    if not label.isprintable():
        return f"label {label[:40]!r} has control or unprintable characters"
    return None
