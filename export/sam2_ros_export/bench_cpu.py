"""CPU benchmark: per-frame time of our tracker (ONNX Runtime) vs the official predictor, same run.

Same frames, same prompts (one click per object on frame 0), same random weights; frames
1..N-1 are timed (frame 0 holds the prompts). Prints a markdown table and writes it with a PNG
plot to ``--out``. Ratios are measured side by side because these machines are noisy.
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path

import numpy as np

from sam2_ros.backends import load_backend
from sam2_ros.io.prompts_file import Prompt
from sam2_ros.io.runner import run_tracker
from sam2_ros.tracker import Tracker
from sam2_ros.io.video import read_frames
from sam2_ros.backends.torch_backend.official import build_video_predictor
from sam2_ros_export.checkpoint import random_checkpoint
from sam2_ros_export.onnx_export import export_model
from sam2_ros_export.reference import run_official


def grid_prompts(n: int, hw: tuple[int, int]) -> list[Prompt]:
    h, w = hw
    xs = np.linspace(0.2, 0.8, n) * w
    return [Prompt(0, i + 1, np.array([[x, h * 0.5]], np.float32), np.array([1], np.int32)) for i, x in enumerate(xs)]


def run_cpu_benchmark(args) -> list[dict]:
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    ckpt = work / f"{args.model}_random.pt"
    if not ckpt.is_file():
        random_checkpoint(args.model, 0, ckpt)
    engines = work / f"{args.model}_{args.image_size}"
    if not (engines / "manifest.json").is_file():
        export_model(args.model, ckpt, engines, image_size=args.image_size)
    video = args.video or str(Path(__file__).resolve().parent.parent / "samples" / "bedroom_short.mp4")
    frames = read_frames(video, args.frames)
    rows = []
    for n in args.objects:
        prompts = grid_prompts(n, frames[0].shape[:2])
        predictor = build_video_predictor(args.model, ckpt, image_size=args.image_size)
        ref = run_official(predictor, frames, prompts)
        tracker = Tracker(load_backend(engines), max_objects=max(n, 1), num_frames=len(frames))
        ours = run_tracker(tracker, frames, prompts)
        t_ref = float(np.mean([ref.frame_seconds[f] for f in range(1, len(frames))]))
        t_ours = float(np.mean(ours.frame_seconds[1:]))
        rows.append({"objects": n, "official_s": t_ref, "ours_s": t_ours, "speedup": t_ref / t_ours})
    table = [
        f"# CPU benchmark: {args.model} @ {args.image_size}, {len(frames)} frames of {Path(video).name}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; "
        "ours = ONNX Runtime CPU; official = SAM2VideoPredictor fp32 CPU. Mean per tracked frame (frames 1..N-1).",
        "",
        "| objects | official s/frame | ours s/frame | speed-up (official / ours) |",
        "|---:|---:|---:|---:|",
    ] + [f"| {r['objects']} | {r['official_s']:.3f} | {r['ours_s']:.3f} | {r['speedup']:.2f}x |" for r in rows]
    text = "\n".join(table) + "\n"
    print(text)
    stem = f"cpu_{args.model}_{args.image_size}"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["official_s"] for r in rows], 0.4, label="official")
        ax.bar(x + 0.2, [r["ours_s"] for r in rows], 0.4, label="sam2_ros (ORT)")
        ax.set_xticks(x, [str(r["objects"]) for r in rows])
        ax.set_xlabel("objects")
        ax.set_ylabel("seconds per frame")
        ax.set_title(f"{args.model} @ {args.image_size}, CPU")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png", dpi=100)
    except ImportError:
        print("matplotlib missing: no plot written")
    return rows
