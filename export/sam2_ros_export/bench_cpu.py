"""CPU benchmark: our tracker vs the official predictor, same process, same frames, interleaved.

Every configuration (the official ``SAM2VideoPredictor`` in fp32 and ours in each precision)
gets the same frames and prompts (one click per object on frame 0, random weights), and the
configurations take turns frame by frame, in a rotating order, so that machine drift (other
load, clock changes) hits all of them alike. Thread counts are fixed for both runtimes and
ONNX Runtime's idle threads do not spin (a spinning pool next to PyTorch's steals its cores:
an earlier sequential run measured a false 0.74x). The first ``--warmup`` frames are run but
not timed. Reports median and p90 seconds per frame, the speed-up (official median / ours),
and how far each of ours is from the official masks (mean and minimum IoU, object-score sign
agreement). Prints a markdown table; writes it with a JSON list of rows and a PNG plot.

Ours: each ``--ours`` entry is ``backend:precision``; fp32 entries are exact, bf16 ones use the
CPU's bf16 matrix units (opt-in, not exact). Each of ours runs in a worker process of its own,
as on a robot (one runtime per process): OpenVINO's compiled graphs made PyTorch's Hiera encoder
6x slower in the same process on the 2-core machine here. The workers still take their turns
frame by frame with the official predictor (in this process), and each times its own step.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from unittest import mock

import numpy as np

from sam2_ros.backends import load_backend
from sam2_ros.io.prompts_file import Prompt
from sam2_ros.io.video import read_frames
from sam2_ros.postprocess import mask_iou
from sam2_ros.tracker import Tracker

def _backend_options(config: str, threads: int) -> tuple[str, dict]:
    backend, precision = config.split(":")
    if backend == "onnxruntime":
        return backend, {"intra_op_threads": threads, "allow_spinning": False}
    if backend == "openvino":
        return backend, {"precision": precision, "threads": threads}
    return backend, {"device": "cpu", "precision": precision}


def grid_prompts(n: int, hw: tuple[int, int]) -> list[Prompt]:
    """One positive click per object on frame 0, spread along the middle row."""
    h, w = hw
    xs = np.linspace(0.2, 0.8, n) * w
    return [Prompt(0, i + 1, np.array([[x, h * 0.5]], np.float32), np.array([1], np.int32)) for i, x in enumerate(xs)]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class OfficialStream:
    """The official predictor, one frame per :meth:`next_frame` (prompts on frame 0).

    The official loader's preprocessing of all frames happens here, untimed (ours preprocesses
    each frame inside its timed step: the comparison is conservative for ours).
    """

    def __init__(self, predictor, frames: list[np.ndarray], prompts: list[Prompt]):
        import sam2.sam2_video_predictor as svp
        import torch

        from sam2_ros_export.reference import _official_images

        self.torch = torch
        h, w = frames[0].shape[:2]
        images = _official_images(frames, predictor.image_size)
        with mock.patch.object(svp, "load_video_frames", lambda **kw: (images, h, w)):
            self.state = predictor.init_state(video_path="<frames in memory>")
        with torch.inference_mode():
            for p in prompts:
                predictor.add_new_points_or_box(self.state, 0, p.object_id, points=p.points, labels=p.labels)
        self.ids = sorted(p.object_id for p in prompts)
        self._gen = predictor.propagate_in_video(self.state, start_frame_idx=0)

    def next_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """-> masks [objects, H, W] bool and object scores [objects] of the next frame."""
        with self.torch.inference_mode():
            fi, ids, video_masks = next(self._gen)
        masks = np.stack([(video_masks[list(ids).index(o), 0] > 0).numpy() for o in self.ids])
        scores = []
        for o in self.ids:
            out = self.state["output_dict_per_obj"][self.state["obj_id_to_idx"][o]]
            rec = out["cond_frame_outputs"].get(fi) or out["non_cond_frame_outputs"][fi]
            scores.append(float(rec["object_score_logits"].reshape(-1)[0]))
        return masks, np.float32(scores)


class OursStream:
    """Our tracker, one frame per :meth:`next_frame` (prompts after frame 0's step)."""

    def __init__(self, tracker: Tracker, frames: list[np.ndarray], prompts: list[Prompt]):
        self.tracker, self.frames, self.prompts, self.i = tracker, frames, prompts, 0

    def next_frame(self) -> tuple[np.ndarray, np.ndarray]:
        res = self.tracker.step(self.frames[self.i])
        if self.i == 0:
            for p in self.prompts:
                res = self.tracker.add_prompt(p.object_id, **p.kwargs())
        self.i += 1
        return res.masks, res.scores


def _ours_worker(conn, engines: str, config: str, threads: int, video: str, n_frames: int,
                 prompts: list[Prompt], fill_hole_area: int) -> None:
    """Worker process of one of ours: a step per message, replies (masks, scores, seconds)."""
    backend, opts = _backend_options(config, threads)
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    frames = read_frames(video, n_frames)
    tracker = Tracker(load_backend(engines, backend, **opts), max_objects=len(prompts), num_frames=len(frames),
                      fill_hole_area=fill_hole_area)
    stream = OursStream(tracker, frames, prompts)
    conn.send("ready")
    while conn.recv() == "step":
        t0 = time.perf_counter()
        masks, scores = stream.next_frame()
        conn.send((masks, scores, time.perf_counter() - t0))
    conn.close()


class WorkerStream:
    """One of ours in its own process (see :func:`_ours_worker`)."""

    def __init__(self, *args):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_ours_worker, args=(child, *args), daemon=True)
        self.process.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("benchmark worker failed to start")

    def next_frame(self) -> tuple[np.ndarray, np.ndarray, float]:
        self.conn.send("step")
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join(timeout=30)


