"""The command-line contract (README.md, "Command line"), run as a user would: subprocesses."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from sam2_ros.backends import backend_options, load_backend
from sam2_ros.io.prompts_file import load_prompts
from sam2_ros.io.runner import run_tracker
from sam2_ros.io.video import read_frames
from sam2_ros.tracker import Tracker

SAMPLES = REPO / "samples"


def sam2_ros(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "sam2_ros.cli", *map(str, args)], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"sam2-ros {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_compare_prints_json_summary_last(tiny_export_256, tiny_checkpoint):
    # the official default semantics on both sides (the sample prompts correct object 1 on frame 12)
    proc = sam2_ros(
        "--verbose", "compare", "--no-corrections-as-conditioning", "--engines", tiny_export_256,
        "--backend", "onnxruntime", "--checkpoint", tiny_checkpoint,
        "--video", SAMPLES / "bedroom_short.mp4", "--prompts", SAMPLES / "bedroom_prompts.json", "--max-frames", 14,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("frames", "objects", "mean_iou", "min_iou", "max_logit_diff", "fps_ours", "fps_reference"):
        assert key in summary
    assert summary["frames"] == 14 and summary["objects"] == 3
    assert summary["min_iou"] >= 0.99 and summary["mean_iou"] >= 0.999
    assert summary["max_logit_diff"] <= 1e-3 and summary["score_sign_agreement"] == 1.0


def test_track_writes_masks_overlay_and_stats(tiny_export_256, tmp_path):
    out = tmp_path / "track"
    sam2_ros(
        "track", "--engines", tiny_export_256, "--backend", "onnxruntime", "--video", SAMPLES / "bedroom_short.mp4",
        "--prompts", SAMPLES / "bedroom_prompts.json", "--out", out, "--max-frames", 10,
    )
    with np.load(out / "masks.npz") as z:
        assert z["masks"].shape == (10, 3, 540, 960) and z["masks"].dtype == bool
        assert z["scores"].shape == (10, 3) and z["scores"].dtype == np.float32
        assert z["object_ids"].tolist() == [1, 2, 3]
        assert np.isnan(z["scores"][:8, 2]).all() and not np.isnan(z["scores"][8:, 2]).any()
        assert not z["masks"][:8, 2].any()
        written = {k: z[k] for k in z.files}
    # the file written frame by frame equals the in-memory run over the same frames and prompts
    run = run_tracker(
        Tracker(load_backend(tiny_export_256, "onnxruntime", **backend_options("onnxruntime")),
                max_objects=8, cond_slots=2, fill_hole_area=8),
        read_frames(SAMPLES / "bedroom_short.mp4", 10), load_prompts(SAMPLES / "bedroom_prompts.json"),
    )
    np.testing.assert_array_equal(written["masks"], run.masks)
    np.testing.assert_array_equal(written["scores"], run.scores)
    assert written["object_ids"].dtype == np.int64 and written["object_ids"].tolist() == run.object_ids
    assert sorted(p.name for p in out.iterdir()) == ["masks.npz", "overlay.mp4", "stats.json"]  # no part files left
    stats = json.loads((out / "stats.json").read_text())
    assert stats["frames"] == 10 and stats["objects"] == 3 and stats["backend"] == "onnxruntime" and stats["fps"] > 0
    assert stats["fill_hole_area"] == 8  # the official GPU behaviour by default
    assert stats["corrections_as_conditioning"] is True and stats["keep_first_cond_frame"] is False
    assert (out / "overlay.mp4").stat().st_size > 10_000


def test_track_several_videos_writes_each_stream(tiny_export_256, tmp_path, shared_data):
    """Three videos (one twice: the stream names are deduplicated), one prompts file each, one model:
    each stream's outputs in OUT/<stream>/, equal to tracking that video alone."""
    cups = tmp_path / "cups.json"
    cups.write_text(json.dumps([{"frame": 1, "object_id": 5, "points": [[640, 360]], "labels": [1]}]))
    bedroom, video = SAMPLES / "bedroom_prompts.json", SAMPLES / "bedroom_short.mp4"
    out = tmp_path / "multi"
    sam2_ros("track", "--engines", tiny_export_256, "--video", video, "--video", video, "--video",
             shared_data / "videos" / "02_cups.mp4", "--prompts", bedroom, "--prompts", bedroom, "--prompts", cups,
             "--out", out, "--max-frames", 4)
    streams = {"bedroom_short": (video, bedroom), "bedroom_short_2": (video, bedroom),
               "02_cups": (shared_data / "videos" / "02_cups.mp4", cups)}
    summary = json.loads((out / "stats.json").read_text())
    assert set(summary["streams"]) == set(streams) and summary["frames"] == 12 and summary["frames_per_encoder_call"] == 3
    backend = load_backend(tiny_export_256)
    for s, (v, p) in streams.items():
        assert sorted(f.name for f in (out / s).iterdir()) == ["masks.npz", "overlay.mp4", "stats.json"]
        assert json.loads((out / s / "stats.json").read_text())["video"] == str(v)
        alone = run_tracker(Tracker(backend, max_objects=8, cond_slots=2), read_frames(v, 4), load_prompts(p))
        with np.load(out / s / "masks.npz") as z:
            np.testing.assert_array_equal(z["masks"], alone.masks)
            np.testing.assert_array_equal(z["scores"], alone.scores)
    proc = sam2_ros("track", "--engines", tiny_export_256, "--video", video, "--video", video, "--prompts", bedroom,
                    "--out", out, check=False)
    assert proc.returncode == 2 and "give one --prompts per --video" in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["track", "--engines", "/nonexistent", "--video", "x.mp4", "--prompts", "p.json", "--out", "o"], "error"),
        (["export", "--model", "sam2.1_hiera_tiny", "--checkpoint", "/nonexistent.pt", "--out", "o"], "does not exist"),
        (["track", "--engines", "{export}", "--video", str(SAMPLES / "bedroom_short.mp4"), "--prompts",
          str(SAMPLES / "bedroom_prompts.json"), "--out", "o", "--fill-hole-area", "-1"], "fill_hole_area must be"),
        (["track", "--engines", "{export}", "--video", str(SAMPLES / "bedroom_short.mp4"), "--prompts",
          str(SAMPLES / "bedroom_prompts.json"), "--out", "o", "--keep-first-cond-frame", "--cond-slots", "1"],
         "keep_first_cond_frame needs cond_slots >= 2"),
        (["track", "--engines", "{export}", "--video", str(SAMPLES / "bedroom_short.mp4"), "--prompts",
          str(SAMPLES / "bedroom_prompts.json"), "--out", "o", "--precision", "bf16"], "is for the torch and openvino backends"),
    ],
)
def test_bad_arguments_fail_clearly(args, message, tmp_path, tiny_export_256):
    args = [str(tmp_path / "o") if a == "o" else a.replace("{export}", str(tiny_export_256)) for a in args]
    proc = sam2_ros(*args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_demo_on_random_weights_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    sam2_ros("demo", "--random-weights", "--image-size", 256, "--max-frames", 3, "--out", out)
    assert (out / "track" / "masks.npz").is_file() and (out / "track" / "overlay.mp4").is_file()
    assert (out / "engines" / "sam2.1_hiera_tiny_256" / "manifest.json").is_file()


def test_build_without_tensorrt_says_so(tiny_export_256, tmp_path):
    pytest.importorskip("sam2_ros.backends.tensorrt.build")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        proc = sam2_ros("build", "--onnx", tiny_export_256, "--out", tmp_path / "trt", check=False)
        assert proc.returncode == 2 and "TensorRT" in proc.stderr and "Traceback" not in proc.stderr
    else:
        pytest.skip("TensorRT is installed: the build itself is tested in tests/test_tensorrt.py")


def test_prompts_file_received_at(tmp_path):
    """``received_at``: when a prompt reaches the tracker (a frame index >= its frame)."""
    from sam2_ros.io.prompts_file import prompts_by_delivery

    def load(entries):
        path = tmp_path / "prompts.json"
        path.write_text(json.dumps(entries))
        return load_prompts(path)

    prompts = load([
        {"frame": 3, "object_id": 1, "points": [[1, 2]], "labels": [1], "received_at": 7},
        {"frame": 7, "object_id": 2, "box": [1, 2, 30, 40]},
        {"frame": 5, "object_id": 1, "points": [[3, 4]], "labels": [1], "received_at": 7},
        {"frame": 0, "object_id": 3, "box": [1, 2, 30, 40], "received_at": 0},
    ])
    assert [(p.frame, p.delivery) for p in prompts] == [(0, 0), (3, 7), (5, 7), (7, 7)]
    # delivered after frame 7 in the order of their frames: as they would have come on time
    assert [(p.object_id, p.frame) for p in prompts_by_delivery(prompts)[7]] == [(1, 3), (1, 5), (2, 7)]
    for bad, message in (
        ({"frame": 4, "object_id": 1, "box": [1, 2, 3, 4], "received_at": 3}, r"'received_at' \(3\) must be >= its frame \(4\)"),
        ({"frame": 4, "object_id": 1, "box": [1, 2, 3, 4], "received_at": 4.5}, "'received_at' must be a frame index"),
        ({"frame": 4, "object_id": 1, "box": [1, 2, 3, 4], "received_at": True}, "'received_at' must be a frame index"),
    ):
        with pytest.raises(ValueError, match=message):
            load([bad])


def test_track_refuses_a_prompt_later_than_the_history(tiny_export_256, tmp_path):
    prompts = tmp_path / "late.json"
    prompts.write_text(json.dumps([{"frame": 0, "object_id": 1, "box": [600, 200, 860, 420], "received_at": 4}]))
    proc = sam2_ros("track", "--engines", tiny_export_256, "--video", SAMPLES / "bedroom_short.mp4", "--prompts",
                    prompts, "--out", tmp_path / "o", "--history-frames", "4", "--max-frames", "2", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "4 frames late: the tracker keeps 4 frames (history_frames), so a prompt may be at most 3" in proc.stderr
