"""Prompts on past frames (``Tracker.add_prompt(frame_index=...)``): the same result as the prompt
on time; other objects untouched, bit for bit; bad frames refused with the state untouched."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_ros.backends import load_backend
from sam2_ros.errors import TrackerInputError
from sam2_ros.tracker import Tracker
from sam2_ros.postprocess import mask_iou


@pytest.fixture(scope="module")
def backend(tiny_export_256):
    return load_backend(tiny_export_256)


@pytest.fixture(scope="module")
def frames(bedroom_frames):
    return bedroom_frames[:10]


#: attention-input scratch arrays of the bank (contents of the last call, not state)
SCRATCH = {"_tpos_row", "_mem_valid", "_ptr_tpos", "_ptr_valid"}


def row_state(tr: Tracker, row: int) -> dict:
    """Every array of one object row, in the bank and its history (copies)."""
    out = {}
    for owner, prefix in ((tr.bank, "bank"), (tr.bank.history, "history")):
        for k, v in vars(owner).items():
            if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == tr.max_objects and k not in SCRATCH:
                out[f"{prefix}.{k}"] = v[row].copy()
    return out


def snapshot(tr: Tracker) -> dict:
    arrays = {}
    for owner, prefix in ((tr.bank, "bank"), (tr.bank.history, "history")):
        arrays.update({f"{prefix}.{k}": v.copy() for k, v in vars(owner).items() if isinstance(v, np.ndarray)})
    arrays.update({f"history.features{i}": b.copy() for i, b in enumerate(tr.bank.history.features or ())})
    return {"arrays": arrays, "ids": list(tr._ids), "frame": tr.frame_index}


def assert_unchanged(tr: Tracker, snap: dict):
    now = snapshot(tr)
    assert now["ids"] == snap["ids"] and now["frame"] == snap["frame"]
    for k, v in snap["arrays"].items():
        assert np.array_equal(now["arrays"][k], v, equal_nan=True), f"{k} changed"


def run(backend, frames, schedule, history_frames=8, **opts):
    """Step through ``frames``; ``schedule[i]``: prompts (object_id, frame or None, kwargs) after frame i.
    Returns the tracker and every frame's result as finally known (re-tracked frames replaced)."""
    tr = Tracker(backend, max_objects=3, history_frames=history_frames, **opts)
    results = []
    for i, f in enumerate(frames):
        results.append(tr.step(f))
        for oid, frame, kw in schedule.get(i, []):
            if frame is None:
                results[i] = tr.add_prompt(oid, **kw)
            else:
                assert tr.add_prompt(oid, **kw, frame_index=frame).frame_index == frame
                for g in range(frame, i + 1):
                    results[g] = tr.result_at(g)
    return tr, results


CLICK = {"points": [[300, 200]], "labels": [1]}
BOX = {"box": [600, 250, 800, 450]}
FIX = {"points": [[320, 220], [100, 100]], "labels": [1, 0]}


def test_a_late_prompt_equals_the_prompt_on_time(backend, frames):
    """Same masks, logits equal to float rounding: the catch-up runs an object alone where live
    tracking batched it with the others (ONNX Runtime rounds a batch of 2 differently, ~1e-7)."""
    on_time = {0: [(1, None, CLICK)], 2: [(2, None, BOX)], 3: [(1, None, FIX)], 5: [(2, None, CLICK)]}
    late = {0: [(1, None, CLICK)], 6: [(2, 2, BOX)], 7: [(1, 3, FIX)], 8: [(2, 5, CLICK)]}
    a, ra = run(backend, frames, on_time)
    b, rb = run(backend, frames, late)
    for f, (x, y) in enumerate(zip(ra, rb)):
        assert x.object_ids == y.object_ids, f
        assert np.abs(x.low_res_logits - y.low_res_logits).max() <= 1e-5, f"frame {f}"
        assert np.abs(x.scores - y.scores).max() <= 1e-5, f"frame {f}"
        # a logit within rounding of the threshold may flip a pixel of the upsampled mask
        assert all(mask_iou(p, q) >= 0.9999 for p, q in zip(x.masks, y.masks)), f"frame {f}"
    for row in range(2):  # the banks too: what the next frame will read (slots in use)
        sa, sb = row_state(a, row), row_state(b, row)
        for slots, feats in (("bank.mem_frame", "bank.mem_feats"), ("bank.ptr_frame", "bank.obj_ptrs")):
            assert np.array_equal(sa[slots], sb[slots]), f"row {row} {slots}"
            used = sa[slots] >= 0
            # memory is stored rounded to bfloat16: ~1e-7 apart can round one bfloat16 step apart
            assert np.allclose(sa[feats][used], sb[feats][used], rtol=2**-7, atol=1e-6), f"row {row} {feats}"
    assert np.abs(a.step(frames[0]).low_res_logits - b.step(frames[0]).low_res_logits).max() <= 1e-5


