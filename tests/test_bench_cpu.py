"""`sam2-ros bench` (the same-run CPU benchmark): a smoke run at the smallest size, on the session's
random-weights export. Speed is not asserted (benchmarks measure, tests check): the run's structure is,
and that ours matches the official predictor on the frames it timed."""

from __future__ import annotations

import json

from conftest import run_cli


def test_bench_interleaves_ours_and_the_official_predictor(artifacts, tiny_export_256, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "work").symlink_to(artifacts)  # the names cached_random_export uses: no second export
    run_cli("bench", "--model", "sam2.1_hiera_tiny", "--image-size", "256", "--objects", "2", "--frames", "3",
            "--warmup", "2", "--gap", "0", "--ours", "onnxruntime:fp32", "--out", str(out))
    (row,) = json.loads((out / "cpu_sam2.1_hiera_tiny_256.json").read_text())
    assert (row["backend"], row["precision"], row["objects"], row["frames_timed"]) == ("onnxruntime", "fp32", 2, 1)
    assert not row["official_per_object"] and "baseline_model" not in row  # SAM 2: batched, no baseline by default
    assert row["mean_iou"] >= 0.999 and row["score_sign_agreement"] == 1.0
    assert row["official_median_s"] > 0 and row["ours_median_s"] > 0 and row["speedup"] > 0
    assert set(row["gflop_per_graph"]) == {"image_encoder", "memory_attention", "mask_decoder", "memory_encoder"}
    text = (out / "cpu_sam2.1_hiera_tiny_256.md").read_text()
    assert "| 2 | onnxruntime fp32 |" in text and "bank MiB / object" in text
    assert (out / "cpu_sam2.1_hiera_tiny_256.png").is_file()
