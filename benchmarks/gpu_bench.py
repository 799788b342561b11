"""GPU benchmark: our tracker against the official SAM 2 predictor, interleaved in one run.

What it measures, for each model, image size and object count (a *cell*):

* per-frame latency (median, p99, p99/median), FPS and memory of every contender: ours,
  :class:`~sam2_ros.tracker.Tracker` on the torch backend in fp32 / bf16 / fp16, on ONNX Runtime
  CUDA and on TensorRT FP16 (each only where it is installed: a skipped contender is listed with
  the reason), and the official ``SAM2VideoPredictor`` eager under bf16 autocast (as its README
  runs it) and with ``vos_optimized=True`` (``torch.compile``);
* engine-only time of ours on torch and TensorRT (``engine_median_ms``): per frame, the summed
  time of the backend's graph calls (``encode_image``, ``track_step``, ``attend_memory``,
  ``decode``, ``encode_memory``, wrapped on the backend by :class:`EngineTimer`; a nested call
  counts once), by CUDA events on the stream the backend enqueues on (perf_counter in a CPU smoke
  run, labelled so in ``engine_clock``), next to the end-to-end ``median_ms``;
* the analytic floor: the frame's FLOPs (:mod:`sam2_ros_export.flops`) at the matrix throughput
  measured on this GPU in the row's precision, and the fraction of it each row reaches;
* memory flatness: one long cell (``--long-run-frames``, tiny @ 1024 with 8 objects by
  default), its retained device memory sampled along the stream;
* parity: on ``--parity-frames`` frames of a real clip with 2+ clicked objects, each of our
  contenders against the official predictor in fp32 on the same device with its own hole
  filling (mean IoU, minimum IoU, object-score sign agreement).

How (the rule after a sequential run once gave a false ratio): every contender of a cell gets
the same frames and the same clicks (one per object, on frame 0), and the contenders take turns
frame by frame in a rotating order, so drift (clocks, other load) hits all alike. Each step is
timed alone between two ``torch.cuda.synchronize()`` calls; the first ``--warmup`` frames
(prompts, compilation, autotuning, the memory filling up) are run but not timed. Ours gets the
camera frame and preprocesses it inside its timed step; the official predictor gets its frames
preprocessed by its own loader before the run, already on the device (its default), so the
comparison is conservative for ours. Every contender's masks are copied to the host each frame.
The official predictor's ``init_state``, clicks and steps all run under its autocast. CPU threads
are fixed (``--threads``) for PyTorch and ONNX Runtime (whose idle threads do not spin). Python's
GC is paused for the timed frames (:func:`gc_paused`: collect, freeze, disable after the warm-up;
enable, unfreeze, collect after the cell), so that collections of the official predictor's
per-frame outputs do not land in another contender's step. fp32 matmuls and cuDNN convolutions
run without TF32 unless ``--tf32`` (set explicitly through ``fp32_precision``, else
``allow_tf32``; recorded in the meta). TensorRT engines are built per benchmarked object count
(``opt_objects`` = that count, ``max_objects`` = the most any cell or the parity check tracks,
one timing cache; :func:`engine_build_plan`) on the ``--device`` index, which the TensorRT
backend also runs on; each TensorRT row records ``engine_opt_objects``. Writes ``RESULTS.md``,
``results_gpu.json`` and ``results_gpu.png`` into ``--out``.

Memory, sampled the same way for every contender (:class:`ContenderMemory`,
:class:`MemoryLedger`). The contenders share one process and take turns, so a counter includes
every contender's memory; only its change while one contender runs is that contender's. Each
contender's counters are sampled, after a device synchronisation, just before and after the
opening of its stream (its tracker; the official ``init_state`` and clicks) and each of its steps;
the change over such an interval is charged to it, and what it *holds* is the sum of its charges
since its baseline (the counter just before its stream opened, PyTorch's cache emptied first).

* ``peak_device_mb``: the most it held at any sample by the device-level used memory
  (``torch.cuda.mem_get_info``: total - free; a CPU smoke run: the process RSS). For caching
  allocators (PyTorch, ONNX Runtime's arena, TensorRT's context memory) that is the high-water
  mark; a transient ``cudaMalloc`` freed inside one step is not seen.
* ``retained_device_mb``: what it held by the same counter after its last step, before its
  stream was closed: the stream's steady-state footprint (the weights, loaded before the cell,
  are ``load_device_mb``). ``retained_growth_device_mb``: its change from the first timed frame to
  the last; ``mem_samples`` its series (the long-run plot and the flatness target).
* ``torch_peak_allocated_mb`` / ``torch_peak_reserved_mb`` (torch-based contenders on CUDA): what
  it held by ``memory_allocated`` / ``memory_reserved`` plus the step's excursion above the
  step's start (``max_memory_allocated`` / ``max_memory_reserved`` after
  ``reset_peak_memory_stats`` before each step), the highest over its opening and steps.
* ``memory_counters``: per row, the counter each column came from.

Caveat: the torch-based contenders share PyTorch's cache; one that reuses blocks another freed
into it does not raise the device's used memory and is not charged for them (the allocated
column is immune; ``--backends X`` runs one alone); the device-level counter also sees other
processes on the device.

On a GPU machine, from the repository root, with what the export toolchain needs (PyTorch
with CUDA, the official ``sam2`` package with hydra-core, omegaconf and iopath, onnx,
onnxruntime, matplotlib; onnxruntime-gpu and tensorrt add their contenders). Official
checkpoints: ``sam2-ros download --model sam2.1_hiera_tiny --out checkpoints``, and the same
for ``sam2.1_hiera_base_plus``. Without ``--checkpoint-dir`` the weights are random (seed 0):
the same computation, so the speed figures hold, but parity is then structural only. Besides
the frames, the time goes into exports, TensorRT engine builds and the official
``vos_optimized`` predictor's torch.compile autotuning (minutes each; not measured yet).
The whole table of the GPU issue::

    PYTHONPATH=.:export PYTHONUNBUFFERED=1 python benchmarks/gpu_bench.py --checkpoint-dir checkpoints \\
        --models tiny base_plus --sizes 512 1024 --objects 1 4 8 16 --frames 200 --warmup 20 \\
        --long-run-frames 1000 --parity-frames 120 --out benchmarks

A quick look (tiny @ 1024, 1 and 8 objects, no long run, parity on 120 frames)::

    PYTHONPATH=.:export PYTHONUNBUFFERED=1 python benchmarks/gpu_bench.py --checkpoint-dir checkpoints \\
        --models tiny --sizes 1024 --objects 1 8 --frames 100 --warmup 20 --long-run-frames 0 \\
        --parity-frames 120 --out /tmp/gpu_quick

Where a command may only run for minutes (or has no network: random weights, and the clip
copied into the repository and named with ``--video``), run the table in parts, each into its
own ``--out`` (``--models tiny --sizes 1024`` holds the long run; then the other model and size
pairs), and merge them: ``--report-only p1/results_gpu.json p2/results_gpu.json --out benchmarks``.
``results_gpu.json`` is saved after every cell, so a part that is stopped keeps its finished cells.

``--device cpu`` is a smoke run of the same code on the CPU (torch backend fp32 / bf16 and the
official predictor; GPU-only pieces skipped with the reason; small defaults), labelled "CPU
smoke run: not a GPU measurement" in its report. Without CUDA and without ``--device cpu`` the
script exits with status 2. Torch-backend options that other work adds are passed only when
asked for (``--torch-imaging``, ``--cuda-graph``, ``--compile``); a backend that has a
``warm_up(max_objects)`` method gets it called before timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import date
from pathlib import Path

import numpy as np

from sam2_ros.models import MODELS

REPO = Path(__file__).resolve().parents[1]
#: The real clip: ``bedroom.mp4`` of the shared data beside the repository (as the tests find it).
DEFAULT_VIDEO = Path(os.environ.get("SAM2_ROS_SHARED_DATA", REPO.parent / "shared" / "data")) / "videos" / "bedroom.mp4"
#: Parity clicks on bedroom.mp4 (960 x 540): the girl, the boy, the pink pillow.
BEDROOM_CLICKS = ((400.0, 150.0), (230.0, 250.0), (600.0, 350.0))
MODEL_ALIASES = {name.removeprefix("sam2.1_hiera_"): name for name in MODELS if name.startswith("sam2.1_")} | {
    "edgetam": "edgetam"}
TORCH_CONTENDERS = ("torch-fp32", "torch-bf16", "torch-fp16")
OUR_BACKENDS = ("tensorrt", "onnxruntime-cuda") + TORCH_CONTENDERS
OFFICIAL_BACKENDS = ("official-bf16", "official-vos", "official-fp32")
ALL_BACKENDS = OUR_BACKENDS + OFFICIAL_BACKENDS
DEFAULT_BACKENDS = OUR_BACKENDS + ("official-bf16", "official-vos")
#: The precision each contender computes in (the floor uses the matmul rate of that precision).
PRECISION = {"tensorrt": "fp16", "onnxruntime-cuda": "fp32", "torch-fp32": "fp32", "torch-bf16": "bf16",
             "torch-fp16": "fp16", "official-bf16": "bf16", "official-vos": "bf16", "official-fp32": "fp32"}
#: Contenders whose backend graph calls are timed (``engine_median_ms``), and why the others are not.
ENGINE_TIMED = TORCH_CONTENDERS + ("tensorrt",)
ENGINE_UNTIMED = {"onnxruntime-cuda": "ONNX Runtime enqueues on its own stream, which it does not expose",
                  **{b: "the official predictor has no backend calls to wrap" for b in OFFICIAL_BACKENDS}}
SMOKE_LABEL = "CPU smoke run: not a GPU measurement"
#: The memory columns, as RESULTS.md states them (the module docstring says the same).
MEMORY_DEFINITIONS = (
    "Memory columns, sampled the same way for every contender: around the opening of the contender's stream "
    "(its tracker, or the official init_state and clicks) and around each of its steps, after a device "
    "synchronisation, when only it has run since the previous sample. Every change of a counter in such an "
    "interval is charged to that contender; what it *holds* is the sum of its charges since its baseline (the "
    "counter just before its stream was opened, PyTorch's cache emptied first). **peak device MB**: the most it "
    "held at any sample, by the device-level used memory (cudaMemGetInfo total - free; a CPU smoke run: the "
    "process RSS): a caching allocator's high-water mark, not a transient cudaMalloc/cudaFree inside one step. "
    "**retained device MB**: what it held after its last step, before its stream was closed (the stream's "
    "steady-state footprint; the model's weights are not in it). **growth MB**: retained from the first timed "
    "frame to the last (the long run's flatness). **torch peak allocated / reserved MB** (torch-based contenders "
    "on CUDA): what it held by PyTorch's memory_allocated / memory_reserved plus the step's excursion above its "
    "start (max_memory_allocated / max_memory_reserved after reset_peak_memory_stats before each step), the "
    "highest over its steps. Caveat: torch-based contenders share one PyTorch cache; one that reuses blocks "
    "another freed into it does not raise the device's used memory and is not charged for them (the allocated "
    "column is not affected: run a contender alone, --backends X, for an unshared device figure); the "
    "device-level counter also sees other processes on the device.")
ENGINE_TIME_DEFINITION = (
    "engine median ms: per frame, the summed time of the backend's graph calls (encode_image, track_step, "
    "attend_memory, decode, encode_memory; a nested call counted once) measured with CUDA events on the stream "
    "the backend enqueues on (a CPU smoke run: perf_counter), median over the timed frames; the rest of median ms "
    "is the host's pre- and post-processing and bookkeeping. Ours on the torch backend and TensorRT only.")
INTERLEAVING = ("All rows of one cell (model, size, objects) come from one interleaved run: the contenders "
                "took turns frame by frame in a rotating order on the same frames and clicks, each step timed "
                "alone between two device synchronisations, warm-up frames untimed.")

#: Targets of the GPU benchmark issue, checked by :func:`check_targets`.
SPEEDUP_TARGETS = {1: 1.5, 8: 3.0}  # our best vs official vos_optimized, tiny @ 1024, by object count
P99_OVER_MEDIAN_MAX = 1.3
MEMORY_GROWTH_MAX_MB = 16.0
FLOOR_FRACTION_MIN = 0.4  # analytic floor / median latency, our best, tiny @ 1024, 8 objects
PARITY_IOU_MIN = 0.98  # bf16 / fp16: mean IoU
PARITY_MIN_IOU_MIN = 0.95  # bf16 / fp16: every frame and object
PARITY_SIGNS_MIN = 0.99  # bf16 / fp16: object-score sign agreement
PARITY_FP32_IOU_MIN = 0.999  # fp32 on the GPU: mean IoU


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
    """Memory growth (MB) between the first sample at or after ``skip_frames`` and the last.

    ``samples``: ``(frame index, bytes in use)``. A stream whose memory is flat grows by ~0.
    """
    kept = [(f, b) for f, b in samples if f >= skip_frames]
    if len(kept) < 2:
        return 0.0
    return (kept[-1][1] - kept[0][1]) / 2**20


class MemoryLedger:
    """What one contender's stream holds by one memory counter, from samples taken around its own steps.

    The contenders share one process and take turns, so a counter's value includes everyone's
    memory; only its *change* while one contender runs belongs to that contender. Each
    :meth:`charge` is one sampled interval in which only this contender ran (opening its stream,
    or one step): ``before`` and ``after`` are the counter's values at its ends, ``peak_during``
    the highest value inside it where the counter has one (PyTorch's ``max_memory_*`` after
    ``reset_peak_memory_stats``), else the end value stands for it. ``held`` is the sum of the
    changes so far (what the stream has added since its baseline), ``peak`` the highest value of
    ``held`` plus the in-interval excursion over ``before``, ``series`` ``held`` after each step."""

    def __init__(self) -> None:
        self.held = 0
        self.peak = 0
        self.series: list[tuple[int, int]] = []

    def charge(self, before: int, after: int, peak_during: int | None = None, frame: int | None = None) -> None:
        """One interval of this contender alone; ``frame`` given: a step, recorded in ``series``."""
        top = after if peak_during is None else max(after, peak_during)
        self.peak = max(self.peak, self.held + top - before)
        self.held += after - before
        if frame is not None:
            self.series.append((frame, self.held))


def memory_figures(baseline: int, opened: int, steps: list[tuple], opened_peak: int | None = None) -> dict:
    """Peak and retained bytes of one contender's stream from its samples (see :class:`MemoryLedger`).

    ``baseline``: the counter just before the stream was opened; ``opened``: just after;
    ``steps``: ``(frame, before, after)`` or ``(frame, before, after, peak_during)`` per step.
    Returns ``peak`` (max over the opening and every step of what the stream held, including
    in-step excursions where sampled), ``retained`` (held after the last step, before closing)
    and ``series`` ``[(frame, held)]``."""
    ledger = MemoryLedger()
    ledger.charge(baseline, opened, opened_peak)
    for frame, before, after, *peak in steps:
        ledger.charge(before, after, peak[0] if peak else None, frame)
    return {"peak": ledger.peak, "retained": ledger.held, "series": ledger.series}


def engine_build_plan(cell_objects, max_objects: int, device_index: int, timing_cache: str | Path) -> dict[int, dict]:
    """``build_engines`` keyword arguments per benchmarked object count ``n``: FP16 engines tuned
    for ``n`` objects (``opt_objects = n``), all accepting up to ``max_objects`` (the most any cell
    or the parity check tracks), built on CUDA device ``device_index``, sharing one timing cache
    (so that every rebuild after the first reuses the kernel timings)."""
    counts = sorted({int(n) for n in cell_objects})
    if not counts:
        raise ValueError("no object count to build engines for")
    if counts[0] < 1 or counts[-1] > max_objects:
        raise ValueError(f"object counts {counts} outside 1..max_objects={max_objects}")
    return {n: {"fp16": True, "max_objects": int(max_objects), "opt_objects": n, "device": int(device_index),
                "timing_cache": str(timing_cache)} for n in counts}


#: What :func:`gc_paused` does, recorded in the results' meta.
GC_POLICY = ("after each cell's warm-up frames: gc.collect(), gc.freeze(), gc.disable() for the timed frames; after "
             "the cell (streams closed, outside timing): gc.enable(), gc.unfreeze(), gc.collect()")


@contextmanager
def gc_paused():
    """Python's cyclic garbage collector out of the timed frames: collect what is garbage now,
    freeze the survivors (later collections skip them) and disable automatic collection; on exit
    re-enable it (if it was enabled), unfreeze and collect. Yields ``{"collected_before",
    "collected_after"}`` (the objects each collection found; the second filled in on exit)."""
    import gc

    info = {"collected_before": gc.collect()}
    was_enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield info
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()
        info["collected_after"] = gc.collect()


def fp32_precision_state(torch) -> dict:
    """How fp32 matmuls and cuDNN convolutions compute: ``{"api", "matmul", "cudnn_conv"}``, read
    through the ``fp32_precision`` API where PyTorch has it (reading the legacy ``allow_tf32``
    flags after setting the new API can raise), else ``allow_tf32`` (``"tf32"`` / ``"ieee"``)."""
    b = torch.backends
    conv = getattr(b.cudnn, "conv", None)
    if hasattr(b.cuda.matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        return {"api": "fp32_precision", "matmul": b.cuda.matmul.fp32_precision, "cudnn_conv": conv.fp32_precision}
    return {"api": "allow_tf32", "matmul": "tf32" if b.cuda.matmul.allow_tf32 else "ieee",
            "cudnn_conv": "tf32" if b.cudnn.allow_tf32 else "ieee"}


def set_fp32_precision(torch, tf32: bool, state: dict | None = None) -> dict:
    """Set fp32 matmuls and cuDNN convolutions to TF32 (``tf32`` True) or full fp32 (``"ieee"``),
    explicitly, through ``fp32_precision`` where present, else ``allow_tf32``; ``state`` (as
    :func:`fp32_precision_state` returns it) restores a saved state instead. Returns the state set."""
    b = torch.backends
    want = state or {"matmul": "tf32" if tf32 else "ieee", "cudnn_conv": "tf32" if tf32 else "ieee"}
    if fp32_precision_state(torch)["api"] == "fp32_precision":
        b.cuda.matmul.fp32_precision = want["matmul"]
        b.cudnn.conv.fp32_precision = want["cudnn_conv"]
    else:
        b.cuda.matmul.allow_tf32 = want["matmul"] == "tf32"
        b.cudnn.allow_tf32 = want["cudnn_conv"] == "tf32"
    return fp32_precision_state(torch)


def mask_iou_stats(ref: np.ndarray, ours: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """IoU of boolean masks [frames, objects, H, W]; empty-vs-empty counts as 1.

    ``min_iou`` is the lowest IoU of any frame and object; ``min_frame_iou`` the lowest
    per-frame mean over the objects."""
    if ref.shape != ours.shape:
        raise ValueError(f"mask shapes differ: {ref.shape} vs {ours.shape}")
    inter = np.logical_and(ref, ours).sum(axis=(-1, -2)).astype(np.float64)
    union = np.logical_or(ref, ours).sum(axis=(-1, -2)).astype(np.float64)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    per_frame = iou.reshape(iou.shape[0], -1).mean(axis=1) if iou.ndim > 1 else iou
    if valid is not None:
        iou = iou[valid]
    iou = iou.ravel()
    return {"mean_iou": float(iou.mean()), "min_iou": float(iou.min()), "min_frame_iou": float(per_frame.min()),
            "pairs": int(iou.size)}


def sign_agreement(ref_scores: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of (frame, object) pairs whose object scores agree in sign (visible or not);
    pairs where either is NaN (before an object's first prompt) are left out."""
    ref_scores, scores = np.asarray(ref_scores, np.float64), np.asarray(scores, np.float64)
    if ref_scores.shape != scores.shape:
        raise ValueError(f"score shapes differ: {ref_scores.shape} vs {scores.shape}")
    ok = np.isfinite(ref_scores) & np.isfinite(scores)
    if not ok.any():
        raise ValueError("no pair of finite scores to compare")
    return float(np.mean((ref_scores[ok] > 0) == (scores[ok] > 0)))


