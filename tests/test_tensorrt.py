"""TensorRT engines: the CPU-side build logic on a real export, and the GPU backend where it can run.

CPU tests (always run): which layers stay FP32, the mixed-precision ONNX rewrite for strongly
typed TensorRT (validated by the ONNX checker and ONNX Runtime against FP32), optimisation
profiles, the manifest entry and the compatibility check, the inspector's fused-attention
report, the precision and workspace choices, the bookkeeping of execution contexts, CUDA graphs
and pinned memory. The device choice (builder and backend, in every calling thread) is checked by
inspection of the calls made, with recording fakes of ``cuda-python``'s runtime and of
``tensorrt``. GPU tests skip, with the reason, without TensorRT and a CUDA device; they build
engines and compare them with ONNX Runtime on CPU. The GPU benchmark's tests are in
test_gpu_bench.py.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
pytest.importorskip("sam2")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sam2_ros.backends import load_backend  # noqa: E402
from sam2_ros.backends.tensorrt.backend import (  # noqa: E402
    MANIFEST_KEY,
    check_engine_compatibility,
    engine_file_problems,
    file_sha256,
    pitched_layout,
    resolve_device_memory,
    root_array,
    strided_rows,
)
from sam2_ros.backends.tensorrt.bookkeeping import GraphBook, PinnedOwners, ShapeContexts  # noqa: E402
from sam2_ros.errors import EngineError  # noqa: E402
from sam2_ros.graph_io import GRAPH_NAMES
from sam2_ros.manifest import load_manifest  # noqa: E402
from sam2_ros.backends.tensorrt.build import (  # noqa: E402
    attention_fusion_report,
    choose_precision,
    default_workspace_gb,
    engine_manifest_entry,
    fp16_overflow_audit,
    mixed_precision_model,
    onnx_node_for_layer,
    precision_plan,
    profile_shapes,
    write_engine_manifest,
)


@pytest.fixture(scope="module")
def export_dir(tiny_export_256):
    """A real export of SAM 2.1 hiera-tiny at 256 with random weights (conftest)."""
    return tiny_export_256


@pytest.fixture(scope="module")
def manifest(export_dir):
    return json.loads((export_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def models(export_dir):
    return {g: onnx.load(str(export_dir / f"{g}.onnx")) for g in GRAPH_NAMES}


def example_feeds(manifest, n_obj=2, mem_slots=8, ptr_slots=17, n_points=3):
    from sam2_ros_export.onnx_export import _example_inputs

    ex = _example_inputs(manifest["flags"], n_obj=n_obj, mem_slots=mem_slots, ptr_slots=ptr_slots, n_points=n_points)
    return {k: v.numpy() for k, v in ex.items()}


def run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {k: feeds[k] for k in names})


# ------------------------------------------------------------------ precision plan
def test_plan_keeps_normalisation_softmax_and_sums_in_fp32(models):
    from sam2_ros.backends.tensorrt.build import _tensor_types

    for g, model in models.items():
        plan = precision_plan(model)
        types = _tensor_types(model)
        ops = {n.name: n.op_type for n in model.graph.node}
        float_out = {n.name for n in model.graph.node if types.get(n.output[0]) == TensorProto.FLOAT}
        kept = {ops[n] for n, r in plan.fp32_nodes.items() if r != "constant"}
        for op in ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Pow"):
            for n, t in ops.items():
                if t == op and n in float_out:  # integer sums (the stability-score areas) need nothing
                    assert n in plan.fp32_nodes, f"{g}: {op} {n} not kept in FP32"
        # the heavy compute stays FP16
        assert not kept & {"MatMul", "Gemm", "Conv", "ConvTranspose"}, (g, kept)
    # SAM 2's hand-written LayerNorm2d (memory encoder): var + eps before the square root is FP32 too
    me = models["memory_encoder"]
    plan = precision_plan(me)
    producers = {o: n for n in me.graph.node for o in n.output}
    for n in me.graph.node:
        if n.op_type == "Sqrt":
            add = producers[n.input[0]]
            assert add.op_type == "Add" and add.name in plan.fp32_nodes


def test_plan_reasons_can_be_narrowed(models):
    full = precision_plan(models["mask_decoder"])
    no_softmax = precision_plan(models["mask_decoder"], reasons={"layernorm", "norm_reduction", "reduction", "trig", "constant"})
    assert "softmax" in full.summary() and "softmax" not in no_softmax.summary()
    with pytest.raises(ValueError, match="unknown FP32 reasons"):
        precision_plan(models["mask_decoder"], reasons={"everything"})


# ------------------------------------------------------ mixed-precision ONNX (strong typing)
@pytest.mark.parametrize("graph", GRAPH_NAMES)
def test_mixed_precision_graph_is_valid_fp16_and_close_to_fp32(models, manifest, graph):
    model = models[graph]
    plan = precision_plan(model)
    mixed = mixed_precision_model(model, plan)
    onnx.checker.check_model(mixed, full_check=True)  # strict type inference: every Cast in place
    # I/O stays FP32 with the same names; the weights of the heavy layers became FP16
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in [*m.graph.input, *m.graph.output]]  # noqa: E731
    assert io(mixed) == io(model)
    # every matrix product and convolution computes in FP16 (its inputs are FP16 tensors)
    from sam2_ros.backends.tensorrt.build import _tensor_types

    types = _tensor_types(mixed)
    heavy = [n for n in mixed.graph.node if n.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose")]
    assert heavy
    for n in heavy:
        assert {types[x] for x in n.input if x} == {TensorProto.FLOAT16}, (graph, n.name)
    # same results as FP32 within FP16 rounding (at two object / slot / point counts when dynamic)
    shapes = [{}] if graph == "image_encoder" else [{}, {"n_obj": 1, "mem_slots": 7, "ptr_slots": 16, "n_points": 1}]
    for kw in shapes:
        feeds = example_feeds(manifest, **kw)
        for ref, got in zip(run(model, feeds), run(mixed, feeds)):
            assert got.dtype == ref.dtype and got.shape == ref.shape
            scale = max(float(np.abs(ref).max()), 1e-3)
            assert float(np.abs(ref - got).max()) <= 1e-2 * scale, graph


def test_mixed_precision_keeps_subgraphs_and_clips_initializers():
    """An ``If`` reading an outer initializer, and a weight beyond the FP16 range."""
    big = numpy_helper.from_array(np.array([[1e6, -1e6], [np.inf, 0.5]], np.float32), "w")
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["t_out"])], "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 2])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["w"], ["e_out"])], "else", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 2])]
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        helper.make_node("ReduceSum", ["y"], ["s"], name="sum", keepdims=1),
        helper.make_node("If", ["c"], ["branch"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Add", ["y", "branch"], ["out"], name="add"),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 2]), helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1])],
        [big],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    plan = precision_plan(model)
    assert plan.fp32_nodes == {"sum": "reduction"}
    mixed = mixed_precision_model(model, plan)
    onnx.checker.check_model(mixed, full_check=True)
    w16 = [numpy_helper.to_array(i) for i in mixed.graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert len(w16) == 1 and w16[0][0, 0] == 65504 and w16[0][0, 1] == -65504 and np.isinf(w16[0][1, 0])
    assert any(i.name == "w" and i.data_type == TensorProto.FLOAT for i in mixed.graph.initializer)  # still read by the If
    # ONNX Runtime on CPU runs it (it checks types; it does not emulate FP16 rounding faithfully)
    x = np.array([[1e-3, 2e-3]], np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        (ref, _), (out, _) = run(model, feeds), run(mixed, feeds)
        assert out.dtype == np.float32 and out.shape == ref.shape
        small = np.abs(ref) < 100
        np.testing.assert_allclose(out[small], ref[small], rtol=1e-2, atol=1e-3)


def test_overflow_audit_finds_values_beyond_fp16(tmp_path, export_dir, manifest):
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"], name="scale_up"), helper.make_node("Relu", ["y"], ["z"], name="relu")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array([1e5], np.float32), "k")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    found = fp16_overflow_audit(path, {"x": np.array([1.0, -2.0, 0.1], np.float32)})
    assert [(n, t) for n, t, _ in found] == [("scale_up", "y"), ("<output>", "z")]
    model = onnx.load(str(path))
    assert precision_plan(model, extra_fp32_nodes=["scale_up"]).fp32_nodes["scale_up"] == "requested"
    # the real memory encoder on its example inputs stays inside the FP16 range
    feeds = example_feeds(manifest)
    names = [i.name for i in onnx.load(str(export_dir / "memory_encoder.onnx")).graph.input]
    assert fp16_overflow_audit(export_dir / "memory_encoder.onnx", {k: feeds[k] for k in names}) == []


# ------------------------------------------------------------------ profiles
def test_profile_shapes_from_the_manifest(manifest):
    size = manifest["image_size"]
    assert profile_shapes(manifest, "image_encoder") == {"image": ((1, 3, size, size),) * 3}
    assert profile_shapes(manifest, "image_encoder", max_streams=4)["image"] == (
        (1, 3, size, size), (1, 3, size, size), (4, 3, size, size))
    old = copy.deepcopy(manifest)  # an export from before the frames axis: a fixed batch, no profile
    old["graphs"]["image_encoder"]["inputs"]["image"]["shape"] = [1, 3, size, size]
    assert profile_shapes(old, "image_encoder", max_streams=4) == {}
    with pytest.raises(ValueError):
        profile_shapes(manifest, "image_encoder", max_streams=0)
    ma = profile_shapes(manifest, "memory_attention", max_objects=8, cond_slots=2, opt_objects=2)
    hw = manifest["flags"]["feat_size"] ** 2
    assert ma["mem_feats"] == ((1, 6, hw, 64), (2, 8, hw, 64), (8, 8, hw, 64))
    assert ma["obj_ptrs"] == ((1, 15, 256), (2, 17, 256), (8, 17, 256))
    assert ma["mem_valid"] == ((1, 6), (2, 8), (8, 8)) and "image_embed" not in ma
    dec = profile_shapes(manifest, "mask_decoder", max_objects=4, max_points=6)
    assert dec["point_coords"] == ((1, 1, 2), (1, 1, 2), (4, 6, 2))
    assert set(dec) == {"pix_feat", "no_mem", "point_coords", "point_labels", "mask_input", "has_mask", "multimask"}
    assert set(profile_shapes(manifest, "memory_encoder")) == {"low_res_masks", "binarize", "object_score_logits"}
    with pytest.raises(ValueError):
        profile_shapes(manifest, "mask_decoder", max_objects=2, opt_objects=3)
    with pytest.raises(ValueError):
        profile_shapes(manifest, "mask_decoder", max_points=0)
    odd = copy.deepcopy(manifest)
    odd["graphs"]["memory_encoder"]["inputs"]["binarize"]["shape"] = ["cameras"]
    with pytest.raises(ValueError, match="cameras"):
        profile_shapes(odd, "memory_encoder")


# ------------------------------------------------------------------ manifest and compatibility
INFO = {"tensorrt_version": "10.13.3.9", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def fake_engine_dir(tmp_path, export_dir, manifest, max_streams=1):
    """An engine directory whose 'engines' are plain files with real hashes (no GPU needed)."""
    out = tmp_path / "engines"
    out.mkdir()
    engines = {}
    for g in GRAPH_NAMES:
        p = out / f"{g}.engine"
        p.write_bytes(g.encode() * 100)
        engines[g] = {"file": p.name, "sha256": file_sha256(p)}
    profiles = {g: profile_shapes(manifest, g, max_streams=max_streams) for g in GRAPH_NAMES}
    limits = {"max_objects": 8, "max_points": 8, "cond_slots": 2, "opt_objects": 1, "max_streams": max_streams}
    entry = engine_manifest_entry(INFO, "fp16", "strong", limits, profiles, engines)
    write_engine_manifest(export_dir, out, entry)
    return out, entry


def test_engine_manifest_round_trip_and_compatibility(tmp_path, export_dir, manifest):
    out, entry = fake_engine_dir(tmp_path, export_dir, manifest)
    m = load_manifest(out)  # a complete engine directory: constants copied, tensorrt entry added
    e = m.data[MANIFEST_KEY]
    assert e["precision"] == "fp16" and e["max_objects"] == 8 and e["tensorrt_version"] == INFO["tensorrt_version"]
    assert e["profiles"]["memory_attention"]["mem_feats"]["max"][:2] == [8, 8]
    assert m.data["onnx_dir"] == str(export_dir.resolve())
    assert check_engine_compatibility(e, INFO) == []
    assert engine_file_problems(out, e) == []
    other = {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7"}
    problems = check_engine_compatibility(e, other)
    assert len(problems) == 3
    assert any("TensorRT version '10.13.3.9'" in p and "'10.3.0.30'" in p for p in problems)
    assert any("GPU" in p and "Orin" in p for p in problems)
    assert any("compute capability '9.0'" in p for p in problems)
    assert check_engine_compatibility({k: v for k, v in e.items() if k != "gpu_name"}, INFO) == [
        "the manifest does not record the GPU the engines were built with"
    ]
    assert check_engine_compatibility(None, INFO)
    (out / "memory_encoder.engine").write_bytes(b"changed")
    (out / "mask_decoder.engine").unlink()
    problems = engine_file_problems(out, e)
    assert len(problems) == 2 and any("missing" in p for p in problems) and any("sha256" in p for p in problems)


def test_engine_manifest_entry_rejects_incomplete_input(manifest):
    limits = {"max_objects": 8, "max_points": 8, "cond_slots": 2, "opt_objects": 1}
    good = {g: {"file": f"{g}.engine", "sha256": "0" * 64} for g in GRAPH_NAMES}
    with pytest.raises(ValueError, match="memory_encoder"):
        engine_manifest_entry(INFO, "fp16", "weak", limits, {}, {k: v for k, v in good.items() if k != "memory_encoder"})
    with pytest.raises(ValueError, match="sha256"):
        engine_manifest_entry(INFO, "fp16", "weak", limits, {}, {**good, "image_encoder": {"file": "x.engine"}})
    with pytest.raises(ValueError, match="precision"):
        engine_manifest_entry(INFO, "int8", "weak", limits, {}, good)


def test_loading_the_tensorrt_backend_fails_clearly(tmp_path, export_dir, manifest):
    with pytest.raises(EngineError, match="no TensorRT engines"):
        load_backend(export_dir, "tensorrt")
    out, _ = fake_engine_dir(tmp_path, export_dir, manifest)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EngineError, match="TensorRT Python package"):
            load_backend(out, "tensorrt")
    else:  # TensorRT here: the fake engines must be refused (other machine or unreadable engines)
        with pytest.raises(EngineError):
            load_backend(out, "tensorrt")


# ------------------------------------------------------------------ inspector report
def test_attention_fusion_report():
    fused = {"Layers": [
        {"Name": "/blocks.0/attn/qkv/MatMul", "LayerType": "Gemm", "TacticName": "sm90_xmma_gemm_f16f16"},
        {"Name": "{ForeignNode[/blocks.0/attn/MatMul.../blocks.0/attn/MatMul_1]}", "LayerType": "kgen",
         "TacticName": "_gemm_mha_v2_fp16_sm90", "Metadata": "[ONNX Layer: /blocks.0/attn/Softmax]"},
    ], "Bindings": ["image"]}
    r = attention_fusion_report(json.dumps(fused))
    assert r["fused"] and len(r["fused_layers"]) == 1 and r["unfused_softmax_layers"] == [] and r["layers"] == 2
    unfused = {"Layers": [
        {"Name": "/self_attn/MatMul", "LayerType": "MatrixMultiply", "TacticName": "sm80_gemm"},
        {"Name": "/self_attn/Softmax", "LayerType": "SoftMax", "TacticName": "softmax_fp32"},
        {"Name": "/memory_attention/layers.0/cross_attn/MatMul_1", "LayerType": "MatrixMultiply"},
    ]}
    r = attention_fusion_report(unfused)
    assert not r["fused"] and r["unfused_softmax_layers"] == ["/self_attn/Softmax"]
    names_only = ["/a/MatMul", "/a/Softmax", "/b/Add"]  # ProfilingVerbosity.LAYER_NAMES_ONLY
    assert attention_fusion_report(names_only) == {
        "fused": False, "fused_layers": [], "unfused_softmax_layers": ["/a/Softmax"], "layers": 3,
    }
    assert attention_fusion_report([{"Name": "attn", "LayerType": "Attention"}])["fused"]


def test_tensorrt_layers_map_back_to_onnx_nodes(models):
    model = models["memory_attention"]
    nodes = {n.name for n in model.graph.node}
    out_to_node = {o: n.name for n in model.graph.node for o in n.output}
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    find = lambda name, meta="", outs=(): onnx_node_for_layer(name, meta, outs, nodes, out_to_node)  # noqa: E731
    assert find("anything", f"[ONNX Layer: {softmax.name}]") == softmax.name  # TensorRT 10 layer metadata
    assert find(ln.name) == ln.name
    assert find(f"{ln.name}_2") == ln.name  # an auxiliary layer of the node
    add1 = next(n for n in nodes if n.endswith("/Add_1") and n[:-2] in nodes)
    assert find(f"{add1}_3") == add1  # the longest node-name prefix wins over "/Add"
    assert find("(Unnamed Layer* 12) [Shuffle]", "", [softmax.output[0]]) == softmax.name
    assert find("(Unnamed Layer* 13) [Constant]") is None


# ------------------------------------------------------------------ host copy layout helpers
def test_strided_rows_describes_bank_views():
    bank = np.zeros((8, 9, 16, 4), np.float32)
    assert strided_rows(bank) == (1, bank.nbytes, bank.nbytes)
    view = bank[:3, :7]  # the tracker's attention inputs: first n objects, first m slots
    rows, row_bytes, pitch = strided_rows(view)
    assert (rows, row_bytes, pitch) == (3, 7 * 16 * 4 * 4, 9 * 16 * 4 * 4)
    assert root_array(view) is bank
    assert strided_rows(bank[:, :, ::2]) is None  # not rows of contiguous bytes
    assert strided_rows(np.zeros((0, 3))) is None


def test_pitched_layout_matches_strided_rows_for_element_strides():
    bank = np.zeros((8, 9, 16, 4), np.float32)
    elems = lambda a: tuple(st // a.itemsize for st in a.strides)  # noqa: E731 - torch counts strides in elements
    for view in (bank, bank[:3, :7], bank[:1], bank[2:5, :9]):
        assert pitched_layout(view.shape, elems(view), 4) == strided_rows(view)
    assert pitched_layout((3, 7), (7, 1), 8) == (1, 3 * 7 * 8, 3 * 7 * 8)
    assert pitched_layout((1, 5, 2), (999, 2, 1), 4) == (1, 40, 40)  # a leading 1-dim's stride is irrelevant
    assert pitched_layout(bank[:, :, ::2].shape, elems(bank[:, :, ::2]), 4) is None
    assert pitched_layout((4, 3), (1, 4), 4) is None  # transposed
    assert pitched_layout((0, 3), (3, 1), 4) is None


def test_device_memory_choice():
    assert resolve_device_memory("auto", torch_importable=True) == "torch"
    assert resolve_device_memory("auto", torch_importable=False) == "host"
    assert resolve_device_memory("host", torch_importable=True) == "host"
    with pytest.raises(EngineError, match="needs PyTorch"):
        resolve_device_memory("torch", torch_importable=False)
    with pytest.raises(EngineError, match="device_memory"):
        resolve_device_memory("gpu", torch_importable=True)


# ------------------------------------------------------------------ builder choices
def test_precision_choice_by_tensorrt_version():
    jetpack6 = choose_precision("10.3.0.30")
    assert (jetpack6.mode, jetpack6.strongly_typed, jetpack6.fp16_flag) == ("weak", False, True)
    assert choose_precision("10.11.0.33").mode == "weak"
    for v in ("10.12.0.36", "10.13.3.9", "11.4.0"):
        c = choose_precision(v)
        assert (c.mode, c.strongly_typed, c.fp16_flag) == ("strong", True, False), v
    assert choose_precision("10.3.0", requested="strong").strongly_typed  # asked for explicitly
    assert choose_precision("10.13.3.9", requested="weak").fp16_flag
    with pytest.raises(EngineError, match="no weak typing"):
        choose_precision("11.0.0", requested="weak")
    fp32_old, fp32_new = choose_precision("10.3.0", fp16=False), choose_precision("10.12.0", fp16=False)
    assert fp32_old.mode == fp32_new.mode == "fp32" and not fp32_old.fp16_flag and not fp32_new.fp16_flag
    assert not fp32_old.strongly_typed and fp32_new.strongly_typed
    with pytest.raises(ValueError):
        choose_precision("10.3.0", requested="mixed")


def test_default_workspace_follows_gpu_memory():
    gib = 1 << 30
    assert default_workspace_gb(int(7.4 * gib)) == 1.0  # Jetson Orin Nano 8 GB (shared with the CPU)
    assert default_workspace_gb(8 * gib) == 1.0
    assert default_workspace_gb(int(15.3 * gib)) == 2.0  # Orin NX 16 GB
    assert default_workspace_gb(24 * gib) == 4.0
    assert default_workspace_gb(80 * gib) == 4.0


# ------------------------------------------------------------------ contexts and CUDA graphs (bookkeeping)
class _Launcher:
    """Drives the bookkeeping as TensorRTBackend._prepare / _launch do (one engine per step)."""

    def __init__(self, capacity=8, max_invalidations=3):
        self.engines = {}
        self.capacity = capacity
        self.book = GraphBook(max_graphs=32, max_invalidations=max_invalidations)
        self.actions, self.destroyed, self.shape_sets = [], [], []
        self._handles = 0

    def run(self, steps):
        key, deps = [], []
        for graph, shapes in steps:
            ctx = self.engines.setdefault(graph, ShapeContexts(graph, self.capacity))
            choice = ctx.lookup(shapes)
            if choice.assigned:
                self.shape_sets.append((graph, choice.slot, shapes))  # set_input_shape on that context
                if choice.generation > 0:
                    self.destroyed += self.book.drop_dependents((graph, choice.slot, choice.generation - 1))
            key.append((graph, shapes))
            deps.append(ctx.dep(choice.slot))
        action, dead = self.book.decide(tuple(key), tuple(deps))
        self.destroyed += dead
        if action == GraphBook.CAPTURE:
            self._handles += 1
            self.destroyed += self.book.captured(tuple(key), tuple(deps), self._handles)
        self.actions.append(action)
        return action


def _track(n):  # the fused tracking step for n objects
    return [("memory_attention", ("objects", n)), ("mask_decoder", ("objects", n)), ("memory_encoder", ("objects", n))]


def _click():  # a prompt on one object: attention + decoder for n = 1
    return [("mask_decoder", ("objects", 1, "points", 1))]


def test_alternating_shapes_replay_on_their_own_contexts():
    """A click (n = 1) between tracking frames with n = 3, also a catch-up step with n = 1:
    after warm-up every alternation replays; nothing is captured again."""
    la = _Launcher()
    for _ in range(2):  # warm-up: each sequence eager once, then captured
        la.run(_track(3)), la.run(_click()), la.run(_track(1))
    assert la.actions == ["eager"] * 3 + ["capture"] * 3
    for _ in range(20):
        assert la.run(_track(3)) == "replay"
        assert la.run(_click()) == "replay"
        assert la.run(_track(1)) == "replay"
    assert not la.destroyed
    # one context per shape set and engine; shapes were set once per context
    assert la.engines["mask_decoder"].slots == 3 and la.engines["memory_attention"].slots == 2
    assert len(la.shape_sets) == 7


def test_single_context_stops_recapturing_after_a_few_invalidations():
    """Without user-managed contexts (TensorRT < 10: one context per engine) a click kills the
    tracking step's graph; it is recaptured at most ``max_invalidations - 1`` times, then the
    key runs eagerly for good instead of paying sync + capture + instantiate after every click."""
    la = _Launcher(capacity=1, max_invalidations=3)
    track = tuple(_track(3))
    per_track = []
    for _ in range(6):
        for _ in range(5):
            per_track.append(la.run(_track(3)))
        la.run(_track(1))  # a catch-up step for one object
    assert per_track.count("capture") == 3, per_track
    assert per_track[-10:] == ["eager"] * 10
    assert track in la.book.eager_keys
    # alternating on every frame never even captures (each run finds its context reassigned)
    la2 = _Launcher(capacity=1)
    for _ in range(20):
        la2.run(_track(3)), la2.run(_track(1))
    assert set(la2.actions) == {"eager"} and not la2.destroyed


def test_evicted_context_takes_its_graphs_with_it():
    la = _Launcher(capacity=2)
    for _ in range(2):
        la.run(_track(1)), la.run(_track(2))
    assert la.actions[-2:] == ["capture", "capture"] and len(la.book) == 2
    la.run(_track(3))  # a third shape set takes the least recently used context (n = 1's)
    assert len(la.destroyed) == 1 and len(la.book) == 1  # the n = 1 graph died with its context
    assert la.run(_track(2)) == "replay"  # the other context was untouched
    assert la.run(_track(1)) == "eager"  # n = 1 starts over on a reassigned context
    assert la.engines["memory_attention"].slots == 2


def test_shape_contexts_lru():
    sc = ShapeContexts("mask_decoder", capacity=2)
    a, b, c = sc.lookup("a"), sc.lookup("b"), sc.lookup("a")
    assert (a.slot, a.assigned, b.slot, c.slot, c.assigned) == (0, True, 1, 0, False)
    d = sc.lookup("c")  # "b" is least recently used
    assert (d.slot, d.assigned, d.evicted, d.generation) == (1, True, "b", 1)
    assert sc.shapes_of(1) == "c" and sc.dep(1) == ("mask_decoder", 1, 1)
    with pytest.raises(ValueError):
        ShapeContexts("x", capacity=0)


def test_graph_capture_failure_makes_the_key_eager():
    book = GraphBook()
    deps = (("e", 0, 0),)
    assert book.decide("k", deps)[0] == "eager" and book.decide("k", deps)[0] == "capture"
    book.failed("k")
    assert [book.decide("k", deps)[0] for _ in range(3)] == ["eager"] * 3 and len(book) == 0


# ------------------------------------------------------------------ pinned host memory
def test_dead_banks_are_unpinned_at_the_next_registration():
    calls = []
    reg = PinnedOwners(lambda ptr, n: calls.append(("pin", ptr, n)) is None, lambda ptr: calls.append(("unpin", ptr)), capacity=4)
    bank1 = np.zeros((4, 256), np.float32)
    view = bank1[:2]  # what the backend sees: a view of the bank
    assert reg.register(bank1) and reg.register(bank1)  # once
    p1 = bank1.ctypes.data
    assert calls == [("pin", p1, bank1.nbytes)]
    del bank1
    bank2 = np.zeros((4, 256), np.float32)
    reg.register(bank2)
    assert p1 in reg  # its view still refers to bank 1: still pinned
    del view
    bank3 = np.ones((2, 256), np.float32)
    reg.register(bank3)
    assert ("unpin", p1) in calls and p1 not in reg  # bank 1 is dead now: unpinned
    assert bank2.ctypes.data in reg and bank3.ctypes.data in reg and len(reg) == 2
    # a failed pin is not retried; the capacity bound unpins the least recently used owner
    failing = PinnedOwners(lambda ptr, n: False, lambda ptr: None)
    arr = np.zeros(8)
    assert not failing.register(arr) and not failing.register(arr)
    small = PinnedOwners(lambda ptr, n: True, lambda ptr: calls.append(("unpin", ptr)), capacity=1)
    keep = [np.zeros(4), np.zeros(4)]
    small.register(keep[0]), small.register(keep[1])
    assert ("unpin", keep[0].ctypes.data) in calls and len(small) == 1
    assert small.clear() == [keep[1].ctypes.data] and len(small) == 0


# ------------------------------------------------------------------ device choice (by inspection of the calls made)
class _RecordingCudart:
    """A fake of cuda-python's runtime module: only the calls the TensorRT code makes, each recorded
    with the calling thread and its current device (which, as in CUDA, is per host thread)."""

    class cudaError_t:
        cudaSuccess = 0

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice = 1, 2, 3

    cudaStreamNonBlocking = cudaHostAllocDefault = cudaHostRegisterDefault = cudaEventDisableTiming = 0

    def __init__(self, devices=2):
        import threading

        self.devices, self.calls, self._tls, self._host, self._next = devices, [], threading.local(), [], 1 << 20

    def _rec(self, name, *args):
        import threading

        self.calls.append((threading.current_thread().name, getattr(self._tls, "device", 0), name, args))

    def current(self):
        return getattr(self._tls, "device", 0)

    def cudaGetDeviceCount(self):
        return 0, self.devices

    def cudaGetDeviceProperties(self, device):
        from types import SimpleNamespace

        return 0, SimpleNamespace(name=INFO["gpu_name"].encode(), major=9, minor=0, totalGlobalMem=80 << 30)

    def cudaGetErrorString(self, err):
        return 0, b"fake error"

    def cudaSetDevice(self, device):
        self._tls.device = device
        self._rec("cudaSetDevice", device)
        return (0,)

    def cudaGetDevice(self):
        return 0, self.current()

    def cudaStreamCreateWithFlags(self, flags):
        return 0, 7

    def cudaMalloc(self, n):
        self._next += n + 256
        return 0, self._next

    def cudaHostAlloc(self, n, flags):
        import ctypes

        buf = ctypes.create_string_buffer(n)
        self._host.append(buf)
        return 0, ctypes.addressof(buf)

    def _copy(self, name):
        def f(*args):
            self._rec(name, *args)
            return (0,)
        return f

    def __getattr__(self, name):  # the copies, synchronisation and frees: recorded, successful
        if name.startswith("cuda"):
            return self._copy(name)
        raise AttributeError(name)


def _fake_tensorrt(manifest, entry, cudart):
    """A fake of the tensorrt module built from an export's manifest: engines with its IO and the
    engine entry's profiles; contexts record their enqueues into the cudart fake's log."""
    from types import SimpleNamespace

    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}

    class Context:
        def __init__(self, eng):
            self.eng, self.shapes = eng, {}

        def set_device_memory(self, ptr, size):
            return None

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def update_device_memory_size_for_shapes(self):
            return 0

        def set_tensor_address(self, name, ptr):
            return True

        def get_tensor_shape(self, name):
            io = self.eng.io[name]["shape"]
            n = next((s[0] for s in self.shapes.values()), 1)
            return tuple(n if d in ("objects", "frames") else (d if isinstance(d, int) else 4) for d in io)

        def execute_async_v3(self, stream):
            cudart._rec("execute_async_v3", self.eng.graph)
            return True

    class Engine:
        device_memory_size_v2 = 1 << 20

        def __init__(self, graph):
            g = manifest["graphs"][graph]
            self.graph, self.io = graph, {**g["inputs"], **g["outputs"]}
            self.names, self.n_in = list(g["inputs"]) + list(g["outputs"]), len(g["inputs"])
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_dtype(self, name):
            return dtypes[self.io[name]["dtype"]]

        def get_tensor_mode(self, name):
            return "in" if self.names.index(name) < self.n_in else "out"

        def get_tensor_shape(self, name):
            return tuple(d if isinstance(d, int) else -1 for d in self.io[name]["shape"])

        def get_tensor_profile_shape(self, name, profile):
            p = entry["profiles"][self.graph][name]
            return p["min"], p["opt"], p["max"]

        def create_execution_context(self, strategy=None):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(next(g for g in GRAPH_NAMES if data == g.encode() * 100))

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Builder:
        def __init__(self, logger):
            cudart._rec("trt.Builder")
            raise RuntimeError("stop after the builder")

    return SimpleNamespace(
        __version__=INFO["tensorrt_version"], Logger=Logger, Runtime=Runtime, Builder=Builder, nptype=lambda d: d,
        TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
        ExecutionContextAllocationStrategy=SimpleNamespace(USER_MANAGED="user"),
    )


@pytest.fixture
def fake_cuda(monkeypatch, tmp_path, export_dir, manifest):
    return _fake_cuda(monkeypatch, tmp_path, export_dir, manifest)


def _fake_cuda(monkeypatch, tmp_path, export_dir, manifest, max_streams=1):
    import sam2_ros.backends.tensorrt.backend as backend_mod
    import sam2_ros.backends.tensorrt.build as build_mod

    out, entry = fake_engine_dir(tmp_path, export_dir, manifest, max_streams)
    cudart = _RecordingCudart()
    trt = _fake_tensorrt(manifest, entry, cudart)
    monkeypatch.setattr(backend_mod, "_import_cudart", lambda: cudart)
    monkeypatch.setattr(backend_mod, "_import_tensorrt", lambda: trt)
    monkeypatch.setattr(build_mod, "_import_tensorrt", lambda: trt)
    return cudart, out


def test_builder_makes_its_device_current_before_creating_the_builder(fake_cuda, export_dir, tmp_path):
    from sam2_ros.backends.tensorrt.build import build_engines

    cudart, _ = fake_cuda
    with pytest.raises(RuntimeError, match="stop after the builder"):
        build_engines(export_dir, tmp_path / "built", device=1)
    names = [(c[2], c[1]) for c in cudart.calls]
    assert ("trt.Builder", 1) in names  # the builder was made while device 1 was current
    assert names.index(("cudaSetDevice", 1)) < names.index(("trt.Builder", 1))


def test_backend_makes_its_device_current_in_every_calling_thread(fake_cuda, manifest):
    """The ROS worker thread is not the constructor's: before its first copy or enqueue, the
    backend makes its device current there (the current device is per host thread)."""
    import threading

    from sam2_ros.backends.tensorrt.backend import TensorRTBackend

    cudart, out = fake_cuda
    backend = TensorRTBackend(load_manifest(out), device=1, use_cuda_graph=False, device_memory="host")
    image = np.zeros([1, *manifest["graphs"]["image_encoder"]["inputs"]["image"]["shape"][1:]], np.float32)
    got = {}

    def worker(name, fn):
        t = threading.Thread(target=lambda: got.__setitem__(name, fn()), name=name)
        t.start()
        t.join()

    worker("ros-worker", lambda: backend.encode_image(image))
    worker("reader", lambda: np.asarray(got["ros-worker"].image_embed))
    for thread, first_work in (("ros-worker", "cudaMemcpyAsync"), ("reader", "cudaMemcpyAsync")):
        mine = [c for c in cudart.calls if c[0] == thread]
        work = [i for i, c in enumerate(mine) if c[2] in ("cudaMemcpyAsync", "cudaMemcpy2DAsync", "execute_async_v3")]
        assert work and mine[work[0]][2] == first_work
        assert all(mine[i][1] == 1 for i in work), mine  # every copy and enqueue ran with device 1 current
        assert mine[0][2:] == ("cudaSetDevice", (1,))  # set first, and once
        assert [c[2] for c in mine].count("cudaSetDevice") == 1
    enqueues = [c for c in cudart.calls if c[2] == "execute_async_v3"]
    assert enqueues and all(c[0] == "ros-worker" and c[1] == 1 for c in enqueues)
    # a thread whose device is already current pays no cudaSetDevice
    n_set = sum(c[2] == "cudaSetDevice" for c in cudart.calls)
    backend.encode_image(image)  # the constructor's thread: device 1 since construction
    assert sum(c[2] == "cudaSetDevice" for c in cudart.calls) == n_set
    backend.close()


# ================================================================== GPU (skip without one)
def test_frames_of_several_streams_are_one_encoder_launch(monkeypatch, tmp_path, export_dir, manifest):
    """Engines built with --max-streams 3: the backend's frame limit, one image-encoder launch for
    three frames, each frame's features [1, ...] out; a fourth frame is refused."""
    from sam2_ros.backends.tensorrt.backend import TensorRTBackend

    cudart, out = _fake_cuda(monkeypatch, tmp_path, export_dir, manifest, max_streams=3)
    backend = TensorRTBackend(load_manifest(out), device=0, use_cuda_graph=False, device_memory="host")
    assert backend.limits.frames == 3
    image = np.zeros([1, *manifest["graphs"]["image_encoder"]["inputs"]["image"]["shape"][1:]], np.float32)
    feats = backend.encode_images([image] * 3)
    launches = [c for c in cudart.calls if c[2] == "execute_async_v3"]
    assert [c[3][0] for c in launches] == ["image_encoder"]
    assert len(feats) == 3 and all(np.asarray(f.image_embed).shape[0] == 1 for f in feats)
    with pytest.raises(EngineError, match="1 to 3 frames"):
        backend.encode_images([image] * 4)
    backend.close()


