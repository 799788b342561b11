"""Detector boxes as prompts: validation, association with tracked objects, re-seeding. ROS-free.

A detector (YOLO, a grounding model, ...) sends boxes for one image. :class:`DetectionAssociator`
turns them into a :class:`Plan` for the tracker on that image's frame:

* a box is valid when its corners are finite, its size positive and it overlaps the image
  (it is clipped to the image); invalid boxes are refused and counted, the others still used;
* association: a box whose detector track id (``Detection2D.id``) is already bound to a tracked
  object matches that object; the other boxes are matched greedily by IoU (highest first)
  between the box and each object's mask box on that frame (or, for an object not visible
  there, its box on the last frame it was seen), at least ``iou_threshold``, and with
  ``match_class`` only to an object of the same label;
* an unmatched box with ``score >= min_score`` (and its class in the ``classes`` allow-list,
  when one is set) starts a new object labelled with its class; ``max_objects`` bounds the
  total, the excess is counted;
* a matched box re-seeds its object (a box prompt: a refinement) under ``reseed``: ``never``;
  ``lost``: when the object has not been visible for ``reseed_lost_frames`` frames up to that
  frame; ``every_n``: on every ``reseed_every``-th detection that matches it;
* with ``remove_after`` > 0, an object that no box matched in that many consecutive detection
  messages is removed.

The associator remembers, per object, the frames it was seen on (:meth:`observe`, fed with every
published frame), the box that last prompted it, how many messages in a row missed it, how many
matched it, and the detector track id bound to it.

Operator clicks (``<image>_mouse_left``) go through :func:`check_click` and :func:`clicked_object`.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sam2_ros.errors import TrackerInputError

RESEED_POLICIES = ("never", "lost", "every_n")


@dataclass(frozen=True)
class Detection:
    """One detector box in pixels of its image: x0, y0, x1, y1 (x1, y1 exclusive)."""

    box: tuple[float, float, float, float]
    score: float = 1.0
    class_id: str = ""
    track_id: str = ""

    @classmethod
    def from_center(cls, cx: float, cy: float, w: float, h: float, score: float = 1.0, class_id: str = "",
                    track_id: str = "") -> Detection:
        """From a vision_msgs BoundingBox2D (centre and size)."""
        return cls((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), score, class_id, track_id)


@dataclass(frozen=True)
class DetectionPolicy:
    iou_threshold: float = 0.5
    min_score: float = 0.5
    classes: tuple[str, ...] = ()  # allow-list of classes that may start objects; empty: all
    match_class: bool = False
    reseed: str = "lost"
    reseed_lost_frames: int = 5
    reseed_every: int = 10
    remove_after: int = 0  # 0: never remove
    max_boxes: int = 100  # messages with more boxes are refused whole
    use_track_ids: bool = True


@dataclass(frozen=True)
class ObjectView:
    """A tracked object as the associator sees it on the detection's frame."""

    object_id: int
    label: str
    box: tuple[float, float, float, float]  # mask box on that frame (NaN when empty)
    visible: bool


@dataclass
class Plan:
    """What a detection message does on its frame."""

    new: list[Detection] = field(default_factory=list)  # each starts an object, labelled with its class
    reseed: list[tuple[int, Detection]] = field(default_factory=list)  # (object id, box) refinements
    remove: list[int] = field(default_factory=list)
    matched: dict[int, Detection] = field(default_factory=dict)  # object id -> its box
    refused: collections.Counter = field(default_factory=collections.Counter)  # reason -> count
    messages: list[str] = field(default_factory=list)  # one line per refused kind, for the log
    # filled by apply_detections: (id, box) of the objects it created and re-seeded, the ids it removed
    created: list[tuple[int, Detection]] = field(default_factory=list)
    reseeded: list[tuple[int, Detection]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)


def check_box(det: Detection, width: int, height: int) -> tuple[Detection | None, str | None]:
    """(the box clipped to the image, None) or (None, why it is refused)."""
    x0, y0, x1, y1 = det.box
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, det.score)):
        return None, f"box {list(det.box)} or score {det.score} is not finite"
    if not (x1 > x0 and y1 > y0):
        return None, f"box {list(det.box)} has no positive size"
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if not (cx1 > cx0 and cy1 > cy0):
        return None, f"box {list(det.box)} lies outside the {width}x{height} image"
    return Detection((cx0, cy0, cx1, cy1), det.score, det.class_id, det.track_id), None