@dataclass
class _Timings:
    seconds: list[float] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    signs: list[bool] = field(default_factory=list)


def interleaved(streams: dict[str, object], n_frames: int, warmup: int, gap: float = 0.0) -> dict[str, _Timings]:
    """Step every stream through the frames in turn (rotating order); time frames >= ``warmup``.
    Compare each of ours with ``streams["official"]`` on every frame. ``gap`` seconds of idle
    time separate two steps (as between camera frames): OpenVINO's pool threads keep spinning
    for a while after a step, and without a pause they steal the next runtime's cores (the
    official predictor's 4-object step went from 1.1 s to 15 s)."""
    names = list(streams)
    out = {k: _Timings() for k in names}
    for i in range(n_frames):
        order = names[i % len(names):] + names[: i % len(names)]
        results = {}
        for name in order:
            time.sleep(gap)
            t0 = time.perf_counter()
            result = streams[name].next_frame()
            dt = time.perf_counter() - t0
            if len(result) == 3:  # a worker process timed its own step (no inter-process copies)
                *result, dt = result
            results[name] = result
            if i >= warmup:
                out[name].seconds.append(dt)
        ref_masks, ref_scores = results["official"]
        for name in names:
            if name == "official" or i < warmup:
                continue
            masks, scores = results[name]
            out[name].ious += [mask_iou(a, b) for a, b in zip(masks, ref_masks)]
            out[name].signs += list((scores > 0) == (ref_scores > 0))
    return out


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before PyTorch's first parallel work
        pass


