"""Detector boxes as prompts (sam2_ros.detections): box checks, association, re-seed and removal
policies, track ids. Pure logic: the node's end-to-end test drives the same code with a tracker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam2_ros.detections import (
    Detection, DetectionAssociator, DetectionPolicy, ObjectView, box_iou, check_box, check_click, clicked_object,
)

WH = (200, 100)
NAN4 = (math.nan,) * 4


def view(oid, box, label="", visible=True):
    return ObjectView(oid, label, box if visible else NAN4, visible)


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), NAN4) == 0.0


@pytest.mark.parametrize("box, score, fragment", [
    ((math.nan, 0, 10, 10), 1.0, "not finite"),
    ((0, 0, math.inf, 10), 1.0, "not finite"),
    ((0, 0, 10, 10), math.nan, "not finite"),
    ((10, 0, 5, 10), 1.0, "no positive size"),
    ((0, 0, 10, 0), 1.0, "no positive size"),
    ((250, 10, 300, 20), 1.0, "outside the 200x100 image"),
    ((-50, -50, -1, -1), 1.0, "outside"),
])
def test_bad_boxes_are_refused(box, score, fragment):
    det, why = check_box(Detection(box, score), *WH)
    assert det is None and fragment in why


def test_a_box_over_the_border_is_clipped():
    det, why = check_box(Detection((-10, 50, 30, 150), 0.9, "cup", "7"), *WH)
    assert why is None and det.box == (0, 50, 30, 100) and (det.score, det.class_id, det.track_id) == (0.9, "cup", "7")


def test_from_center():
    assert Detection.from_center(50, 40, 20, 10).box == (40, 35, 60, 45)


def test_unmatched_boxes_start_objects_matched_ones_do_not():
    a = DetectionAssociator(DetectionPolicy(iou_threshold=0.5, min_score=0.5))
    objs = [view(1, (10, 10, 50, 50), "cup")]
    plan = a.plan([Detection((12, 10, 50, 52), 0.9, "cup"), Detection((100, 10, 150, 60), 0.8, "book"),
                   Detection((100, 70, 120, 90), 0.3, "pen")], objs, 5, WH, free_slots=4)
    assert list(plan.matched) == [1] and plan.matched[1].class_id == "cup"
    assert [d.class_id for d in plan.new] == ["book"]
    assert plan.refused == {"low_score": 1} and plan.reseed == [] and plan.remove == []


def test_class_allow_list_match_class_and_max_objects():
    a = DetectionAssociator(DetectionPolicy(classes=("cup", "book"), match_class=True))
    objs = [view(1, (10, 10, 50, 50), "cup")]
    dets = [Detection((10, 10, 50, 50), 0.9, "bowl"),  # same place, other class: no match; class not allowed
            Detection((100, 10, 150, 60), 0.9, "book"), Detection((150, 60, 190, 95), 0.9, "cup")]
    plan = a.plan(dets, objs, 0, WH, free_slots=1)
    assert plan.matched == {} and [d.class_id for d in plan.new] == ["book"]
    assert plan.refused == {"class_not_allowed": 1, "max_objects": 1}


def test_greedy_iou_gives_each_object_its_best_box():
    a = DetectionAssociator(DetectionPolicy(iou_threshold=0.3))
    objs = [view(1, (0, 0, 40, 40)), view(2, (30, 0, 70, 40))]
    plan = a.plan([Detection((28, 0, 68, 40)), Detection((2, 0, 42, 40))], objs, 0, WH, 5)
    assert plan.matched[1].box == (2, 0, 42, 40) and plan.matched[2].box == (28, 0, 68, 40) and not plan.new


def test_bad_empty_and_oversized_messages_are_refused_and_counted():
    a = DetectionAssociator(DetectionPolicy(max_boxes=10))
    plan = a.plan([], [], 0, WH, 5)
    assert plan.refused == {"empty": 1} and not plan.new
    plan = a.plan([Detection((0, 0, 5, 5))] * 11, [], 0, WH, 5)
    assert plan.refused == {"too_many_boxes": 11} and not plan.new
    plan = a.plan([Detection((0, 0, 5, 5)), Detection((5, 5, 1, 1)), Detection((0, 0, math.nan, 1))], [], 0, WH, 5)
    assert plan.refused == {"bad_box": 2} and len(plan.new) == 1 and len(plan.messages) == 2


def test_reseed_when_lost_for_k_frames_matching_its_last_seen_box():
    a = DetectionAssociator(DetectionPolicy(reseed="lost", reseed_lost_frames=3))
    box = (20, 20, 60, 60)
    for f in range(5):
        a.observe(f, [1], [box], [True])
    for f in range(5, 7):
        a.observe(f, [1], [NAN4], [False])
    det = Detection((22, 20, 60, 62), 0.9)
    # lost on frames 5, 6: 2 frames at frame 6 -> matched (on its last box) but no re-seed yet
    plan = a.plan([det], [view(1, box, visible=False)], 6, WH, 5)
    assert list(plan.matched) == [1] and plan.reseed == [] and not plan.new
    a.observe(7, [1], [NAN4], [False])
    plan = a.plan([det], [view(1, box, visible=False)], 7, WH, 5)
    assert plan.reseed == [(1, det)]
    # visible again: never re-seeded under "lost"
    plan = a.plan([det], [view(1, box)], 8, WH, 5)
    assert plan.reseed == [] and list(plan.matched) == [1]
    assert a.lost_frames(1, 4) == 0 and a.lost_frames(1, 7) == 3


def test_reseed_every_n_and_never():
    a = DetectionAssociator(DetectionPolicy(reseed="every_n", reseed_every=3))
    box = (20, 20, 60, 60)
    reseeds = [bool(a.plan([Detection(box)], [view(1, box)], f, WH, 5).reseed) for f in range(7)]
    assert reseeds == [False, False, True, False, False, True, False]
    b = DetectionAssociator(DetectionPolicy(reseed="never"))
    b.observe(0, [1], [box], [True])
    assert not any(b.plan([Detection(box)], [view(1, box, visible=False)], f, WH, 5).reseed for f in range(1, 30))
    with pytest.raises(ValueError, match="reseed must be one of"):
        DetectionAssociator(DetectionPolicy(reseed="sometimes"))


def test_removal_after_m_unmatched_messages_and_off_by_default():
    box, other = (20, 20, 60, 60), (120, 20, 160, 60)
    a = DetectionAssociator(DetectionPolicy(remove_after=3))
    objs = [view(1, box), view(2, other)]
    removed = [a.plan([Detection(box)], objs, f, WH, 5).remove for f in range(3)]
    assert removed == [[], [], [2]]  # object 1 matched every time; object 2 missed 3 messages
    a.forget(2)
    b = DetectionAssociator(DetectionPolicy())
    assert not any(b.plan([Detection(box)], objs, f, WH, 5).remove for f in range(50))


def test_track_ids_key_the_association():
    a = DetectionAssociator(DetectionPolicy(iou_threshold=0.5))
    a.bind(4, Detection((0, 0, 10, 10), track_id="trk-9"), 0)
    # the detector says trk-9 moved far away: it still is object 4 (no IoU needed), no new object
    plan = a.plan([Detection((150, 50, 190, 90), 0.9, "cup", "trk-9")], [view(4, (0, 0, 10, 10))], 1, WH, 5)
    assert list(plan.matched) == [4] and not plan.new
    a.forget(4)
    plan = a.plan([Detection((150, 50, 190, 90), 0.9, "cup", "trk-9")], [], 2, WH, 5)
    assert len(plan.new) == 1  # the binding went with the object
    off = DetectionAssociator(DetectionPolicy(use_track_ids=False))
    off.bind(4, Detection((0, 0, 10, 10), track_id="trk-9"), 0)
    plan = off.plan([Detection((150, 50, 190, 90), 0.9, "cup", "trk-9")], [view(4, (0, 0, 10, 10))], 1, WH, 5)
    assert not plan.matched and len(plan.new) == 1


def test_random_scenes_never_match_one_object_twice_or_exceed_free_slots():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = DetectionAssociator(DetectionPolicy(iou_threshold=rng.uniform(0.05, 0.9), min_score=0.2))
        objs = []
        for oid in range(1, rng.integers(0, 6) + 1):
            x, y = rng.uniform(0, 150), rng.uniform(0, 60)
            objs.append(view(oid, (x, y, x + rng.uniform(5, 50), y + rng.uniform(5, 40)), visible=rng.random() > 0.2))
        dets = []
        for _ in range(rng.integers(1, 10)):
            x, y = rng.uniform(-20, 210), rng.uniform(-20, 110)
            dets.append(Detection((x, y, x + rng.uniform(-5, 50), y + rng.uniform(-5, 40)), rng.uniform(0, 1)))
        free = int(rng.integers(0, 4))
        plan = a.plan(dets, objs, 0, WH, free)
        assert set(plan.matched) <= {o.object_id for o in objs}
        assert len(plan.new) <= free
        assert len(plan.matched) + len(plan.new) + sum(plan.refused.values()) <= len(dets)
        for oid, det in plan.matched.items():
            o = next(o for o in objs if o.object_id == oid)
            assert o.visible and box_iou(det.box, o.box) >= a.policy.iou_threshold


def test_an_object_never_seen_matches_the_box_that_prompted_it_and_is_reseeded_when_lost():
    a = DetectionAssociator(DetectionPolicy(reseed="lost", reseed_lost_frames=2))
    det = Detection((20, 20, 60, 60), 0.9, "cup")
    a.bind(1, det, 3)  # created on frame 3 from this box; never visible since
    for f in range(3, 6):
        a.observe(f, [1], [NAN4], [False])
    plan = a.plan([Detection((21, 20, 60, 61), 0.9, "cup")], [view(1, NAN4, visible=False)], 5, WH, 5)
    assert list(plan.matched) == [1] and [oid for oid, _ in plan.reseed] == [1] and not plan.new
    a.retain([])
    assert a.last_box(1, 5) is None and a.lost_frames(1, 5) == 1


def test_clicks():
    assert check_click(10, 10, 20, 20) is None
    assert "outside the 20x20 image" in check_click(20, 5, 20, 20)
    assert "outside" in check_click(-0.5, 5, 20, 20)
    assert "not finite" in check_click(math.nan, 5, 20, 20)
    masks = np.zeros((3, 20, 20), bool)
    masks[0, :10] = True
    masks[1, 5:15] = True
    masks[2] = True
    scores = np.array([0.5, 2.0, -1.0])  # object 30 covers everything but is not visible
    assert clicked_object([10, 20, 30], masks, scores, 3.7, 2.2) == 10
    assert clicked_object([10, 20, 30], masks, scores, 3, 7.9) == 20  # overlap: the higher score
    assert clicked_object([10, 20, 30], masks, scores, 3, 17) is None
