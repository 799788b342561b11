"""MemoryBank: slot writes, validity, temporal rows, pointer offsets, eviction, no reallocation."""

import numpy as np
import pytest

from sam2_ros.memory_bank import MemoryBank
from sam2_ros.storage import round_to_bfloat16


def bank(**kw):
    args = dict(max_objects=3, cond_slots=2, feat_hw=4, mem_dim=2, hidden_dim=8)
    args.update(kw)
    return MemoryBank(**args)


def feats(v):
    return np.full((4, 2), v, np.float32)


def test_recent_ring_gives_six_previous_frames_with_temporal_rows():
    b = bank()
    b.write_conditioning(0, 0, feats(100), np.zeros(8, np.float32))
    for t in range(1, 10):
        b.write_frame(slice(0, 1), t, feats(t)[None], np.full((1, 8), t, np.float32))
    inp = b.attention_inputs(0, 1, 10, ptr_span=15)
    frames = b.mem_frame[0, : b.recent]
    valid = inp.mem_valid[0, : b.recent]
    assert sorted(frames[valid]) == [4, 5, 6, 7, 8, 9]
    # frame t-k uses maskmem_tpos_enc row k-1; conditioning frames row num_maskmem-1
    for s in range(b.recent):
        assert inp.mem_tpos_row[0, s] == 10 - frames[s] - 1
    assert inp.mem_valid[0, b.recent] and inp.mem_tpos_row[0, b.recent] == 6
    # pointers: 9 recent (1..9 back) + the conditioning one at offset 10
    assert inp.ptr_valid[0].sum() == 10
    cond_ptr = inp.ptr_tpos[0, b.ptr_recent]
    assert cond_ptr == pytest.approx(10 / 15)


def test_current_frame_is_never_its_own_memory():
    b = bank()
    b.write_frame(slice(0, 1), 5, feats(5)[None], np.ones((1, 8), np.float32))
    inp = b.attention_inputs(0, 1, 5, ptr_span=15)
    assert not inp.mem_valid.any() and not inp.ptr_valid.any()


def test_pointer_span_limits_recent_pointers_and_scales_offsets():
    b = bank()
    for t in range(20):
        b.write_frame(slice(0, 1), t, feats(t)[None], np.ones((1, 8), np.float32))
    inp = b.attention_inputs(0, 1, 20, ptr_span=7)
    assert inp.ptr_valid[0].sum() == 7
    assert np.allclose(np.sort(inp.ptr_tpos[0][inp.ptr_valid[0]]), np.arange(1, 8) / 7)


def test_conditioning_frame_leaves_recent_slots_and_latest_k_are_kept():
    b = bank(cond_slots=2)
    b.write_frame(slice(0, 1), 3, feats(3)[None], np.ones((1, 8), np.float32))
    b.write_conditioning(0, 3, feats(30), np.ones(8, np.float32))
    assert 3 not in b.mem_frame[0, : b.recent] and 3 not in b.ptr_frame[0, : b.ptr_recent]
    b.write_conditioning(0, 7, feats(70), np.ones(8, np.float32))
    b.write_conditioning(0, 9, feats(90), np.ones(8, np.float32))  # evicts frame 3
    assert b.conditioning_frames(0) == [7, 9]
    b.write_conditioning(0, 9, feats(91), np.ones(8, np.float32))  # same frame: same slot
    assert b.conditioning_frames(0) == [7, 9]
    assert (b.mem_feats[0, b.recent:] == 91).any()


def test_evicted_conditioning_frame_stays_a_recent_memory_while_recent():
    """The official predictor with max_cond_frames_in_attn=K attends to an unselected
    conditioning frame among the last frames as a recent memory."""
    b = bank(cond_slots=2)
    b.write_conditioning(0, 0, feats(10), np.full(8, 10, np.float32))
    b.write_frame(slice(0, 1), 1, feats(1)[None], np.ones((1, 8), np.float32))
    b.write_conditioning(0, 2, feats(20), np.full(8, 20, np.float32))
    b.write_conditioning(0, 3, feats(30), np.full(8, 30, np.float32))  # evicts frame 0 (recent for frames 1..6)
    assert b.conditioning_frames(0) == [2, 3]
    inp = b.attention_inputs(0, 1, 4, ptr_span=15)
    recent = {int(f): int(inp.mem_tpos_row[0, s]) for s, f in enumerate(b.mem_frame[0, : b.recent]) if inp.mem_valid[0, s]}
    assert recent == {0: 3, 1: 2}  # frame t-k uses temporal row k-1
    s0 = list(b.mem_frame[0, : b.recent]).index(0)
    assert (b.mem_feats[0, s0] == 10).all()
    assert 0 in b.ptr_frame[0, : b.ptr_recent]
    # a later conditioning eviction of a frame whose ring slot is taken by a newer frame is dropped
    for t in range(4, 10):
        b.write_frame(slice(0, 1), t, feats(t)[None], np.ones((1, 8), np.float32))
    b.write_conditioning(0, 10, feats(40), np.full(8, 40, np.float32))  # evicts frame 2: slot holds frame 8
    assert 2 not in b.mem_frame[0] and b.mem_frame[0, 2 % b.recent] == 8
    assert 2 in b.ptr_frame[0, : b.ptr_recent]  # pointers reach 15 frames back: still recent