def _gpu_or_skip():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU-only test)")
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        cudart = pytest.importorskip("cuda.cudart", reason="cuda-python is not installed (GPU-only test)")
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        pytest.skip("no CUDA device (GPU-only test)")


@pytest.fixture(scope="module")
def engines(export_dir, tmp_path_factory):
    _gpu_or_skip()
    from sam2_ros.backends.tensorrt.build import build_engines

    root = tmp_path_factory.mktemp("engines")
    cache = root / "timing.cache"
    out = {}
    for precision in ("fp32", "fp16"):
        d = root / precision
        build_engines(export_dir, d, fp16=precision == "fp16", max_objects=4, max_points=4, timing_cache=cache)
        out[precision] = d
    return out


def _graph_feeds(manifest, n_obj):
    feeds = example_feeds(manifest, n_obj=n_obj, mem_slots=7, ptr_slots=16, n_points=2)
    return feeds


def test_gpu_engines_match_onnxruntime_per_graph(engines, export_dir, manifest):
    ref = load_backend(export_dir, "onnxruntime")
    for precision, tol in (("fp32", 2e-3), ("fp16", 5e-2)):
        trt_b = load_backend(engines[precision], "tensorrt")
        m = load_manifest(engines[precision]).data[MANIFEST_KEY]
        assert m["precision"] == precision and set(m["engines"]) == set(GRAPH_NAMES)
        for n in (1, 3):
            f = _graph_feeds(manifest, n)
            fr, ft = ref.encode_image(f["image"]), trt_b.encode_image(f["image"])
            for a, b in zip((fr.feat_s0, fr.feat_s1, fr.image_embed), (ft.feat_s0, ft.feat_s1, ft.image_embed)):
                assert np.abs(np.asarray(b) - a).max() <= tol * max(1.0, np.abs(a).max()), precision
            args = [f[k] for k in ("mem_feats", "mem_tpos_row", "mem_valid", "obj_ptrs", "ptr_tpos", "ptr_valid")]
            pr, pt = ref.attend_memory(fr, *args), trt_b.attend_memory(ft, *args)
            assert np.abs(np.asarray(pt) - pr).max() <= tol * max(1.0, np.abs(pr).max())
            dargs = [f["no_mem"], f["point_coords"], f["point_labels"], f["mask_input"], f["has_mask"], f["multimask"]]
            dr, dt = ref.decode(fr, pr, *dargs), trt_b.decode(ft, pt, *dargs)
            for a, b in zip((dr.iou, dr.obj_ptr, dr.object_score_logits), (dt.iou, dt.obj_ptr, dt.object_score_logits)):
                assert np.abs(b - a).max() <= tol * max(1.0, np.abs(a).max())
            mr = ref.encode_memory(fr, dr.low_res_masks, f["binarize"], dr.object_score_logits)
            mt = trt_b.encode_memory(ft, dr.low_res_masks, f["binarize"], dr.object_score_logits)
            assert np.abs(mt - mr).max() <= tol * max(1.0, np.abs(mr).max())
        trt_b.close()


