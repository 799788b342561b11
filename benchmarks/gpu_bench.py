"""GPU benchmark: our tracker on every available backend against the official SAM 2 predictor.

    python benchmarks/gpu_bench.py --out benchmarks/ [--models tiny small] [--sizes 512 1024]
        [--objects 1 2 4 8 16] [--backends tensorrt onnxruntime-cuda torch-fp16 torch-bf16
        official-bf16 official-vos] [--frames 200] [--long-run-frames 1000] [--parity-frames 30]
        [--checkpoint-dir DIR]

For each model and image size: export the ONNX graphs, build TensorRT engines (when TensorRT
is installed), then, on the same frames of ``shared/data/videos`` with the same clicks (one
per object, on a grid), measure per-frame latency (median, p99), FPS and device memory of

* our :class:`~sam2_ros.tracker.Tracker` on TensorRT FP16, ONNX Runtime CUDA, PyTorch CUDA
  under FP16 / BF16 autocast;
* the official ``SAM2VideoPredictor`` eager under BF16 autocast (as its README runs it) and
  ``vos_optimized=True`` (``torch.compile``), its masks copied to the host every frame like ours.

It also measures dense FP16 matmul throughput, turns the FLOPs of a frame
(:mod:`sam2_ros_export.flops`) into an analytic latency floor, runs a long stream to check that
device memory stays flat, and compares masks with the official predictor in FP32 (parity).
Writes ``results_gpu.json``, ``RESULTS_GPU.md`` and ``results_gpu.png``.

Without CUDA it exits with status 2 and a message; ``--report-only results.json`` rewrites
the Markdown and the plot from saved results on any machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sam2_ros.models import MODELS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "videos" / "bedroom.mp4"
MODEL_ALIASES = {name.removeprefix("sam2.1_hiera_"): name for name in MODELS if name.startswith("sam2.1_")}
OUR_BACKENDS = ("tensorrt", "onnxruntime-cuda", "torch-fp16", "torch-bf16")
OFFICIAL_BACKENDS = ("official-bf16", "official-vos")
ALL_BACKENDS = OUR_BACKENDS + OFFICIAL_BACKENDS

#: Targets of the benchmark issue, checked by :func:`check_targets`.
SPEEDUP_TARGET = 1.5  # our best vs official vos_optimized, tiny @ 1024, 1 and 8 objects
P99_OVER_MEDIAN_MAX = 1.3
PARITY_IOU_MIN = 0.98
MEMORY_GROWTH_MAX_MB = 16.0


# ============================================================= pure, CPU-testable part
def latency_stats(seconds: list[float], warmup: int = 0) -> dict:
    """Median / p99 / mean latency (ms) and FPS of per-frame wall times after ``warmup`` frames."""
    s = np.asarray(seconds[warmup:], np.float64)
    if s.size == 0:
        raise ValueError(f"no frames after {warmup} warm-up frames (got {len(seconds)})")
    median = float(np.median(s))
    p99 = float(np.percentile(s, 99))
    return {
        "frames": int(s.size),
        "median_ms": 1e3 * median,
        "p99_ms": 1e3 * p99,
        "mean_ms": 1e3 * float(s.mean()),
        "p99_over_median": p99 / median if median > 0 else math.inf,
        "fps": float(s.size / s.sum()) if s.sum() > 0 else math.inf,
    }


def memory_growth_mb(samples: list[tuple[int, int]], skip_frames: int = 0) -> float:
    """Device-memory growth (MB) between the first sample at or after ``skip_frames`` and the last.

    ``samples``: ``(frame index, bytes in use)``. A stream whose memory is flat grows by ~0.
    """
    kept = [(f, b) for f, b in samples if f >= skip_frames]
    if len(kept) < 2:
        return 0.0
    return (kept[-1][1] - kept[0][1]) / 2**20


def mask_iou_stats(ref: np.ndarray, ours: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """IoU of boolean masks [frames, objects, H, W]; empty-vs-empty counts as 1."""
    if ref.shape != ours.shape:
        raise ValueError(f"mask shapes differ: {ref.shape} vs {ours.shape}")
    inter = np.logical_and(ref, ours).sum(axis=(-1, -2)).astype(np.float64)
    union = np.logical_or(ref, ours).sum(axis=(-1, -2)).astype(np.float64)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    if valid is not None:
        iou = iou[valid]
    iou = iou.ravel()
    return {"mean_iou": float(iou.mean()), "min_iou": float(iou.min()), "pairs": int(iou.size)}


def speedups(results: list[dict], baseline: str = "official-vos") -> list[dict]:
    """FPS of every row over the baseline's FPS at the same model, size and object count."""
    base = {
        (r["model"], r["image_size"], r["objects"]): r["fps"]
        for r in results if r["backend"] == baseline and r.get("fps")
    }
    out = []
    for r in results:
        b = base.get((r["model"], r["image_size"], r["objects"]))
        if b and r.get("fps") and r["backend"] != baseline:
            out.append({**{k: r[k] for k in ("model", "image_size", "objects", "backend")}, "speedup": r["fps"] / b})
    return out


