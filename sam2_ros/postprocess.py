"""Low-resolution mask logits -> camera-resolution masks and boxes."""

from __future__ import annotations

import cv2
import numpy as np


def upsample_logits(low_res: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear (half-pixel centres, as ``F.interpolate(align_corners=False)``) upsampling of [h, w] logits."""
    h, w = frame_hw
    return cv2.resize(low_res, (w, h), interpolation=cv2.INTER_LINEAR)


def masks_from_logits(low_res: np.ndarray, frame_hw: tuple[int, int], threshold: float = 0.0) -> np.ndarray:
    """[n, h, w] low-res logits -> [n, H, W] bool masks at the camera resolution."""
    out = np.empty((low_res.shape[0], *frame_hw), bool)
    for i, lr in enumerate(low_res):
        np.greater(upsample_logits(lr, frame_hw), threshold, out=out[i])
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks; 1.0 when both are empty."""
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """[n, H, W] bool -> [n, 4] float32 boxes (x0, y0, x1, y1), NaN where a mask is empty."""
    boxes = np.full((masks.shape[0], 4), np.nan, np.float32)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def fill_holes(low_res: np.ndarray, max_area: int) -> np.ndarray:
    """Fill small holes of [n, h, w] mask logits in place, as the official predictor does on GPU.

    Background regions (logit <= 0, 8-connected) of at most ``max_area`` pixels get the logit
    0.1 (``sam2.utils.misc.fill_holes_in_mask_scores``; its CUDA kernel is replaced by OpenCV).
    """
    if max_area <= 0:
        return low_res
    for m in low_res:
        n, labels, stats, _ = cv2.connectedComponentsWithStats((m <= 0).astype(np.uint8), connectivity=8)
        if n <= 1:
            continue
        small = stats[:, cv2.CC_STAT_AREA] <= max_area
        small[0] = False  # label 0: foreground pixels
        if small.any():
            m[small[labels]] = 0.1
    return low_res
