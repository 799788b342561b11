"""Every public Tracker method refuses bad input with a clear TrackerInputError and leaves the
state of every object untouched (checked bit-for-bit against a tracker that never saw it)."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_ros.backends import ShapeLimits, load_backend
from sam2_ros.errors import FrameSizeChanged, TrackerInputError
from sam2_ros.tracker import Tracker


@pytest.fixture(scope="module")
def backend(tiny_export_256):
    return load_backend(tiny_export_256)


@pytest.fixture(scope="module")
def frames(bedroom_frames):
    return bedroom_frames[:3]


def started(backend, frames, max_objects=3):
    tr = Tracker(backend, max_objects=max_objects)
    tr.step(frames[0])
    tr.add_prompt(1, points=[[300, 200]], labels=[1])
    tr.add_prompt(2, box=[600, 250, 800, 450])
    tr.step(frames[1])
    return tr


def snapshot(tr) -> dict:
    """Every piece of tracker state, copied."""
    arrays = {k: v.copy() for k, v in vars(tr).items() if isinstance(v, np.ndarray)}
    arrays.update({f"bank.{k}": v.copy() for k, v in vars(tr.bank).items() if isinstance(v, np.ndarray)})
    return {"arrays": arrays, "ids": list(tr._ids), "frame": tr.frame_index, "hw": tr._frame_hw}


def assert_unchanged(tr, snap):
    now = snapshot(tr)
    assert now["ids"] == snap["ids"] and now["frame"] == snap["frame"] and now["hw"] == snap["hw"]
    for k, v in snap["arrays"].items():
        if k.startswith("bank._"):  # scratch space for attention inputs
            continue
        assert np.array_equal(now["arrays"][k], v), f"{k} changed"


@pytest.fixture(scope="module")
def shared(backend, frames):
    """One tracker that receives every bad input of this module; compared with a control at the end."""
    return started(backend, frames)


def assert_same_future(tr, control, frames):
    assert tr.object_ids == control.object_ids
    a, b = tr.step(frames[2]), control.step(frames[2])
    assert a.object_ids == b.object_ids
    assert np.array_equal(a.low_res_logits, b.low_res_logits)
    assert np.array_equal(a.scores, b.scores)
    assert np.array_equal(tr.bank.mem_feats, control.bank.mem_feats)
    assert np.array_equal(tr.bank.obj_ptrs, control.bank.obj_ptrs)


H, W = 540, 960
BAD_PROMPTS = {
    "no prompt": dict(),
    "points without labels": dict(points=[[10, 10]]),
    "labels without points": dict(labels=[1]),
    "empty points": dict(points=np.zeros((0, 2)), labels=np.zeros(0, int)),
    "all fields empty": dict(points=[], labels=[], box=[]),
    "empty points, labels given": dict(points=[], labels=[1]),
    "NaN point": dict(points=[[np.nan, 10]], labels=[1]),
    "inf point": dict(points=[[np.inf, 10]], labels=[1]),
    "point outside": dict(points=[[W + 5, 10]], labels=[1]),
    "negative point": dict(points=[[-1, 10]], labels=[1]),
    "points wrong shape": dict(points=[1, 2, 3], labels=[1]),
    "labels length mismatch": dict(points=[[10, 10], [20, 20]], labels=[1]),
    "bad label value": dict(points=[[10, 10]], labels=[5]),
    "float labels": dict(points=[[10, 10]], labels=[0.5]),
    "box inverted": dict(box=[100, 100, 50, 200]),
    "box outside": dict(box=[0, 0, W + 100, 100]),
    "box NaN": dict(box=[0, np.nan, 10, 10]),
    "box wrong length": dict(box=[0, 0, 10]),
    "mask wrong shape": dict(mask=np.ones((10, 10), bool)),
    "mask float": dict(mask=np.ones((H, W), np.float32)),
    "mask and points": dict(mask=np.ones((H, W), bool), points=[[1, 1]], labels=[1]),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
@pytest.mark.parametrize("object_id", [1, 9], ids=["known", "new"])
def test_add_prompt_bad_input_changes_nothing(shared, case, object_id):
    snap = snapshot(shared)
    with pytest.raises(TrackerInputError) as e:
        shared.add_prompt(object_id, **BAD_PROMPTS[case])
    assert len(str(e.value)) > 15
    assert_unchanged(shared, snap)


@pytest.mark.parametrize("bad_id", ["1", 1.0, None, True])
def test_add_prompt_bad_object_id(shared, bad_id):
    snap = snapshot(shared)
    with pytest.raises(TrackerInputError, match="object_id"):
        shared.add_prompt(bad_id, points=[[10, 10]], labels=[1])
    assert_unchanged(shared, snap)


def test_add_prompt_before_first_frame(backend):
    tr = Tracker(backend)
    with pytest.raises(TrackerInputError, match="no frame yet"):
        tr.add_prompt(1, points=[[10, 10]], labels=[1])
    assert tr.object_ids == [] and tr.current_result() is None


def test_more_than_max_objects(backend, frames):
    tr, control = started(backend, frames, max_objects=2), started(backend, frames, max_objects=2)
    with pytest.raises(TrackerInputError, match="max_objects=2"):
        tr.add_prompt(3, points=[[10, 10]], labels=[1])
    assert_same_future(tr, control, frames)
    tr.add_prompt(1, points=[[30, 30]], labels=[1])  # refining a known object still works at capacity


@pytest.mark.parametrize(
    "frame",
    [
        [[0, 0, 0]],
        np.zeros((H, W, 3), np.float32),
        np.zeros((H, W), np.uint8),
        np.zeros((H, W, 4), np.uint8),
        np.zeros((0, W, 3), np.uint8),
        np.zeros((H // 2, W, 3), np.uint8),  # size change without reset
    ],
    ids=["list", "float", "mono", "rgba", "empty", "resized"],
)
def test_step_bad_frame(shared, frame):
    snap = snapshot(shared)
    with pytest.raises(TrackerInputError):
        shared.step(frame)
    assert_unchanged(shared, snap)


def test_remove_object_unknown_and_bad_id(shared):
    snap = snapshot(shared)
    with pytest.raises(TrackerInputError, match="unknown object id 42"):
        shared.remove_object(42)
    with pytest.raises(TrackerInputError, match="object_id"):
        shared.remove_object("1")
    assert_unchanged(shared, snap)


def test_after_all_bad_inputs_tracking_is_bit_exact(shared, backend, frames):
    """Runs after the bad-input tests above (file order): the shared tracker saw all of them."""
    assert_same_future(shared, started(backend, frames), frames)


def test_remove_object_keeps_others_exact(backend, frames):
    tr = started(backend, frames)
    tr.add_prompt(3, points=[[100, 400]], labels=[1])
    control = started(backend, frames)  # never had object 3... but object 3 was added after frame 1
    tr.remove_object(3)
    assert tr.object_ids == [1, 2]
    a, b = tr.step(frames[2]), control.step(frames[2])
    assert np.array_equal(a.low_res_logits, b.low_res_logits)
    tr.remove_object(1)  # a row in the middle: the last row moves into its place
    r = tr.step(frames[0])
    assert r.object_ids == [2]


def test_reset_allows_new_resolution(backend, frames):
    tr = started(backend, frames)
    tr.reset()
    assert tr.object_ids == [] and tr.frame_index == -1
    r = tr.step(np.ascontiguousarray(frames[0][::2, ::2]))
    assert r.masks.shape == (0, H // 2, W // 2)


@pytest.mark.parametrize("kw", [
    {"max_objects": 0}, {"cond_slots": 0}, {"num_frames": 1}, {"max_objects": 2.5},
    {"corrections_as_conditioning": "false"}, {"keep_first_cond_frame": 1},
    {"keep_first_cond_frame": True, "cond_slots": 1},
])
def test_constructor_bad_arguments(backend, kw):
    with pytest.raises(TrackerInputError):
        Tracker(backend, **kw)


def test_results_follow_object_id_order_and_contract(backend, frames):
    tr = Tracker(backend)
    tr.step(frames[0])
    tr.add_prompt(7, points=[[300, 200]], labels=[1])
    r = tr.add_prompt(3, box=[600, 250, 800, 450])
    assert r.object_ids == [3, 7]
    assert r.masks.dtype == bool and r.masks.shape == (2, H, W)
    assert r.scores.dtype == np.float32 and r.boxes.shape == (2, 4)
    for m, box in zip(r.masks, r.boxes):
        if m.any():
            ys, xs = np.nonzero(m)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        else:
            assert np.isnan(box).all()


def test_engines_smaller_than_the_tracker_are_refused(tiny_export_256):
    """Backends with fixed maximum shapes (TensorRT profiles) report `limits`; the tracker checks them."""
    be = load_backend(tiny_export_256)
    be.limits = ShapeLimits(objects=4, mem_slots=8, ptr_slots=17, points=3)
    tr = Tracker(be, max_objects=4, cond_slots=2)
    with pytest.raises(TrackerInputError, match="objects 5 > 4"):
        Tracker(be, max_objects=5)
    with pytest.raises(TrackerInputError, match="mem_slots 9 > 8"):
        Tracker(be, max_objects=2, cond_slots=3)
    # a prompt with more points than the engines take (a box counts 2) is refused before it runs
    tr.step(np.zeros((64, 96, 3), np.uint8))
    with pytest.raises(TrackerInputError, match="points 4 > 3"):
        tr.add_prompt(1, points=[[10, 10], [20, 20]], labels=[1, 0], box=[5, 5, 50, 40])
    assert tr.object_ids == []
    tr.add_prompt(1, points=[[10, 10]], labels=[1], box=[5, 5, 50, 40])
    assert tr.object_ids == [1]


def test_close_releases_the_backend(tiny_export_256):
    be = load_backend(tiny_export_256)
    tr = Tracker(be, max_objects=1)
    assert be.sessions
    tr.close()
    assert be.sessions == {}
    be.close()  # twice is fine


def test_a_new_frame_size_is_its_own_error_type(backend, frames):
    """Callers (the node's worker) tell a resolution change from other bad frames by type, not by message."""
    tr = started(backend, frames)
    h, w = frames[0].shape[:2]
    with pytest.raises(FrameSizeChanged) as e:
        tr.step(frames[2][: h // 2])
    assert isinstance(e.value, TrackerInputError)
    assert e.value.old_hw == (h, w) and e.value.new_hw == (h // 2, w)
    assert tr.frame_index == 1 and tr.object_ids == [1, 2]


def test_empty_prompt_fields_mean_none(backend, frames):
    """`points: [], labels: []` next to a box is a box-only prompt (the prompts file and AddPrompt write it so)."""
    a, b, c = Tracker(backend), Tracker(backend), Tracker(backend)
    for tr in (a, b, c):
        tr.step(frames[0])
    ra = a.add_prompt(1, box=[600, 250, 800, 450])
    rb = b.add_prompt(1, points=[], labels=[], box=[600, 250, 800, 450])
    assert np.array_equal(ra.low_res_logits, rb.low_res_logits) and np.array_equal(ra.masks, rb.masks)
    rc = c.add_prompt(1, points=np.zeros((0, 2)), labels=np.zeros(0, int), box=[600, 250, 800, 450])
    assert np.array_equal(ra.low_res_logits, rc.low_res_logits)


def test_absurd_sizes_are_refused_with_the_limit_named(shared):
    """A prompt of a million points (array or list) and a 16k x 16k frame: refused before any
    copy or inference (sam2_ros.limits), the state untouched."""
    snap = snapshot(shared)
    n = 1_000_000
    for points, labels in ((np.zeros((n, 2)), np.ones(n, int)), ([[1.0, 1.0]] * n, [1] * n)):
        with pytest.raises(TrackerInputError, match=f"{n} prompt points are over the limit of 256 per prompt"):
            shared.add_prompt(1, points=points, labels=labels)
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (16384, 16384, 3))  # no 768 MiB behind it
    with pytest.raises(TrackerInputError, match="frame of 16384x16384 = 268.4 megapixels is over the limit of 50"):
        shared.step(huge)
    assert_unchanged(shared, snap)
