"""Which prompted frames to keep: our bounded conditioning slots vs the official keep-everything
predictor, on a long real clip with many corrections.

Runs, on the same frames and prompts (corrections every ``--every`` frames on each object):

* the official ``SAM2VideoPredictor`` keeping every prompted frame (its default), the reference;
* ours with ``cond_slots=K``, latest K (the official ``max_cond_frames_in_attn=K``);
* ours with ``cond_slots=K`` and ``keep_first_cond_frame``;
* ours with enough slots for every prompted frame (must equal the reference: a sanity check).

and prints per-run agreement with the reference (mean / minimum mask IoU, object-score sign
agreement) over the frames after the first eviction, and how many prompted frames each run
attends to at the end (the memory-attention cost grows with it); writes ``OUT.md``, ``OUT.json``
and ``OUT.png``. Not a speed benchmark: the runs are sequential.

    python benchmarks/cond_frames.py --random-weights --frames 200 --every 8 --out benchmarks/cond_frames
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def correction_prompts(frames: list[np.ndarray], every: int):
    """Two objects prompted on frame 0, then alternately corrected every ``every`` frames."""
    from sam2_ros.io.prompts_file import Prompt

    h, w = frames[0].shape[:2]
    centres = {1: (0.33 * w, 0.40 * h), 2: (0.70 * w, 0.60 * h)}
    rng = np.random.default_rng(0)
    prompts = [
        Prompt(0, 1, np.float32([centres[1]]), np.int32([1])),
        Prompt(0, 2, None, None, np.float32([0.6 * w, 0.45 * h, 0.85 * w, 0.8 * h])),
    ]
    for k, f in enumerate(range(every, len(frames), every)):
        oid = 1 + k % 2
        cx, cy = centres[oid]
        jitter = rng.uniform(-0.03, 0.03, 2) * (w, h)
        neg = (rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h)
        prompts.append(Prompt(f, oid, np.float32([(cx + jitter[0], cy + jitter[1]), neg]), np.int32([1, 0])))
    return prompts


def agreement(ours, ref, first_frame: int) -> dict:
    from sam2_ros.postprocess import mask_iou

    ious, signs = [], []
    for k in range(len(ref.object_ids)):
        for f in range(first_frame, ours.masks.shape[0]):
            ious.append(mask_iou(ours.masks[f, k], ref.masks[f, k]))
            signs.append(bool((ours.scores[f, k] > 0) == (ref.scores[f, k] > 0)))
    return {"mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)),
            "sign_agreement": float(np.mean(signs)), "pairs": len(ious)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", help="export directory (default with --random-weights: built under --work)")
    p.add_argument("--checkpoint", help="the checkpoint of --engines")
    p.add_argument("--random-weights", action="store_true", help="random sam2.1_hiera_tiny at --image-size")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--work", default="out/cond_frames")
    p.add_argument("--video", default=str(REPO.parent / "shared" / "data" / "videos" / "bedroom.mp4"))
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--every", type=int, default=8, help="frames between two corrections")
    p.add_argument("--cond-slots", type=int, default=2)
    p.add_argument("--out", default="benchmarks/cond_frames")
    a = p.parse_args(argv)

    import torch

    from sam2_ros.backends import load_backend
    from sam2_ros.backends.torch_backend.official import build_video_predictor
    from sam2_ros.io.runner import run_tracker
    from sam2_ros.io.video import read_frames
    from sam2_ros.manifest import load_manifest
    from sam2_ros.tracker import Tracker
    from sam2_ros_export.reference import official_fill_hole_area, run_official

    torch.set_num_threads(2)
    if a.random_weights:
        from sam2_ros_export.onnx_export import cached_random_export

        ckpt, engines = cached_random_export("sam2.1_hiera_tiny", a.image_size, a.work)
    elif a.engines and a.checkpoint:
        engines, ckpt = Path(a.engines), Path(a.checkpoint)
    else:
        p.error("give --engines and --checkpoint, or --random-weights")

    frames = read_frames(a.video, a.frames)
    prompts = correction_prompts(frames, a.every)
    per_object = {oid: sum(q.object_id == oid for q in prompts) for oid in (1, 2)}
    k = a.cond_slots
    # first frame tracked after an object's (K+1)-th prompted frame: where the policies can differ
    first_evict = min(sorted(q.frame for q in prompts if q.object_id == oid)[k] + 1
                      for oid in per_object if per_object[oid] > k)

    spec_model = load_manifest(engines).spec.model
    predictor = build_video_predictor(spec_model, ckpt, image_size=a.image_size)
    print(f"official predictor, every prompted frame kept ({len(prompts)} prompts on {len(frames)} frames)",
          file=sys.stderr)
    ref = run_official(predictor, frames, prompts)
    fill = official_fill_hole_area(predictor)
    most = max(per_object.values())
    runs = {"official (all prompted frames)": (most, None)}
    variants = {
        f"ours, latest {k}": dict(cond_slots=k),
        f"ours, first + latest {k - 1}": dict(cond_slots=k, keep_first_cond_frame=True),
        f"ours, {most} slots (all)": dict(cond_slots=most),
    }
    rows = []
    for name, opts in variants.items():
        print(name, file=sys.stderr)
        tracker = Tracker(load_backend(engines, "onnxruntime"), max_objects=2, num_frames=len(frames),
                          fill_hole_area=fill, **opts)
        ours = run_tracker(tracker, frames, prompts)
        tracker.close()
        runs[name] = (opts["cond_slots"], agreement(ours, ref, first_evict))
    for name, (attended, agr) in runs.items():
        rows.append({"run": name, "prompted_frames_attended": attended, **(agr or {})})

    lines = [
        f"# Conditioning frames kept: {spec_model} @ {a.image_size}, {Path(a.video).name}, {len(frames)} frames",
        "",
        f"Two objects, a correction every {a.every} frames (prompted frames per object: {per_object}); "
        f"agreement with the official predictor (all prompted frames kept) from frame {first_evict} on, "
        "where the policies can first differ. Random weights unless stated: the figures measure how far each "
        "policy drifts from the official run, not segmentation quality.",
        "",
        "| run | prompted frames attended (max) | mean IoU | min IoU | score sign agreement |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "mean_iou" in r:
            lines.append(f"| {r['run']} | {r['prompted_frames_attended']} | {r['mean_iou']:.4f} | "
                         f"{r['min_iou']:.4f} | {r['sign_agreement']:.3f} |")
        else:
            lines.append(f"| {r['run']} | {r['prompted_frames_attended']} | reference | | |")
    lines += ["", f"`python benchmarks/cond_frames.py {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = [r for r in rows if "mean_iou" in r]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh([r["run"] for r in named], [r["mean_iou"] for r in named], color="tab:blue", label="mean IoU")
    ax.barh([r["run"] for r in named], [r["min_iou"] for r in named], color="tab:orange", label="min IoU")
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("mask IoU vs official (all prompted frames kept)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
