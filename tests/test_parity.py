"""Our streaming tracker vs the official SAM2VideoPredictor on real video (fp32, CPU).

Done means (issue 2): per-frame mask IoU >= 0.99 on every frame and object, mean >= 0.999,
max abs low-res logit difference <= 1e-3, identical object-score signs; prompts by points,
box and mask, a refinement click, an object added mid-stream, absent objects and small masks,
on two videos, one run at 1024.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam2_ros.backends import load_backend
from sam2_ros.io.prompts_file import Prompt
from sam2_ros.io.runner import run_tracker
from sam2_ros.tracker import Tracker
from sam2_ros.io.video import read_frames
from sam2_ros.backends.torch_backend.official import build_video_predictor
from sam2_ros_export.reference import official_fill_hole_area, run_official

from conftest import _checkpoint, _export, mask_iou


def pts(*xy):
    return np.asarray(xy, np.float32)


def run_both(export_dir, checkpoint, frames, prompts, backend="onnxruntime", official=None, tracker=None, **opts):
    """Our tracker and the official predictor on the same frames and prompts.

    ``official``: options of ``build_video_predictor``; ``tracker``: options of ``Tracker``."""
    be = load_backend(export_dir, backend, **opts)
    spec = be.manifest.spec
    predictor = build_video_predictor(spec.model, checkpoint, image_size=spec.image_size, **(official or {}))
    ref = run_official(predictor, frames, prompts)
    tracker = Tracker(be, **{"max_objects": 4, "num_frames": len(frames),
                             "fill_hole_area": official_fill_hole_area(predictor), **(tracker or {})})
    ours = run_tracker(tracker, frames, prompts, keep_low_res=True)
    return ours, ref


def assert_parity(ours, ref):
    assert ours.object_ids == ref.object_ids
    ious, diffs = [], []
    for k, oid in enumerate(ref.object_ids):
        for f in range(ours.masks.shape[0]):
            if np.isnan(ref.scores[f, k]):  # object not prompted yet: neither tracks it
                assert np.isnan(ours.scores[f, k]) and not ours.masks[f, k].any()
                continue
            iou = mask_iou(ours.masks[f, k], ref.masks[f, k])
            diff = float(np.abs(ours.low_res[f, k] - ref.low_res[f, k]).max())
            assert iou >= 0.99, f"object {oid} frame {f}: IoU {iou:.4f}"
            assert diff <= 1e-3, f"object {oid} frame {f}: logit diff {diff:.2e}"
            assert (ours.scores[f, k] > 0) == (ref.scores[f, k] > 0), (
                f"object {oid} frame {f}: score {ours.scores[f, k]} vs official {ref.scores[f, k]}"
            )
            ious.append(iou)
            diffs.append(diff)
    assert np.mean(ious) >= 0.999
    return np.mean(ious), max(diffs)


def test_bedroom_points_box_mask_refinement_midstream(tiny_export_256, tiny_checkpoint, bedroom_frames):
    frames = bedroom_frames[:10]
    h, w = frames[0].shape[:2]
    mask = np.zeros((h, w), bool)
    mask[120:330, 480:720] = True
    prompts = [
        Prompt(0, 1, pts([300, 200]), np.array([1], np.int32)),  # single click
        Prompt(0, 2, None, None, np.array([600, 250, 800, 450], np.float32)),  # box
        Prompt(3, 5, None, None, None, mask),  # mask prompt, object added mid-stream
        Prompt(6, 1, pts([320, 220], [100, 100]), np.array([1, 0], np.int32)),  # refinement on a tracked frame
        Prompt(8, 7, pts([700, 400], [710, 420]), np.array([1, 1], np.int32), np.array([650, 350, 780, 470], np.float32)),
    ]
    ours, ref = run_both(tiny_export_256, tiny_checkpoint, frames, prompts)
    assert_parity(ours, ref)
    assert not np.isnan(ref.scores[3:, 2]).any() and np.isnan(ref.scores[:3, 2]).all()


def test_cups_absent_objects_and_small_masks(hard_export_256, hard_checkpoint, shared_data):
    frames = read_frames(shared_data / "videos" / "02_cups.mp4", 8)
    h, w = frames[0].shape[:2]
    mask = np.zeros((h, w), bool)
    mask[300:420, 500:700] = True
    prompts = [
        Prompt(0, 1, pts([640, 360]), np.array([1], np.int32)),
        Prompt(0, 2, None, None, np.array([100, 100, 400, 400], np.float32)),
        Prompt(2, 3, None, None, None, mask),
        Prompt(4, 4, None, None, None, np.zeros((h, w), bool)),  # empty mask: absent from the start
        Prompt(5, 2, pts([250, 250], [380, 120]), np.array([1, 0], np.int32)),
    ]
    ours, ref = run_both(hard_export_256, hard_checkpoint, frames, prompts)
    # the hard cases must really occur in the official run, or this test proves nothing
    valid = ~np.isnan(ref.scores)
    assert (ref.scores[valid] < 0).sum() >= 3, ref.scores
    assert (ref.scores[valid] > 0).sum() >= 3, ref.scores
    frac = ref.masks.mean(axis=(2, 3))[valid & (ref.scores > 0)]
    assert (frac < 0.05).sum() >= 3, frac
    assert_parity(ours, ref)


def test_blocks_at_1024(artifacts, shared_data):
    ckpt = _checkpoint(artifacts, "sam2.1_hiera_tiny")
    # the tracker's parity with the official predictor checks every graph: no per-graph check
    export_dir = _export(artifacts, "sam2.1_hiera_tiny", ckpt, 1024, verify=False)
    frames = read_frames(shared_data / "videos" / "03_blocks.mp4", 2)  # prompts, then one tracked frame
    prompts = [
        Prompt(0, 1, pts([640, 300]), np.array([1], np.int32)),
        Prompt(1, 2, None, None, np.array([200, 300, 500, 600], np.float32)),
    ]
    ours, ref = run_both(export_dir, ckpt, frames, prompts)
    assert_parity(ours, ref)


def test_torch_backend_matches_official(tiny_export_256, tiny_checkpoint, bedroom_frames):
    frames = bedroom_frames[:5]
    prompts = [
        Prompt(0, 1, pts([300, 200]), np.array([1], np.int32)),
        Prompt(2, 2, None, None, np.array([600, 250, 800, 450], np.float32)),
    ]
    ours, ref = run_both(tiny_export_256, tiny_checkpoint, frames, prompts, backend="torch", device="cpu")
    assert_parity(ours, ref)


def correction_prompts(frames):
    h, w = frames[0].shape[:2]
    mask = np.zeros((h, w), bool)
    mask[150:300, 250:420] = True
    return [
        Prompt(0, 1, pts([300, 200]), np.array([1], np.int32)),
        Prompt(0, 2, None, None, np.array([600, 250, 800, 450], np.float32)),
        Prompt(2, 1, pts([320, 220], [100, 100]), np.array([1, 0], np.int32)),  # correction (points)
        Prompt(2, 1, pts([340, 240]), np.array([1], np.int32)),  # second click, same frame
        Prompt(4, 2, None, None, np.array([560, 230, 760, 430], np.float32)),  # correction (box)
        Prompt(5, 1, None, None, None, mask),  # correction (mask)
        Prompt(5, 3, pts([500, 300]), np.array([1], np.int32)),  # new object on a correction frame
        Prompt(9, 1, pts([310, 210]), np.array([1], np.int32)),  # correction on the last frame
    ]


def test_corrections_as_recent_memory_match_the_official_default(tiny_export_256, tiny_checkpoint, bedroom_frames):
    """corrections_as_conditioning=False reproduces add_all_frames_to_correct_as_cond=False."""
    frames = bedroom_frames[:10]
    prompts = correction_prompts(frames)
    ours, ref = run_both(tiny_export_256, tiny_checkpoint, frames, prompts,
                         official={"corrections_as_conditioning": False},
                         tracker={"corrections_as_conditioning": False})
    assert_parity(ours, ref)
    # the two semantics really differ on these prompts, or the test proves nothing
    as_cond, _ = run_both(tiny_export_256, tiny_checkpoint, frames, prompts)
    with pytest.raises(AssertionError, match="logit diff|IoU|score"):
        assert_parity(as_cond, ref)


def test_latest_cond_slots_match_official_max_cond_frames(tiny_export_256, tiny_checkpoint, bedroom_frames):
    """cond_slots=K keeps what the official max_cond_frames_in_attn=K attends to, including an
    evicted prompted frame still among the last 6 (attended as a recent memory)."""
    frames = bedroom_frames[:12]
    prompts = [
        Prompt(0, 1, pts([300, 200]), np.array([1], np.int32)),
        Prompt(1, 1, pts([310, 210]), np.array([1], np.int32)),
        Prompt(3, 1, pts([320, 230], [90, 90]), np.array([1, 0], np.int32)),
        Prompt(4, 1, None, None, np.array([250, 150, 420, 320], np.float32)),
        Prompt(4, 2, pts([700, 380]), np.array([1], np.int32)),
        Prompt(7, 1, pts([330, 240]), np.array([1], np.int32)),
    ]
    ours, ref = run_both(tiny_export_256, tiny_checkpoint, frames, prompts,
                         official={"max_cond_frames": 2}, tracker={"cond_slots": 2})
    assert_parity(ours, ref)
    keep_all, _ = run_both(tiny_export_256, tiny_checkpoint, frames, prompts, tracker={"cond_slots": 5})
    with pytest.raises(AssertionError, match="logit diff|IoU|score"):  # K=2 really dropped frames
        assert_parity(keep_all, ref)
