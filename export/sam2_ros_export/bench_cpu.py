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

EdgeTAM (``--model edgetam``): Meta's EdgeTAM code lives in its own environment (``.venv-edgetam``),
so its official predictor runs in a worker process under that Python, driven one object per
inference state (its predictor cannot batch objects: EdgeTAM issue 15), which is how it tracks
several objects; our torch backend on EdgeTAM runs there too. ``--baseline MODEL`` (default for
EdgeTAM: SAM 2.1 tiny) adds our tracker on that model at the same size, with the same backends and
prompts, to the same interleaved run: the speed-up of one model over the other, measured side by
side. Each row also carries the FLOPs of one frame per graph (``sam2_ros_export.flops``) and the
memory bank's bytes per object, for the model and the baseline.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import subprocess
import sys
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


class PerObjectStream:
    """The official predictor with one inference state per object, stepped together: how Meta's
    EdgeTAM predictor tracks several objects (it cannot batch them, EdgeTAM issue 15)."""

    def __init__(self, predictor, frames: list[np.ndarray], prompts: list[Prompt]):
        self.streams = [OfficialStream(predictor, frames, [p]) for p in sorted(prompts, key=lambda p: p.object_id)]

    def next_frame(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [s.next_frame() for s in self.streams]
        return np.concatenate([m for m, _ in parts]), np.concatenate([sc for _, sc in parts])


def _worker_stream(job: dict):
    """The stream a worker process steps: one of ours (``job["kind"] == "ours"``) or the official
    predictor (``"official"``); -> (stream, what to tell the parent when ready)."""
    if job["kind"] == "official" or job["config"].startswith("torch:"):
        _set_threads(job["threads"])
    frames = read_frames(job["video"], job["n_frames"])
    if job["kind"] == "official":
        from sam2_ros.backends.torch_backend.official import build_video_predictor
        from sam2_ros_export.reference import official_fill_hole_area

        predictor = build_video_predictor(job["model"], job["checkpoint"], image_size=job["image_size"])
        stream_cls = PerObjectStream if job["per_object"] else OfficialStream
        return stream_cls(predictor, frames, job["prompts"]), {"fill_hole_area": official_fill_hole_area(predictor)}
    backend, opts = _backend_options(job["config"], job["threads"])
    tracker = Tracker(load_backend(job["engines"], backend, **opts), max_objects=len(job["prompts"]),
                      num_frames=len(frames), fill_hole_area=job["fill_hole_area"])
    return OursStream(tracker, frames, job["prompts"]), {"bank_bytes": tracker.bank.nbytes}


def _worker_main() -> int:
    """``python -m sam2_ros_export.bench_cpu``: a worker of :class:`WorkerStream`. Reads a job, then
    one pickled message per step on stdin; answers pickles on stdout (anything printed goes to stderr)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer

    def send(obj) -> None:
        pickle.dump(obj, out)
        out.flush()

    warnings.filterwarnings("ignore")
    stream, info = _worker_stream(pickle.load(inp))
    send(("ready", info))
    while pickle.load(inp) == "step":
        t0 = time.perf_counter()
        masks, scores = stream.next_frame()
        send((masks, scores, time.perf_counter() - t0))
    return 0


class WorkerStream:
    """A stream in a worker process of its own (see :func:`_worker_main`), under ``python`` (the
    model's environment) or this one. ``info``: what the worker reported when ready."""

    def __init__(self, job: dict, python: str | Path | None = None):
        from sam2_ros_export.model_env import child_env

        self.name = job.get("config") or job["kind"]
        self.process = subprocess.Popen([str(python or sys.executable), "-m", "sam2_ros_export.bench_cpu"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env())
        self._send(job)
        ready, self.info = self._recv()
        if ready != "ready":
            raise RuntimeError(f"benchmark worker {self.name} failed to start")

    def _send(self, obj) -> None:
        pickle.dump(obj, self.process.stdin)
        self.process.stdin.flush()

    def _recv(self):
        try:
            return pickle.load(self.process.stdout)
        except EOFError:
            raise RuntimeError(f"benchmark worker {self.name} exited ({self.process.wait()}); its error is above") from None

    def next_frame(self) -> tuple[np.ndarray, np.ndarray, float]:
        self._send("step")
        return self._recv()

    def close(self) -> None:
        try:
            self._send("stop")
        except (BrokenPipeError, OSError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class _Timings:
    seconds: list[float] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    signs: list[bool] = field(default_factory=list)


def interleaved(streams: dict[str, object], n_frames: int, warmup: int, gap: float = 0.0,
                compared: set[str] | None = None) -> dict[str, _Timings]:
    """Step every stream through the frames in turn (rotating order); time frames >= ``warmup``.
    Compare each of ``compared`` (default: all but the official) with ``streams["official"]`` on
    every frame (a baseline model's streams are timed, not compared). ``gap`` seconds of idle
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
            if name == "official" or i < warmup or (compared is not None and name not in compared):
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


def _bank_bytes_per_object(engines: Path, cond_slots: int = 2, history_frames: int = 30) -> int:
    """Bytes the memory bank (with its history) holds per object of ``engines``' model: the
    difference between a bank of 2 objects and of 1, as a tracker allocates them."""
    from sam2_ros.manifest import load_manifest
    from sam2_ros.memory_bank import MemoryBank

    spec = load_manifest(engines).spec

    def bank(n: int) -> int:
        return MemoryBank(n, cond_slots, spec.mem_tokens, spec.mem_dim, spec.hidden_dim, spec.num_maskmem,
                          spec.max_obj_ptrs_in_encoder, low_res_size=spec.low_res_size,
                          history_frames=history_frames).nbytes

    return bank(2) - bank(1)


def _ours_python(model: str, config: str):
    """Our torch backend builds its modules with the model's own package (EdgeTAM's environment);
    the other backends run anywhere."""
    from sam2_ros_export.model_env import model_python

    return model_python(model) if config.startswith("torch:") else None


def run_cpu_benchmark(args) -> list[dict]:
    import onnxruntime as ort
    import torch

    from sam2_ros.backends.torch_backend.official import build_video_predictor
    from sam2_ros_export.flops import frame_flops_in_model_env
    from sam2_ros_export.model_env import model_python
    from sam2_ros_export.onnx_export import cached_random_export
    from sam2_ros_export.reference import official_fill_hole_area

    warnings.filterwarnings("ignore")
    threads = args.threads or os.cpu_count()
    _set_threads(threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, engines = cached_random_export(args.model, args.image_size, out / "work")
    baseline = getattr(args, "baseline", None)
    base_engines = cached_random_export(baseline, args.image_size, out / "work")[1] if baseline else None
    official_python = model_python(args.model)  # None: the official predictor runs in this process
    video = args.video or str(Path(__file__).resolve().parent.parent.parent / "samples" / "bedroom_short.mp4")
    frames = read_frames(video, args.frames)
    if len(frames) <= args.warmup:
        raise SystemExit(f"--frames {args.frames} leaves no timed frame after --warmup {args.warmup}")
    common = {"threads": threads, "video": video, "n_frames": len(frames)}
    flops = {m: {f.objects: f.as_dict() for f in frame_flops_in_model_env(m, args.image_size, list(args.objects))}
             for m in filter(None, (args.model, baseline))}
    bank_mb = {m: _bank_bytes_per_object(e) / 2**20 for m, e in ((args.model, engines), (baseline, base_engines)) if m}
    rows = []
    for n in args.objects:
        prompts = grid_prompts(n, frames[0].shape[:2])
        streams: dict[str, object] = {}
        try:
            if official_python is None:
                predictor = build_video_predictor(args.model, ckpt, image_size=args.image_size)
                streams["official"] = OfficialStream(predictor, frames, prompts)
                fill = official_fill_hole_area(predictor)
            else:
                streams["official"] = WorkerStream({"kind": "official", "model": args.model, "checkpoint": str(ckpt),
                                                    "image_size": args.image_size, "prompts": prompts,
                                                    "per_object": True, **common}, official_python)
                fill = streams["official"].info["fill_hole_area"]
            for model, eng, tag in ((args.model, engines, ""), (baseline, base_engines, f"{baseline} ")):
                for config in args.ours if model else ():
                    job = {"kind": "ours", "config": config, "engines": str(eng), "prompts": prompts,
                           "fill_hole_area": fill, **common}
                    streams[tag + config] = WorkerStream(job, _ours_python(model, config))
            timings = interleaved(streams, len(frames), args.warmup, args.gap, compared=set(args.ours))
        finally:
            for stream in streams.values():
                if isinstance(stream, WorkerStream):
                    stream.close()
        ref = timings["official"].seconds
        for config in args.ours:
            t = timings[config]
            backend, precision = config.split(":")
            ours_median = float(np.median(t.seconds))
            rows.append({
                "model": args.model, "image_size": args.image_size, "objects": n, "precision": precision,
                "backend": backend, "frames_timed": len(t.seconds),
                "official_median_s": float(np.median(ref)), "official_p90_s": float(np.percentile(ref, 90)),
                "official_per_object": official_python is not None,
                "ours_median_s": ours_median, "ours_p90_s": float(np.percentile(t.seconds, 90)),
                "ours_fps": 1.0 / ours_median,
                "speedup": float(np.median(ref)) / ours_median,
                "mean_iou": float(np.mean(t.ious)), "min_iou": float(np.min(t.ious)),
                "score_sign_agreement": float(np.mean(t.signs)),
                "gflop_per_graph": flops[args.model][n]["per_graph_gflop"], "gflop": flops[args.model][n]["total_gflop"],
                "bank_mb_per_object": round(bank_mb[args.model], 2),
                "cpu": cpu_name(), "threads": threads,
            })
            if baseline:
                b = timings[f"{baseline} {config}"].seconds
                rows[-1].update({
                    "baseline_model": baseline, "baseline_median_s": float(np.median(b)),
                    "baseline_p90_s": float(np.percentile(b, 90)), "vs_baseline": float(np.median(b)) / ours_median,
                    "baseline_gflop_per_graph": flops[baseline][n]["per_graph_gflop"],
                    "baseline_gflop": flops[baseline][n]["total_gflop"],
                    "baseline_bank_mb_per_object": round(bank_mb[baseline], 2),
                })
            print(json.dumps(rows[-1]), flush=True)
        del streams
    try:
        import openvino

        ov_version = f", openvino {openvino.__version__.split('-')[0]}"
    except ImportError:
        ov_version = ""
    versions = (f"torch {torch.__version__}, onnxruntime {ort.__version__}{ov_version}, numpy {np.__version__}, "
                f"Python {platform.python_version()}")
    text = _table(rows, args, frames, video, threads, versions)
    print(text)
    stem = f"cpu_{args.model}_{args.image_size}"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    _plot(rows, out / f"{stem}.png", f"{args.model} @ {args.image_size}, CPU ({threads} threads)")
    return rows


def _table(rows: list[dict], args, frames: list, video: str, threads: int, versions: str) -> str:
    """The markdown report of :func:`run_cpu_benchmark`."""
    baseline = getattr(args, "baseline", None)
    per_object = rows and rows[0]["official_per_object"]
    official = ("Meta's predictor of the model, fp32" + (", in the model's own environment, one inference state per "
                "object (its predictor cannot batch objects, EdgeTAM issue 15)" if per_object else ""))
    head = "| objects | ours | official median (p90) | ours median (p90) | ours FPS | speed-up | mean IoU | min IoU | score signs |"
    rule = "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    if baseline:
        head += f" {baseline} median (same backend) | x {baseline} |"
        rule += "---:|---:|"

    def line(r: dict) -> str:
        cells = (f"| {r['objects']} | {r['backend']} {r['precision']} | {r['official_median_s']:.3f} "
                 f"({r['official_p90_s']:.3f}) | {r['ours_median_s']:.3f} ({r['ours_p90_s']:.3f}) | {r['ours_fps']:.1f} "
                 f"| **{r['speedup']:.2f}x** | {r['mean_iou']:.4f} | {r['min_iou']:.4f} | {r['score_sign_agreement']:.3f} |")
        if baseline:
            cells += f" {r['baseline_median_s']:.3f} | **{r['vs_baseline']:.2f}x** |"
        return cells

    lines = [
        f"# CPU benchmark: {args.model} @ {args.image_size}, {len(frames)} frames of {Path(video).name}",
        "",
        f"{date.today().isoformat()}. {cpu_name()}, {os.cpu_count()} cores, {threads} threads for both runtimes "
        f"(ONNX Runtime spinning off); {versions}. Random weights.",
        f"Official = {official}. Ours: backend and precision (fp32 exact; bf16 opt-in, on the "
        "CPU's bf16 matrix units). Each of ours in its own process, all interleaved frame by frame in rotating order; "
        f"frames 0..{args.warmup - 1} (prompts, warm-up) untimed; seconds per frame. "
        "IoU and sign agreement: ours vs the official masks and object scores on the timed frames."
        + (f" `{baseline}`: our tracker on that model, same size, backends and prompts, in the same run "
           f"(timed, not compared); `x {baseline}` = its median / ours." if baseline else ""),
        "",
        head,
        rule,
        *map(line, rows),
        "",
        "FLOPs of one tracked frame (GFLOP, per graph; matrix products, convolutions and attention) and memory "
        "bank per object (MiB: spatial memories, object pointers, outputs and history, cond_slots 2, 30 history frames):",
        "",
        "| model | objects | image encoder | memory attention | mask decoder | memory encoder | total | bank MiB / object |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    seen = set()
    for r in rows:
        for prefix, model in (("", r["model"]), ("baseline_", r.get("baseline_model"))):
            if model is None or (model, r["objects"]) in seen:
                continue
            seen.add((model, r["objects"]))
            g = r[f"{prefix}gflop_per_graph"]
            lines.append(f"| {model} | {r['objects']} | {g['image_encoder']:.1f} | {g['memory_attention']:.1f} "
                         f"| {g['mask_decoder']:.1f} | {g['memory_encoder']:.1f} | {r[f'{prefix}gflop']:.1f} "
                         f"| {r[f'{prefix}bank_mb_per_object']:.2f} |")
    return "\n".join(lines) + "\n"


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
    baseline = rows[0].get("baseline_model") if rows else None
    bars_per_group = 1 + len(configs) * (2 if baseline else 1)
    width = 0.8 / bars_per_group
    fig, ax = plt.subplots(figsize=(6 + (2 if baseline else 0), 3.8))
    x = np.arange(len(objects))
    official = [next(r["official_median_s"] for r in rows if r["objects"] == n) for n in objects]
    ax.bar(x, official, width, label=f"official {rows[0]['model']} fp32" if rows else "official")
    k = 0
    for config in configs:
        sel = [next(r for r in rows if r["objects"] == n and f"{r['backend']} {r['precision']}" == config)
               for n in objects]
        k += 1
        bars = ax.bar(x + k * width, [r["ours_median_s"] for r in sel], width, label=f"sam2_ros {config}")
        for b, r in zip(bars, sel):
            ax.annotate(f"{r['speedup']:.2f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
        if baseline:
            k += 1
            ax.bar(x + k * width, [r["baseline_median_s"] for r in sel], width, hatch="//", alpha=0.6,
                   label=f"sam2_ros {config}, {baseline}")
    ax.set_xticks(x + width * (bars_per_group - 1) / 2, [str(n) for n in objects])
    ax.set_xlabel("objects")
    ax.set_ylabel("median seconds per frame")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(_worker_main())
