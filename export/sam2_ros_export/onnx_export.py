"""Export the four SAM 2 graphs to ONNX, verify each against PyTorch in ONNX Runtime, write the manifest."""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sam2_ros.graph_io import EXPORTED_GRAPHS
from sam2_ros.manifest import MANIFEST_NAME, MANIFEST_VERSION, file_sha256, image_batch
from sam2_ros.backends.torch_backend.graphs import graph_modules, model_constants, model_flags
from sam2_ros.backends.torch_backend.official import build_video_predictor
from sam2_ros_export.checkpoint import is_random_checkpoint

log = logging.getLogger(__name__)

OPSET = 17
#: Parity bound for one graph, ONNX Runtime vs PyTorch (fp32, CPU): fail loudly beyond it.
DEFAULT_TOLERANCE = 1e-3


@dataclass
class GraphSpec:
    name: str
    module: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]]


#: Frames of the image encoder's example input: not 1, so that the trace cannot bake a batch of 1 in.
EXAMPLE_FRAMES = 2


def _example_inputs(flags: dict, n_obj: int = 2, mem_slots: int = 4, ptr_slots: int = 7, n_points: int = 3,
                    frames: int = EXAMPLE_FRAMES):
    """Realistic example tensors (also used for verification)."""
    g = torch.Generator().manual_seed(0)
    s, h = flags["image_size"], flags["feat_size"]
    c, cm = flags["hidden_dim"], flags["mem_dim"]
    hw = flags["mem_tokens"]
    mem_valid = torch.ones(n_obj, mem_slots, dtype=torch.bool)
    mem_valid[:, -2:] = False
    ptr_valid = torch.ones(n_obj, ptr_slots, dtype=torch.bool)
    ptr_valid[0, 5:] = False
    return {
        "image": torch.randn(frames, 3, s, s, generator=g),
        "image_embed": torch.randn(1, c, h, h, generator=g),
        "feat_s0": torch.randn(1, c // 8, 4 * h, 4 * h, generator=g),
        "feat_s1": torch.randn(1, c // 4, 2 * h, 2 * h, generator=g),
        "mem_feats": torch.randn(n_obj, mem_slots, hw, cm, generator=g),
        "mem_tpos_row": torch.randint(0, flags["num_maskmem"], (n_obj, mem_slots), generator=g),
        "mem_valid": mem_valid,
        "obj_ptrs": torch.randn(n_obj, ptr_slots, c, generator=g),
        "ptr_tpos": torch.rand(n_obj, ptr_slots, generator=g),
        "ptr_valid": ptr_valid,
        "pix_feat": torch.randn(n_obj, c, h, h, generator=g),
        "no_mem": torch.tensor([1.0] + [0.0] * (n_obj - 1)),
        "point_coords": torch.rand(n_obj, n_points, 2, generator=g) * s,
        "point_labels": torch.tensor([[1 - (i % 2) for i in range(n_points)]] * n_obj, dtype=torch.int32),
        "mask_input": torch.randn(n_obj, 1, 4 * h, 4 * h, generator=g) * 5,
        "has_mask": torch.tensor([0.0] + [1.0] * (n_obj - 1)),
        "multimask": torch.tensor([1.0] + [0.0] * (n_obj - 1)),
        "low_res_masks": torch.randn(n_obj, 1, 4 * h, 4 * h, generator=g) * 5,
        "binarize": torch.tensor([1.0] + [0.0] * (n_obj - 1)),
        "object_score_logits": torch.tensor([[0.5]] + [[-0.5]] * (n_obj - 1)),
    }


def graph_specs(sam: torch.nn.Module, flags: dict) -> list[GraphSpec]:
    """The graphs to export: their modules, example inputs, and names/axes from :mod:`sam2_ros.graph_io`."""
    ex = _example_inputs(flags)
    modules = graph_modules(sam, flags["image_size"])
    return [
        GraphSpec(g.name, modules[g.name], {n: ex[n] for n in g.inputs}, list(g.outputs), g.dynamic_axes)
        for g in EXPORTED_GRAPHS.values()
    ]


def _other_batches(spec: GraphSpec, flags: dict) -> list[dict]:
    """Inputs of ``spec`` at other sizes of its ``frames`` axis (1 and 3) than the example's, to
    verify that the trace kept the batch dynamic (Hiera's windowing reshapes could bake it in)."""
    if "frames" not in {a for axes in spec.dynamic_axes.values() for a in axes.values()}:
        return []
    return [{n: _example_inputs(flags, frames=f)[n] for n in spec.inputs} for f in (1, 3)]


def _io_description(session) -> dict:
    def desc(args):
        return {a.name: {"shape": [d if isinstance(d, int) else str(d) for d in a.shape], "dtype": a.type} for a in args}

    return {"inputs": desc(session.get_inputs()), "outputs": desc(session.get_outputs())}


def verify_graph(path: Path, spec: GraphSpec, tolerance: float, inputs: dict | None = None) -> float:
    """Run the ONNX graph in ONNX Runtime (CPU) and PyTorch; return the max abs diff or raise."""
    import onnxruntime as ort

    inputs = inputs or spec.inputs
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = spec.module(*inputs.values())
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = sess.run(spec.outputs, {k: v.numpy() for k, v in inputs.items()})
    diff = 0.0
    for name, r, o in zip(spec.outputs, ref, got):
        r = r.numpy()
        if r.shape != o.shape:
            raise RuntimeError(f"{spec.name}: output {name} has shape {o.shape} in ONNX Runtime, {r.shape} in PyTorch")
        diff = max(diff, float(np.abs(r - o).max()) if r.size else 0.0)
    if not diff <= tolerance:
        raise RuntimeError(
            f"{spec.name}: ONNX Runtime differs from PyTorch by {diff:.3g} (tolerance {tolerance:g}); "
            "the export is not faithful"
        )
    return diff


def export_model(
    model_name: str,
    checkpoint: str | Path | None,
    out_dir: str | Path,
    image_size: int = 1024,
    tolerance: float = DEFAULT_TOLERANCE,
    verify: bool = True,
) -> dict:
    """Export ``model_name`` at ``image_size`` into ``out_dir``; returns the manifest."""
    import onnx
    import onnxruntime as ort

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    sam = build_video_predictor(model_name, checkpoint, image_size=image_size, device="cpu")
    flags = model_flags(sam, image_size)
    specs = graph_specs(sam, flags)
    graphs: dict[str, dict] = {}
    for spec in tqdm(specs, desc=f"export {model_name}@{image_size}", unit="graph"):
        assert spec.name in EXPORTED_GRAPHS
        path = out_dir / f"{spec.name}.onnx"
        t0 = time.perf_counter()
        with torch.inference_mode():
            torch.onnx.export(
                spec.module, tuple(spec.inputs.values()), str(path),
                input_names=list(spec.inputs), output_names=spec.outputs,
                dynamic_axes=spec.dynamic_axes, opset_version=OPSET, dynamo=False,
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(path))
        entry: dict = {"file": path.name, "sha256": file_sha256(path), "export_s": round(time.perf_counter() - t0, 2)}
        if verify:
            entry["max_abs_diff_vs_torch"] = verify_graph(path, spec, tolerance)
            for inputs in _other_batches(spec, flags):  # the image encoder at 1 frame and at 3
                entry["max_abs_diff_vs_torch"] = max(entry["max_abs_diff_vs_torch"],
                                                     verify_graph(path, spec, tolerance, inputs))
            log.info("%s: max abs diff vs PyTorch %.3g", spec.name, entry["max_abs_diff_vs_torch"])
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        entry.update(_io_description(sess))
        graphs[spec.name] = entry
    consts = {k: v.numpy() for k, v in model_constants(sam).items()}
    np.savez(out_dir / "constants.npz", **consts)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "model": model_name,
        "image_size": image_size,
        "precision": "fp32",
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None,
        "random_weights": checkpoint is None or is_random_checkpoint(checkpoint),
        "flags": flags,
        "image_batch": "dynamic",  # frames per image-encoder call (Manifest.image_batch)
        "graphs": graphs,
        "constants": "constants.npz",
        "exporter": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "opset": OPSET,
            "python": platform.python_version(),
        },
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def cached_random_export(model_name: str, image_size: int, work: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """A random-weights checkpoint of ``model_name`` and its export, kept in ``work`` and made again
    only when missing or outdated (an export from before a graph was added, or before the image
    encoder's ``frames`` axis). For benchmarks.
    Returns (checkpoint, export directory)."""
    from sam2_ros_export.checkpoint import random_checkpoint
    from sam2_ros_export.model_env import model_python

    work = Path(work)
    ckpt = work / f"{model_name}_seed{seed}.pt"
    if not ckpt.is_file():
        if model_python(model_name) is None:
            random_checkpoint(model_name, seed, ckpt)
        else:  # EdgeTAM's package lives in its own environment
            cli_in_model_env(model_name, "checkpoint", "--model", model_name, "--random-seed", str(seed), "--out", str(ckpt))
    engines = work / f"{model_name}_{image_size}"
    manifest = engines / MANIFEST_NAME
    data = json.loads(manifest.read_text()) if manifest.is_file() else {}
    # made again when a graph is missing, or the image encoder predates the frames axis
    if not data or set(EXPORTED_GRAPHS) - set(data.get("graphs", {})) or image_batch(data) is not None:
        export_anywhere(model_name, ckpt, engines, image_size)
    return ckpt, engines


def cli_in_model_env(model_name: str, *cli_args: str) -> None:
    """``sam2-ros CLI_ARGS`` under the Python whose ``sam2`` package builds ``model_name``;
    ``RuntimeError`` with its error output when it fails."""
    from sam2_ros_export.model_env import model_python, run_python

    python = model_python(model_name)
    proc = run_python(python, ["-m", "sam2_ros.cli", *cli_args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sam2-ros {' '.join(cli_args)} under {python} failed:\n{proc.stderr[-3000:]}")


def export_anywhere(model_name: str, checkpoint: str | Path, out_dir: str | Path, image_size: int,
                    verify: bool = True) -> None:
    """:func:`export_model` here, or through the CLI under the model's own Python (EdgeTAM's; the
    CLI always verifies the graphs)."""
    from sam2_ros_export.model_env import model_python

    if model_python(model_name) is None:
        export_model(model_name, checkpoint, out_dir, image_size=image_size, verify=verify)
    else:
        cli_in_model_env(model_name, "export", "--model", model_name, "--checkpoint", str(checkpoint),
                         "--image-size", str(image_size), "--out", str(out_dir))
