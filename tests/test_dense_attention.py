"""Memory attention over packed valid slots (unmasked) equals the masked graph over the bank."""

import json
import shutil

import numpy as np
import pytest
import torch

from sam2_ros.attention_packing import dense_groups, row_order
from sam2_ros.backends import load_backend
from sam2_ros.backends.base import ImageFeatures
from sam2_ros.backends.torch_backend.official import build_video_predictor
from sam2_ros_export.onnx_export import _example_inputs, graph_specs


def _mixed_validity(n: int, m: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with different valid-slot counts and holes (a filling ring, unused conditioning slots)."""
    mem_valid = np.ones((n, m), bool)
    ptr_valid = np.ones((n, p), bool)
    mem_valid[0, 2:5] = False  # a young object: part of its ring still empty
    ptr_valid[0, 4:9] = False
    mem_valid[1, -1] = False  # one conditioning slot unused
    ptr_valid[1, -1] = False
    if n > 3:
        mem_valid[3, 1] = False  # same counts as row 1, other holes: same group
        ptr_valid[3, 0] = False
    return mem_valid, ptr_valid


def test_groups_pack_rows_by_valid_counts():
    mem_valid, ptr_valid = _mixed_validity(4, 8, 17)
    groups = dense_groups(mem_valid, ptr_valid)
    assert sorted(tuple(g.rows) for g in groups) == [(0,), (1, 3), (2,)]
    for g in groups:
        assert not g.whole
        for i, row in enumerate(g.rows):
            assert np.array_equal(g.mem_slots[i], np.flatnonzero(mem_valid[row]))
            assert np.array_equal(g.ptr_slots[i], np.flatnonzero(ptr_valid[row]))
    order = row_order(groups)
    assert np.array_equal(np.concatenate([g.rows for g in groups])[order], np.arange(4))
    whole = dense_groups(np.ones((2, 3), bool), np.ones((2, 5), bool))
    assert len(whole) == 1 and whole[0].whole and row_order(whole) is None
    no_memory = mem_valid.copy()
    no_memory[2] = False
    assert dense_groups(no_memory, ptr_valid) is None  # the masked graph handles it


@pytest.fixture(scope="module")
def graphs(tiny_checkpoint, tiny_export_256):
    sam = build_video_predictor("sam2.1_hiera_tiny", tiny_checkpoint, image_size=256)
    flags = json.loads((tiny_export_256 / "manifest.json").read_text())["flags"]
    return {s.name: s.module for s in graph_specs(sam, flags)}, flags


def _inputs(flags, n=4, m=8, p=17):
    ex = _example_inputs(flags, n_obj=n, mem_slots=m, ptr_slots=p)
    mem_valid, ptr_valid = _mixed_validity(n, m, p)
    ex["mem_valid"], ex["ptr_valid"] = torch.from_numpy(mem_valid), torch.from_numpy(ptr_valid)
    ex["mem_feats"][~ex["mem_valid"]] = 1e3  # garbage in invalid slots must not leak in
    ex["obj_ptrs"][~ex["ptr_valid"]] = -1e3
    return ex


def test_dense_graph_on_packed_slots_equals_masked_graph(graphs):
    modules, flags = graphs
    ex = _inputs(flags)
    with torch.inference_mode():
        masked = modules["memory_attention"](*(ex[k] for k in (
            "image_embed", "mem_feats", "mem_tpos_row", "mem_valid", "obj_ptrs", "ptr_tpos", "ptr_valid")))
        for g in dense_groups(ex["mem_valid"].numpy(), ex["ptr_valid"].numpy()):
            r = g.rows[:, None]
            dense = modules["memory_attention_dense"](
                ex["image_embed"], ex["mem_feats"][r, g.mem_slots], ex["mem_tpos_row"][r, g.mem_slots],
                ex["obj_ptrs"][r, g.ptr_slots], ex["ptr_tpos"][r, g.ptr_slots],
            )
            assert (dense - masked[g.rows]).abs().max().item() < 1e-5


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_backends_pack_valid_slots(backend, graphs, tiny_export_256):
    """attend_memory (packed, unmasked) equals the backend's own masked graph, row by row."""
    _, flags = graphs
    ex = {k: v.numpy() for k, v in _inputs(flags).items()}
    b = load_backend(tiny_export_256, backend, **({"device": "cpu"} if backend == "torch" else {}))
    assert b.has_dense_attention
    st = b.storage
    feats = ImageFeatures(st.asarray(ex["feat_s0"]), st.asarray(ex["feat_s1"]), st.asarray(ex["image_embed"]))
    args = [ex["mem_tpos_row"], ex["mem_valid"], st.asarray(ex["obj_ptrs"]), ex["ptr_tpos"], ex["ptr_valid"]]
    packed = st.to_host(b.attend_memory(feats, st.asarray(ex["mem_feats"]), *args))
    masked = st.to_host(b._attend_masked(feats, st.asarray(ex["mem_feats"]), *args))
    assert packed.shape == masked.shape == (4, 256, 16, 16)
    assert np.abs(packed - masked).max() < 1e-4
    # every slot valid: the bank's buffers go in as they are
    ex["mem_valid"][:] = True
    ex["ptr_valid"][:] = True
    ex["mem_feats"] = np.random.default_rng(0).standard_normal(ex["mem_feats"].shape, np.float32)
    ex["obj_ptrs"] = np.random.default_rng(1).standard_normal(ex["obj_ptrs"].shape, np.float32)
    args = [ex["mem_tpos_row"], ex["mem_valid"], st.asarray(ex["obj_ptrs"]), ex["ptr_tpos"], ex["ptr_valid"]]
    whole = st.to_host(b.attend_memory(feats, st.asarray(ex["mem_feats"]), *args))
    assert np.abs(whole - st.to_host(b._attend_masked(feats, st.asarray(ex["mem_feats"]), *args))).max() < 1e-4


def test_an_export_without_the_dense_graph_runs_masked(tmp_path, tiny_export_256):
    old = tmp_path / "old"
    shutil.copytree(tiny_export_256, old)
    m = json.loads((old / "manifest.json").read_text())
    del m["graphs"]["memory_attention_dense"]
    (old / "manifest.json").write_text(json.dumps(m))
    (old / "memory_attention_dense.onnx").unlink()
    b = load_backend(old)
    assert not b.has_dense_attention and "memory_attention_dense" not in b.sessions