def test_gpu_track_step_and_cuda_graphs_equal_separate_calls(engines, manifest):
    f = _graph_feeds(manifest, 2)
    attn = {k: f[k] for k in ("mem_feats", "mem_tpos_row", "mem_valid", "obj_ptrs", "ptr_tpos", "ptr_valid")}
    eager = load_backend(engines["fp16"], "tensorrt", use_cuda_graph=False)
    graphs = load_backend(engines["fp16"], "tensorrt", use_cuda_graph=True)
    fe = eager.encode_image(f["image"])
    pix = eager.attend_memory(fe, **attn)
    z, lr = np.zeros(2, np.float32), graphs.engines["mask_decoder"].max_shape["mask_input"][1:]
    sep = eager.decode(fe, pix, z, np.zeros((2, 1, 2), np.float32), np.full((2, 1), -1, np.int32),
                       np.zeros((2, *lr), np.float32), z, np.ones(2, np.float32))
    sep_mem = eager.encode_memory(fe, sep.low_res_masks, z, sep.object_score_logits)
    for _ in range(4):  # eager, eager + capture, replay, replay
        fg = graphs.encode_image(f["image"])
        out, mem = graphs.track_step(fg, attn, multimask=True)
        np.testing.assert_allclose(out.low_res_masks, sep.low_res_masks, atol=1e-3)
        np.testing.assert_allclose(mem, sep_mem, atol=1e-3)
    assert graphs._graphs, "no CUDA graph was captured"


