"""What one frame's result becomes on the outputs: the label image, each object's values and
mask, the overlay. One definition for every writer of these outputs: the node's topics
(``sam2_ros.ros.convert``) and the output bag of ``sam2-ros track --bag`` (``sam2_ros.io.bag``).
numpy and OpenCV only: no ROS, no torch.
"""

from __future__ import annotations

import cv2
import numpy as np

from sam2_ros.palette import object_color
from sam2_ros.tracker import FrameResult


def label_image(result: FrameResult, max_objects: int) -> tuple[np.ndarray, str]:
    """Pixel = 1 + index of the object in ``result``; 0 = background. Where masks overlap,
    the object with the higher object score wins. mono16 when max_objects > 255. Built where the
    result's masks are (on the GPU for a GPU backend)."""
    dtype, enc = (np.uint8, "mono8") if max_objects <= 255 else (np.uint16, "mono16")
    return result.label_image(np.argsort(result.scores, kind="stable"), dtype), enc


def object_values(result: FrameResult, index: int, label: str) -> dict:
    """The scalar fields of a sam2_ros_interfaces/TrackedObject for row ``index`` of ``result``."""
    x0, y0, x1, y1 = (float(v) for v in result.boxes[index])
    return {
        "id": int(result.object_ids[index]),
        "label": label,
        "score": float(result.scores[index]),
        "visible": bool(result.scores[index] > 0),
        "iou": float(result.ious[index]),
        "x0": x0, "y0": y0, "x1": x1, "y1": y1,
    }


def object_mask(result: FrameResult, index: int) -> np.ndarray:
    """TrackedObject.mask of row ``index`` as an array: mono8 [H, W], 255 = object."""
    return result.masks[index].astype(np.uint8) * 255


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