def is_official(backend: str) -> bool:
    return backend.startswith("official")


def precision_of(row: dict) -> str:
    """A row's precision: as recorded, else the contender's (``torch-bf16`` -> ``bf16``)."""
    return row.get("precision") or PRECISION.get(row["backend"], "?")


def speedups(results: list[dict], baseline: str = "official-vos") -> list[dict]:
    """FPS of every row over the baseline's FPS at the same model, size and object count
    (long-run rows only against the long-run baseline)."""
    key = lambda r: (r["model"], r["image_size"], r["objects"], bool(r.get("long_run")))  # noqa: E731
    base = {key(r): r["fps"] for r in results if r["backend"] == baseline and r.get("fps") and not r.get("error")}
    out = []
    for r in results:
        b = base.get(key(r))
        if b and r.get("fps") and not r.get("error") and r["backend"] != baseline:
            out.append({**{k: r[k] for k in ("model", "image_size", "objects", "backend")},
                        "long_run": bool(r.get("long_run")), "speedup": r["fps"] / b})
    return out


def floor_fraction(row: dict) -> float | None:
    """Analytic floor over measured median latency (1 = the GPU's matmul rate on every FLOP)."""
    if row.get("floor_ms") and row.get("median_ms"):
        return row["floor_ms"] / row["median_ms"]
    return None