def test_gpu_tracker_on_video_matches_onnxruntime_and_memory_is_flat(engines, export_dir, bedroom_frames):
    from sam2_ros.io.prompts_file import Prompt
    from sam2_ros.io.runner import run_tracker
    from sam2_ros.tracker import Tracker

    frames = bedroom_frames
    prompts = [Prompt(0, 1, np.array([[480.0, 300.0]], np.float32), np.array([1], np.int32)),
               Prompt(4, 2, np.array([[200.0, 200.0]], np.float32), np.array([1], np.int32))]
    ref = run_tracker(Tracker(load_backend(export_dir, "onnxruntime"), max_objects=2), frames, prompts)
    backend = load_backend(engines["fp16"], "tensorrt")
    from cuda.bindings import runtime as cudart

    got = run_tracker(Tracker(backend, max_objects=2), frames, prompts)
    used = cudart.cudaMemGetInfo()[1]
    run_tracker(Tracker(backend, max_objects=2), frames, prompts)
    assert cudart.cudaMemGetInfo()[1] == used  # nothing allocated per frame
    inter = np.logical_and(ref.masks, got.masks).sum(axis=(-1, -2))
    union = np.logical_or(ref.masks, got.masks).sum(axis=(-1, -2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    assert iou.mean() >= 0.98, iou