def box_iou(a, b) -> float:
    """IoU of two x0, y0, x1, y1 boxes; 0 when either is empty or not finite."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class DetectionAssociator:
    """See the module docstring. Not thread-safe: used by the tracker's worker thread only."""

    def __init__(self, policy: DetectionPolicy, history: int = 64):
        if policy.reseed not in RESEED_POLICIES:
            raise ValueError(f"reseed must be one of {', '.join(RESEED_POLICIES)}, got {policy.reseed!r}")
        self.policy = policy
        self._history = history
        self._seen: dict[int, collections.deque] = {}  # id -> (frame index, box) of frames it was visible on
        self._first: dict[int, int] = {}  # id -> first frame it was observed on
        self._missed: dict[int, int] = {}  # id -> consecutive messages without a match
        self._hits: dict[int, int] = {}  # id -> messages that matched it
        self._track: dict[str, int] = {}  # detector track id -> object id
        self._prompt_box: dict[int, tuple[int, tuple]] = {}  # id -> (frame, box) of the box that last prompted it

    # ------------------------------------------------------------ bookkeeping
    def observe(self, frame_index: int, object_ids, boxes, visible) -> None:
        """Record one processed frame's objects (as published)."""
        for oid, box, vis in zip(object_ids, boxes, visible):
            oid = int(oid)
            self._first.setdefault(oid, frame_index)
            if vis and np.isfinite(box).all():
                self._seen.setdefault(oid, collections.deque(maxlen=self._history)).append(
                    (frame_index, tuple(float(v) for v in box)))

    def lost_frames(self, object_id: int, frame_index: int) -> int:
        """Frames up to ``frame_index`` (included) since the object was last seen visible."""
        seen = [f for f, _ in self._seen.get(object_id, ()) if f <= frame_index]
        if seen:
            return frame_index - max(seen)
        return frame_index - self._first.get(object_id, frame_index) + 1

    def last_box(self, object_id: int, frame_index: int):
        """The object's box on the last frame up to ``frame_index`` it was seen on, or the box that
        last prompted it if that came later (None: neither)."""
        seen = [(f, b) for f, b in self._seen.get(object_id, ()) if f <= frame_index]
        prompt = self._prompt_box.get(object_id)
        if prompt is not None and prompt[0] <= frame_index and (not seen or prompt[0] >= seen[-1][0]):
            return prompt[1]
        return seen[-1][1] if seen else None

    def bind(self, object_id: int, det: Detection, frame_index: int) -> None:
        """``det`` prompted ``object_id`` on ``frame_index`` (the tracker accepted it): remember its
        box and track id."""
        if self.policy.use_track_ids and det.track_id:
            self._track[det.track_id] = object_id
        self._prompt_box[object_id] = (frame_index, det.box)
        self._first.setdefault(object_id, frame_index)
        self._missed[object_id] = 0

    def forget(self, object_id: int) -> None:
        """The object is gone (removed by anyone)."""
        for d in (self._seen, self._first, self._missed, self._hits, self._prompt_box):
            d.pop(object_id, None)
        for t in [t for t, o in self._track.items() if o == object_id]:
            del self._track[t]

    def retain(self, object_ids) -> None:
        """Forget every object not in ``object_ids`` (removed by a service, or a reset)."""
        keep = set(int(i) for i in object_ids)
        for oid in [o for o in set(self._first) | set(self._prompt_box) | set(self._missed) if o not in keep]:
            self.forget(oid)

    def reset(self) -> None:
        for d in (self._seen, self._first, self._missed, self._hits, self._track, self._prompt_box):
            d.clear()

    # ------------------------------------------------------------ association
    def plan(self, detections: list[Detection], objects: list[ObjectView], frame_index: int,
             image_wh: tuple[int, int], free_slots: int) -> Plan:
        """What ``detections`` (one message, made on frame ``frame_index``) do to ``objects``."""
        pol, out = self.policy, Plan()

        def refuse(reason: str, message: str, n: int = 1) -> None:
            out.refused[reason] += n
            if len(out.messages) < 5:
                out.messages.append(message)

        if not detections:
            refuse("empty", "an empty detection array: nothing to do")
            return out
        if len(detections) > pol.max_boxes:
            refuse("too_many_boxes", f"{len(detections)} boxes in one message, more than max_boxes={pol.max_boxes}: "
                                     "the message is refused", len(detections))
            return out
        valid: list[Detection] = []
        for det in detections:
            clipped, why = check_box(det, *image_wh)
            if clipped is None:
                refuse("bad_box", why)
            else:
                valid.append(clipped)
        by_id = {o.object_id: o for o in objects}
        unmatched_dets: list[int] = []
        taken: set[int] = set()
        for i, det in enumerate(valid):  # detector track ids first
            oid = self._track.get(det.track_id) if pol.use_track_ids and det.track_id else None
            if oid is not None and oid in by_id and oid not in taken:
                out.matched[oid] = det
                taken.add(oid)
            else:
                unmatched_dets.append(i)
        pairs = []
        for i in unmatched_dets:
            det = valid[i]
            for o in objects:
                if o.object_id in taken:
                    continue
                if pol.match_class and o.label and det.class_id and o.label != det.class_id:
                    continue
                box = o.box if o.visible and np.isfinite(o.box).all() else self.last_box(o.object_id, frame_index)
                iou = box_iou(det.box, box) if box is not None else 0.0
                if iou >= pol.iou_threshold and iou > 0:
                    pairs.append((iou, i, o.object_id))
        used: set[int] = set()
        for iou, i, oid in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            if i in used or oid in taken:
                continue
            used.add(i)
            taken.add(oid)
            out.matched[oid] = valid[i]
        for i in unmatched_dets:
            if i in used:
                continue
            det = valid[i]
            if det.score < pol.min_score:
                refuse("low_score", f"box {list(det.box)} score {det.score:.2f} < min_score {pol.min_score}")
            elif pol.classes and det.class_id not in pol.classes:
                refuse("class_not_allowed", f"class {det.class_id!r} is not in classes {list(pol.classes)}")
            elif len(out.new) >= free_slots:
                refuse("max_objects", f"box {list(det.box)} would be one object more than max_objects")
            else:
                out.new.append(det)
        visible = {o.object_id: o.visible for o in objects}
        for oid, det in out.matched.items():
            self._missed[oid] = 0
            self._hits[oid] = self._hits.get(oid, 0) + 1
            if pol.use_track_ids and det.track_id:
                self._track[det.track_id] = oid
            lost = 0 if visible[oid] else self.lost_frames(oid, frame_index)
            if pol.reseed == "lost" and lost >= pol.reseed_lost_frames:
                out.reseed.append((oid, det))
            elif pol.reseed == "every_n" and self._hits[oid] % pol.reseed_every == 0:
                out.reseed.append((oid, det))
        for o in objects:
            if o.object_id in out.matched:
                continue
            self._missed[o.object_id] = self._missed.get(o.object_id, 0) + 1
            if pol.remove_after > 0 and self._missed[o.object_id] >= pol.remove_after:
                out.remove.append(o.object_id)
        return out


