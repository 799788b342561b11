"""The prompts file of ``sam2-ros track`` / ``compare``: a JSON list of prompts in frame pixels.

Each entry: ``{"frame": int, "object_id": int, "points": [[x, y], ...] | null,
"labels": [1, 0, ...] | null, "box": [x0, y0, x1, y1] | null, "mask": "mask.png" | null}``
(``mask``: a PNG whose non-zero pixels are the object, relative to the prompts file).
Entries of one frame are applied in file order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Prompt:
    frame: int
    object_id: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None

    def kwargs(self) -> dict:
        return {"points": self.points, "labels": self.labels, "box": self.box, "mask": self.mask}


def load_prompts(path: str | Path) -> list[Prompt]:
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read prompts file {path}: {e}") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of prompts")
    prompts = []
    for i, e in enumerate(entries):
        where = f"{path} entry {i}"
        if not isinstance(e, dict) or "frame" not in e or "object_id" not in e:
            raise ValueError(f"{where}: needs 'frame' and 'object_id'")
        mask = None
        if e.get("mask"):
            mpath = path.parent / e["mask"]
            m = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise ValueError(f"{where}: cannot read mask image {mpath}")
            mask = m > 0
        arr = lambda k, dt: None if e.get(k) is None else np.asarray(e[k], dt)  # noqa: E731
        prompts.append(Prompt(int(e["frame"]), int(e["object_id"]), arr("points", np.float32),
                              arr("labels", np.int32), arr("box", np.float32), mask))
    prompts.sort(key=lambda p: p.frame)  # stable: file order within a frame
    return prompts


def prompts_by_frame(prompts: list[Prompt]) -> dict[int, list[Prompt]]:
    out: dict[int, list[Prompt]] = {}
    for p in prompts:
        out.setdefault(p.frame, []).append(p)
    return out