def _check(criterion: str, value, target: str, passed: bool | None, detail: str | None = None) -> dict:
    """One acceptance check; ``passed`` None: not measured in this run."""
    return {"criterion": criterion, "value": value, "detail": detail, "target": target, "passed": passed}


def check_targets(results: list[dict], parity: list[dict] | None = None) -> list[dict]:
    """The benchmark issue's acceptance checks, each ``{criterion, value, target, passed}``;
    ``passed`` is None where the run has no measurement for it."""
    checks = []
    sp = [s for s in speedups(results) if not s["long_run"]]
    for n, target in SPEEDUP_TARGETS.items():
        cands = [s for s in sp if s["model"].endswith("tiny") and s["image_size"] == 1024 and s["objects"] == n
                 and not is_official(s["backend"])]
        best = max(cands, key=lambda s: s["speedup"], default=None)
        checks.append(_check(
            f"speed-up with {n} object(s) vs official vos_optimized (tiny @ 1024, our best)",
            None if best is None else round(best["speedup"], 2), f">= {target}",
            None if best is None else best["speedup"] >= target, None if best is None else best["backend"]))
    ours = [r for r in results if not is_official(r["backend"]) and r.get("fps") and not r.get("error")]
    timed = [r for r in ours if not r.get("long_run")] or ours
    worst = max(timed, key=lambda r: r["p99_over_median"], default=None)
    checks.append(_check(
        "p99 / median latency (our contenders, worst row)",
        None if worst is None else round(worst["p99_over_median"], 2), f"<= {P99_OVER_MEDIAN_MAX}",
        None if worst is None else worst["p99_over_median"] <= P99_OVER_MEDIAN_MAX,
        None if worst is None else f"{worst['backend']} {worst['model']}@{worst['image_size']} x{worst['objects']}"))
    long_runs = [r for r in ours if r.get("long_run") and r.get("retained_growth_device_mb") is not None]
    growth = max(long_runs, key=lambda r: r["retained_growth_device_mb"], default=None)
    checks.append(_check(
        "memory growth over the long run (device-level retained memory; our contenders, worst)",
        None if growth is None else round(growth["retained_growth_device_mb"], 1), f"<= {MEMORY_GROWTH_MAX_MB} MB",
        None if growth is None else growth["retained_growth_device_mb"] <= MEMORY_GROWTH_MAX_MB,
        None if growth is None else f"{growth['backend']} over {growth['frames']} frames"))
    at8 = [(floor_fraction(r), r) for r in timed if r["model"].endswith("tiny") and r["image_size"] == 1024
           and r["objects"] == 8 and floor_fraction(r) is not None]
    best = max(at8, key=lambda fr: fr[0], default=None)
    checks.append(_check(
        "fraction of the analytic floor with 8 objects (tiny @ 1024, our best)",
        None if best is None else round(best[0], 2), f">= {FLOOR_FRACTION_MIN}",
        None if best is None else best[0] >= FLOOR_FRACTION_MIN, None if best is None else best[1]["backend"]))
    ok = [p for p in parity or [] if not p.get("error")]
    low = [p for p in ok if precision_of(p) in ("bf16", "fp16")]
    for field, label, target in (("mean_iou", "mean IoU", PARITY_IOU_MIN), ("min_iou", "minimum IoU (any frame and object)", PARITY_MIN_IOU_MIN),
                                 ("sign_agreement", "object-score sign agreement", PARITY_SIGNS_MIN)):
        have = [p for p in low if p.get(field) is not None]
        w = min(have, key=lambda p: p[field], default=None)
        checks.append(_check(
            f"parity bf16 / fp16 {label} vs official fp32 (worst)", None if w is None else round(w[field], 4),
            f">= {target}", None if w is None else w[field] >= target,
            None if w is None else f"{w['backend']} {w['model']}@{w['image_size']}"))
    fp32 = [p for p in ok if precision_of(p) == "fp32"]
    w = min(fp32, key=lambda p: p["mean_iou"], default=None)
    checks.append(_check(
        "parity fp32 mean IoU vs official fp32 on the device (worst)", None if w is None else round(w["mean_iou"], 4),
        f">= {PARITY_FP32_IOU_MIN}", None if w is None else w["mean_iou"] >= PARITY_FP32_IOU_MIN,
        None if w is None else f"{w['backend']} {w['model']}@{w['image_size']}"))
    return checks


def _fmt(v, nd=1):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _order_key(r: dict):
    order = {b: i for i, b in enumerate(ALL_BACKENDS)}
    return (r["model"], r["image_size"], bool(r.get("long_run")), r["objects"], order.get(r["backend"], 99), r["backend"])


def _matmul_text(meta: dict) -> str:
    m = meta.get("matmul_tflops")
    if isinstance(m, dict):
        rates = ", ".join(f"{k} {_fmt(v)}" for k, v in m.items())
        return f"Measured dense matmul throughput (TFLOPS): {rates}; a row's analytic floor is its frame's FLOPs at the rate of its precision."
    if isinstance(m, (int, float)):
        return f"Measured dense FP16 matmul throughput: {_fmt(float(m))} TFLOPS (the analytic floor is the frame's FLOPs at this rate)."
    return f"Matmul throughput and analytic floor: not measured ({meta.get('matmul_skipped', 'no GPU')})."


