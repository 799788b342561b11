"""Several streams (cameras) over one backend: one set of engines, one tracker per stream.

Each stream has its own :class:`~sam2_ros.tracker.Tracker` (its own memory bank, history,
objects, ids and frame count) over the shared, already loaded backend, so a robot with four
cameras holds one copy of the weights and workspaces. :meth:`MultiTracker.step` processes one
frame of each named stream; a bad frame of one stream is that stream's error only, the others
proceed. ROS-free, torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sam2_ros.backends.base import Backend
from sam2_ros.errors import TrackerInputError
from sam2_ros.tracker import FrameResult, Tracker


class MultiTracker:
    """Track objects in several streams with one backend.

    Args:
        backend: an opened backend, shared by every stream (closed by :meth:`close`).
        streams: the stream names (e.g. camera names), unique, non-empty strings.
        **tracker_kwargs: :class:`~sam2_ros.tracker.Tracker` arguments, the same for every
            stream (``max_objects`` is per stream).
    """

    def __init__(self, backend: Backend, streams: Sequence[str], **tracker_kwargs):
        names = list(streams)
        if not names:
            raise TrackerInputError("MultiTracker needs at least one stream name")
        bad = [s for s in names if not isinstance(s, str) or not s]
        if bad:
            raise TrackerInputError(f"stream names must be non-empty strings, got {bad!r}")
        if len(set(names)) != len(names):
            raise TrackerInputError(f"stream names must be unique, got {names!r}")
        self.backend = backend
        self.trackers: dict[str, Tracker] = {s: Tracker(backend, **tracker_kwargs) for s in names}

    @property
    def streams(self) -> list[str]:
        return list(self.trackers)

    def tracker(self, stream: str) -> Tracker:
        """The stream's tracker (prompts, removals, resets go there); TrackerInputError if unknown."""
        try:
            return self.trackers[stream]
        except KeyError:
            raise TrackerInputError(f"unknown stream {stream!r}; streams are {self.streams}") from None

    def step(self, frames: Mapping[str, np.ndarray]) -> dict[str, FrameResult | TrackerInputError]:
        """Process one frame of each named stream -> each stream's result, or its input error
        (that stream's state untouched; the other streams proceed)."""
        for s in frames:
            self.tracker(s)
        out: dict[str, FrameResult | TrackerInputError] = {}
        for s, frame in frames.items():
            try:
                out[s] = self.trackers[s].step(frame)
            except TrackerInputError as e:
                out[s] = e
        return out

    def close(self) -> None:
        """Release the shared backend; every stream's tracker is unusable afterwards."""
        self.backend.close()
