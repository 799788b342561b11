"""Drive the official ``SAM2VideoPredictor`` like a stream, as the oracle for our tracker.

Prompts at frame f are added after the official predictor has propagated up to f, so a
click on an object it already tracks is a refinement on a tracked frame (conditioned on
memory), and a new id is a new object, exactly the streaming semantics of
``sam2_ros.tracker.Tracker``. Frames enter the official loader through its own
``_load_img_as_tensor`` (lossless PNG), so preprocessing is the official code too.
Every prompt is given on its own frame: a prompts file's ``received_at`` (when our tracker
receives it, late) is ignored here, so a late run of ours is compared with the prompt on time.

Meta's EdgeTAM predictor is the SAM 2 code of before December 2024: no object may be added once
tracking has started, and its Perceiver fails with two objects batched (EdgeTAM issue 15). Objects
are independent in SAM 2 and EdgeTAM, so :func:`run_official_per_object` drives one inference state
per object, each prompted on its own frames, and merges the runs. EdgeTAM's package lives in its own
environment: :func:`reference_in_subprocess` runs this module there (``python -m
sam2_ros_export.reference``) and reads the run back.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch

from sam2_ros.io.prompts_file import Prompt, prompts_by_frame


@dataclass
class ReferenceRun:
    object_ids: list[int]
    low_res: np.ndarray  # [frames, objects, 4h, 4w] float32 (NaN before an object's first prompt)
    scores: np.ndarray  # [frames, objects] float32 (NaN before an object's first prompt)
    masks: np.ndarray  # [frames, objects, H, W] bool
    seconds: float  # wall time of prompts + propagation
    frame_seconds: dict[int, float]  # wall time until each frame's output was yielded (last pass)
    fill_hole_area: int = 0  # what the official predictor's hole filling really did (official_fill_hole_area)
    meta: dict = field(default_factory=dict)  # how the reference was made (model, package, options)


def official_fill_hole_area(predictor) -> int:
    """The hole-filling area the official predictor really applies here, found by asking its own
    ``fill_holes_in_mask_scores`` to fill a one-pixel hole on its device: Meta's SAM 2 fills holes of
    ``fill_hole_area`` pixels with its CUDA extension and skips the step (with a warning) without it,
    so on CPU the effective area is 0; EdgeTAM's package (edgetam-dimos) falls back to OpenCV and
    fills them on CPU too."""
    import warnings

    from sam2.utils.misc import fill_holes_in_mask_scores

    area = int(predictor.fill_hole_area)
    if area <= 0:
        return 0
    probe = torch.ones(1, 1, 8, 8, device=predictor.device)
    probe[0, 0, 3, 3] = -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filled = fill_holes_in_mask_scores(probe, area)
    return area if float(filled[0, 0, 3, 3]) > 0 else 0


def _official_images(frames: list[np.ndarray], image_size: int) -> torch.Tensor:
    from sam2.utils.misc import _load_img_as_tensor

    mean = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
    images = torch.zeros(len(frames), 3, image_size, image_size, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as d:
        for i, f in enumerate(frames):
            p = Path(d) / f"{i:05d}.png"
            cv2.imwrite(str(p), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            images[i], _, _ = _load_img_as_tensor(str(p), image_size)
    images -= mean
    images /= std
    return images


def run_official(predictor, frames: list[np.ndarray], prompts: list[Prompt]) -> ReferenceRun:
    """Run the official predictor over ``frames`` with ``prompts`` (streaming order)."""
    import sam2.sam2_video_predictor as svp

    h, w = frames[0].shape[:2]
    images = _official_images(frames, predictor.image_size)
    n_frames = len(frames)
    with mock.patch.object(svp, "load_video_frames", lambda **kw: (images, h, w)):
        state = predictor.init_state(video_path="<frames in memory>")
    by_frame = prompts_by_frame([p for p in prompts if p.frame < n_frames])
    starts = sorted(by_frame)
    if not starts:
        raise ValueError("no prompt falls within the frames")
    masks_by_frame: dict[int, dict[int, np.ndarray]] = {}
    frame_seconds: dict[int, float] = {}
    t0 = time.perf_counter()
    # With the official default (add_all_frames_to_correct_as_cond=False) a correction is a
    # non-conditioning output that a pass starting on its frame would recompute and discard
    # (facebookresearch/sam2 issues 546, 719): resume after the prompted frame instead, so the
    # correction lives on in the recent memories, the streaming meaning of that default.
    resume_after = not getattr(predictor, "add_all_frames_to_correct_as_cond", True)
    with torch.inference_mode():
        for i, f in enumerate(starts):
            for p in by_frame[f]:
                if p.mask is not None:
                    _, ids, video_masks = predictor.add_new_mask(state, f, p.object_id, p.mask)
                else:
                    _, ids, video_masks = predictor.add_new_points_or_box(
                        state, f, p.object_id, points=p.points, labels=p.labels, box=p.box,
                    )
                if resume_after:
                    k = list(ids).index(p.object_id)
                    masks_by_frame.setdefault(f, {})[p.object_id] = (video_masks[k, 0] > 0).numpy()
            end = starts[i + 1] if i + 1 < len(starts) else n_frames - 1
            first = f + 1 if resume_after else f
            if first > end:
                predictor.propagate_in_video_preflight(state)  # consolidate the last frame's prompts
                continue
            t_prev = time.perf_counter()
            for fi, ids, video_masks in predictor.propagate_in_video(
                state, start_frame_idx=first, max_frame_num_to_track=end - first,
            ):
                masks_by_frame.setdefault(fi, {}).update(
                    {oid: (video_masks[k, 0] > 0).numpy() for k, oid in enumerate(ids)}
                )
                now = time.perf_counter()
                frame_seconds[fi] = now - t_prev
                t_prev = now
    seconds = time.perf_counter() - t0
    obj_ids = sorted(state["obj_ids"])
    lr = predictor.image_size // 4
    low_res = np.full((n_frames, len(obj_ids), lr, lr), np.nan, np.float32)
    scores = np.full((n_frames, len(obj_ids)), np.nan, np.float32)
    masks = np.zeros((n_frames, len(obj_ids), h, w), bool)
    for k, oid in enumerate(obj_ids):
        out = state["output_dict_per_obj"][state["obj_id_to_idx"][oid]]
        for key in ("non_cond_frame_outputs", "cond_frame_outputs"):
            for fi, o in out[key].items():
                low_res[fi, k] = o["pred_masks"][0, 0].float().numpy()
                scores[fi, k] = float(o["object_score_logits"].reshape(-1)[0])
        for fi, d in masks_by_frame.items():
            if oid in d:
                masks[fi, k] = d[oid]
    return ReferenceRun(obj_ids, low_res, scores, masks, seconds, frame_seconds,
                        fill_hole_area=official_fill_hole_area(predictor))


def run_official_per_object(predictor, frames: list[np.ndarray], prompts: list[Prompt]) -> ReferenceRun:
    """:func:`run_official` once per object (its own inference state, its own prompts), merged.

    The way to drive a predictor that cannot add objects after tracking starts or batch them
    (EdgeTAM's); objects never interact in SAM 2, so the result is the batched one."""
    ids = sorted({p.object_id for p in prompts if p.frame < len(frames)})
    runs = [run_official(predictor, frames, [p for p in prompts if p.object_id == oid]) for oid in ids]
    frame_seconds: dict[int, float] = {}
    for r in runs:
        for f, t in r.frame_seconds.items():
            frame_seconds[f] = frame_seconds.get(f, 0.0) + t
    return ReferenceRun(
        ids, np.concatenate([r.low_res for r in runs], axis=1), np.concatenate([r.scores for r in runs], axis=1),
        np.concatenate([r.masks for r in runs], axis=1), sum(r.seconds for r in runs), frame_seconds,
        fill_hole_area=runs[0].fill_hole_area if runs else 0,
    )


def reference_in_subprocess(python: str | Path, model: str, checkpoint: str | Path, image_size: int,
                            frames: list[np.ndarray], prompts: list[Prompt], official: dict | None = None,
                            per_object: bool = True, work: str | Path | None = None) -> ReferenceRun:
    """The official predictor of ``model`` run by ``python`` (an environment with the model's
    package, e.g. EdgeTAM's) on ``frames`` and ``prompts``; ``official``: options of
    ``build_video_predictor``. Inputs and the result cross as a pickle in ``work`` (a temporary
    folder when None); a failure raises ``RuntimeError`` with the child's output."""
    from sam2_ros_export.model_env import run_python

    with tempfile.TemporaryDirectory(dir=work) as d:
        job, out = Path(d) / "job.pkl", Path(d) / "reference.pkl"
        job.write_bytes(pickle.dumps({
            "model": model, "checkpoint": str(checkpoint), "image_size": image_size, "frames": frames,
            "prompts": prompts, "official": official or {}, "per_object": per_object,
        }))
        proc = run_python(python, ["-m", "sam2_ros_export.reference", str(job), str(out)],
                          capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the official {model} run under {python} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return ReferenceRun(**pickle.loads(out.read_bytes()))


def _main(argv: list[str] | None = None) -> int:
    """``python -m sam2_ros_export.reference JOB OUT``: the child of :func:`reference_in_subprocess`."""
    from sam2_ros.backends.torch_backend.official import build_video_predictor, installed_package

    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("job")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    job = pickle.loads(Path(args.job).read_bytes())
    predictor = build_video_predictor(job["model"], job["checkpoint"], image_size=job["image_size"], **job["official"])
    run = (run_official_per_object if job["per_object"] else run_official)(predictor, job["frames"], job["prompts"])
    run.meta = {"model": job["model"], "package": installed_package(), "torch": torch.__version__,
                "official": json.loads(json.dumps(job["official"])), "per_object": job["per_object"]}
    Path(args.out).write_bytes(pickle.dumps(dict(run.__dict__)))  # a dict: the class here is __main__'s
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
