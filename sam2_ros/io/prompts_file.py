"""The prompts file of ``sam2-ros track`` / ``compare``: a JSON list of prompts in frame pixels.

Each entry: ``{"frame": int, "object_id": int, "points": [[x, y], ...] | null,
"labels": [1, 0, ...] | null, "box": [x0, y0, x1, y1] | null, "mask": "mask.png" | null}``
(``mask``: a PNG whose non-zero pixels are the object, relative to the prompts file).

Which frame: ``"frame"`` is the index of the frame in the input (a video's frames; a bag topic's
messages in log-time order, from 0). With a rosbag input an entry may instead give ``"stamp"``:
the integer nanoseconds of the image's ``header.stamp`` (sec * 10**9 + nanosec); it applies to
the topic's message with that stamp, and a stamp no message has is an error that names it
(:func:`resolve_stamps`). An entry has exactly one of ``frame`` and ``stamp``.
Entries of one frame are applied in file order.

When the prompt reached the tracker: an entry may give ``"received_at": N``, a frame index >= its
frame (default: its own frame). The prompt is then delivered once the stream has reached frame N
(after frame N is processed) and applied on its own frame, as a prompt that arrives late does
(``Tracker.add_prompt(..., frame_index=frame)``): the latency case, run offline. The official
reference gets every prompt on its own frame (it ignores ``received_at``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np


@dataclass(frozen=True)
class Prompt:
    frame: int | None  # None until a ``stamp`` is resolved to a frame index
    object_id: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    stamp: int | None = None  # header stamp in nanoseconds (rosbag inputs)
    received_at: int | None = None  # frame index at which the prompt reaches the tracker (None: its frame)

    @property
    def delivery(self) -> int:
        """The frame after which the prompt is applied (``received_at``, else its own frame)."""
        return self.frame if self.received_at is None else self.received_at

    def kwargs(self) -> dict:
        return {"points": self.points, "labels": self.labels, "box": self.box, "mask": self.mask}


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read a prompts file; sorted by frame (file order within a frame) unless entries use ``stamp``."""
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
        if not isinstance(e, dict) or "object_id" not in e or ("frame" in e) == ("stamp" in e):
            raise ValueError(f"{where}: needs 'object_id' and exactly one of 'frame' and 'stamp'")
        stamp = e.get("stamp")
        if "stamp" in e and (not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 0):
            raise ValueError(f"{where}: 'stamp' must be an integer number of nanoseconds >= 0, got {stamp!r}")
        received = e.get("received_at")
        if received is not None and (not isinstance(received, int) or isinstance(received, bool) or received < 0):
            raise ValueError(f"{where}: 'received_at' must be a frame index (an integer >= 0), got {received!r}")
        mask = None
        if e.get("mask"):
            mpath = path.parent / e["mask"]
            m = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise ValueError(f"{where}: cannot read mask image {mpath}")
            mask = m > 0
        arr = lambda k, dt: None if e.get(k) is None else np.asarray(e[k], dt)  # noqa: E731
        frame = int(e["frame"]) if "frame" in e else None
        p = Prompt(frame, int(e["object_id"]), arr("points", np.float32), arr("labels", np.int32),
                   arr("box", np.float32), mask, stamp, received)
        if frame is not None:
            check_received_at(p, where)
        prompts.append(p)
    if all(p.frame is not None for p in prompts):
        prompts.sort(key=lambda p: p.frame)  # stable: file order within a frame
    return prompts


def resolve_stamps(prompts: list[Prompt], frame_of_stamp: Mapping[int, int], source: str) -> list[Prompt]:
    """Prompts with every ``stamp`` replaced by its frame index in ``frame_of_stamp``, sorted by frame.

    ``source`` names the stamps' origin in the error for a stamp that is not there.
    """
    out = []
    for p in prompts:
        if p.stamp is not None:
            if p.stamp not in frame_of_stamp:
                raise ValueError(
                    f"prompt for object {p.object_id} has stamp {p.stamp} ({_stamp_text(p.stamp)}), "
                    f"which no message of {source} has"
                )
            p = replace(p, frame=frame_of_stamp[p.stamp])
            check_received_at(p, f"prompt for object {p.object_id} with stamp {p.stamp} (frame {p.frame})")
        out.append(p)
    out.sort(key=lambda p: p.frame)  # stable: file order within a frame
    return out


def require_frames(prompts: list[Prompt], source: str) -> None:
    """Refuse prompts given by ``stamp`` where ``source`` has no stamps (a video file)."""
    for p in prompts:
        if p.frame is None:
            raise ValueError(
                f"prompt for object {p.object_id} is given by 'stamp' ({p.stamp}), but {source} has no stamps: "
                "use 'frame' (stamps work with --bag)"
            )


def check_received_at(p: Prompt, where: str) -> None:
    """A prompt cannot reach the tracker before its frame exists."""
    if p.received_at is not None and p.received_at < p.frame:
        raise ValueError(f"{where}: 'received_at' ({p.received_at}) must be >= its frame ({p.frame}): a prompt "
                         "cannot arrive before its frame")


def prompts_by_delivery(prompts: list[Prompt]) -> dict[int, list[Prompt]]:
    """The prompts delivered after each frame (``received_at``, default: their frame), each list
    ordered by the prompts' frames (list order within a frame): the order they would have had on time."""
    require_frames(prompts, "this input")
    out: dict[int, list[Prompt]] = {}
    for p in prompts:
        out.setdefault(p.delivery, []).append(p)
    return {n: sorted(ps, key=lambda p: p.frame) for n, ps in out.items()}


def prompts_by_frame(prompts: list[Prompt]) -> dict[int, list[Prompt]]:
    """The prompts of each frame index, in list order (stamps must be resolved first)."""
    require_frames(prompts, "this input")
    out: dict[int, list[Prompt]] = {}
    for p in prompts:
        out.setdefault(p.frame, []).append(p)
    return out


def _stamp_text(ns: int) -> str:
    sec, nsec = divmod(ns, 1_000_000_000)
    return f"sec={sec} nanosec={nsec}"
