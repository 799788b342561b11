"""Several cameras, one model: one MultiTracker (batched or unbatched image encoder) against N
separate single-camera processes, on the CPU.

For N = 1..``--cameras`` cameras (each a different real clip) and ``--objects`` objects per camera
(one click each on frame 0), three ways to serve them, each in worker processes of its own:

* **batched**: one process, one :class:`~sam2_ros.multi_tracker.MultiTracker`; each step encodes
  the N frames in one image-encoder call, then tracks each camera's objects;
* **unbatched**: the same with ``batch_frames=False`` (one encoder call per camera);
* **processes**: N processes with one :class:`~sam2_ros.tracker.Tracker` each (N robots' worth of
  single-camera nodes), stepping their frames at the same time.

The modes take turns step by step in a rotating order, so that load from elsewhere hits all of
them alike. Threads: the one-process modes use ``--threads`` ONNX Runtime threads (default: one
per core); the N processes split them evenly (``max(1, threads // N)`` each). Spinning is off.
The first ``--warmup`` steps (frame 0 holds the prompts) are not timed.

Reported: total processed frames per second (N x timed steps / their wall time), per-camera
latency (median seconds from a step's start to the camera's result: the whole step for one
process; the process's own step for N processes), resident memory (VmRSS after the run) of the
one process against the sum of the N processes, and equality: IoU and largest logit difference of
the batched and unbatched masks against the N independent trackers, per frame and object.
Writes ``OUT.md``, ``OUT.json`` and ``OUT.png``.

    python benchmarks/multi_camera.py --out benchmarks/multi_camera
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CLIPS = ("bedroom.mp4", "02_cups.mp4", "03_blocks.mp4", "08_driving.mp4")
MODES = ("batched", "unbatched", "processes")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident memory
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker(conn, engines: str, videos: list[str], frames: int, objects: int, threads: int, mode: str) -> None:
    """One process: a MultiTracker over ``videos`` (mode batched / unbatched) or one Tracker (one
    video). Per "step" message: the next frame of every camera; replies the step's seconds and
    each camera's low-res logits and masks."""
    from sam2_ros.backends import load_backend
    from sam2_ros.io.video import read_frames
    from sam2_ros.multi_tracker import MultiTracker
    from sam2_ros_export.bench_cpu import grid_prompts

    clips = {Path(v).stem: read_frames(v, frames) for v in videos}
    backend = load_backend(engines, "onnxruntime", intra_op_threads=threads, allow_spinning=False)
    multi = MultiTracker(backend, list(clips), batch_frames=mode != "unbatched", max_objects=objects)
    prompts = {s: grid_prompts(objects, f[0].shape[:2]) for s, f in clips.items()}
    conn.send("ready")
    i = 0
    while (message := conn.recv()) != "stop":
        if message == "rss":
            conn.send(_rss_mib())
            continue
        t0 = time.perf_counter()
        out = multi.step({s: f[i] for s, f in clips.items()})
        if i == 0:
            for s in clips:
                for p in prompts[s]:
                    out[s] = multi.tracker(s).add_prompt(p.object_id, **p.kwargs())
        dt = time.perf_counter() - t0
        conn.send((dt, {s: (r.low_res_logits, r.masks) for s, r in out.items()}))
        i += 1
    conn.close()


class Worker:
    """:func:`_worker` in a process of its own: "step" -> a reply; "rss" -> its peak memory; "stop"."""

    def __init__(self, *args):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, *args), daemon=True)
        self.process.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("benchmark worker failed to start")

    def close(self) -> float:
        """Stop the worker; returns its peak resident memory (MiB)."""
        self.conn.send("rss")
        rss = self.conn.recv()
        self.conn.send("stop")
        self.process.join(timeout=30)
        return rss