def check_targets(results: list[dict], parity: list[dict] | None = None) -> list[dict]:
    """The benchmark issue's acceptance checks, each ``{criterion, value, target, passed}``."""
    checks = []
    sp = speedups(results)
    for n in (1, 8):
        cands = [s for s in sp if s["model"].endswith("tiny") and s["image_size"] == 1024 and s["objects"] == n
                 and s["backend"] in OUR_BACKENDS]
        best = max(cands, key=lambda s: s["speedup"], default=None)
        checks.append({
            "criterion": f"speedup vs official vos_optimized, tiny @ 1024, {n} object(s)",
            "value": None if best is None else round(best["speedup"], 2),
            "detail": None if best is None else best["backend"],
            "target": f">= {SPEEDUP_TARGET}",
            "passed": best is not None and best["speedup"] >= SPEEDUP_TARGET,
        })
    ours = [r for r in results if r["backend"] in OUR_BACKENDS and r.get("fps")]
    worst = max(ours, key=lambda r: r["p99_over_median"], default=None)
    checks.append({
        "criterion": "p99 / median latency, our backends (worst row)",
        "value": None if worst is None else round(worst["p99_over_median"], 2),
        "detail": None if worst is None else f"{worst['backend']} {worst['model']}@{worst['image_size']} x{worst['objects']}",
        "target": f"<= {P99_OVER_MEDIAN_MAX}",
        "passed": worst is not None and worst["p99_over_median"] <= P99_OVER_MEDIAN_MAX,
    })
    long_runs = [r for r in ours if r.get("long_run")]
    growth = max(long_runs, key=lambda r: r.get("mem_growth_mb", 0.0), default=None)
    checks.append({
        "criterion": "device memory growth over the long run, our backends (worst)",
        "value": None if growth is None else round(growth.get("mem_growth_mb", 0.0), 1),
        "detail": None if growth is None else f"{growth['backend']} over {growth['frames']} frames",
        "target": f"<= {MEMORY_GROWTH_MAX_MB} MB",
        "passed": growth is not None and growth.get("mem_growth_mb", 0.0) <= MEMORY_GROWTH_MAX_MB,
    })
    if parity:
        low = min(parity, key=lambda p: p["mean_iou"])
        checks.append({
            "criterion": "parity with the official predictor (FP32), mean IoU (worst backend/model)",
            "value": round(low["mean_iou"], 4),
            "detail": f"{low['backend']} {low['model']}@{low['image_size']}",
            "target": f">= {PARITY_IOU_MIN}",
            "passed": low["mean_iou"] >= PARITY_IOU_MIN,
        })
    return checks


