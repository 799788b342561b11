"""Per-graph export parity (ONNX Runtime vs the PyTorch modules) and manifest checks."""

import json
import shutil

import pytest
import torch

from sam2_ros.backends import load_backend
from sam2_ros.errors import EngineError
from sam2_ros.graph_io import EXPORTED_GRAPHS
from sam2_ros.manifest import load_manifest
from sam2_ros.backends.torch_backend.official import build_video_predictor
from sam2_ros_export.onnx_export import _example_inputs, graph_specs, verify_graph

from conftest import _checkpoint, _export


@pytest.fixture(scope="module", params=["sam2.1_hiera_tiny", "sam2_hiera_tiny"])
def exported(request, artifacts):
    ckpt = _checkpoint(artifacts, request.param)
    return request.param, ckpt, _export(artifacts, request.param, ckpt, 256)


def test_manifest_records_model_graphs_and_versions(exported):
    name, ckpt, out = exported
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"] == name and m["image_size"] == 256 and m["random_weights"] is True  # made by random_checkpoint
    assert set(m["graphs"]) == set(EXPORTED_GRAPHS)
    for g in m["graphs"].values():
        assert g["max_abs_diff_vs_torch"] < 1e-4
        assert len(g["sha256"]) == 64 and g["inputs"] and g["outputs"]
    assert m["exporter"]["opset"] == 17 and m["exporter"]["torch"].startswith("2.")
    dec = m["graphs"]["mask_decoder"]["inputs"]
    assert dec["point_coords"]["shape"][:2] == ["objects", "points"]
    # the image encoder takes a batch of frames (one per stream): a dynamic first axis
    assert m["graphs"]["image_encoder"]["inputs"]["image"]["shape"] == ["frames", 3, 256, 256]
    assert m["image_batch"] == "dynamic" and load_manifest(out).image_batch is None


@pytest.mark.parametrize("n_obj,n_points,mem_slots,frames", [(1, 1, 7, 1), (3, 4, 8, 3)])
def test_each_graph_matches_torch_on_other_shapes(exported, n_obj, n_points, mem_slots, frames):
    name, ckpt, out = exported
    sam = build_video_predictor(name, ckpt, image_size=256)
    flags = json.loads((out / "manifest.json").read_text())["flags"]
    ex = _example_inputs(flags, n_obj=n_obj, mem_slots=mem_slots, ptr_slots=mem_slots + 9, n_points=n_points,
                         frames=frames)
    for spec in graph_specs(sam, flags):
        inputs = {k: ex[k] for k in spec.inputs}
        assert verify_graph(out / f"{spec.name}.onnx", spec, 1e-4, inputs) < 1e-4


def test_masked_bank_equals_official_concatenation(artifacts):
    """Invalid slots are masked, not zero-filled: garbage in them must not change the output."""
    ckpt = _checkpoint(artifacts, "sam2.1_hiera_tiny")
    sam = build_video_predictor("sam2.1_hiera_tiny", ckpt, image_size=256)
    flags = json.loads((_export(artifacts, "sam2.1_hiera_tiny", ckpt, 256) / "manifest.json").read_text())["flags"]
    spec = [s for s in graph_specs(sam, flags) if s.name == "memory_attention"][0]
    ex = dict(spec.inputs)
    with torch.inference_mode():
        a = spec.module(*ex.values())
        ex["mem_feats"] = ex["mem_feats"].clone()
        ex["mem_feats"][~ex["mem_valid"]] = 1e3
        ex["obj_ptrs"] = ex["obj_ptrs"].clone()
        ex["obj_ptrs"][~ex["ptr_valid"]] = -1e3
        b = spec.module(*ex.values())
    assert torch.allclose(a, b, atol=1e-5)


def test_missing_or_mismatched_exports_are_clear_errors(tmp_path, tiny_export_256):
    with pytest.raises(EngineError, match="does not exist"):
        load_backend(tmp_path / "nope")
    with pytest.raises(EngineError, match="manifest.json is missing"):
        load_backend(tmp_path)
    bad = tmp_path / "copy"
    shutil.copytree(tiny_export_256, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EngineError, match="format_version"):
        load_backend(bad)
    m["format_version"] = 1
    (bad / "manifest.json").write_text(json.dumps(m))
    (bad / "memory_encoder.onnx").unlink()
    with pytest.raises(EngineError, match="memory_encoder.onnx is missing"):
        load_backend(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(EngineError, match="not valid JSON"):
        load_manifest(bad)
    with pytest.raises(EngineError, match="unknown backend"):
        load_backend(tiny_export_256, "tensorflow")


def test_unknown_model_and_bad_size_are_refused(tmp_path):
    from sam2_ros_export.onnx_export import export_model

    with pytest.raises(ValueError, match="unknown model"):
        export_model("sam3_giant", None, tmp_path)
    with pytest.raises(ValueError, match="multiple of 64"):
        export_model("sam2.1_hiera_tiny", None, tmp_path, image_size=300)


def test_random_weights_flag_follows_the_checkpoint(exported, tmp_path):
    """A checkpoint of random_checkpoint is marked; the same weights saved as a plain official file are not."""
    from sam2_ros_export.checkpoint import is_random_checkpoint

    _, ckpt, _ = exported
    assert is_random_checkpoint(ckpt)
    plain = tmp_path / "official_format.pt"
    torch.save({"model": torch.load(ckpt, map_location="cpu", weights_only=True)["model"]}, plain)
    assert not is_random_checkpoint(plain)


def test_backend_options_are_checked_and_mapped(tiny_export_256):
    from sam2_ros.backends import backend_options

    with pytest.raises(EngineError, match="takes no option checkpoint"):
        load_backend(tiny_export_256, "onnxruntime", checkpoint="x.pt")
    # one mapper for the CLI and the node: only what the chosen backend takes, unset values dropped
    settings = {"providers": ["cpu"], "intra_op_threads": 0, "checkpoint": "ck.pt", "device": None}
    assert backend_options("onnxruntime", **settings) == {"providers": ["cpu"]}
    assert backend_options("torch", **settings) == {"checkpoint": "ck.pt"}
    assert backend_options("tensorrt", use_cuda_graph=False, device=0) == {"use_cuda_graph": False}
    with pytest.raises(EngineError, match="unknown backend"):
        backend_options("tensorflow")