def render_markdown(results: list[dict], meta: dict, parity: list[dict] | None = None, projections: list[dict] | None = None,
                    skipped: list[dict] | None = None) -> str:
    """RESULTS.md from result rows (see :func:`cell_rows` for the row fields)."""
    sp = {(s["model"], s["image_size"], s["objects"], s["backend"], s["long_run"]): s["speedup"] for s in speedups(results)}
    smoke = meta.get("smoke")
    lines = ["# GPU benchmark results" + (f" ({SMOKE_LABEL})" if smoke else ""), ""]
    if smoke:
        lines += [f"**{SMOKE_LABEL}.** The numbers below only show that the benchmark runs end to end.", ""]
    lines += [
        f"Device: **{meta.get('device', '?')}**; driver {meta.get('driver', '?')}, CUDA {meta.get('cuda', '?')}; "
        f"{meta.get('software', '')}",
        f"Date: {meta.get('date', '?')}. CPU threads: {meta.get('threads', '?')}. Weights: {meta.get('weights', '?')}.",
        f"Frames: {meta.get('frames', '?')} timed per cell after {meta.get('warmup', '?')} warm-up frames, from "
        f"{meta.get('video', '?')} played forth and back; one click per object on frame 0 (a grid).",
        "",
        INTERLEAVING,
        _matmul_text(meta),
        "",
    ]
    for cmd in meta.get("commands") or ([meta["command"]] if meta.get("command") else []):
        lines += ["Command:", "", f"    {cmd}", ""]
    for note in meta.get("notes", []):
        lines.append(f"* {note}")
    lines += [
        "",
        "| model | size | objects | contender | precision | FPS | median ms | engine median ms | p99 ms | p99/median | "
        "peak device MB | retained device MB | growth MB | torch peak allocated MB | torch peak reserved MB | "
        "floor ms | floor / median | vs vos |",
        "|" + "---|" * 18,
    ]
    for r in sorted(results, key=_order_key):
        name = f"{r['backend']}{' (long run)' if r.get('long_run') else ''}"
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['image_size']} | {r['objects']} | {name} | {precision_of(r)} | "
                         f"failed: {str(r['error'])[:100]} |" + "|" * 12)
            continue
        if r.get("engine_opt_objects") is not None:
            name += f" (opt {r['engine_opt_objects']})"
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['objects']} | {name} | {precision_of(r)} | "
            f"{_fmt(r['fps'])} | {_fmt(r['median_ms'], 2)} | {_fmt(r.get('engine_median_ms'), 2)} | {_fmt(r['p99_ms'], 2)} | "
            f"{_fmt(r['p99_over_median'], 2)} | {_fmt(r.get('peak_device_mb'), 0)} | {_fmt(r.get('retained_device_mb'), 0)} | "
            f"{_fmt(r.get('retained_growth_device_mb'))} | {_fmt(r.get('torch_peak_allocated_mb'), 0)} | "
            f"{_fmt(r.get('torch_peak_reserved_mb'), 0)} | {_fmt(r.get('floor_ms'), 2)} | "
            f"{_fmt(floor_fraction(r), 2)} | "
            f"{_fmt(sp.get((r['model'], r['image_size'], r['objects'], r['backend'], bool(r.get('long_run')))), 2)} |"
        )
    lines += ["", MEMORY_DEFINITIONS, "", ENGINE_TIME_DEFINITION]
    counters = {}
    for r in sorted(results, key=_order_key):
        for col, counter in (r.get("memory_counters") or {}).items():
            counters.setdefault(col, {}).setdefault(counter, []).append(r["backend"])
    if counters:
        lines += ["", "Memory counters of this run (column: counter, contenders):", ""]
        for col, by in counters.items():
            for counter, names in by.items():
                lines.append(f"* {col}: {counter} ({', '.join(dict.fromkeys(names))})")
    clocks = {}
    for r in sorted(results, key=_order_key):
        if r.get("engine_clock"):
            clocks.setdefault(r["engine_clock"], []).append(r["backend"])
    if clocks:
        lines += ["", "Engine clocks of this run:", ""]
        lines += [f"* {clock} ({', '.join(dict.fromkeys(names))})" for clock, names in clocks.items()]
    ran = {}
    for r in sorted(results, key=_order_key):
        if r.get("ran_with") and r["backend"] not in ran:
            ran[r["backend"]] = r["ran_with"]
    if ran:
        lines += ["", "## What each contender ran with", "", "| contender | settings |", "|---|---|"]
        for name, opts in ran.items():
            lines.append(f"| {name} | {', '.join(f'{k}={v}' for k, v in opts.items())} |")
    if skipped:
        lines += ["", "## Skipped contenders", "", "| model | size | contender | reason |", "|---|---|---|---|"]
        for s in skipped:
            lines.append(f"| {s.get('model', '-')} | {s.get('image_size', '-')} | {s['backend']} | {str(s['reason'])[:200]} |")
    if parity:
        lines += ["", "## Parity with the official predictor (fp32, same device, same frames and clicks)", "",
                  f"{meta.get('parity_note', '')}", "",
                  "| model | size | objects | contender | precision | frames | mean IoU | min IoU | min frame IoU | "
                  "score signs |", "|---|---|---|---|---|---|---|---|---|---|"]
        for p in parity:
            if p.get("error"):
                lines.append(f"| {p['model']} | {p['image_size']} | {p['objects']} | {p['backend']} | {precision_of(p)} | "
                             f"failed: {str(p['error'])[:100]} |||||")
                continue
            lines.append(f"| {p['model']} | {p['image_size']} | {p['objects']} | {p['backend']} | {precision_of(p)} | "
                         f"{p['frames']} | {p['mean_iou']:.4f} | {p['min_iou']:.4f} | {_fmt(p.get('min_frame_iou'), 4)} | "
                         f"{_fmt(p.get('sign_agreement'), 3)} |")
    lines += ["", "## Targets", "", "| criterion | value | target | passed |", "|---|---|---|---|"]
    for c in check_targets(results, parity):
        detail = f" ({c['detail']})" if c.get("detail") else ""
        verdict = "not measured" if c["passed"] is None else ("yes" if c["passed"] else "NO")
        lines.append(f"| {c['criterion']} | {_fmt(c['value'], 2)}{detail} | {c['target']} | {verdict} |")
    if projections:
        lines += ["", "## Projection from FLOPs (not measured)", "",
                  "| model | size | objects | GFLOP/frame | device | peak FP16 TFLOPS | FPS @25% | FPS @40% |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in projections:
            lines.append(f"| {p['model']} | {p['image_size']} | {p['objects']} | {p['gflop']} | {p['device']} | "
                         f"{p['tflops_fp16']} | {p.get('fps@0.25', '-')} | {p.get('fps@0.4', '-')} |")
    return "\n".join(lines) + "\n"


def plot_results(results: list[dict], path: str | Path, title: str = "") -> Path:
    """FPS against objects, one line per contender, one panel per model and size; plus a panel
    of memory along the long run when the rows carry samples (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.get("error") and r.get("fps") and not r.get("long_run")]
    long_runs = [r for r in results if r.get("long_run") and not r.get("error") and r.get("mem_samples")]
    panels = sorted({(r["model"], r["image_size"]) for r in ok})
    if not panels:
        raise ValueError("no successful results to plot")
    n_axes = len(panels) + (1 if long_runs else 0)
    cols = min(4, n_axes)
    rows = math.ceil(n_axes / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    names = list(dict.fromkeys([b for b in ALL_BACKENDS] + [r["backend"] for r in results]))
    for ax, (model, size) in zip(axes.ravel(), panels):
        for backend in names:
            pts = sorted((r["objects"], r["fps"]) for r in ok if (r["model"], r["image_size"], r["backend"]) == (model, size, backend))
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", linestyle="--" if is_official(backend) else "-", label=backend)
        ax.set_title(f"{model.replace('sam2.1_hiera_', '')} @ {size}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("objects")
        ax.set_ylabel("FPS")
        ax.grid(True, alpha=0.3)
    if long_runs:
        ax = axes.ravel()[len(panels)]
        for r in long_runs:
            f, mb = zip(*r["mem_samples"])
            ax.plot(f, mb, linestyle="--" if is_official(r["backend"]) else "-", label=r["backend"])
        r0 = long_runs[0]
        ax.set_title(f"retained device memory, {r0['model'].replace('sam2.1_hiera_', '')} @ {r0['image_size']} "
                     f"x{r0['objects']}", fontsize=9)
        ax.set_xlabel("frame")
        ax.set_ylabel("MB")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n_axes:]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def merge_documents(docs: list[dict]) -> dict:
    """One results document from several runs (parts of the table): rows concatenated, the
    first run's meta with every run's command line."""
    if len(docs) == 1:
        return docs[0]
    meta = dict(docs[0].get("meta", {}))
    meta["commands"] = [d.get("meta", {}).get("command") for d in docs if d.get("meta", {}).get("command")]
    meta["smoke"] = any(d.get("meta", {}).get("smoke") for d in docs)
    meta.setdefault("notes", [])
    meta["notes"] = list(meta["notes"]) + [f"Merged from {len(docs)} runs; each cell's rows come from one of them."]
    return {"meta": meta, **{k: [x for d in docs for x in d.get(k) or []] for k in ("results", "parity", "projections", "skipped")}}


def write_report(data: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write RESULTS.md and results_gpu.png from a results document (as saved in results_gpu.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = data.get("meta", {})
    md = out_dir / "RESULTS.md"
    md.write_text(render_markdown(data["results"], meta, data.get("parity"), data.get("projections"), data.get("skipped")))
    paths = {"markdown": md}
    if importlib.util.find_spec("matplotlib") is None:
        print("gpu_bench: matplotlib is not installed (EdgeTAM's environment has none): no plot written", file=sys.stderr)
    elif any(not r.get("error") and r.get("fps") for r in data["results"]):
        title = f"{meta.get('device', '')}{' - ' + SMOKE_LABEL if meta.get('smoke') else ''}"
        paths["plot"] = plot_results(data["results"], out_dir / "results_gpu.png", title)
    return paths


def click_grid(n: int, frame_hw: tuple[int, int]) -> list[tuple[float, float]]:
    """``n`` click positions (x, y) spread over the frame on a grid (one object each)."""
    h, w = frame_hw
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return [(((i % cols) + 0.5) * w / cols, ((i // cols) + 0.5) * h / rows) for i in range(n)]


def stream_frames(frames: list, count: int) -> list:
    """``count`` frames from a clip played forth and back (no jump cut)."""
    if not frames:
        raise ValueError("no frames")
    cycle = frames + frames[-2:0:-1] if len(frames) > 2 else frames
    return [cycle[i % len(cycle)] for i in range(count)]


def rotations(names: list[str], frame: int) -> list[str]:
    """The order in which the contenders step on ``frame``: rotated by one each frame."""
    k = frame % len(names) if names else 0
    return names[k:] + names[:k]


# ============================================================= measurement (one process, every contender)
class Skip(Exception):
    """A contender that cannot run here; the message is the recorded reason."""


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Device:
    """The device under measurement: synchronisation, the memory counters and the engine clock.

    Every contender's memory is sampled the same way (see :class:`ContenderMemory`): the
    device-level used memory (``mem_get_info``: total - free; on the CPU, smoke run, the
    process's resident memory), plus PyTorch's CUDA allocator for torch-based contenders."""

    def __init__(self, name: str):
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())

    @property
    def index(self) -> int:
        """The CUDA device index (0 on the CPU)."""
        return int(self.device.index or 0)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def used(self) -> int:
        """Device-level used bytes: ``total - free`` of ``cudaMemGetInfo`` (every allocator and
        process on the device); on the CPU the process's resident set."""
        if self.cuda:
            free, total = self.torch.cuda.mem_get_info(self.device)
            return int(total - free)
        return _rss_bytes()

    def torch_sample(self) -> tuple[int, int]:
        """PyTorch's CUDA allocator now: (allocated, reserved) bytes."""
        tc = self.torch.cuda
        return int(tc.memory_allocated(self.device)), int(tc.memory_reserved(self.device))

    def torch_reset_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def torch_peak(self) -> tuple[int, int]:
        """PyTorch's CUDA allocator's peaks since :meth:`torch_reset_peak`: (allocated, reserved)."""
        tc = self.torch.cuda
        return int(tc.max_memory_allocated(self.device)), int(tc.max_memory_reserved(self.device))

    def memory_counters(self, backend: str) -> dict[str, str]:
        """Which counter each memory column of ``backend``'s rows comes from (recorded per row)."""
        if self.cuda:
            dev = f"device used: total - free of torch.cuda.mem_get_info({self.device}) (cudaMemGetInfo; all processes)"
        else:
            dev = "process RSS (/proc/self/statm resident pages): CPU smoke run, no device counter"
        out = {"peak_device_mb": dev, "retained_device_mb": dev, "retained_growth_device_mb": dev}
        if not self.cuda:
            why = "not measured: PyTorch's CUDA allocator only (CPU smoke run)"
            out.update(torch_peak_allocated_mb=why, torch_peak_reserved_mb=why)
        elif torch_based(backend):
            out.update(torch_peak_allocated_mb="torch.cuda.max_memory_allocated after reset_peak_memory_stats, per step",
                       torch_peak_reserved_mb="torch.cuda.max_memory_reserved after reset_peak_memory_stats, per step")
        else:
            why = f"not measured: {backend} allocates outside PyTorch's allocator"
            out.update(torch_peak_allocated_mb=why, torch_peak_reserved_mb=why)
        return out

    def engine_clock(self, backend) -> "HostClock | CudaEventClock":
        """The clock of :class:`EngineTimer` for ``backend``: CUDA events on the stream the
        backend enqueues on (TensorRT: its own stream; torch: the current stream), perf_counter on the CPU."""
        if not self.cuda:
            return HostClock()
        handle = getattr(backend, "cuda_stream", None)  # the TensorRT backend's cudaStream_t
        stream = self.torch.cuda.ExternalStream(handle, device=self.device) if handle else None
        return CudaEventClock(self.torch, stream)

    def empty_cache(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()


def torch_based(backend: str) -> bool:
    """Contenders whose memory PyTorch's allocator holds: ours on the torch backend and the official ones."""
    return backend in TORCH_CONTENDERS or is_official(backend)


class ContenderMemory:
    """One contender's memory in one cell, sampled around its stream's opening and each of its
    steps (:class:`MemoryLedger` per counter): the device-level used memory for every contender,
    PyTorch's allocated and reserved bytes with their in-step peaks for torch-based ones on CUDA."""

    def __init__(self, device: Device, backend: str):
        self.device = device
        self.torch = device.cuda and torch_based(backend)
        self.ledgers = {k: MemoryLedger() for k in ("device", "allocated", "reserved")[: 3 if self.torch else 1]}
        self._before: dict[str, int] = {}

    def begin(self) -> None:
        """Sample before an interval (after the device is synchronised)."""
        self._before = {"device": self.device.used()}
        if self.torch:
            self._before["allocated"], self._before["reserved"] = self.device.torch_sample()
            self.device.torch_reset_peak()

    def end(self, frame: int | None = None) -> None:
        """Sample after the interval (synchronised) and charge it; ``frame`` None: the opening."""
        after = {"device": self.device.used()}
        peak = {}
        if self.torch:
            after["allocated"], after["reserved"] = self.device.torch_sample()
            peak["allocated"], peak["reserved"] = self.device.torch_peak()
        for k, ledger in self.ledgers.items():
            ledger.charge(self._before[k], after[k], peak.get(k), frame)

    def figures(self, warmup: int, mem_every: int) -> dict:
        """The row's memory fields (MB): see the module docstring for the definitions."""
        mb = 2**-20
        dev = self.ledgers["device"]
        last = dev.series[-1][0] if dev.series else None
        series = [(f, b) for f, b in dev.series if f == warmup or f % mem_every == 0 or f == last]
        out = {"peak_device_mb": dev.peak * mb, "retained_device_mb": dev.held * mb,
               "retained_growth_device_mb": memory_growth_mb(dev.series, warmup),
               "mem_samples": [(f, round(b * mb, 2)) for f, b in series],
               "torch_peak_allocated_mb": None, "torch_peak_reserved_mb": None}
        if self.torch:
            out["torch_peak_allocated_mb"] = self.ledgers["allocated"].peak * mb
            out["torch_peak_reserved_mb"] = self.ledgers["reserved"].peak * mb
        return out


class HostClock:
    """perf_counter spans (the CPU smoke run's engine clock: host time, no CUDA events)."""

    label = "perf_counter around the backend's graph calls (CPU smoke run: host time)"

    def start(self) -> list:
        return [time.perf_counter(), None]

    def stop(self, span: list) -> None:
        span[1] = time.perf_counter()

    def seconds(self, span: list) -> float:
        return span[1] - span[0]

    def new_frame(self) -> None:
        pass


class CudaEventClock:
    """CUDA-event spans on one stream (``None``: the current stream at each call); events are
    pooled and reused frame after frame, read after the step's device synchronisation."""

    label = "CUDA events (torch.cuda.Event, enable_timing) around the backend's graph calls, on its stream"

    def __init__(self, torch, stream=None):
        self.torch, self.stream = torch, stream
        self._pool: list = []
        self._next = 0

    def _event(self):
        if self._next == len(self._pool):
            self._pool.append(self.torch.cuda.Event(enable_timing=True))
        self._next += 1
        return self._pool[self._next - 1]

    def new_frame(self) -> None:
        self._next = 0

    def start(self) -> tuple:
        span = (self._event(), self._event())
        span[0].record(self.stream)
        return span

    def stop(self, span: tuple) -> None:
        span[1].record(self.stream)

    def seconds(self, span: tuple) -> float:
        return span[0].elapsed_time(span[1]) / 1e3


class EngineTimer:
    """Engine-only time per frame: the backend's graph calls (``METHODS``) of one contender,
    wrapped on the backend instance and timed with ``clock``; nested calls (a composed
    ``track_step`` calling ``decode``) count once, in the outermost. Host pre- and
    post-processing (the tracker's imaging, mask copies, bank bookkeeping) stay outside.
    :meth:`begin_frame` before a step, :meth:`end_frame` after the step's synchronisation returns
    the frame's summed seconds; :meth:`remove` puts the backend's own methods back."""

    METHODS = ("encode_image", "track_step", "attend_memory", "decode", "encode_memory")

    def __init__(self, backend, clock):
        self.backend, self.clock = backend, clock
        self.label = clock.label
        self.calls = 0
        self._depth = 0
        self._spans: list = []
        self._wrapped: list[str] = []
        for name in self.METHODS:
            if callable(getattr(backend, name, None)) and name not in vars(backend):
                setattr(backend, name, self._wrap(getattr(backend, name)))
                self._wrapped.append(name)

    def _wrap(self, method):
        def timed(*args, **kwargs):
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            span = self.clock.start()
            try:
                return method(*args, **kwargs)
            finally:
                self.clock.stop(span)
                self._spans.append(span)
                self.calls += 1
                self._depth -= 1

        timed.__wrapped__ = method
        return timed

    def begin_frame(self) -> None:
        self._spans.clear()
        self.clock.new_frame()

    def end_frame(self) -> float:
        """Seconds inside the graph calls since :meth:`begin_frame` (read after the device synchronisation)."""
        total = sum(self.clock.seconds(s) for s in self._spans)
        self._spans.clear()
        return total

    def remove(self) -> None:
        for name in self._wrapped:
            vars(self.backend).pop(name, None)
        self._wrapped.clear()


def measure_matmul_tflops(device: Device, dtype, n: int = 8192, iters: int = 20) -> float:
    """Dense matmul throughput of the GPU in ``dtype`` (median of ``iters`` products timed with CUDA events)."""
    torch = device.torch
    a = torch.randn(n, n, device=device.device, dtype=dtype)
    b = torch.randn(n, n, device=device.device, dtype=dtype)
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
    del a, b
    return 2 * n**3 / float(np.median(times)) / 1e12


class FrameSource:
    """The clip, played forth and back for as many frames as a cell needs; the same frames for all."""

    def __init__(self, clip: list[np.ndarray]):
        if not clip:
            raise ValueError("empty clip")
        self.clip = clip
        self.hw = clip[0].shape[:2]
        idx = list(range(len(clip)))
        self._cycle = idx + idx[-2:0:-1] if len(idx) > 2 else idx  # one period of stream_frames
        self._official: dict[int, object] = {}

    def index(self, i: int) -> int:
        return self._cycle[i % len(self._cycle)]

    def rgb(self, i: int) -> np.ndarray:
        return self.clip[self.index(i)]

    def prepare_official(self, image_size: int, device: Device) -> None:
        """The clip through the official loader's preprocessing, on the device (the official
        default, ``offload_video_to_cpu=False``); made once per size, before any counting or timing."""
        if image_size not in self._official:
            from sam2_ros_export.reference import _official_images

            self._official.clear()  # one size at a time on the device
            self._official[image_size] = _official_images(self.clip, image_size).to(device.device)

    def official_images(self, image_size: int, device: Device, count: int) -> "StreamImages":
        self.prepare_official(image_size, device)
        return StreamImages(self._official[image_size], self, count)


class StreamImages:
    """What the official predictor indexes as its video: ``count`` frames of the played clip."""

    def __init__(self, images, source: FrameSource, count: int):
        self.images, self.source, self.count = images, source, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        return self.images[self.source.index(i)]


class OursStream:
    """Our tracker over the cell's frames; the clicks go in after frame 0's step."""

    def __init__(self, backend, source: FrameSource, clicks, count: int, fill_hole_area: int):
        from sam2_ros.tracker import Tracker

        self.source, self.clicks = source, clicks
        self.tracker = Tracker(backend, max_objects=len(clicks), num_frames=count if count >= 2 else None,
                               fill_hole_area=fill_hole_area)

    def step(self, i: int) -> np.ndarray:
        res = self.tracker.step(self.source.rgb(i))
        if i == 0:
            for oid, (x, y) in enumerate(self.clicks, start=1):
                res = self.tracker.add_prompt(oid, points=[[x, y]], labels=[1])
        return res.masks  # on the host, as a robot's consumer needs them

    def close(self) -> None:
        self.tracker = None  # not Tracker.close(): the backend serves the next cell


class OfficialStream:
    """The official predictor over the same frames: ``init_state``, clicks on frame 0, then
    ``propagate_in_video`` one frame per :meth:`step`, all under autocast to ``dtype`` (None: fp32)."""

    def __init__(self, predictor, images: StreamImages, hw, clicks, dtype, device: Device):
        from unittest import mock

        import sam2.sam2_video_predictor as svp

        torch = device.torch
        self.predictor = predictor
        self._autocast = (lambda: torch.autocast(device.device.type, dtype=dtype)) if dtype is not None else nullcontext
        with self._autocast():
            with mock.patch.object(svp, "load_video_frames", lambda **kw: (images, hw[0], hw[1])):
                self.state = predictor.init_state(video_path="<frames in memory>")
            for oid, (x, y) in enumerate(clicks, start=1):
                predictor.add_new_points_or_box(self.state, 0, oid, points=np.array([[x, y]], np.float32),
                                                labels=np.array([1], np.int32))
        self._gen = predictor.propagate_in_video(self.state)

    def step(self, i: int) -> np.ndarray:
        with self._autocast():
            fi, _, video_masks = next(self._gen)
        if fi != i:
            raise RuntimeError(f"official predictor yielded frame {fi}, expected {i}")
        return (video_masks[:, 0] > 0).cpu().numpy()

    def close(self) -> None:
        self._gen.close()
        self.predictor.reset_state(self.state)
        self.state = self._gen = None


class Contender:
    """One contender of a (model, size): an opened backend (ours) or predictor (official);
    ``engine_opt_objects``: the object count its TensorRT engines are tuned for."""

    def __init__(self, name: str, handle, ran_with: dict, dtype=None, engine_opt_objects: int | None = None):
        self.name, self.handle, self.ran_with, self.dtype = name, handle, ran_with, dtype
        self.engine_opt_objects = engine_opt_objects
        self.official = is_official(name)
        self.load_s = self.warm_up_s = 0.0
        self.load_device_mb = 0.0

    def stream(self, source: FrameSource, clicks, count: int, fill_hole_area: int, device: Device, image_size: int):
        if self.official:
            images = source.official_images(image_size, device, count)
            return OfficialStream(self.handle, images, source.hw, clicks, self.dtype, device)
        return OursStream(self.handle, source, clicks, count, fill_hole_area)

    def close(self) -> None:
        if not self.official and hasattr(self.handle, "close"):
            self.handle.close()
        self.handle = None


class RunContext:
    """What opening a contender needs for one model and size."""

    def __init__(self, device: Device, model: str, image_size: int, checkpoint: Path, onnx_dir: Path,
                 engine_dirs: dict[int, Path] | None, engine_reason: str | None, threads: int, torch_options: dict,
                 max_objects: int):
        self.device, self.model, self.image_size, self.checkpoint = device, model, image_size, checkpoint
        #: TensorRT engine directories by the object count they are tuned for (:func:`prepare_engines`)
        self.onnx_dir, self.engine_dirs, self.engine_reason = onnx_dir, engine_dirs, engine_reason
        self.threads, self.torch_options, self.max_objects = threads, torch_options, max_objects


def open_contender(name: str, ctx: RunContext, objects: int | None = None) -> Contender:
    """Open ``name`` for ``ctx``; raises :class:`Skip` (with the reason) where it cannot run here.
    ``objects``: TensorRT opens the engines tuned for that object count (default: the fewest built)."""
    from sam2_ros.backends import load_backend

    torch, dev = ctx.device.torch, ctx.device
    if is_official(name):
        from sam2_ros.backends.torch_backend.official import build_video_predictor

        from sam2_ros.models import official_model

        vos = name == "official-vos"
        if official_model(ctx.model).package == "edgetam":
            raise Skip("Meta's EdgeTAM predictor cannot batch objects (EdgeTAM issue 15); `sam2-ros bench --model "
                       "edgetam` times it with one inference state per object")
        if vos and not dev.cuda:
            raise Skip("vos_optimized compiles the model with torch.compile (max-autotune) for CUDA; not run on the CPU")
        dtype = None if name == "official-fp32" else torch.bfloat16
        try:
            predictor = build_video_predictor(ctx.model, ctx.checkpoint, image_size=ctx.image_size,
                                              device=str(dev.device), vos_optimized=vos)
        except Exception as e:  # noqa: BLE001 - recorded as the reason
            raise Skip(f"could not build the official predictor: {type(e).__name__}: {e}") from e
        ran_with = {"predictor": type(predictor).__name__, "device": str(dev.device),
                    "autocast": "bfloat16" if dtype is not None else "off (fp32)", "vos_optimized": vos,
                    "frames": "preprocessed by its loader before the run, on the device"}
        return Contender(name, predictor, ran_with, dtype)
    if name in TORCH_CONTENDERS:
        precision = name.split("-")[1]
        opts = {"checkpoint": ctx.checkpoint, "device": str(dev.device), "precision": precision, **ctx.torch_options}
        engine, backend_name = ctx.onnx_dir, "torch"
    elif name == "onnxruntime-cuda":
        if not dev.cuda:
            raise Skip("ONNX Runtime CUDA needs a CUDA device")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise Skip(f"onnxruntime is not installed: {e}") from e
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (has {ort.get_available_providers()}); "
                       "install onnxruntime-gpu")
        opts = {"providers": ["cuda"], "intra_op_threads": ctx.threads, "allow_spinning": False}
        engine, backend_name = ctx.onnx_dir, "onnxruntime"
    elif name == "tensorrt":
        if not ctx.engine_dirs:
            raise Skip(ctx.engine_reason or "no TensorRT engines")
        opt = objects if objects in ctx.engine_dirs else min(ctx.engine_dirs)
        opts, engine, backend_name = {"device": dev.index}, ctx.engine_dirs[opt], "tensorrt"
    else:
        raise ValueError(f"unknown contender {name!r}")
    try:
        backend = load_backend(engine, backend_name, **opts)
    except Exception as e:  # noqa: BLE001 - recorded as the reason
        raise Skip(f"{type(e).__name__}: {e}") from e
    ran_with = {"backend": backend_name, **{k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items() if k != "checkpoint"},
                "imaging": type(getattr(backend, "imaging", None)).__name__}
    c = Contender(name, backend, ran_with)
    if name == "tensorrt":
        c.engine_opt_objects = opt
        ran_with["engines"] = f"fp16, built per object count (opt_objects = the cell's), max_objects {ctx.max_objects}"
    if hasattr(backend, "warm_up"):
        t0 = time.perf_counter()
        backend.warm_up(ctx.max_objects)
        dev.sync()
        c.warm_up_s = time.perf_counter() - t0
        ran_with["warm_up"] = f"warm_up({ctx.max_objects}) before timing, {c.warm_up_s:.1f} s"
    return c


def interleaved(contenders: list[Contender], source: FrameSource, n_objects: int, count: int, warmup: int,
                device: Device, fill_hole_area: int, image_size: int, mem_every: int) -> dict[str, dict]:
    """Step every contender through ``count`` frames, taking turns frame by frame in a rotating
    order; time each step alone between two device synchronisations (frames >= ``warmup``), the
    backend's graph calls of ours inside it (:class:`EngineTimer`), and sample each contender's
    memory around its stream's opening and its own steps (:class:`ContenderMemory`). Python's GC
    is paused for the timed frames (:func:`gc_paused`). Returns per contender: ``seconds``,
    ``engine_seconds``, ``engine_clock``, ``memory`` (the row's memory fields), or ``error``."""
    clicks = click_grid(n_objects, source.hw)
    out: dict[str, dict] = {}
    streams, timers, memory = {}, {}, {}
    by_name = {c.name: c for c in contenders}
    if any(c.official for c in contenders):
        source.prepare_official(image_size, device)  # shared by the official contenders: counted for none
    paused = ExitStack()
    try:
        for c in contenders:
            rec = out[c.name] = {"seconds": [], "engine_seconds": [], "engine_clock": None}
            device.sync()
            device.empty_cache()  # the baseline without blocks others freed into PyTorch's cache
            mem = memory[c.name] = ContenderMemory(device, c.name)
            mem.begin()
            try:
                streams[c.name] = c.stream(source, clicks, count, fill_hole_area, device, image_size)
            except Exception as e:  # noqa: BLE001 - recorded in the row
                rec["error"] = f"{type(e).__name__}: {e}"
                continue
            device.sync()
            mem.end()
            if c.name in ENGINE_TIMED and c.handle is not None:
                timers[c.name] = EngineTimer(c.handle, device.engine_clock(c.handle))
                rec["engine_clock"] = timers[c.name].label
        names = list(streams)
        for i in range(count):
            if i == warmup:
                paused.enter_context(gc_paused())  # outside the timed steps
            for name in rotations(names, i):
                rec, mem, timer = out[name], memory[name], timers.get(name)
                if "error" in rec:
                    continue
                device.sync()
                mem.begin()
                if timer is not None:
                    timer.begin_frame()
                t0 = time.perf_counter()
                try:
                    streams[name].step(i)
                    device.sync()
                except Exception as e:  # noqa: BLE001 - this contender stops, the others go on
                    rec["error"] = f"frame {i}: {type(e).__name__}: {e}"
                    continue
                dt = time.perf_counter() - t0
                engine = timer.end_frame() if timer is not None else None
                mem.end(i)
                if i >= warmup:
                    rec["seconds"].append(dt)
                    if engine is not None:
                        rec["engine_seconds"].append(engine)
    finally:
        for t in timers.values():
            t.remove()
        for s in streams.values():
            s.close()
        streams.clear()
        paused.close()  # GC back on, and a collection: between cells, outside timing
        device.empty_cache()
    for name, mem in memory.items():
        out[name]["memory"] = mem.figures(warmup, mem_every)
    return out


def retune_tensorrt(contenders: list[Contender], ctx: RunContext, n_objects: int, skipped: list[dict]) -> None:
    """Before a cell of ``n_objects``: reopen the TensorRT contender on the engines tuned for
    that count (when it runs on others and they were built); untimed, like its first opening."""
    for k, c in enumerate(contenders):
        if c.name != "tensorrt" or c.engine_opt_objects == n_objects or n_objects not in (ctx.engine_dirs or {}):
            continue
        c.close()
        ctx.device.empty_cache()
        before, t0 = ctx.device.used(), time.perf_counter()
        try:
            contenders[k] = opened = open_contender("tensorrt", ctx, n_objects)
            ctx.device.sync()
            opened.load_s, opened.load_device_mb = time.perf_counter() - t0, (ctx.device.used() - before) / 2**20
        except Exception as e:  # noqa: BLE001 - recorded as the reason
            reason = f"reopening on the engines for {n_objects} objects failed: {type(e).__name__}: {e}"
            skipped.append({"model": ctx.model, "image_size": ctx.image_size, "backend": c.name, "reason": reason})
            del contenders[k]
        return


def cell_rows(model: str, image_size: int, n_objects: int, contenders: list[Contender], measured: dict[str, dict],
              warmup: int, long_run: bool, device: Device | None = None) -> list[dict]:
    """The rows of one interleaved cell (one per contender); ``device`` names the memory counters."""
    rows = []
    names = [c.name for c in contenders if "error" not in measured[c.name]]
    for c in contenders:
        m = measured[c.name]
        row = {"model": model, "image_size": image_size, "objects": n_objects, "backend": c.name,
               "precision": PRECISION[c.name], "long_run": long_run, "ran_with": c.ran_with,
               "interleaved_with": names, "order": "rotating", "warmup": warmup}
        if c.engine_opt_objects is not None:
            row["engine_opt_objects"] = c.engine_opt_objects
        if "error" in m:
            row["error"] = m["error"]
        elif not m["seconds"]:
            row["error"] = "no timed frame"
        else:
            row.update(latency_stats(m["seconds"]))
            engine = m.get("engine_seconds") or []
            row["engine_median_ms"] = 1e3 * float(np.median(engine)) if engine else None
            row["engine_clock"] = m["engine_clock"] if engine else f"not measured: {ENGINE_UNTIMED.get(c.name, 'no frame')}"
            row.update(m.get("memory") or {})
            if device is not None:
                row["memory_counters"] = device.memory_counters(c.name)
            row.update(load_s=round(c.load_s, 2), load_device_mb=round(c.load_device_mb, 1))
        rows.append(row)
    return rows


def parity_rows(model: str, image_size: int, checkpoint: Path, contenders: list[Contender], frames: list[np.ndarray],
                clicks, device: Device) -> list[dict]:
    """Each of our contenders against the official predictor in fp32 on the same device, with the
    official hole filling, on ``frames`` with one click per object on frame 0."""
    from sam2_ros.backends.torch_backend.official import build_video_predictor
    from sam2_ros.io.prompts_file import Prompt
    from sam2_ros.io.runner import run_tracker
    from sam2_ros.tracker import Tracker
    from sam2_ros.models import official_model
    from sam2_ros_export.reference import official_fill_hole_area, run_official, run_official_per_object

    prompts = [Prompt(0, oid, np.array([[x, y]], np.float32), np.array([1], np.int32)) for oid, (x, y) in enumerate(clicks, 1)]
    base = {"model": model, "image_size": image_size, "objects": len(prompts), "frames": len(frames)}
    # an eager official contender's predictor has fp32 weights (autocast is applied around its calls only): reuse it
    eager = [c.handle for c in contenders if c.name in ("official-fp32", "official-bf16")]
    predictor = eager[0] if eager else build_video_predictor(model, checkpoint, image_size=image_size, device=str(device.device))
    # no autocast: fp32; EdgeTAM's predictor takes one object per inference state (EdgeTAM issue 15)
    ref = (run_official_per_object if official_model(model).package == "edgetam" else run_official)(predictor, frames, prompts)
    fill = official_fill_hole_area(predictor)
    del predictor, eager
    device.empty_cache()
    out = []
    for c in contenders:
        if c.official:
            continue
        row = {**base, "backend": c.name, "precision": PRECISION[c.name], "fill_hole_area": fill}
        try:
            tracker = Tracker(c.handle, max_objects=len(prompts), num_frames=len(frames), fill_hole_area=fill)
            run = run_tracker(tracker, frames, prompts)
            row.update(mask_iou_stats(ref.masks, run.masks), sign_agreement=sign_agreement(ref.scores, run.scores))
        except Exception as e:  # noqa: BLE001 - recorded in the row
            row["error"] = f"{type(e).__name__}: {e}"
        out.append(row)
        print(json.dumps(row), flush=True)
        device.empty_cache()
    return out


# ============================================================= the run
def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no nvidia-smi)"


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - absent or broken: reported as not installed
        return None


def environment(device: Device, threads: int, argv: list[str]) -> dict:
    """The machine and software the run measured, and the command line that made it."""
    torch = device.torch
    from sam2_ros_export.bench_cpu import cpu_name

    soft = [f"torch {torch.__version__}"]
    for mod, label in (("onnxruntime", "onnxruntime"), ("tensorrt", "TensorRT"), ("numpy", "numpy")):
        soft.append(f"{label} {_version(mod) or 'not installed'}")
    soft.append(f"Python {platform.python_version()}")
    meta = {
        "device": torch.cuda.get_device_name(device.device) if device.cuda else f"CPU: {cpu_name()}",
        "driver": _driver_version() if device.cuda else "n/a (CPU)",
        "cuda": torch.version.cuda if device.cuda else "n/a (CPU)",
        "cudnn": torch.backends.cudnn.version() if device.cuda else None,
        "torch": torch.__version__,
        "software": ", ".join(soft) + f"; CPU {cpu_name()}, {os.cpu_count()} cores",
        "threads": threads,
        "tf32": fp32_precision_state(torch),
        "date": date.today().isoformat(),
        "command": "python benchmarks/gpu_bench.py " + shlex.join(argv),
        "smoke": not device.cuda,
    }
    return meta


def _set_threads(torch, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before PyTorch's first parallel work
        pass


def _allow_recompiles(torch) -> int:
    """Raise dynamo's recompile limits: the official vos_optimized predictor compiles its decoder
    and memory encoder per batch size (objects) and per model; past the default limit (8) dynamo
    silently falls back to eager and the "compiled" official rows would be eager ones."""
    import torch._dynamo

    cfg = torch._dynamo.config
    limit = 64
    for k in ("cache_size_limit", "recompile_limit"):
        if hasattr(cfg, k):
            setattr(cfg, k, max(getattr(cfg, k), limit))
    for k in ("accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(cfg, k):
            setattr(cfg, k, max(getattr(cfg, k), 8 * limit))
    return limit


@contextmanager
def _official_quiet():
    """The official predictor's tqdm progress bar off (it would print on every frame)."""
    from unittest import mock

    import sam2.sam2_video_predictor as svp

    with mock.patch.object(svp, "tqdm", lambda it, *a, **k: it):
        yield


def prepare_export(model: str, image_size: int, work: Path, checkpoint_dir: str | None, verify: bool) -> tuple[Path, Path]:
    """(checkpoint, ONNX export directory): the official checkpoint from ``checkpoint_dir``, else random weights."""
    from sam2_ros.manifest import MANIFEST_NAME
    from sam2_ros.models import official_model
    from sam2_ros_export.onnx_export import cached_random_export, export_anywhere

    if not checkpoint_dir:
        return cached_random_export(model, image_size, work)
    ckpt = Path(checkpoint_dir) / official_model(model).checkpoint_file
    if not ckpt.is_file():
        raise SystemExit(f"gpu_bench: checkpoint {ckpt} is missing (sam2-ros download --model {model} --out {checkpoint_dir})")
    onnx_dir = work / f"{model}_{image_size}_official"
    if not (onnx_dir / MANIFEST_NAME).is_file():
        export_anywhere(model, ckpt, onnx_dir, image_size, verify=verify)
    return ckpt, onnx_dir


def prepare_engines(onnx_dir: Path, work: Path, cell_objects, max_objects: int,
                    device: Device) -> tuple[dict[int, Path] | None, str | None]:
    """TensorRT FP16 engines of the export, one set per benchmarked object count (tuned for it,
    :func:`engine_build_plan`), built on the bench's CUDA device with one shared timing cache:
    ``({objects: engine dir}, None)``, or ``(None, the reason)``."""
    import importlib.util

    if not device.cuda:
        return None, "TensorRT needs a CUDA device"
    if importlib.util.find_spec("tensorrt") is None:
        return None, "tensorrt is not installed (pip install -r requirements-tensorrt.txt)"
    from sam2_ros.backends.tensorrt.build import build_engines

    dirs = {}
    for n, kwargs in engine_build_plan(cell_objects, max_objects, device.index, work / "timing.cache").items():
        engine_dir = onnx_dir.parent / f"{onnx_dir.name}_trt_opt{n}_max{max_objects}"
        try:
            build_engines(onnx_dir, engine_dir, **kwargs)
        except Exception as e:  # noqa: BLE001 - recorded as the reason
            return None, f"engine build for {n} objects failed: {type(e).__name__}: {e}"
        dirs[n] = engine_dir
    return dirs, None


def torch_backend_options(a: argparse.Namespace) -> dict:
    """The torch-backend options the user asked for; defaults are not passed, so a backend that
    does not have an option yet still opens when it is left at its default."""
    opts = {}
    if a.torch_imaging != "auto":
        opts["imaging"] = a.torch_imaging
    if a.cuda_graph != "auto":
        opts["cuda_graph"] = {"on": True, "off": False, "emulate": "emulate"}[a.cuda_graph]
    if a.compile:
        opts["compile"] = True
    return opts


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke run (not a GPU measurement)")
    ap.add_argument("--out", default=None, help="where RESULTS.md, results_gpu.json and results_gpu.png go "
                    "(default: benchmarks/; a temporary directory for --device cpu)")
    ap.add_argument("--work", default=None, help="where exports and engines go (default: a temporary directory)")
    ap.add_argument("--models", nargs="+", default=None, choices=list(MODEL_ALIASES), help="default: tiny base_plus (smoke: tiny)")
    ap.add_argument("--sizes", nargs="+", type=int, default=None, help="default: 512 1024 (smoke: 256)")
    ap.add_argument("--objects", nargs="+", type=int, default=None, help="default: 1 4 8 16 (smoke: 1 2)")
    ap.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS), choices=list(ALL_BACKENDS),
                    help="contenders (default: every one of ours and the official bf16 / vos_optimized)")
    ap.add_argument("--frames", type=int, default=None, help="timed frames per cell (default 200; smoke 4)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed frames first (default 20; smoke 2); >= 16 for a "
                    "steady state (the memory bank fills up, dynamo recompiles)")
    ap.add_argument("--long-run-frames", type=int, default=None, help="frames of the memory-flatness cell (default 1000; "
                    "smoke 8); 0 skips")
    ap.add_argument("--long-run-objects", type=int, default=None, help="objects of the long run (default 8; smoke: most of --objects)")
    ap.add_argument("--parity-frames", type=int, default=None, help="frames of the parity check (default 120; smoke 6); 0 skips")
    ap.add_argument("--parity-clicks", nargs="+", default=None, metavar="X,Y",
                    help="one click per parity object (default: the girl, the boy and a pillow of bedroom.mp4; "
                         "a grid of 3 on another video)")
    ap.add_argument("--clip-frames", type=int, default=None, help="frames read from the video, played forth and back "
                    "(default 200; smoke 8)")
    ap.add_argument("--mem-every", type=int, default=None, help="memory sample every N frames (default 25; smoke 1)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch and ONNX Runtime (default: all cores; smoke: 1)")
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--checkpoint-dir", default=None, help="official checkpoints (default: random weights, seed 0)")
    ap.add_argument("--verify-export", action="store_true", help="check each ONNX graph against PyTorch (slow for large @ 1024)")
    ap.add_argument("--tf32", action="store_true", help="TF32 for fp32 matmuls and cuDNN convolutions of every "
                    "contender (the official benchmark script does); default: off, set explicitly (fp32 rows in full "
                    "fp32), recorded in the meta")
    ap.add_argument("--torch-imaging", choices=["auto", "device", "host"], default="auto",
                    help="torch backend option imaging (passed only when not auto)")
    ap.add_argument("--cuda-graph", choices=["auto", "on", "off", "emulate"], default="auto",
                    help="torch backend option cuda_graph (passed only when not auto)")
    ap.add_argument("--compile", action="store_true", help="torch backend option compile=True")
    ap.add_argument("--report-only", nargs="+", default=None, metavar="JSON",
                    help="rewrite the report from saved results_gpu.json files (several: merged)")
    a = ap.parse_args(argv)
    smoke = a.device == "cpu"
    defaults = dict(models=["tiny"], sizes=[256], objects=[1, 2], frames=4, warmup=2, long_run_frames=8,
                    parity_frames=6, clip_frames=8, mem_every=1) if smoke else \
        dict(models=["tiny", "base_plus"], sizes=[512, 1024], objects=[1, 4, 8, 16], frames=200, warmup=20,
             long_run_frames=1000, parity_frames=120, clip_frames=200, mem_every=25)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.long_run_objects is None:
        a.long_run_objects = max(a.objects) if smoke else 8
    if a.threads is None and smoke:
        a.threads = 1  # a smoke run shares its CPU: more threads than free cores made it 10x slower
    if a.warmup < 1:
        ap.error("--warmup must be >= 1 (frame 0 holds the clicks)")
    if a.frames < 1 or a.mem_every < 1:
        ap.error("--frames and --mem-every must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.report_only:
        data = merge_documents([json.loads(Path(p).read_text()) for p in a.report_only])
        paths = write_report(data, a.out or REPO / "benchmarks")
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    try:
        import torch
    except ImportError:
        print("gpu_bench: PyTorch is not installed; this benchmark needs a CUDA GPU (or --device cpu for a smoke run)",
              file=sys.stderr)
        return 2
    if a.device != "cpu" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU on this machine; run it on a GPU machine, or --device cpu for a smoke run "
              "(or --report-only results_gpu.json to redraw a saved report)", file=sys.stderr)
        return 2
    threads_before, fp32_before = torch.get_num_threads(), fp32_precision_state(torch)
    try:
        return run_benchmark(a, argv)
    finally:  # main() may run inside another program (the tests)
        torch.set_num_threads(threads_before)
        set_fp32_precision(torch, False, fp32_before)


def run_benchmark(a: argparse.Namespace, argv: list[str]) -> int:
    """The benchmark as ``a`` asks (see the module docstring); writes the report, returns 0."""
    import torch

    device = Device(a.device)
    threads = a.threads or os.cpu_count() or 1
    _set_threads(torch, threads)
    # explicit either way (PyTorch's defaults differ: TF32 off for matmuls, on for cuDNN convolutions)
    set_fp32_precision(torch, a.tf32)
    out = Path(a.out) if a.out else (Path(tempfile.mkdtemp(prefix="gpu_bench_smoke_")) if not device.cuda else REPO / "benchmarks")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="sam2_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    torch_options = torch_backend_options(a)

    from sam2_ros.io.video import read_frames
    from sam2_ros_export.flops import analytic_floor_ms, frame_flops_in_model_env, projection_table
    from sam2_ros_export.model_env import model_python

    meta = environment(device, threads, argv)
    meta["tf32"]["set_by"] = "--tf32: TF32 on" if a.tf32 else "this bench's default: TF32 off (fp32 rows in full fp32)"
    meta["gc"] = GC_POLICY
    notes = []
    if device.cuda:
        rates = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
        meta["matmul_tflops"] = {k: round(measure_matmul_tflops(device, dt), 1) for k, dt in rates.items()}
        if "official-vos" in a.backends or a.compile:
            notes.append(f"dynamo recompile limit raised to {_allow_recompiles(torch)} so that compiled code never "
                         "falls back to eager across cells")
    else:
        meta["matmul_skipped"] = "CPU smoke run: matmul throughput is timed with CUDA events on a GPU only"
    if not Path(a.video).is_file():
        raise SystemExit(f"gpu_bench: video {a.video} not found; pass --video (bedroom.mp4 of the shared data)")
    clip = read_frames(a.video, max(a.clip_frames, a.parity_frames))
    if a.parity_frames and len(clip) < a.parity_frames:
        raise SystemExit(f"gpu_bench: {a.video} has {len(clip)} frames, fewer than --parity-frames {a.parity_frames}")
    source = FrameSource(clip[: a.clip_frames])
    if a.parity_clicks:
        parity_clicks = [tuple(float(v) for v in c.split(",")) for c in a.parity_clicks]
    elif Path(a.video).name == "bedroom.mp4":
        parity_clicks = list(BEDROOM_CLICKS)
    else:
        parity_clicks = click_grid(3, source.hw)
    if len(parity_clicks) < 2:
        raise SystemExit("gpu_bench: parity needs 2 or more objects (--parity-clicks)")
    fill = 0
    if device.cuda:
        try:
            from sam2 import _C  # noqa: F401

            fill = 8
        except ImportError:
            pass
    notes += [
        f"Hole filling of ours in the timed cells: {fill} px (what the official predictor applies here; "
        "it skips it without its CUDA extension).",
        "The official predictor's progress bar is off (it would print every frame).",
        f"fp32 precision for every contender, set explicitly through torch's {meta['tf32']['api']} API: matmuls "
        f"{meta['tf32']['matmul']}, cuDNN convolutions {meta['tf32']['cudnn_conv']} ({meta['tf32']['set_by']}).",
        f"Python GC: {GC_POLICY}.",
    ]
    if torch_options:
        notes.append(f"torch backend options asked for: {torch_options}")
    meta.update({
        "weights": "official checkpoints" if a.checkpoint_dir else "random (seed 0): speed only; parity is structural",
        "frames": a.frames, "warmup": a.warmup, "video": Path(a.video).name, "clip_frames": len(source.clip),
        "long_run_frames": a.long_run_frames, "fill_hole_area": fill, "notes": notes,
        "parity_note": (f"{a.parity_frames} frames of {Path(a.video).name}, {len(parity_clicks)} objects clicked on frame 0 "
                        f"at {[tuple(round(v) for v in c) for c in parity_clicks]}; the official predictor in fp32 on "
                        f"{device.device} is the reference, with its own hole filling."),
    })
    long_model = "tiny" if "tiny" in a.models else a.models[0]
    long_size = 1024 if 1024 in a.sizes else max(a.sizes)
    max_objects = max([*a.objects, a.long_run_objects if a.long_run_frames else 1, len(parity_clicks)])
    results, parity, projections, skipped = [], [], [], []
    data = {"meta": meta, "results": results, "parity": parity, "projections": projections, "skipped": skipped}
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (out / "results_gpu.json").write_text(json.dumps(data, indent=1, default=str))

    with _official_quiet():
        for alias in a.models:
            model = MODEL_ALIASES[alias]
            for size in a.sizes:
                ckpt, onnx_dir = prepare_export(model, size, work, a.checkpoint_dir, a.verify_export)
                cells = [(n, a.frames, False) for n in a.objects]
                if a.long_run_frames and alias == long_model and size == long_size:
                    cells.append((a.long_run_objects, a.long_run_frames, True))
                engine_dirs, engine_reason = (None, "not asked for")
                if "tensorrt" in a.backends:
                    engine_dirs, engine_reason = prepare_engines(onnx_dir, work, [n for n, _, _ in cells], max_objects,
                                                                 device)
                frame_flops = {f.objects: f for f in frame_flops_in_model_env(model, size, sorted({n for n, _, _ in cells}))}
                flops = {n: f.total for n, f in frame_flops.items()}
                projections += projection_table([frame_flops[n] for n in (1, 8) if n in frame_flops])
                ctx = RunContext(device, model, size, ckpt, onnx_dir, engine_dirs, engine_reason, threads, torch_options,
                                 max_objects)
                contenders = []
                for name in a.backends:
                    device.empty_cache()
                    before = device.used()
                    t0 = time.perf_counter()
                    try:
                        c = open_contender(name, ctx, cells[0][0])
                    except Exception as e:  # noqa: BLE001 - Skip, or a failure (of warm_up, say): recorded
                        reason = str(e) if isinstance(e, Skip) else f"failed to open: {type(e).__name__}: {e}"
                        skipped.append({"model": model, "image_size": size, "backend": name, "reason": reason})
                        print(f"gpu_bench: {name} skipped: {reason}", file=sys.stderr, flush=True)
                        continue
                    device.sync()
                    c.load_s = time.perf_counter() - t0
                    c.load_device_mb = (device.used() - before) / 2**20
                    contenders.append(c)
                try:
                    for n, count, long_run in cells:
                        retune_tensorrt(contenders, ctx, n, skipped)
                        measured = interleaved(contenders, source, n, a.warmup + count, a.warmup, device, fill, size,
                                               a.mem_every)
                        for row in cell_rows(model, size, n, contenders, measured, a.warmup, long_run, device):
                            if not row.get("error"):
                                rate = (meta.get("matmul_tflops") or {}).get(row["precision"])
                                row["gflop"] = flops[n] / 1e9
                                row["floor_ms"] = analytic_floor_ms(flops[n], rate) if rate else None
                            results.append(row)
                            print(json.dumps({k: v for k, v in row.items() if k not in ("mem_samples", "ran_with")}),
                                  flush=True)
                        save()  # after every cell: a run stopped later keeps what it measured
                    if a.parity_frames and model_python(model) is not None:
                        skipped.append({"model": model, "image_size": size, "backend": "parity",
                                        "reason": f"the official {model} predictor lives in its own environment "
                                                  f"({model_python(model)}): sam2-ros compare checks parity there"})
                    elif a.parity_frames:
                        parity += parity_rows(model, size, ckpt, contenders, clip[: a.parity_frames], parity_clicks, device)
                finally:
                    for c in contenders:
                        c.close()
                    contenders.clear()
                    device.empty_cache()
                    save()
    paths = write_report(data, out)
    paths["json"] = out / "results_gpu.json"
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