def run_cpu_benchmark(args) -> list[dict]:
    import onnxruntime as ort
    import torch

    from sam2_ros.backends.torch_backend.official import build_video_predictor
    from sam2_ros_export.onnx_export import cached_random_export
    from sam2_ros_export.reference import official_fill_hole_area

    warnings.filterwarnings("ignore")
    threads = args.threads or os.cpu_count()
    _set_threads(threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, engines = cached_random_export(args.model, args.image_size, out / "work")
    video = args.video or str(Path(__file__).resolve().parent.parent.parent / "samples" / "bedroom_short.mp4")
    frames = read_frames(video, args.frames)
    if len(frames) <= args.warmup:
        raise SystemExit(f"--frames {args.frames} leaves no timed frame after --warmup {args.warmup}")
    rows = []
    for n in args.objects:
        prompts = grid_prompts(n, frames[0].shape[:2])
        predictor = build_video_predictor(args.model, ckpt, image_size=args.image_size)
        streams: dict[str, object] = {"official": OfficialStream(predictor, frames, prompts)}
        for config in args.ours:
            streams[config] = WorkerStream(str(engines), config, threads, video, len(frames), prompts,
                                           official_fill_hole_area(predictor))
        try:
            timings = interleaved(streams, len(frames), args.warmup, args.gap)
        finally:
            for config in args.ours:
                streams[config].close()
        ref = timings["official"].seconds
        for config in args.ours:
            t = timings[config]
            backend, precision = config.split(":")
            rows.append({
                "model": args.model, "image_size": args.image_size, "objects": n, "precision": precision,
                "backend": backend, "frames_timed": len(t.seconds),
                "official_median_s": float(np.median(ref)), "official_p90_s": float(np.percentile(ref, 90)),
                "ours_median_s": float(np.median(t.seconds)), "ours_p90_s": float(np.percentile(t.seconds, 90)),
                "speedup": float(np.median(ref) / np.median(t.seconds)),
                "mean_iou": float(np.mean(t.ious)), "min_iou": float(np.min(t.ious)),
                "score_sign_agreement": float(np.mean(t.signs)),
                "cpu": cpu_name(), "threads": threads,
            })
            print(json.dumps(rows[-1]), flush=True)
        del streams, predictor
    try:
        import openvino

        ov_version = f", openvino {openvino.__version__.split('-')[0]}"
    except ImportError:
        ov_version = ""
    versions = (f"torch {torch.__version__}, onnxruntime {ort.__version__}{ov_version}, numpy {np.__version__}, "
                f"Python {platform.python_version()}")
    text = "\n".join([
        f"# CPU benchmark: {args.model} @ {args.image_size}, {len(frames)} frames of {Path(video).name}",
        "",
        f"{date.today().isoformat()}. {cpu_name()}, {os.cpu_count()} cores, {threads} threads for both runtimes "
        f"(ONNX Runtime spinning off); {versions}. Random weights.",
        "Official = `SAM2VideoPredictor`, fp32. Ours: backend and precision (fp32 exact; bf16 opt-in, on the "
        "CPU's bf16 matrix units). Each of ours in its own process, all interleaved frame by frame in rotating order; "
        f"frames 0..{args.warmup - 1} (prompts, warm-up) untimed; seconds per frame. "
        "IoU and sign agreement: ours vs the official masks and object scores on the timed frames.",
        "",
        "| objects | ours | official median (p90) | ours median (p90) | speed-up | mean IoU | min IoU | score signs |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ] + [
        f"| {r['objects']} | {r['backend']} {r['precision']} | {r['official_median_s']:.3f} ({r['official_p90_s']:.3f}) "
        f"| {r['ours_median_s']:.3f} ({r['ours_p90_s']:.3f}) | **{r['speedup']:.2f}x** | {r['mean_iou']:.4f} "
        f"| {r['min_iou']:.4f} | {r['score_sign_agreement']:.3f} |"
        for r in rows
    ]) + "\n"
    print(text)
    stem = f"cpu_{args.model}_{args.image_size}"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    _plot(rows, out / f"{stem}.png", f"{args.model} @ {args.image_size}, CPU ({threads} threads)")
    return rows


def _plot(rows: list[dict], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot written")
        return
    objects = sorted({r["objects"] for r in rows})
    configs = list(dict.fromkeys(f"{r['backend']} {r['precision']}" for r in rows))
    width = 0.8 / (1 + len(configs))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = np.arange(len(objects))
    official = [next(r["official_median_s"] for r in rows if r["objects"] == n) for n in objects]
    ax.bar(x, official, width, label="official fp32")
    for k, config in enumerate(configs, 1):
        sel = [next(r for r in rows if r["objects"] == n and f"{r['backend']} {r['precision']}" == config)
               for n in objects]
        bars = ax.bar(x + k * width, [r["ours_median_s"] for r in sel], width, label=f"sam2_ros {config}")
        for b, r in zip(bars, sel):
            ax.annotate(f"{r['speedup']:.2f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x + width * len(configs) / 2, [str(n) for n in objects])
    ax.set_xlabel("objects")
    ax.set_ylabel("median seconds per frame")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