def test_keep_first_conditioning_frame():
    b = bank(cond_slots=3, keep_first_cond_frame=True)
    for t in (0, 20, 40, 60, 80):
        b.write_conditioning(0, t, feats(t), np.ones(8, np.float32))
    assert b.conditioning_frames(0) == [0, 60, 80]
    latest = bank(cond_slots=3)
    for t in (0, 20, 40, 60, 80):
        latest.write_conditioning(0, t, feats(t), np.ones(8, np.float32))
    assert latest.conditioning_frames(0) == [40, 60, 80]
    with pytest.raises(ValueError, match="cond_slots >= 2"):
        bank(cond_slots=1, keep_first_cond_frame=True)


def test_views_are_handed_out_and_buffers_never_reallocated():
    b = bank()
    ptrs = [buf.ctypes.data for buf in (b.mem_feats, b.obj_ptrs, b.mem_frame, b.ptr_frame)]
    for t in range(50):
        b.write_frame(slice(0, 2), t, np.ones((2, 4, 2), np.float32), np.ones((2, 8), np.float32))
        if t % 10 == 0:
            b.write_conditioning(1, t, feats(t), np.ones(8, np.float32))
        inp = b.attention_inputs(0, 2, t + 1, 15)
        assert np.shares_memory(inp.mem_feats, b.mem_feats)
        assert np.shares_memory(inp.obj_ptrs, b.obj_ptrs)
    assert ptrs == [buf.ctypes.data for buf in (b.mem_feats, b.obj_ptrs, b.mem_frame, b.ptr_frame)]


def test_only_used_conditioning_slots_are_handed_out():
    b = bank(cond_slots=3)
    b.write_conditioning(0, 0, feats(1), np.ones(8, np.float32))
    inp = b.attention_inputs(0, 1, 1, 15)
    assert inp.mem_feats.shape[1] == b.recent + 1 and inp.obj_ptrs.shape[1] == b.ptr_recent + 1


def test_move_and_clear_rows():
    b = bank()
    b.write_conditioning(2, 4, feats(4), np.full(8, 4, np.float32))
    b.move(2, 0)
    assert b.conditioning_frames(0) == [4] and b.conditioning_frames(2) == []
    assert (b.obj_ptrs[2] == 0).all()


def test_bfloat16_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 3
    want = torch.from_numpy(x.copy()).to(torch.bfloat16).float().numpy()
    assert np.array_equal(round_to_bfloat16(x), want)


@pytest.mark.parametrize("kw", [{"max_objects": 0}, {"cond_slots": 0}])
def test_bad_sizes_are_refused(kw):
    with pytest.raises(ValueError):
        bank(**kw)


def test_write_frame_by_index_rows():
    b = bank()
    b.write_frame(np.array([0, 2]), 4, np.stack([feats(1), feats(2)]), np.ones((2, 8), np.float32))
    assert b.mem_frame[:, 4 % b.recent].tolist() == [4, -1, 4]
    assert (b.mem_feats[2, 4 % b.recent] == 2).all()


def test_fill_holes_fills_small_8_connected_background_regions_only():
    from sam2_ros.postprocess import fill_holes

    m = np.full((1, 20, 20), 5.0, np.float32)
    m[0, 2:4, 2:4] = -3.0  # 4-px hole: filled
    m[0, 10, 10] = -1.0  # diagonal pair: one 8-connected 2-px hole: filled
    m[0, 11, 11] = -1.0
    m[0, 14:17, 5:8] = -2.0  # 9-px hole: kept
    m[0, :, 18:] = -4.0  # large background at the border: kept
    out = fill_holes(m.copy(), 8)[0]
    assert (out[2:4, 2:4] == 0.1).all() and out[10, 10] == 0.1 and out[11, 11] == 0.1
    assert (out[14:17, 5:8] == -2.0).all() and (out[:, 18:] == -4.0).all()
    assert (out[m[0] > 0] == 5.0).all()
    assert np.array_equal(fill_holes(m.copy(), 0), m)