def apply_detections(tracker, assoc: DetectionAssociator, boxes: list[Detection], frame_index: int,
                     labels: dict[int, str], new_id: Callable[[], int], max_objects: int) -> Plan:
    """Associate ``boxes`` (made on ``frame_index``, the current frame or one in the tracker's
    history) with the tracker's objects there, then start, re-seed (box prompts on that frame)
    and remove objects. One definition for the node and ``track --bag``. A prompt the tracker
    refuses is counted (``prompt_failed``) and the others still applied."""
    res = tracker.result_at(frame_index)
    h, w = res.frame_hw
    views = [ObjectView(oid, labels.get(oid, ""), tuple(float(v) for v in res.boxes[i]),
                        bool(res.scores[i] > 0 and res.areas[i] > 0))
             for i, oid in enumerate(res.object_ids)]
    plan = assoc.plan(boxes, views, frame_index, (w, h), max_objects - tracker.num_objects)
    for det in plan.new:
        try:
            oid = new_id()
            tracker.add_prompt(oid, box=list(det.box), frame_index=frame_index)
        except (TrackerInputError, ValueError) as e:
            plan.refused["prompt_failed"] += 1
            plan.messages.append(f"box {list(det.box)}: {e}")
            continue
        assoc.bind(oid, det, frame_index)
        plan.created.append((oid, det))
    for oid, det in plan.reseed:
        try:
            tracker.add_prompt(oid, box=list(det.box), frame_index=frame_index)
        except TrackerInputError as e:
            plan.refused["prompt_failed"] += 1
            plan.messages.append(f"re-seed of object {oid}: {e}")
            continue
        assoc.bind(oid, det, frame_index)
        plan.reseeded.append((oid, det))
    for oid in plan.remove:
        tracker.remove_object(oid)
        assoc.forget(oid)
        plan.removed.append(oid)
    return plan


def check_click(x: float, y: float, width: int, height: int) -> str | None:
    """Why a click at pixel (x, y) cannot be used on a ``width`` x ``height`` image, or None."""
    if not (math.isfinite(x) and math.isfinite(y)):
        return f"click ({x}, {y}) is not finite"
    if not (0 <= x < width and 0 <= y < height):
        return f"click ({x:.1f}, {y:.1f}) is outside the {width}x{height} image"
    return None


def clicked_object(object_ids, masks, scores, x: float, y: float) -> int | None:
    """The visible object whose mask holds pixel (x, y) (the highest object score where masks
    overlap, as in the label image), or None."""
    u, v = int(x), int(y)
    best = None
    for i, oid in enumerate(object_ids):
        if scores[i] > 0 and masks[i][v, u] and (best is None or scores[i] > scores[best]):
            best = i
    return None if best is None else int(object_ids[best])