def _fmt(v, nd=1):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def render_markdown(results: list[dict], meta: dict, parity: list[dict] | None = None, projections: list[dict] | None = None) -> str:
    """RESULTS_GPU.md from result rows (see :func:`run_stream` for the row fields)."""
    sp = {(s["model"], s["image_size"], s["objects"], s["backend"]): s["speedup"] for s in speedups(results)}
    lines = [
        "# GPU benchmark results",
        "",
        f"Device: **{meta.get('device', '?')}**; {meta.get('software', '')}",
        f"Weights: {meta.get('weights', '?')}. Frames: {meta.get('frames', '?')} per run after "
        f"{meta.get('warmup', '?')} warm-up frames, video {meta.get('video', '?')}; one click per object.",
        f"Measured dense FP16 matmul throughput: {_fmt(meta.get('matmul_tflops'))} TFLOPS "
        "(the analytic floor is the frame's FLOPs at this rate).",
        "",
        "| model | size | objects | backend | FPS | median ms | p99 ms | p99/median | GPU MB | growth MB | "
        "floor ms | floor / median | vs vos |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {b: i for i, b in enumerate(ALL_BACKENDS)}
    for r in sorted(results, key=lambda r: (r["model"], r["image_size"], r["objects"], order.get(r["backend"], 99))):
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['image_size']} | {r['objects']} | {r['backend']} | "
                         f"failed: {str(r['error'])[:80]} |||||||||")
            continue
        frac = r["floor_ms"] / r["median_ms"] if r.get("floor_ms") and r.get("median_ms") else None
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['objects']} | {r['backend']}{' (long)' if r.get('long_run') else ''} | "
            f"{_fmt(r['fps'])} | {_fmt(r['median_ms'], 2)} | {_fmt(r['p99_ms'], 2)} | {_fmt(r['p99_over_median'], 2)} | "
            f"{_fmt(r.get('gpu_mem_mb'), 0)} | {_fmt(r.get('mem_growth_mb'))} | {_fmt(r.get('floor_ms'), 2)} | "
            f"{_fmt(frac, 2)} | {_fmt(sp.get((r['model'], r['image_size'], r['objects'], r['backend'])), 2)} |"
        )
    if parity:
        lines += ["", "## Parity with the official predictor (FP32, same frames and clicks)", "",
                  "| model | size | objects | backend | frames | mean IoU | min IoU |", "|---|---|---|---|---|---|---|"]
        for p in parity:
            lines.append(f"| {p['model']} | {p['image_size']} | {p['objects']} | {p['backend']} | {p['frames']} | "
                         f"{p['mean_iou']:.4f} | {p['min_iou']:.4f} |")
    lines += ["", "## Targets", "", "| criterion | value | target | passed |", "|---|---|---|---|"]
    for c in check_targets(results, parity):
        detail = f" ({c['detail']})" if c.get("detail") else ""
        lines.append(f"| {c['criterion']} | {_fmt(c['value'], 2)}{detail} | {c['target']} | {'yes' if c['passed'] else 'NO'} |")
    if projections:
        lines += ["", "## Projection from FLOPs (not measured)", "",
                  "| model | size | objects | GFLOP/frame | device | peak FP16 TFLOPS | FPS @25% | FPS @40% |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in projections:
            lines.append(f"| {p['model']} | {p['image_size']} | {p['objects']} | {p['gflop']} | {p['device']} | "
                         f"{p['tflops_fp16']} | {p.get('fps@0.25', '-')} | {p.get('fps@0.4', '-')} |")
    return "\n".join(lines) + "\n"


def plot_results(results: list[dict], path: str | Path) -> Path:
    """FPS against objects, one line per backend, one panel per model and size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.get("error") and r.get("fps") and not r.get("long_run")]
    panels = sorted({(r["model"], r["image_size"]) for r in ok})
    if not panels:
        raise ValueError("no successful results to plot")
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (model, size) in zip(axes.ravel(), panels):
        for backend in ALL_BACKENDS:
            pts = sorted((r["objects"], r["fps"]) for r in ok if (r["model"], r["image_size"], r["backend"]) == (model, size, backend))
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", linestyle="--" if backend.startswith("official") else "-", label=backend)
        ax.set_title(f"{model.replace('sam2.1_hiera_', '')} @ {size}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("objects")
        ax.set_ylabel("FPS")
        ax.grid(True, alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(data: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write RESULTS_GPU.md and results_gpu.png from a results document (as saved in results_gpu.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "RESULTS_GPU.md"
    md.write_text(render_markdown(data["results"], data.get("meta", {}), data.get("parity"), data.get("projections")))
    paths = {"markdown": md}
    if any(not r.get("error") for r in data["results"]):
        paths["plot"] = plot_results(data["results"], out_dir / "results_gpu.png")
    return paths


def click_grid(n: int, frame_hw: tuple[int, int]) -> list[tuple[float, float]]:
    """``n`` click positions (x, y) spread over the frame on a grid (one object each)."""
    h, w = frame_hw
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return [(((i % cols) + 0.5) * w / cols, ((i // cols) + 0.5) * h / rows) for i in range(n)]


def stream_frames(frames: list[np.ndarray], count: int) -> list[np.ndarray]:
    """``count`` frames from a clip played forth and back (no jump cut)."""
    if not frames:
        raise ValueError("no frames")
    cycle = frames + frames[-2:0:-1] if len(frames) > 2 else frames
    return [cycle[i % len(cycle)] for i in range(count)]


# ============================================================= GPU part
def _device_used_bytes() -> int:
    import torch

    free, total = torch.cuda.mem_get_info()
    return int(total - free)


def measure_matmul_tflops(n: int = 8192, iters: int = 20) -> float:
    """Dense FP16 matmul throughput of this GPU (median of ``iters`` timed with CUDA events)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * n**3 / float(np.median(times)) / 1e12


def autocast_torch_backend(manifest, dtype, checkpoint):
    """Our PyTorch backend on CUDA with every graph under autocast to ``dtype`` (FP16 or BF16)."""
    import torch

    from sam2_ros.backends.torch_backend import TorchBackend

    class AutocastTorchBackend(TorchBackend):
        name = f"torch-{'bf16' if dtype == torch.bfloat16 else 'fp16'}"

        def _call(self, module, *args):
            with torch.autocast("cuda", dtype=dtype):
                return super()._call(module, *args)

    return AutocastTorchBackend(manifest, checkpoint=checkpoint, device="cuda")


def open_backend(name: str, onnx_dir: Path, engine_dir: Path | None, checkpoint: Path):
    import torch

    from sam2_ros.backends import load_backend

    if name == "tensorrt":
        if engine_dir is None:
            raise RuntimeError("TensorRT is not installed (no engines built)")
        return load_backend(engine_dir, "tensorrt")
    if name == "onnxruntime-cuda":
        return load_backend(onnx_dir, "onnxruntime", providers=["cuda"])
    if name in ("torch-fp16", "torch-bf16"):
        from sam2_ros.manifest import load_manifest

        dtype = torch.float16 if name == "torch-fp16" else torch.bfloat16
        return autocast_torch_backend(load_manifest(onnx_dir), dtype, checkpoint)
    raise ValueError(name)


def run_stream(step, frames: list[np.ndarray], warmup: int, sample_every: int = 25) -> dict:
    """Time ``step(i, frame)`` per frame (it must return after the GPU finished) and sample device memory."""
    import torch

    seconds, samples = [], []
    torch.cuda.reset_peak_memory_stats()
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        step(i, f)
        seconds.append(time.perf_counter() - t0)
        if i % sample_every == 0 or i == len(frames) - 1:
            samples.append((i, _device_used_bytes()))
    stats = latency_stats(seconds, warmup)
    stats["gpu_mem_mb"] = max(b for _, b in samples) / 2**20
    stats["mem_growth_mb"] = memory_growth_mb(samples, warmup)
    stats["torch_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return stats


def bench_ours(backend, frames, n_objects: int, warmup: int) -> dict:
    from sam2_ros.tracker import Tracker

    tracker = Tracker(backend, max_objects=max(n_objects, 1))
    clicks = click_grid(n_objects, frames[0].shape[:2])

    def step(i, frame):
        tracker.step(frame)
        if i == 0:
            for oid, (x, y) in enumerate(clicks, start=1):
                tracker.add_prompt(oid, points=[[x, y]], labels=[1])

    return run_stream(step, frames, warmup)


def build_official(model: str, checkpoint: Path, image_size: int, vos: bool):
    from sam2_ros.backends.torch_backend.official import build_video_predictor

    return build_video_predictor(model, checkpoint, image_size=image_size, device="cuda", vos_optimized=vos)


def bench_official(predictor, frames, n_objects: int, warmup: int) -> dict:
    """The official predictor over the same frames (preprocessed like its loader), BF16 autocast."""
    from unittest import mock

    import sam2.sam2_video_predictor as svp
    import torch

    from sam2_ros.preprocess import preprocess_frame

    h, w = frames[0].shape[:2]
    images = torch.from_numpy(np.concatenate([preprocess_frame(f, predictor.image_size) for f in frames]))
    with mock.patch.object(svp, "load_video_frames", lambda **kw: (images, h, w)):
        state = predictor.init_state(video_path="<frames in memory>", offload_video_to_cpu=True)
    clicks = click_grid(n_objects, (h, w))
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for oid, (x, y) in enumerate(clicks, start=1):
            predictor.add_new_points_or_box(state, 0, oid, points=np.array([[x, y]], np.float32), labels=np.array([1], np.int32))
        gen = predictor.propagate_in_video(state)

        def step(i, frame):
            _, _, masks = next(gen)
            (masks > 0).cpu()  # hosts need the masks, as our tracker delivers them

        stats = run_stream(step, frames, warmup)
    predictor.reset_state(state)
    return stats


def parity_run(model, image_size, checkpoint, onnx_dir, engine_dir, backends, frames, n_objects: int) -> list[dict]:
    """Masks of our tracker on each backend against the official predictor in FP32 on the GPU."""
    from sam2_ros.io.prompts_file import Prompt
    from sam2_ros.io.runner import run_tracker
    from sam2_ros.tracker import Tracker
    from sam2_ros.backends.torch_backend.official import build_video_predictor
    from sam2_ros_export.reference import official_fill_hole_area, run_official

    clicks = click_grid(n_objects, frames[0].shape[:2])
    prompts = [Prompt(0, oid, np.array([[x, y]], np.float32), np.array([1], np.int32)) for oid, (x, y) in enumerate(clicks, 1)]
    predictor = build_video_predictor(model, checkpoint, image_size=image_size, device="cuda")
    ref = run_official(predictor, frames, prompts)
    fill = official_fill_hole_area(predictor)  # 8 with the official CUDA extension, else 0
    out = []
    for name in backends:
        try:
            backend = open_backend(name, onnx_dir, engine_dir, checkpoint)
            tracker = Tracker(backend, max_objects=n_objects, num_frames=len(frames), fill_hole_area=fill)
            run = run_tracker(tracker, frames, prompts)
            out.append({"model": model, "image_size": image_size, "objects": n_objects, "backend": name,
                        "frames": len(frames), **mask_iou_stats(ref.masks, run.masks)})
        except Exception as e:  # noqa: BLE001 - reported, the run goes on
            print(f"parity {name}: {e}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks"))
    ap.add_argument("--work", default=None, help="where exports and engines go (default: a temporary directory)")
    ap.add_argument("--models", nargs="+", default=list(MODEL_ALIASES), choices=list(MODEL_ALIASES))
    ap.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    ap.add_argument("--objects", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    ap.add_argument("--backends", nargs="+", default=list(ALL_BACKENDS), choices=list(ALL_BACKENDS))
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--long-run-frames", type=int, default=1000, help="memory-flatness run (tiny @ 1024, 8 objects); 0 skips")
    ap.add_argument("--parity-frames", type=int, default=30, help="0 skips the parity check")
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--checkpoint-dir", default=None, help="official checkpoints (default: random weights, seed 0)")
    ap.add_argument("--verify-export", action="store_true", help="check each ONNX graph against PyTorch (slow for large @ 1024)")
    ap.add_argument("--report-only", default=None, help="rewrite the report from a saved results_gpu.json")
    a = ap.parse_args(argv)

    if a.report_only:
        paths = write_report(json.loads(Path(a.report_only).read_text()), a.out)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    try:
        import torch
    except ImportError:
        print("gpu_bench: PyTorch is not installed; this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU on this machine; run it on a GPU machine "
              "(or --report-only results_gpu.json to redraw a saved report)", file=sys.stderr)
        return 2

    from sam2_ros_export.flops import FlopModel, analytic_floor_ms, projection_table
    from sam2_ros.io.video import read_frames
    from sam2_ros.models import official_model
    from sam2_ros_export.checkpoint import random_checkpoint
    from sam2_ros_export.onnx_export import export_model

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="sam2_bench_"))
    clip = read_frames(a.video, max_frames=max(a.frames, 300))
    frames = stream_frames(clip, a.warmup + a.frames)
    try:
        import tensorrt as trt

        trt_version = trt.__version__
    except ImportError:
        trt_version = None
    matmul = measure_matmul_tflops()
    meta = {
        "device": torch.cuda.get_device_name(),
        "software": f"torch {torch.__version__}, TensorRT {trt_version or 'not installed'}, Python {platform.python_version()}",
        "weights": "official checkpoints" if a.checkpoint_dir else "random (seed 0): speed only; parity is structural",
        "frames": a.frames, "warmup": a.warmup, "video": Path(a.video).name, "matmul_tflops": matmul,
    }
    results, parity, projections = [], [], []
    for alias in a.models:
        model = MODEL_ALIASES[alias]
        ckpt = (Path(a.checkpoint_dir) / official_model(model).checkpoint_file) if a.checkpoint_dir else \
            random_checkpoint(model, 0, work / f"{model}.pt")
        for size in a.sizes:
            onnx_dir = work / f"{model}_{size}"
            export_model(model, ckpt, onnx_dir, image_size=size, verify=a.verify_export)
            engine_dir = None
            if trt_version and "tensorrt" in a.backends:
                from sam2_ros.backends.tensorrt.build import build_engines

                engine_dir = work / f"{model}_{size}_trt"
                build_engines(onnx_dir, engine_dir, max_objects=max(a.objects), timing_cache=work / "timing.cache")
            fm = FlopModel(model, size)
            flops = {n: fm.frame(n) for n in a.objects}
            projections += projection_table([flops[n] for n in (1, 8) if n in flops])
            for name in a.backends:
                official = name.startswith("official")
                backend = predictor = None
                try:
                    if official:
                        predictor = build_official(model, ckpt, size, vos=name == "official-vos")
                    else:
                        backend = open_backend(name, onnx_dir, engine_dir, ckpt)
                except Exception as e:  # noqa: BLE001 - reported in the table
                    for n in a.objects:
                        results.append({"model": model, "image_size": size, "objects": n, "backend": name, "error": str(e)})
                    continue
                for n in a.objects:
                    row = {"model": model, "image_size": size, "objects": n, "backend": name}
                    try:
                        stats = bench_official(predictor, frames, n, a.warmup) if official else bench_ours(backend, frames, n, a.warmup)
                        row.update(stats, gflop=flops[n].total / 1e9, floor_ms=analytic_floor_ms(flops[n].total, matmul))
                    except Exception as e:  # noqa: BLE001
                        row["error"] = f"{type(e).__name__}: {e}"
                    results.append(row)
                    print(json.dumps(row), flush=True)
                if a.long_run_frames and alias == "tiny" and size == 1024 and 8 in a.objects:
                    long_frames = stream_frames(clip, a.warmup + a.long_run_frames)
                    row = {"model": model, "image_size": size, "objects": 8, "backend": name, "long_run": True}
                    try:
                        stats = bench_official(predictor, long_frames, 8, a.warmup) if official else \
                            bench_ours(backend, long_frames, 8, a.warmup)
                        row.update(stats, gflop=flops[8].total / 1e9, floor_ms=analytic_floor_ms(flops[8].total, matmul))
                    except Exception as e:  # noqa: BLE001
                        row["error"] = f"{type(e).__name__}: {e}"
                    results.append(row)
                del backend, predictor
                torch.cuda.empty_cache()
            if a.parity_frames:
                parity += parity_run(model, size, ckpt, onnx_dir, engine_dir,
                                     [b for b in a.backends if b in OUR_BACKENDS], frames[: a.parity_frames], 3)
    data = {"meta": meta, "results": results, "parity": parity, "projections": projections}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results_gpu.json").write_text(json.dumps(data, indent=1))
    paths = write_report(data, out)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
