"""Run a tracker over a sequence of frames with a prompts schedule (used by the CLI and tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from sam2_ros.io.prompts_file import Prompt, prompts_by_delivery
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
    revised: bool = False,
) -> TrackRun:
    """Step ``tracker`` through ``frames``, applying each prompt after the step of its frame, or
    after the step of its ``received_at`` frame on its own frame (a prompt that arrives late).

    Every frame's masks [objects, H, W] and scores [objects] (columns: the prompts' object ids,
    ascending) go to ``sink`` when given, and are stacked into the returned run unless
    ``keep_masks`` is False (then ``masks`` and ``scores`` are None and memory stays flat in the
    number of frames). ``on_frame(i, frame, result)`` runs after each frame. What goes out is
    what the tracker output live: a late prompt's object appears (or its refinement shows) from
    its delivery frame on. ``revised`` (needs ``keep_masks``): the returned masks, scores and
    logits of the frames a late prompt re-tracked (its frame up to its delivery) are replaced
    by the re-tracked ones, the track as finally known (what the official predictor gives with
    every prompt on time).
    """
    if revised and not keep_masks:
        raise ValueError("revised outputs need keep_masks=True")
    by_delivery = prompts_by_delivery(prompts)
    for p in prompts:
        if p.delivery > p.frame and p.delivery - p.frame >= tracker.history_frames:
            raise ValueError(
                f"prompt for object {p.object_id} on frame {p.frame} is received at frame {p.delivery}, "
                f"{p.delivery - p.frame} frames late: the tracker keeps {tracker.history_frames} frames "
                f"(history_frames), so a prompt may be at most {tracker.history_frames - 1} frames late"
            )
    ids = sorted({p.object_id for p in prompts})
    col = {oid: k for k, oid in enumerate(ids)}
    masks, scores, low_res, seconds = [], [], [], []

    def columns(res: FrameResult, hw, only: int | None = None):
        m = np.zeros((len(ids), *hw), bool)
        s = np.full(len(ids), np.nan, np.float32)
        lr = np.full((len(ids), *res.low_res_logits.shape[1:]), np.nan, np.float32) if keep_low_res else None
        for j, oid in enumerate(res.object_ids):
            if oid in col and (only is None or oid == only):
                m[col[oid]] = res.masks[j]
                s[col[oid]] = res.scores[j]
                if keep_low_res:
                    lr[col[oid]] = res.low_res_logits[j]
        return m, s, lr

    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        res = tracker.step(frame)
        late = []
        for p in by_delivery.get(i, []):
            if p.frame == i:
                res = tracker.add_prompt(p.object_id, **p.kwargs())
            else:
                tracker.add_prompt(p.object_id, **p.kwargs(), frame_index=p.frame)
                res = tracker.current_result()
                late.append(p)
        seconds.append(time.perf_counter() - t0)
        m, s, lr = columns(res, frame.shape[:2])
        if sink is not None:
            sink(m, s)
        if keep_masks:
            masks.append(m)
            scores.append(s)
        if keep_low_res:
            low_res.append(lr)
        if revised:
            for p in late:  # the object's outputs on the frames it was re-tracked over
                k = col[p.object_id]
                for g in range(p.frame, i):
                    rm, rs, rlr = columns(tracker.result_at(g), frame.shape[:2], only=p.object_id)
                    masks[g][k], scores[g][k] = rm[k], rs[k]
                    if keep_low_res:
                        low_res[g][k] = rlr[k]
        if on_frame is not None:
            on_frame(i, frame, res)
    return TrackRun(
        ids, np.stack(masks) if keep_masks else None, np.stack(scores) if keep_masks else None,
        np.stack(low_res) if keep_low_res else None, seconds,
    )