def _step(mode: str, workers: list) -> tuple[float, list[float], dict]:
    """One step of a mode: wall seconds, per-camera latencies, each camera's (logits, masks)."""
    t0 = time.perf_counter()
    for w in workers:  # the N processes step at the same time
        w.conn.send("step")
    replies = [w.conn.recv() for w in workers]
    wall = time.perf_counter() - t0
    outputs = {s: o for _, out in replies for s, o in out.items()}
    if mode == "processes":
        return wall, [dt for dt, _ in replies], outputs
    return wall, [replies[0][0]] * len(outputs), outputs


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def run(a) -> list[dict]:
    from sam2_ros_export.bench_cpu import cpu_name
    from sam2_ros_export.onnx_export import cached_random_export

    _, engines = cached_random_export("sam2.1_hiera_tiny", a.image_size, a.work)
    videos = [str(Path(a.data) / "videos" / c) for c in CLIPS[: a.cameras]]
    threads = a.threads or os.cpu_count()
    rows = []
    for objects in a.objects:
        for n in range(1, a.cameras + 1):
            cams = videos[:n]
            per = max(1, threads // n)
            workers = {
                "batched": [Worker(str(engines), cams, a.frames, objects, threads, "batched")],
                "unbatched": [Worker(str(engines), cams, a.frames, objects, threads, "unbatched")],
                "processes": [Worker(str(engines), [v], a.frames, objects, per, "processes") for v in cams],
            }
            walls = {m: [] for m in MODES}
            lat = {m: [] for m in MODES}
            ious, diffs = {m: [] for m in MODES[:2]}, {m: [] for m in MODES[:2]}
            for i in range(a.frames):
                order = MODES[i % 3:] + MODES[: i % 3]
                outs = {}
                for mode in order:
                    time.sleep(a.gap)
                    wall, latencies, outs[mode] = _step(mode, workers[mode])
                    if i >= a.warmup:
                        walls[mode].append(wall)
                        lat[mode] += latencies
                for mode in MODES[:2]:  # against N independent trackers
                    for s, (logits, masks) in outs[mode].items():
                        ref_logits, ref_masks = outs["processes"][s]
                        diffs[mode].append(float(np.abs(logits - ref_logits).max()) if logits.size else 0.0)
                        ious[mode] += [_iou(m, r) for m, r in zip(masks, ref_masks)]
            rss = {m: [w.close() for w in ws] for m, ws in workers.items()}
            for mode in MODES:
                row = {
                    "cameras": n, "objects": objects, "mode": mode, "steps_timed": len(walls[mode]),
                    "threads": threads if mode != "processes" else per,
                    "total_fps": n * len(walls[mode]) / sum(walls[mode]),
                    "step_median_s": float(np.median(walls[mode])),
                    "camera_latency_median_s": float(np.median(lat[mode])),
                    "rss_mib": float(sum(rss[mode])),
                    "image_size": a.image_size, "cpu": cpu_name(),
                }
                if mode in ious:
                    row.update(min_iou=float(np.min(ious[mode])), max_logit_diff=float(np.max(diffs[mode])))
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def report(rows: list[dict], a) -> str:
    import onnxruntime as ort

    threads = a.threads or os.cpu_count()
    lines = [
        f"# Several cameras, one model: sam2.1_hiera_tiny @ {a.image_size}, ONNX Runtime fp32, CPU",
        "",
        f"{date.today().isoformat()}. {rows[0]['cpu']}, {os.cpu_count()} cores; onnxruntime {ort.__version__}, "
        f"Python {platform.python_version()}. Random weights. Cameras: the first N of {', '.join(CLIPS)}; "
        f"{a.frames} frames each, frames 0..{a.warmup - 1} untimed (prompts: one click per object on frame 0).",
        f"**batched**: one process, one MultiTracker, the N frames of a step in one image-encoder call; "
        f"**unbatched**: the same, one encoder call per camera; **processes**: N processes with one Tracker each, "
        f"stepping at the same time. Threads: {threads} ONNX Runtime threads in the one process, "
        f"max(1, {threads} // N) in each of the N processes; spinning off. The modes take turns step by step "
        "(rotating order). Latency: a camera's frame in -> its result out (the whole step in one process). "
        "RSS: peak resident memory (VmHWM; the sum over the N processes). IoU / logit diff: batched and "
        "unbatched against the N independent trackers, every timed and untimed frame and object.",
        "",
        "| objects/camera | cameras | mode | total FPS | per-camera latency median (s) | RSS (MiB) | min IoU | max logit diff |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        eq = (f"{r['min_iou']:.4f} | {r['max_logit_diff']:.1e}" if "min_iou" in r else "(reference) | ")
        lines.append(f"| {r['objects']} | {r['cameras']} | {r['mode']} | {r['total_fps']:.3f} | "
                     f"{r['camera_latency_median_s']:.2f} | {r['rss_mib']:.0f} | {eq} |")
    lines += ["", "Summary per objects/camera, N = max cameras:", ""]
    n = max(r["cameras"] for r in rows)
    for objects in sorted({r["objects"] for r in rows}):
        get = {(r["cameras"], r["mode"]): r for r in rows if r["objects"] == objects}
        b, u, p, one = get[(n, "batched")], get[(n, "unbatched")], get[(n, "processes")], get[(1, "batched")]
        lines.append(
            f"- {objects} object(s): {n} cameras batched {b['total_fps']:.3f} FPS vs unbatched {u['total_fps']:.3f} "
            f"({b['total_fps'] / u['total_fps']:.2f}x) vs {n} processes {p['total_fps']:.3f} "
            f"({b['total_fps'] / p['total_fps']:.2f}x); memory: one process with {n} cameras {b['rss_mib']:.0f} MiB = "
            f"{b['rss_mib'] / one['rss_mib']:.2f}x one camera ({one['rss_mib']:.0f} MiB), {n} processes "
            f"{p['rss_mib']:.0f} MiB = {p['rss_mib'] / one['rss_mib']:.2f}x.")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objects = sorted({r["objects"] for r in rows})
    fig, axes = plt.subplots(1, len(objects) + 1, figsize=(4.2 * (len(objects) + 1), 3.6))
    for ax, k in zip(axes, objects):
        for mode in MODES:
            sel = sorted((r for r in rows if r["objects"] == k and r["mode"] == mode), key=lambda r: r["cameras"])
            ax.plot([r["cameras"] for r in sel], [r["total_fps"] for r in sel], marker="o", label=mode)
        ax.set_xlabel("cameras")
        ax.set_ylabel("total frames per second")
        ax.set_title(f"{k} object(s) per camera")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for mode in ("batched", "processes"):
        sel = sorted((r for r in rows if r["objects"] == objects[0] and r["mode"] == mode), key=lambda r: r["cameras"])
        ax.plot([r["cameras"] for r in sel], [r["rss_mib"] for r in sel], marker="o", label=mode)
    ax.set_xlabel("cameras")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title(f"memory ({objects[0]} object(s)/camera)")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--cameras", type=int, default=4, help="1 .. this many cameras (at most 4 clips)")
    p.add_argument("--objects", type=int, nargs="+", default=[1, 2], help="objects per camera")
    p.add_argument("--frames", type=int, default=5, help="steps per configuration (frame 0 holds the prompts)")
    p.add_argument("--warmup", type=int, default=1, help="first steps run but not timed")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads of the one process (default: cores)")
    p.add_argument("--gap", type=float, default=0.2, help="idle seconds before each step, as between camera frames")
    p.add_argument("--data", default=os.environ.get("SAM2_ROS_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--work", default="benchmarks/work", help="where the random-weights export is cached")
    p.add_argument("--out", default="benchmarks/multi_camera")
    a = p.parse_args(argv)
    if not 1 <= a.cameras <= len(CLIPS) or a.frames <= a.warmup:
        p.error(f"--cameras must be 1..{len(CLIPS)} and --frames > --warmup")
    t0 = time.perf_counter()
    rows = run(a)
    text = report(rows, a) + f"\nRun time: {time.perf_counter() - t0:.0f} s.\n"
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    plot(rows, out.with_suffix(".png"), f"sam2.1_hiera_tiny @ {a.image_size}, ONNX Runtime fp32, CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
