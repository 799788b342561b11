"""Several streams (cameras) over one backend: one set of engines, one tracker per stream.

Each stream has its own :class:`~sam2_ros.tracker.Tracker` (its own memory bank, history,
objects, ids and frame count) over the shared, already loaded backend, so a robot with four
cameras holds one copy of the weights and workspaces. :meth:`MultiTracker.step` processes one
frame of each named stream: every frame is checked first (a bad frame of one stream is that
stream's error only, the others proceed), the frames are encoded by the image encoder in one
batched call (``Backend.encode_images``; in chunks of ``backend.limits.frames``: one frame per
call for an export without a batch axis), then each stream's tracking step (memory attention,
decoder, memory encoder over its objects) runs on its slice of the features. The results equal
those of independent single-stream trackers. ROS-free, torch-free.
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
        batch_frames: encode the waiting frames of several streams in one image-encoder call
            (True, default; up to ``backend.limits.frames`` per call), or one call per stream.
        **tracker_kwargs: :class:`~sam2_ros.tracker.Tracker` arguments, the same for every
            stream (``max_objects`` is per stream).
    """

    def __init__(self, backend: Backend, streams: Sequence[str], batch_frames: bool = True, **tracker_kwargs):
        names = list(streams)
        if not names:
            raise TrackerInputError("MultiTracker needs at least one stream name")
        bad = [s for s in names if not isinstance(s, str) or not s]
        if bad:
            raise TrackerInputError(f"stream names must be non-empty strings, got {bad!r}")
        if len(set(names)) != len(names):
            raise TrackerInputError(f"stream names must be unique, got {names!r}")
        self.backend = backend
        self.batch_frames = bool(batch_frames)
        self.trackers: dict[str, Tracker] = {s: Tracker(backend, **tracker_kwargs) for s in names}

    @property
    def streams(self) -> list[str]:
        return list(self.trackers)

    @property
    def frames_per_call(self) -> int | None:
        """Frames per image-encoder call: None (all waiting frames), or the backend's limit
        (1 for an export without a batch axis, or with ``batch_frames=False``)."""
        return self.backend.limits.frames if self.batch_frames else 1

    def tracker(self, stream: str) -> Tracker:
        """The stream's tracker (prompts, removals, resets go there); TrackerInputError if unknown."""
        try:
            return self.trackers[stream]
        except KeyError:
            raise TrackerInputError(f"unknown stream {stream!r}; streams are {self.streams}") from None

    def step(self, frames: Mapping[str, np.ndarray]) -> dict[str, FrameResult | TrackerInputError]:
        """Process one frame of each named stream -> each stream's result, or its input error
        (that stream's state untouched; the other streams proceed). The frames' image encoder
        runs batched; an unknown stream name is a :class:`TrackerInputError` for the whole call."""
        for s in frames:
            self.tracker(s)
        out: dict[str, FrameResult | TrackerInputError] = {}
        ready: list[tuple[str, np.ndarray, object]] = []  # (stream, frame, model input)
        for s, frame in frames.items():
            try:
                ready.append((s, frame, self.trackers[s]._begin_frame(frame)))
            except TrackerInputError as e:
                out[s] = e
        per_call = self.frames_per_call or max(len(ready), 1)  # every frame bad: no call
        for i in range(0, len(ready), per_call):
            chunk = ready[i : i + per_call]
            feats = self.backend.encode_images([image for _, _, image in chunk])
            for (s, frame, _), f in zip(chunk, feats):
                out[s] = self.trackers[s]._step_encoded(frame, f, shared_features=True)
        return {s: out[s] for s in frames}

    def close(self) -> None:
        """Release the shared backend; every stream's tracker is unusable afterwards."""
        self.backend.close()
