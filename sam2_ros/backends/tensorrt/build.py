"""Build TensorRT engines from the exported ONNX graphs (``sam2-ros build``).

Precision
---------
FP16 engines of SAM-family encoders are known to overflow in LayerNorm and in attention
softmax (public TensorRT / EfficientViT-SAM reports; docs/ARCHITECTURE.md): those layers
must stay FP32. :func:`precision_plan` picks them by inspecting the ONNX graph (CPU only):

* ``layernorm``: ``LayerNormalization`` nodes (opset 17 exports ``nn.LayerNorm`` as one node);
* ``norm_reduction``: the primitives of LayerNorm written by hand (SAM 2's ``LayerNorm2d``:
  ``ReduceMean``, ``Pow``, ``Sqrt``) and every element-wise node fed only by FP32 nodes and
  constants (``var + eps``, ``x / std``, the affine ``* w + b``);
* ``reduction``: other float sums (``ReduceSum``; here the one-hot selection of the chosen
  mask, IoU and token). A float sum over many elements overflows FP16 long before its terms
  do (largest finite FP16 value: 65504). The stability-score areas are integer sums in the
  export and need nothing;
* ``softmax``: ``Softmax`` (attention probabilities);
* ``trig``: ``Sin`` / ``Cos`` of the position encodings;
* ``constant``: nodes computed from constants only (TensorRT folds them; FP32 keeps the
  folded values exact).

Two ways to apply the plan, chosen by the TensorRT version (``precision_mode="auto"``,
:func:`choose_precision`):

* ``weak`` (TensorRT < 10.12; JetPack 6 ships 10.3): the FP32 ONNX is parsed, ``BuilderFlag.FP16``
  is set and the planned layers get ``ILayer.precision`` / ``set_output_type`` FP32 with
  ``OBEY_PRECISION_CONSTRAINTS`` (or ``PREFER``).
* ``strong`` (TensorRT >= 10.12, where weak typing is deprecated, and required from 11, where it
  is removed; also valid on older 10.x when asked for): :func:`mixed_precision_model` rewrites
  the ONNX graph itself into FP16 with the planned nodes in FP32 and explicit ``Cast`` nodes,
  I/O kept FP32, and the network is created ``STRONGLY_TYPED``. The rewritten graph runs in ONNX
  Runtime, so it is checked on CPU. FP32 engines are strongly typed from 10.12 too (an FP32
  graph parsed strongly typed is FP32).

Device and memory: the builder makes ``--device`` current (``cudaSetDevice``) before creating
``trt.Builder``, so engines are tuned on the GPU that will run them. The default workspace
limit depends on that GPU's memory (:func:`default_workspace_gb`: 1 GiB on 8 GB Jetsons, whose
memory is shared with the CPU). A timing cache that TensorRT refuses (another TensorRT or GPU)
is reported and replaced by a fresh one.

Optimisation profiles (one per engine): frames 1..``max_streams`` (the image encoder's batch, one
frame per stream; an export without the axis stays at 1), objects 1..``max_objects``, points 1..``max_points``,
memory slots ``recent``..``recent + cond_slots`` and pointer slots ``ptr_recent``..
``ptr_recent + cond_slots`` (``recent = num_maskmem - 1``, ``ptr_recent = max_obj_ptrs - 1``).
The engine directory gets the engines, the inspector's layer dump of each engine, and a
``tensorrt`` entry in ``manifest.json`` (see :func:`engine_manifest_entry`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2_ros.backends.tensorrt.backend import MANIFEST_KEY, _Cuda, runtime_info
from sam2_ros.errors import EngineError
from sam2_ros.graph_io import GRAPH_NAMES
from sam2_ros.manifest import MANIFEST_NAME, file_sha256

log = logging.getLogger(__name__)

FP16_MAX = 65504.0

#: Op types kept in FP32, by reason (see the module docstring).
FP32_OP_REASONS: dict[str, str] = {
    "LayerNormalization": "layernorm",
    "ReduceMean": "norm_reduction",
    "Pow": "norm_reduction",
    "Sqrt": "norm_reduction",
    "ReduceSumSquare": "norm_reduction",
    "ReduceL2": "norm_reduction",
    "ReduceSum": "reduction",
    "ReduceLogSumExp": "reduction",
    "Softmax": "softmax",
    "Sin": "trig",
    "Cos": "trig",
}
#: Element-wise ops that stay FP32 when every non-constant float input comes from an FP32 node.
FP32_FOLLOWERS = {"Add", "Sub", "Mul", "Div", "Sqrt", "Reciprocal", "Neg", "Abs"}
#: Ops that only move or select data: they run in the precision their inputs already have.
DATA_OPS = {
    "Reshape", "Transpose", "Concat", "Slice", "Gather", "GatherElements", "GatherND", "Squeeze",
    "Unsqueeze", "Expand", "Identity", "Tile", "Split", "Flatten", "Pad", "ScatterND", "ScatterElements",
    "Where", "DepthToSpace", "SpaceToDepth", "Max", "Min", "Equal", "Greater", "Less", "GreaterOrEqual",
    "LessOrEqual", "MaxPool", "Resize", "Clip", "Relu",
}
DEFAULT_FP32_REASONS = frozenset({"layernorm", "norm_reduction", "reduction", "softmax", "trig", "constant"})


# ============================================================== precision plan (CPU)
@dataclass
class PrecisionPlan:
    """Nodes of one ONNX graph that must run in FP32, with the reason of each."""

    fp32_nodes: dict[str, str]  # node name -> reason
    fp32_outputs: set[str]  # output tensor names of those nodes
    node_count: int

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reason in self.fp32_nodes.values():
            out[reason] = out.get(reason, 0) + 1
        return dict(sorted(out.items()))


def _ensure_node_names(graph) -> None:
    used = {n.name for n in graph.node if n.name}
    for i, n in enumerate(graph.node):
        if not n.name:
            name = f"{n.op_type}__{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def _tensor_types(model) -> dict[str, int]:
    """Element type of every tensor of the main graph (ONNX shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def _constant_tensors(graph) -> set[str]:
    """Tensors computed from initializers and ``Constant`` nodes only."""
    const = {i.name for i in graph.initializer}
    for n in graph.node:
        ins = [x for x in n.input if x]
        if n.op_type in ("Constant", "ConstantOfShape") and all(x in const for x in ins):
            const.update(n.output)
        elif n.op_type != "Shape" and ins and all(x in const for x in ins) and not _subgraphs(n):
            const.update(n.output)
    return const


def _subgraphs(node) -> list:
    import onnx

    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def precision_plan(model, reasons=DEFAULT_FP32_REASONS, extra_fp32_nodes=(), types: dict | None = None) -> PrecisionPlan:
    """Choose the FP32 nodes of ``model`` (an ``onnx.ModelProto``; node names are filled in if missing)."""
    from onnx import TensorProto

    reasons = set(reasons)
    unknown = reasons - DEFAULT_FP32_REASONS
    if unknown:
        raise ValueError(f"unknown FP32 reasons {sorted(unknown)}; choose from {sorted(DEFAULT_FP32_REASONS)}")
    g = model.graph
    _ensure_node_names(g)
    types = types if types is not None else _tensor_types(model)
    const = _constant_tensors(g)
    fp32: dict[str, str] = {}
    fp32_out: set[str] = set()
    extra = set(extra_fp32_nodes)

    def is_float(name):
        return types.get(name) in (TensorProto.FLOAT, TensorProto.FLOAT16)

    for n in g.node:
        float_ins = [x for x in n.input if x and is_float(x)]
        float_outs = [x for x in n.output if x and is_float(x)]
        reason = None
        if n.name in extra:
            reason = "requested"
        elif float_outs and n.output and all(o in const for o in n.output):
            reason = "constant"
        elif n.op_type in FP32_OP_REASONS and float_outs + float_ins:
            reason = FP32_OP_REASONS[n.op_type]
        elif n.op_type in FP32_FOLLOWERS and float_outs:
            dynamic = [x for x in float_ins if x not in const]
            if dynamic and all(x in fp32_out for x in dynamic):
                reason = "norm_reduction"
        if reason is not None and (reason in reasons or reason == "requested"):
            fp32[n.name] = reason
            fp32_out.update(x for x in n.output if x)
    return PrecisionPlan(fp32, fp32_out, len(g.node))


# ============================================================== mixed-precision ONNX (CPU)
def mixed_precision_model(model, plan: PrecisionPlan):
    """A copy of ``model`` computing in FP16 except ``plan``'s nodes, for strongly typed TensorRT.

    Graph inputs and outputs keep their types (FP32); FP16 initializers are converted copies
    (clipped to the FP16 range); precision changes are explicit ``Cast`` nodes. Nodes with
    subgraphs (``If``) and ops without an FP16 type in their schema stay as they were, their
    outer-scope inputs cast back to their original type.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    src = onnx.ModelProto()
    src.CopyFrom(model)
    g = src.graph
    _ensure_node_names(g)
    orig = _tensor_types(src)
    opset = {o.domain or "": o.version for o in src.opset_import}
    inits = {i.name: i for i in g.initializer}
    const = _constant_tensors(g)
    graph_outputs = {o.name for o in g.output}
    cur: dict[str, int] = {}  # element type of each tensor in the rewritten graph
    for vi in g.input:
        cur[vi.name] = orig.get(vi.name, 0)
    for name, init in inits.items():
        cur[name] = init.data_type
    new_nodes: list = []
    new_inits: list = []
    cast_cache: dict[tuple[str, int], str] = {}
    alias: dict[str, str] = {}  # graph output produced in FP16 -> internal name
    final_casts: list = []
    used_names = {n.name for n in g.node} | {x for n in g.node for x in (*n.input, *n.output)}

    def uniq(base: str) -> str:
        name = base
        i = 0
        while name in used_names or name in cur:
            i += 1
            name = f"{base}_{i}"
        used_names.add(name)
        return name

    def as_type(name: str, target: int) -> str:
        """Name of ``name`` converted to ``target`` (adds a Cast or a converted initializer)."""
        if not name or cur.get(name) == target or cur.get(name) not in (FLOAT, HALF):
            return name
        key = (name, target)
        if key in cast_cache:
            return cast_cache[key]
        suffix = "fp16" if target == HALF else "fp32"
        if name in inits and target == HALF:
            arr = numpy_helper.to_array(inits[name]).astype(np.float32)
            arr = np.clip(arr, -FP16_MAX, FP16_MAX, where=np.isfinite(arr), out=arr.copy())
            new = uniq(f"{name}__{suffix}")
            new_inits.append(numpy_helper.from_array(arr.astype(np.float16), new))
        else:
            new = uniq(f"{name}__{suffix}")
            new_nodes.append(helper.make_node("Cast", [name], [new], name=uniq(f"{name}__cast_{suffix}"), to=target))
        cur[new] = target
        cast_cache[key] = new
        return new

    def schema_of(node):
        try:
            return onnx.defs.get_schema(node.op_type, opset.get(node.domain or "", 1), node.domain or "")
        except Exception:  # noqa: BLE001 - unknown op / domain: keep the node as it is
            return None

    def formal(params, i):
        return params[i] if i < len(params) else (params[-1] if params else None)

    for node in g.node:
        node_inputs = [alias.get(x, x) for x in node.input]
        schema = None if _subgraphs(node) else schema_of(node)
        if schema is None:
            # opaque: inputs (and outer names read by subgraphs) back to their original types
            node_inputs = [as_type(x, orig[x]) if orig.get(x) in (FLOAT, HALF) else x for x in node_inputs]
            for sub in _subgraphs(node):
                _retype_outer_refs(sub, lambda x: as_type(alias.get(x, x), orig[x]) if orig.get(x) in (FLOAT, HALF) else alias.get(x, x))
            out_types = {o: orig.get(o, 0) for o in node.output}
        else:
            vars_in: dict[str, list[int]] = {}
            vars_out: dict[str, list[int]] = {}
            for i in range(len(node_inputs)):
                p = formal(schema.inputs, i)
                if p is not None:
                    vars_in.setdefault(p.type_str, []).append(i)
            for i in range(len(node.output)):
                p = formal(schema.outputs, i)
                if p is not None:
                    vars_out.setdefault(p.type_str, []).append(i)
            allowed = {tc.type_param_str: set(tc.allowed_type_strs) for tc in schema.type_constraints}
            # precision of the node
            float_group_ins = [
                node_inputs[i] for v, idx in vars_in.items() if v in allowed and len(idx) + len(vars_out.get(v, [])) >= 2
                for i in idx if cur.get(node_inputs[i]) in (FLOAT, HALF)
            ]
            if node.name in plan.fp32_nodes or all(o in const for o in node.output if o):
                target = FLOAT
            elif node.op_type in DATA_OPS:
                target = HALF if any(cur.get(x) == HALF for x in float_group_ins) else FLOAT
            else:
                target = HALF
            out_types = {o: orig.get(o, 0) for o in node.output}
            for v, idx in vars_in.items():
                outs = vars_out.get(v, [])
                if v not in allowed:  # fixed type such as tensor(float): must be exactly that
                    fixed = {"tensor(float)": FLOAT, "tensor(float16)": HALF}.get(v)
                    if fixed is not None:
                        for i in idx:
                            node_inputs[i] = as_type(node_inputs[i], fixed)
                    continue
                if len(idx) + len(outs) < 2:
                    continue  # free type variable: any float type is fine as it is
                t = target if "tensor(float16)" in allowed[v] else FLOAT
                has_float = any(cur.get(node_inputs[i]) in (FLOAT, HALF) for i in idx) or any(
                    orig.get(node.output[o]) in (FLOAT, HALF) for o in outs
                )
                if not has_float:
                    continue
                for i in idx:
                    node_inputs[i] = as_type(node_inputs[i], t)
                for o in outs:
                    if orig.get(node.output[o]) in (FLOAT, HALF):
                        out_types[node.output[o]] = t
            for v, outs in vars_out.items():  # type variables bound only by outputs: keep the original
                if v not in vars_in:
                    for o in outs:
                        out_types[node.output[o]] = orig.get(node.output[o], 0)
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(node_inputs)
        for i, o in enumerate(node.output):
            t = out_types.get(o, 0)
            if o in graph_outputs and t == HALF:
                internal = uniq(f"{o}__fp16")
                new.output[i] = internal
                alias[o] = internal
                cur[internal] = HALF
                final_casts.append(helper.make_node("Cast", [internal], [o], name=uniq(f"{o}__cast_out"), to=FLOAT))
                cur[o] = FLOAT
            else:
                cur[o] = t
        new_nodes.append(new)

    referenced = {x for n in new_nodes + final_casts for x in n.input}
    for n in new_nodes:
        for sub in _subgraphs(n):
            referenced |= _outer_refs(sub)
    out = onnx.ModelProto()
    out.CopyFrom(src)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes + final_casts)
    del out.graph.initializer[:]
    out.graph.initializer.extend([i for i in g.initializer if i.name in referenced] + new_inits)
    del out.graph.value_info[:]
    return out


def _outer_refs(graph) -> set[str]:
    """Names a subgraph reads from enclosing scopes."""
    defined = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    refs = set()
    for n in graph.node:
        for x in n.input:
            if x and x not in defined:
                refs.add(x)
        for sub in _subgraphs(n):
            refs |= _outer_refs(sub) - defined
        defined.update(n.output)
    return refs


def _retype_outer_refs(graph, rename) -> None:
    """Point a subgraph's outer-scope reads at ``rename(name)`` (recursively)."""
    refs = _outer_refs(graph)
    mapping = {r: rename(r) for r in refs}
    for n in graph.node:
        for i, x in enumerate(n.input):
            if x in mapping and mapping[x] != x:
                n.input[i] = mapping[x]
        for sub in _subgraphs(n):
            _retype_outer_refs(sub, lambda x: mapping[x] if x in mapping else rename(x))


def fp16_overflow_audit(onnx_path: str | Path, feeds: dict[str, np.ndarray], limit: float = FP16_MAX / 2) -> list[tuple[str, str, float]]:
    """Run the FP32 graph on ``feeds`` (ONNX Runtime, CPU) and list float tensors whose magnitude exceeds ``limit``.

    Returns ``(node name, tensor, max |x|)`` sorted by magnitude: candidates for
    ``precision_plan(extra_fp32_nodes=...)``. Use real frames and real weights; it holds
    every intermediate tensor in memory, so prefer small image sizes.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path))
    _ensure_node_names(model.graph)
    types = _tensor_types(model)
    existing = {o.name for o in model.graph.output}
    producer = {}
    for n in model.graph.node:
        for o in n.output:
            if o and types.get(o) == TensorProto.FLOAT and o not in existing and n.op_type != "Constant":
                model.graph.output.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, None))
                producer[o] = n.name
    for o in existing:
        producer.setdefault(o, "<output>")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    found = []
    for name, val in zip(names, sess.run(names, feeds)):
        if val.size and np.issubdtype(val.dtype, np.floating):
            m = float(np.nanmax(np.abs(val)))
            if m > limit:
                found.append((producer.get(name, "?"), name, m))
    return sorted(found, key=lambda t: -t[2])


# ============================================================== profiles and manifest (CPU)
@dataclass(frozen=True)
class BuildLimits:
    """The largest shapes the engines accept (their optimisation profiles); the one place of the defaults."""

    max_objects: int = 8
    max_points: int = 8
    cond_slots: int = 2
    opt_objects: int = 1  # the object count the kernels are tuned for
    max_streams: int = 1  # frames per image-encoder call: one per stream (tuned for 1)

    def __post_init__(self):
        if self.max_objects < 1 or self.max_points < 1 or self.cond_slots < 1 or self.max_streams < 1:
            raise ValueError("max_objects, max_points, cond_slots and max_streams must be >= 1")
        if not 1 <= self.opt_objects <= self.max_objects:
            raise ValueError(f"opt_objects must be in 1..max_objects={self.max_objects}, got {self.opt_objects}")

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in self.__dataclass_fields__}


def profile_shapes(
    manifest: dict, graph: str, limits: BuildLimits | None = None, **limit_values: int
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``{input: (min, opt, max)}`` for every dynamic input of ``graph`` in an export's manifest.

    ``limits`` or its fields as keywords (``max_objects=4``); defaults: :class:`BuildLimits`.
    """
    lim = limits or BuildLimits(**limit_values)
    flags = manifest["flags"]
    recent = flags["num_maskmem"] - 1
    ptr_recent = flags["max_obj_ptrs_in_encoder"] - 1
    dims = {
        "objects": (1, lim.opt_objects, lim.max_objects),
        "points": (1, 1, lim.max_points),
        "frames": (1, 1, lim.max_streams),
        "mem_slots": (recent, recent + lim.cond_slots, recent + lim.cond_slots),
        "ptr_slots": (ptr_recent, ptr_recent + lim.cond_slots, ptr_recent + lim.cond_slots),
    }
    out = {}
    for name, desc in manifest["graphs"][graph]["inputs"].items():
        shape = desc["shape"]
        if all(isinstance(d, int) for d in shape):
            continue
        triple = ([], [], [])
        for d in shape:
            if isinstance(d, int):
                for t in triple:
                    t.append(d)
            elif d in dims:
                for t, v in zip(triple, dims[d]):
                    t.append(v)
            else:
                raise ValueError(f"{graph}: input {name} has a dynamic axis {d!r} with no profile rule")
        out[name] = tuple(tuple(t) for t in triple)
    return out


def attention_fusion_report(inspector: dict | list | str) -> dict:
    """Did TensorRT fuse attention? Read from ``IEngineInspector`` JSON (any verbosity).

    Fused attention shows up as layers whose name, type, tactic or metadata mention
    MHA / fused attention (Myelin ``mha`` kernels, ``IAttention`` layers, flash / fmha
    tactics); unfused attention leaves stand-alone ``Softmax`` layers.
    """
    if isinstance(inspector, str):
        inspector = json.loads(inspector)
    layers = inspector.get("Layers", []) if isinstance(inspector, dict) else inspector
    fused_re = re.compile(r"(?<![a-z])(f?mha|mhca|flash_?attn|flash_?attention|fused_?attention|iattention)(?![a-z])", re.I)
    fused, softmax = [], []
    for layer in layers:
        if isinstance(layer, str):
            name, text, ltype = layer, layer, ""
        else:
            name = str(layer.get("Name", ""))
            ltype = str(layer.get("LayerType", ""))
            text = " ".join(str(layer.get(k, "")) for k in ("Name", "LayerType", "TacticName", "Metadata"))
        if ltype.lower() in ("attention", "mha") or fused_re.search(text):
            fused.append(name)
        elif re.search("softmax", ltype, re.I) or (not ltype and re.search("softmax", name, re.I) and "ForeignNode" not in name):
            softmax.append(name)
    return {"fused": bool(fused), "fused_layers": fused, "unfused_softmax_layers": softmax, "layers": len(layers)}


def engine_manifest_entry(
    info: dict,
    precision: str,
    precision_mode: str,
    limits: BuildLimits | dict,
    profiles: dict,
    engines: dict,
    build: dict | None = None,
) -> dict:
    """The ``tensorrt`` entry of ``manifest.json``.

    ``info``: :func:`sam2_ros.backends.tensorrt.backend.runtime_info` of the build machine;
    ``limits``: max_objects, max_points, cond_slots, opt_objects; ``profiles``: per graph
    ``{input: (min, opt, max)}``; ``engines``: per graph ``{file, sha256, ...}``.
    """
    missing = [g for g in GRAPH_NAMES if g not in engines]
    if missing:
        raise ValueError(f"no engine for {', '.join(missing)}")
    for g, e in engines.items():
        if not e.get("file") or not re.fullmatch(r"[0-9a-f]{64}", str(e.get("sha256", ""))):
            raise ValueError(f"engine entry of {g} needs 'file' and a sha256 hex digest")
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    return {
        "tensorrt_version": str(info["tensorrt_version"]),
        "gpu_name": str(info["gpu_name"]),
        "compute_capability": str(info["compute_capability"]),
        "precision": precision,
        "precision_mode": precision_mode,
        **(limits if isinstance(limits, BuildLimits) else BuildLimits(**limits)).as_dict(),
        "profiles": {
            g: {name: {"min": list(t[0]), "opt": list(t[1]), "max": list(t[2])} for name, t in p.items()}
            for g, p in profiles.items()
        },
        "engines": engines,
        "build": build or {},
    }


def write_engine_manifest(onnx_dir: str | Path, out_dir: str | Path, entry: dict) -> dict:
    """Copy the export's manifest (and constants) into ``out_dir`` with the ``tensorrt`` entry added."""
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    data = json.loads((onnx_dir / MANIFEST_NAME).read_text())
    consts = data.get("constants", "constants.npz")
    if onnx_dir.resolve() != out_dir.resolve():
        shutil.copy2(onnx_dir / consts, out_dir / consts)
        data["onnx_dir"] = str(onnx_dir.resolve())
    data[MANIFEST_KEY] = entry
    (out_dir / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    return data


# ============================================================== building (GPU)
@dataclass
class BuildOptions:
    fp16: bool = True
    limits: BuildLimits = field(default_factory=BuildLimits)
    workspace_gb: float | None = None  # None: default_workspace_gb of the device's memory
    timing_cache: str | Path | None = None
    precision_mode: str = "auto"  # auto | weak | strong
    precision_constraints: str = "obey"  # obey | prefer (weak mode)
    fp32_reasons: frozenset = DEFAULT_FP32_REASONS
    optimization_level: int = 3
    device: int = 0
    extra_fp32_nodes: dict = field(default_factory=dict)  # graph -> node names


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise EngineError(f"building engines needs TensorRT on a machine with an NVIDIA GPU: {e}") from e
    return trt


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split(".")[:3]:
        m = re.match(r"\d+", p)
        parts.append(int(m.group()) if m else 0)
    return tuple(parts + [0] * (3 - len(parts)))


#: From this TensorRT version on, networks are created strongly typed (weak typing is deprecated).
STRONG_TYPING_FROM = (10, 12)
#: TensorRT versions from this one on have no weak typing at all.
WEAK_TYPING_REMOVED = (11, 0)


@dataclass(frozen=True)
class PrecisionChoice:
    """How one build applies its precision: the mode recorded in the manifest and the TensorRT flags."""

    mode: str  # fp32 | weak | strong
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    fp16_flag: bool  # BuilderFlag.FP16 (+ precision constraints on the planned layers)


def choose_precision(trt_version: str, fp16: bool = True, requested: str = "auto") -> PrecisionChoice:
    """Precision mode and network flags for TensorRT ``trt_version``.

    ``auto``: strongly typed from 10.12 (weak typing is deprecated there and removed in 11),
    weak typing with ``BuilderFlag.FP16`` before (JetPack 6's 10.3). ``weak`` / ``strong`` force
    a mode; ``weak`` on TensorRT 11+ is an error.
    """
    if requested not in ("auto", "weak", "strong"):
        raise ValueError(f"precision_mode must be auto, weak or strong, got {requested!r}")
    v = _version_tuple(trt_version)
    strong_default = v >= STRONG_TYPING_FROM
    if not fp16:
        return PrecisionChoice("fp32", strongly_typed=strong_default, fp16_flag=False)
    mode = requested if requested != "auto" else ("strong" if strong_default else "weak")
    if mode == "weak" and v >= WEAK_TYPING_REMOVED:
        raise EngineError(f"TensorRT {trt_version} has no weak typing (BuilderFlag.FP16); use precision_mode='strong'")
    return PrecisionChoice(mode, strongly_typed=mode == "strong", fp16_flag=mode == "weak")


def default_workspace_gb(total_memory_bytes: int) -> float:
    """Default TensorRT workspace limit for a GPU with ``total_memory_bytes`` of memory.

    1 GiB up to 8 GiB (Jetson Orin Nano / NX 8 GB: memory shared with the CPU and the ROS
    stack), 2 GiB up to 16 GiB, 4 GiB above.
    """
    gib = total_memory_bytes / (1 << 30)
    if gib <= 8.5:  # "8 GB" boards report a little under or over 8 GiB
        return 1.0
    if gib <= 16.5:
        return 2.0
    return 4.0


def _attach_timing_cache(config, blob: bytes, cache=None):
    """Give ``config`` the timing cache (created from ``blob`` once); a cache TensorRT refuses
    (built by another TensorRT or on another GPU) is replaced by a fresh one, with a warning."""
    if cache is None:
        cache = config.create_timing_cache(blob)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    log.warning("TensorRT refused the timing cache (another TensorRT version or GPU?); starting a fresh one")
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineError("TensorRT refused a fresh timing cache")
    return cache


_ONNX_LAYER_RE = re.compile(r"ONNX Layer:\s*([^\]\x1e\n]+)")


def onnx_node_for_layer(layer_name: str, metadata: str, output_names, node_names: set[str], output_to_node: dict) -> str | None:
    """The ONNX node a TensorRT layer came from, or ``None``.

    In order: the node named in the layer's metadata (TensorRT 10's ONNX parser records
    ``[ONNX Layer: <node>]``), the layer name itself, its longest prefix that is a node name
    (auxiliary layers of one node are named ``<node>_<n>``), the node producing one of its
    output tensors (the parser keeps ONNX tensor names).
    """
    for name in _ONNX_LAYER_RE.findall(metadata or ""):
        if name.strip() in node_names:
            return name.strip()
    if metadata and metadata.strip() in node_names:
        return metadata.strip()
    if layer_name in node_names:
        return layer_name
    for i in range(len(layer_name) - 1, 0, -1):
        if layer_name[i] in "_ ." and layer_name[:i] in node_names:
            return layer_name[:i]
    for o in output_names:
        if o in output_to_node:
            return output_to_node[o]
    return None


def _apply_weak_precision(trt, network, model, plan: PrecisionPlan) -> dict:
    """Pin the layers of the planned ONNX nodes to FP32 (``ILayer.precision`` and output types)."""
    floats = (trt.float32, trt.float16)
    node_names = {n.name for n in model.graph.node}
    output_to_node = {o: n.name for n in model.graph.node for o in n.output}
    matched, pinned = set(), 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        node = onnx_node_for_layer(layer.name, getattr(layer, "metadata", ""), [o.name for o in outs], node_names, output_to_node)
        # constant sub-graphs are folded in FP32 by TensorRT anyway; pin only computed layers
        if node not in plan.fp32_nodes or plan.fp32_nodes[node] == "constant" or not any(o.dtype in floats for o in outs):
            continue
        layer.precision = trt.float32
        for j, o in enumerate(outs):
            if o.dtype in floats:
                layer.set_output_type(j, trt.float32)
        matched.add(node)
        pinned += 1
    planned = sum(1 for r in plan.fp32_nodes.values() if r != "constant")
    if len(matched) < planned:
        log.warning("only %d of %d planned FP32 nodes were found among the TensorRT layers", len(matched), planned)
    return {"fp32_layers": pinned, "fp32_nodes_planned": planned, "fp32_nodes_matched": len(matched)}


def build_engines(
    onnx_dir: str | Path,
    out_dir: str | Path,
    fp16: bool = True,
    limits: BuildLimits | None = None,
    workspace_gb: float | None = None,
    timing_cache: str | Path | None = None,
    **options,
) -> dict:
    """Build the four engines of the export in ``onnx_dir`` into ``out_dir``; returns the manifest.

    ``limits`` (or its fields as keywords, ``max_objects=4``): the engines' largest shapes.
    ``timing_cache`` (a file) is loaded if it exists and saved after the build, so rebuilds
    on the same GPU take seconds instead of minutes. Other options: see :class:`BuildOptions`.
    """
    import onnx

    limit_values = {k: options.pop(k) for k in BuildLimits.__dataclass_fields__ if k in options}
    opts = BuildOptions(
        fp16=fp16, limits=limits or BuildLimits(**limit_values), workspace_gb=workspace_gb,
        timing_cache=timing_cache, **options,
    )
    trt = _import_tensorrt()
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((onnx_dir / MANIFEST_NAME).read_text())
    info = runtime_info(opts.device)
    precision = choose_precision(trt.__version__, opts.fp16, opts.precision_mode)
    mode = precision.mode
    if opts.workspace_gb is None:
        opts.workspace_gb = default_workspace_gb(int(info["gpu_memory_mb"]) << 20)
    cuda = _Cuda()
    cuda(cuda.rt.cudaSetDevice(opts.device), f"cudaSetDevice({opts.device})")  # the builder tunes on this GPU
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    runtime = trt.Runtime(logger)
    cache_blob = b""
    if opts.timing_cache and Path(opts.timing_cache).is_file():
        cache_blob = Path(opts.timing_cache).read_bytes()
    cache = None
    engines, profiles = {}, {}
    t_all = time.perf_counter()
    for g in GRAPH_NAMES:
        t0 = time.perf_counter()
        src = onnx_dir / manifest["graphs"][g]["file"]
        model = onnx.load(str(src))
        plan = precision_plan(model, opts.fp32_reasons, opts.extra_fp32_nodes.get(g, ()))
        parse_path = src
        if mode == "strong":
            parse_path = out_dir / f"{g}.fp16.onnx"
            onnx.save(mixed_precision_model(model, plan), str(parse_path))
        flags = 0
        if precision.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(parse_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse {parse_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        config.builder_optimization_level = opts.optimization_level
        precision_info = {}
        if precision.fp16_flag:
            config.set_flag(trt.BuilderFlag.FP16)
            constraint = {"obey": "OBEY_PRECISION_CONSTRAINTS", "prefer": "PREFER_PRECISION_CONSTRAINTS"}[opts.precision_constraints]
            config.set_flag(getattr(trt.BuilderFlag, constraint))
            precision_info = _apply_weak_precision(trt, network, model, plan)
        elif mode == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # an FP32 engine is the accuracy reference
        cache = _attach_timing_cache(config, cache_blob, cache)
        prof = profile_shapes(manifest, g, opts.limits)
        net_inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
        lacking = [n for n, s in net_inputs.items() if any(d < 0 for d in s) and n not in prof]
        if lacking:
            raise EngineError(f"{g}: dynamic inputs {lacking} have no optimisation profile")
        if prof:
            p = builder.create_optimization_profile()
            for name, (mn, op, mx) in prof.items():
                p.set_shape(name, mn, op, mx)
            config.add_optimization_profile(p)
        plan_bytes = builder.build_serialized_network(network, config)
        if plan_bytes is None:
            raise EngineError(f"TensorRT failed to build the {g} engine (see the log above)")
        path = out_dir / f"{g}.engine"
        path.write_bytes(bytes(plan_bytes))
        engine = runtime.deserialize_cuda_engine(bytes(plan_bytes))
        inspector = engine.create_engine_inspector()
        layers = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        layers_path = out_dir / f"{g}.layers.json"
        layers_path.write_text(layers)
        attention = attention_fusion_report(layers)
        engines[g] = {
            "file": path.name,
            "sha256": file_sha256(path),
            "layers_json": layers_path.name,
            "build_s": round(time.perf_counter() - t0, 1),
            "fp32_plan": plan.summary(),
            **precision_info,
            "attention_fused": attention["fused"],
            "unfused_softmax_layers": len(attention["unfused_softmax_layers"]),
        }
        profiles[g] = prof
        log.info("%s: built in %.0f s; attention fused: %s", g, engines[g]["build_s"], attention["fused"])
        del engine, network, parser, config
    if opts.timing_cache and cache is not None:
        Path(opts.timing_cache).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.timing_cache).write_bytes(bytes(cache.serialize()))
    entry = engine_manifest_entry(
        info, "fp16" if opts.fp16 else "fp32", mode,
        opts.limits,
        profiles, engines,
        build={
            "seconds": round(time.perf_counter() - t_all, 1),
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "workspace_gb": opts.workspace_gb,
            "optimization_level": opts.optimization_level,
            "timing_cache": str(opts.timing_cache) if opts.timing_cache else None,
            "fp32_reasons": sorted(opts.fp32_reasons),
        },
    )
    return write_engine_manifest(onnx_dir, out_dir, entry)


def main(argv: list[str] | None = None) -> int:
    """``python -m sam2_ros.backends.tensorrt.build --onnx DIR --out DIR`` (what ``sam2-ros build`` runs)."""
    ap = argparse.ArgumentParser(description="Build TensorRT engines from a sam2-ros ONNX export")
    ap.add_argument("--onnx", required=True, help="directory written by `sam2-ros export`")
    ap.add_argument("--out", required=True, help="engine directory to write")
    ap.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True)
    d = BuildLimits()
    ap.add_argument("--max-objects", type=int, default=d.max_objects, help="most objects tracked at once")
    ap.add_argument("--max-points", type=int, default=d.max_points, help="most prompt points (a box is 2)")
    ap.add_argument("--cond-slots", type=int, default=d.cond_slots, help="prompted frames kept per object")
    ap.add_argument("--opt-objects", type=int, default=d.opt_objects, help="object count the kernels are tuned for")
    ap.add_argument("--max-streams", type=int, default=d.max_streams,
                    help="most frames per image-encoder call: the streams (cameras) of one MultiTracker / node")
    ap.add_argument("--workspace-gb", type=float, default=None,
                    help="TensorRT workspace limit (default: 1 on 8 GB GPUs such as Jetson Orin, 2 up to 16 GB, else 4)")
    ap.add_argument("--timing-cache", default=None)
    ap.add_argument("--precision-mode", choices=("auto", "weak", "strong"), default="auto")
    ap.add_argument("--fp16-softmax", action="store_true", help="let Softmax run in FP16 (may allow fused attention)")
    ap.add_argument("--optimization-level", type=int, default=3)
    ap.add_argument("--device", type=int, default=0, help="CUDA device to build (and tune) the engines on")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reasons = DEFAULT_FP32_REASONS - ({"softmax"} if a.fp16_softmax else set())
    m = build_engines(
        a.onnx, a.out, fp16=a.fp16,
        limits=BuildLimits(a.max_objects, a.max_points, a.cond_slots, a.opt_objects, a.max_streams), workspace_gb=a.workspace_gb, timing_cache=a.timing_cache,
        precision_mode=a.precision_mode, fp32_reasons=frozenset(reasons), optimization_level=a.optimization_level,
        device=a.device,
    )
    e = m[MANIFEST_KEY]
    print(json.dumps({g: {k: v[k] for k in ("build_s", "attention_fused")} for g, v in e["engines"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
