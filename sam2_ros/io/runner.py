"""Run a tracker over a sequence of frames with a prompts schedule, or the trackers of several
streams (a :class:`~sam2_ros.multi_tracker.MultiTracker`) over several sequences at once (used by
the CLI and tests)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from sam2_ros.errors import TrackerInputError
from sam2_ros.io.prompts_file import Prompt, prompts_by_delivery
from sam2_ros.multi_tracker import MultiTracker
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
    run = _StreamRun(tracker, prompts, keep_low_res, on_frame, keep_masks, sink, revised)
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        run.after_step(i, frame, tracker.step(frame), t0)
    return run.result()


def run_multi_tracker(
    multi: MultiTracker,
    frames: Mapping[str, Iterable[np.ndarray]],
    prompts: Mapping[str, list[Prompt]],
    on_frame: Callable[[str, int, np.ndarray, FrameResult], None] | None = None,
    sinks: Mapping[str, Callable[[np.ndarray, np.ndarray], None]] | None = None,
    keep_low_res: bool = False,
    keep_masks: bool = True,
    revised: bool = False,
) -> dict[str, TrackRun]:
    """:func:`run_tracker` for several streams of ``multi`` at once (``frames`` and ``prompts`` by
    stream name): each step takes the next frame of every stream that still has frames (one
    batched image-encoder call), then each stream's prompts apply as :func:`run_tracker` applies
    them. A stream that runs out of frames stops; the others go on. ``on_frame(stream, i, frame,
    result)``; ``sinks`` by stream. A stream's frame seconds are the whole step's wall time plus
    its own prompts'. A refused frame (a video that changes size) raises :class:`TrackerInputError`."""
    runs = {
        s: _StreamRun(multi.tracker(s), prompts.get(s, []), keep_low_res,
                      None if on_frame is None else (lambda i, f, r, s=s: on_frame(s, i, f, r)),
                      keep_masks, (sinks or {}).get(s), revised)
        for s in frames
    }
    live = {s: iter(f) for s, f in frames.items()}
    i = 0
    while live:
        batch = {}
        for s, it in list(live.items()):
            frame = next(it, None)
            if frame is None:
                del live[s]
            else:
                batch[s] = frame
        if not batch:
            break
        t0 = time.perf_counter()
        for s, res in multi.step(batch).items():
            if isinstance(res, TrackerInputError):
                raise TrackerInputError(f"stream {s}, frame {i}: {res}")
            runs[s].after_step(i, batch[s], res, t0)
        i += 1
    return {s: r.result() for s, r in runs.items()}


class _StreamRun:
    """One stream's side of :func:`run_tracker`: its prompts after each step, its outputs per frame."""

    def __init__(self, tracker: Tracker, prompts: list[Prompt], keep_low_res: bool = False,
                 on_frame: Callable[[int, np.ndarray, FrameResult], None] | None = None, keep_masks: bool = True,
                 sink: Callable[[np.ndarray, np.ndarray], None] | None = None, revised: bool = False):
        if revised and not keep_masks:
            raise ValueError("revised outputs need keep_masks=True")
        for p in prompts:
            if p.delivery > p.frame and p.delivery - p.frame >= tracker.history_frames:
                raise ValueError(
                    f"prompt for object {p.object_id} on frame {p.frame} is received at frame {p.delivery}, "
                    f"{p.delivery - p.frame} frames late: the tracker keeps {tracker.history_frames} frames "
                    f"(history_frames), so a prompt may be at most {tracker.history_frames - 1} frames late"
                )
        self.tracker, self.by_delivery = tracker, prompts_by_delivery(prompts)
        self.keep_low_res, self.on_frame, self.keep_masks, self.sink, self.revised = (
            keep_low_res, on_frame, keep_masks, sink, revised)
        self.ids = sorted({p.object_id for p in prompts})
        self.col = {oid: k for k, oid in enumerate(self.ids)}
        self.masks: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.low_res: list[np.ndarray] = []
        self.seconds: list[float] = []

    def columns(self, res: FrameResult, hw, only: int | None = None):
        """``res`` as the run's columns (the prompts' object ids): masks, scores, logits (or None)."""
        ids, col = self.ids, self.col
        m = np.zeros((len(ids), *hw), bool)
        s = np.full(len(ids), np.nan, np.float32)
        lr = np.full((len(ids), *res.low_res_logits.shape[1:]), np.nan, np.float32) if self.keep_low_res else None
        for j, oid in enumerate(res.object_ids):
            if oid in col and (only is None or oid == only):
                m[col[oid]] = res.masks[j]
                s[col[oid]] = res.scores[j]
                if lr is not None:
                    lr[col[oid]] = res.low_res_logits[j]
        return m, s, lr

    def after_step(self, i: int, frame: np.ndarray, res: FrameResult, t0: float) -> None:
        """Frame ``i``'s prompts (its step, ``res``, started at ``t0``), then its outputs."""
        tracker, late = self.tracker, []
        for p in self.by_delivery.get(i, []):
            if p.frame == i:
                res = tracker.add_prompt(p.object_id, **p.kwargs())
            else:
                tracker.add_prompt(p.object_id, **p.kwargs(), frame_index=p.frame)
                res = tracker.current_result()
                late.append(p)
        self.seconds.append(time.perf_counter() - t0)
        m, s, lr = self.columns(res, frame.shape[:2])
        if self.sink is not None:
            self.sink(m, s)
        if self.keep_masks:
            self.masks.append(m)
            self.scores.append(s)
        if self.keep_low_res:
            self.low_res.append(lr)
        if self.revised:
            for p in late:  # the object's outputs on the frames it was re-tracked over
                k = self.col[p.object_id]
                for g in range(p.frame, i):
                    rm, rs, rlr = self.columns(tracker.result_at(g), frame.shape[:2], only=p.object_id)
                    self.masks[g][k], self.scores[g][k] = rm[k], rs[k]
                    if self.keep_low_res:
                        self.low_res[g][k] = rlr[k]
        if self.on_frame is not None:
            self.on_frame(i, frame, res)

    def result(self) -> TrackRun:
        keep = self.keep_masks
        return TrackRun(
            self.ids, np.stack(self.masks) if keep else None, np.stack(self.scores) if keep else None,
            np.stack(self.low_res) if self.keep_low_res else None, self.seconds,
        )
