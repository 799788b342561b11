"""Run a tracker over a sequence of frames with a prompts schedule (used by the CLI and tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from sam2_ros.io.prompts_file import Prompt, prompts_by_frame
from sam2_ros.tracker import FrameResult, Tracker


@dataclass
class TrackRun:
    object_ids: list[int]
    masks: np.ndarray | None  # [frames, objects, H, W] bool (None when not kept)
    scores: np.ndarray | None  # [frames, objects] float32, NaN before an object's first prompt (None when not kept)
    low_res: np.ndarray | None  # [frames, objects, 4h, 4w] float32 (when kept)
    frame_seconds: list[float]  # wall time of each frame (step + its prompts)

    @property
    def fps(self) -> float:
        return len(self.frame_seconds) / max(sum(self.frame_seconds), 1e-9)


def run_tracker(
    tracker: Tracker,
    frames: Iterable[np.ndarray],
    prompts: list[Prompt],
    keep_low_res: bool = False,
    on_frame: Callable[[int, np.ndarray, FrameResult], None] | None = None,
    keep_masks: bool = True,
    sink: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> TrackRun:
    """Step ``tracker`` through ``frames``, applying each prompt after the step of its frame.

    Every frame's masks [objects, H, W] and scores [objects] (columns: the prompts' object ids,
    ascending) go to ``sink`` when given, and are stacked into the returned run unless
    ``keep_masks`` is False (then ``masks`` and ``scores`` are None and memory stays flat in the
    number of frames). ``on_frame(i, frame, result)`` runs after each frame.
    """
    by_frame = prompts_by_frame(prompts)
    ids = sorted({p.object_id for p in prompts})
    col = {oid: k for k, oid in enumerate(ids)}
    masks, scores, low_res, seconds = [], [], [], []
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        res = tracker.step(frame)
        for p in by_frame.get(i, []):
            res = tracker.add_prompt(p.object_id, **p.kwargs())
        seconds.append(time.perf_counter() - t0)
        m = np.zeros((len(ids), *frame.shape[:2]), bool)
        s = np.full(len(ids), np.nan, np.float32)
        lr = np.full((len(ids), *res.low_res_logits.shape[1:]), np.nan, np.float32) if keep_low_res else None
        for j, oid in enumerate(res.object_ids):
            if oid in col:
                m[col[oid]] = res.masks[j]
                s[col[oid]] = res.scores[j]
                if keep_low_res:
                    lr[col[oid]] = res.low_res_logits[j]
        if sink is not None:
            sink(m, s)
        if keep_masks:
            masks.append(m)
            scores.append(s)
        if keep_low_res:
            low_res.append(lr)
        if on_frame is not None:
            on_frame(i, frame, res)
    return TrackRun(
        ids, np.stack(masks) if keep_masks else None, np.stack(scores) if keep_masks else None,
        np.stack(low_res) if keep_low_res else None, seconds,
    )

