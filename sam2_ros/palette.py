"""Colours of tracked objects in every overlay (offline videos and the node's overlay topic)."""

from __future__ import annotations

import numpy as np

#: Distinct RGB colours, indexed by object id modulo their number.
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255]],
    np.uint8,
)


def object_color(object_id: int) -> tuple[int, int, int]:
    """The RGB colour of ``object_id``."""
    return tuple(int(c) for c in PALETTE[object_id % len(PALETTE)])
