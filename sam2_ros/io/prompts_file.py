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

from sam2_ros.errors import PromptsFileError
from sam2_ros.limits import check_points
from sam2_ros.outputs import MAX_LABEL_ID


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
    """Read a prompts file; sorted by frame (file order within a frame) unless entries use ``stamp``.

    Every field is checked (types, shapes, finite values, the limits of :mod:`sam2_ros.limits`):
    a bad file raises :class:`~sam2_ros.errors.PromptsFileError` naming the file and the entry.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PromptsFileError(f"cannot read prompts file {path}: {e}") from None
    if not isinstance(entries, list):
        raise PromptsFileError(f"{path}: expected a JSON list of prompts, got {type(entries).__name__}")
    prompts = [_entry(path, f"{path} entry {i}", e) for i, e in enumerate(entries)]
    if all(p.frame is not None for p in prompts):
        prompts.sort(key=lambda p: p.frame)  # stable: file order within a frame
    return prompts


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(where: str, key: str, value, shape: tuple) -> np.ndarray:
    """``value`` as a finite float32 array of ``shape`` (-1: any length >= 1), or PromptsFileError."""
    def numeric(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) or isinstance(v, list) and all(map(numeric, v))

    if not isinstance(value, list) or not numeric(value):
        raise PromptsFileError(f"{where}: '{key}' must be a list of numbers, got {value!r:.80}")
    try:
        with np.errstate(over="ignore"):
            arr = np.asarray(value, np.float64).astype(np.float32)
    except (ValueError, OverflowError) as e:  # ragged lists, ints beyond float64
        raise PromptsFileError(f"{where}: '{key}' is not a {'x'.join(map(str, shape))} list of numbers: {e}") from None
    if arr.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, arr.shape)) or arr.size == 0:
        want = " x ".join("N" if d == -1 else str(d) for d in shape)
        raise PromptsFileError(f"{where}: '{key}' must have shape {want}, got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise PromptsFileError(f"{where}: '{key}' has values that are not finite (as float32): {value!r:.80}")
    return arr


def _whole(where: str, e: dict, key: str, what: str, null_ok: bool = False) -> int | None:
    """Entry field ``key`` (None when absent, or null with ``null_ok``): an integer >= 0, or PromptsFileError."""
    v = e.get(key)
    if key in e and not (null_ok and v is None) and (not _is_int(v) or v < 0):
        raise PromptsFileError(f"{where}: '{key}' must be {what}, got {v!r:.40}")
    return v


def _entry(path: Path, where: str, e) -> Prompt:
    """One entry of a prompts file, checked."""
    if not isinstance(e, dict) or "object_id" not in e or ("frame" in e) == ("stamp" in e):
        raise PromptsFileError(f"{where}: needs 'object_id' and exactly one of 'frame' and 'stamp'")
    oid = e["object_id"]
    if not _is_int(oid) or not 0 <= oid <= MAX_LABEL_ID:
        raise PromptsFileError(f"{where}: 'object_id' must be an integer in [0, {MAX_LABEL_ID}], got {oid!r:.40}")
    frame = _whole(where, e, "frame", "a frame index (an integer >= 0)")
    stamp = _whole(where, e, "stamp", "an integer number of nanoseconds >= 0")
    received = _whole(where, e, "received_at", "a frame index (an integer >= 0)", null_ok=True)
    points = labels = box = mask = None
    if (e.get("points") is None) != (e.get("labels") is None):
        raise PromptsFileError(f"{where}: 'points' and 'labels' must be given together")
    if e.get("points") is not None:
        too_many = isinstance(e["points"], list) and check_points(len(e["points"]))
        if too_many:
            raise PromptsFileError(f"{where}: {too_many}")
        points = _numbers(where, "points", e["points"], (-1, 2))
        labs = e["labels"]
        if not isinstance(labs, list) or len(labs) != len(points) or not all(_is_int(v) and v in (0, 1) for v in labs):
            raise PromptsFileError(f"{where}: 'labels' must be a list of {len(points)} values 1 (positive) or 0 "
                                   f"(negative), one per point, got {labs!r:.80}")
        labels = np.asarray(labs, np.int32)
    if e.get("box") is not None:
        box = _numbers(where, "box", e["box"], (4,))
    if e.get("mask"):
        if not isinstance(e["mask"], str):
            raise PromptsFileError(f"{where}: 'mask' must be the path of a PNG, got {e['mask']!r:.40}")
        mpath = path.parent / e["mask"]
        m = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise PromptsFileError(f"{where}: cannot read mask image {mpath}")
        mask = m > 0
    if points is None and box is None and mask is None:
        raise PromptsFileError(f"{where}: an empty prompt: give 'points' with 'labels', a 'box' or a 'mask'")
    p = Prompt(frame, oid, points, labels, box, mask, stamp, received)
    if frame is not None:
        check_received_at(p, where)
    return p


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
        raise PromptsFileError(f"{where}: 'received_at' ({p.received_at}) must be >= its frame ({p.frame}): a prompt "
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