def test_a_late_prompt_leaves_other_objects_bit_identical(backend, frames):
    schedule = {0: [(1, None, CLICK), (2, None, BOX)]}
    a, _ = run(backend, frames[:7], schedule)
    b, _ = run(backend, frames[:7], schedule)
    b.add_prompt(3, points=[[500, 300]], labels=[1], frame_index=2)  # a new object, 4 frames back
    b.add_prompt(1, **FIX, frame_index=3)  # a refinement of object 1, 3 frames back
    assert b.object_ids == [1, 2, 3]
    sa, sb = row_state(a, 1), row_state(b, 1)  # object 2's row
    assert sa.keys() == sb.keys() and len(sa) >= 20
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), f"object 2: {k} changed"
    assert not np.array_equal(row_state(a, 0)["history.low_res"], row_state(b, 0)["history.low_res"])
    ra, rb = a.step(frames[7]), b.step(frames[7])
    assert np.array_equal(ra.low_res_logits[1], rb.low_res_logits[1])


def test_frames_outside_the_history_are_refused_and_change_nothing(backend, frames):
    tr, _ = run(backend, frames[:6], {0: [(1, None, CLICK)], 3: [(1, None, FIX)]}, history_frames=3)
    assert tr.frame_index == 5 and tr.oldest_frame == 3
    snap = snapshot(tr)
    cases = [
        (dict(frame_index=2, **BOX), "frame 2 is older than the history: the oldest frame a prompt may name is 3"),
        (dict(frame_index=0, **CLICK), "the oldest frame a prompt may name is 3"),
        (dict(frame_index=6, **CLICK), "frame 6 has not been processed yet: the current frame is 5"),
        (dict(frame_index=True, **CLICK), "frame_index must be None or an int"),
        (dict(frame_index=4.0, **CLICK), "frame_index must be None or an int"),
        (dict(frame_index=4, points=[[1e5, 1]], labels=[1]), "outside"),
    ]
    for kw, message in cases:
        for oid in (1, 7):  # a tracked object and a new one
            with pytest.raises(TrackerInputError, match=message):
                tr.add_prompt(oid, **kw)
            assert_unchanged(tr, snap)
    # object 1 has a prompt on frame 3: a prompt on an earlier frame of it would come out of order
    tr.step(frames[6])
    tr.add_prompt(1, **CLICK, frame_index=5)
    snap = snapshot(tr)
    with pytest.raises(TrackerInputError, match="object 1 was prompted on frame 5, after frame 4"):
        tr.add_prompt(1, **BOX, frame_index=4)
    assert_unchanged(tr, snap)
    tr.add_prompt(2, **BOX, frame_index=4)  # another object may still start there
    for bad, message in ((7, "has not been processed yet"), (3, "older than the history"), ("4", "must be an int")):
        with pytest.raises(TrackerInputError, match=message):
            tr.result_at(bad)
    assert tr.result_at(4).object_ids == [1, 2] and tr.result_at(6).frame_index == 6


def test_history_frames_is_checked(backend):
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(TrackerInputError, match="history_frames must be an int >= 1"):
            Tracker(backend, history_frames=bad)


def test_a_reset_forgets_the_history(backend, frames):
    tr, _ = run(backend, frames[:4], {0: [(1, None, CLICK)]})
    tr.reset()
    tr.step(frames[4])
    with pytest.raises(TrackerInputError, match="frame 1 has not been processed yet: the current frame is 0"):
        tr.add_prompt(1, **CLICK, frame_index=1)
    tr.step(frames[5])
    res = tr.add_prompt(1, **CLICK, frame_index=0)  # frame 0 is the first frame after the reset
    assert res.frame_index == 0 and tr.current_result().object_ids == [1]
