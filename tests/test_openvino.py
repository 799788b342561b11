"""The OpenVINO backend: fp32 reproduces the official predictor; bf16 meets the fidelity targets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sam2_ros.backends import load_backend
from sam2_ros.errors import EngineError
from sam2_ros.io.prompts_file import Prompt
from sam2_ros.io.video import read_frames

from conftest import mask_iou
from test_parity import assert_parity, pts, run_both

ov = pytest.importorskip("openvino", reason="the openvino backend needs openvino (requirements.txt installs it)")


def _has_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_fp32_matches_official(tiny_export_256, tiny_checkpoint, bedroom_frames):
    frames = bedroom_frames[:10]
    h, w = frames[0].shape[:2]
    mask = np.zeros((h, w), bool)
    mask[120:330, 480:720] = True
    prompts = [
        Prompt(0, 1, pts([300, 200]), np.array([1], np.int32)),
        Prompt(0, 2, None, None, np.array([600, 250, 800, 450], np.float32)),
        Prompt(3, 1, pts([320, 220], [100, 100]), np.array([1, 0], np.int32)),  # refinement
        Prompt(4, 3, mask=mask),  # new object mid-stream, by mask
    ]
    ours, ref = run_both(tiny_export_256, tiny_checkpoint, frames, prompts, backend="openvino", threads=2)
    assert_parity(ours, ref)


@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no bf16 support (AMX / AVX-512 BF16)")
def test_bf16_stays_close_to_official_fp32_over_60_frames(tiny_export_256, tiny_checkpoint, shared_data):
    """The opt-in bf16 path against the official fp32 predictor on a 60-frame real clip with two
    objects: mean IoU >= 0.98, every frame >= 0.95, object-score sign agreement >= 0.99."""
    frames = read_frames(shared_data / "videos" / "bedroom.mp4", 60)
    prompts = [
        Prompt(0, 1, pts([300, 200]), np.array([1], np.int32)),
        Prompt(0, 2, None, None, np.array([600, 250, 800, 450], np.float32)),
        Prompt(30, 1, pts([320, 220], [100, 100]), np.array([1, 0], np.int32)),
    ]
    ours, ref = run_both(tiny_export_256, tiny_checkpoint, frames, prompts, backend="openvino", precision="bf16")
    ious = [mask_iou(ours.masks[f, k], ref.masks[f, k]) for f in range(len(frames)) for k in range(2)]
    signs = [(ours.scores[f, k] > 0) == (ref.scores[f, k] > 0) for f in range(len(frames)) for k in range(2)]
    assert np.mean(ious) >= 0.98 and min(ious) >= 0.95, (np.mean(ious), min(ious))
    assert np.mean(signs) >= 0.99
    diff = float(np.nanmax(np.abs(ours.low_res - ref.low_res)))
    assert diff > 1e-3, "bf16 gave fp32-identical logits: the precision hint did not take effect"


def test_options_and_bad_exports_are_clear_errors(tmp_path, tiny_export_256):
    with pytest.raises(EngineError, match="precision must be one of fp32, bf16"):
        load_backend(tiny_export_256, "openvino", precision="fp16")
    with pytest.raises(EngineError, match="takes no option providers"):
        load_backend(tiny_export_256, "openvino", providers=["cpu"])
    bad = tmp_path / "bad"
    shutil.copytree(tiny_export_256, bad)
    (bad / "mask_decoder.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(EngineError, match="OpenVINO cannot compile .*mask_decoder.onnx"):
        load_backend(bad, "openvino")
    old = tmp_path / "old"  # an export from before the dense attention graph: masked attention
    shutil.copytree(tiny_export_256, old)
    m = json.loads((old / "manifest.json").read_text())
    del m["graphs"]["memory_attention_dense"]
    (old / "manifest.json").write_text(json.dumps(m))
    assert not load_backend(old, "openvino").has_dense_attention


def test_track_cli_takes_openvino_precision_and_threads(tiny_export_256, tmp_path):
    from test_cli import SAMPLES, sam2_ros

    precision = "bf16" if _has_bf16() else "fp32"
    out = tmp_path / "track"
    sam2_ros("track", "--engines", tiny_export_256, "--backend", "openvino", "--precision", precision, "--threads", 1,
             "--video", SAMPLES / "bedroom_short.mp4", "--prompts", SAMPLES / "bedroom_prompts.json", "--out", out,
             "--max-frames", 3)
    with np.load(out / "masks.npz") as z:
        assert z["masks"].shape == (3, 3, 540, 960) and z["masks"][:, :2].any()
    proc = sam2_ros("track", "--engines", tiny_export_256, "--backend", "openvino", "--precision", "fp16",
                    "--video", SAMPLES / "bedroom_short.mp4", "--prompts", SAMPLES / "bedroom_prompts.json",
                    "--out", tmp_path / "bad", check=False)
    assert proc.returncode == 2 and "precision must be one of fp32, bf16" in proc.stderr, proc.stderr
