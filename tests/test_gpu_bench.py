"""The GPU benchmark (benchmarks/gpu_bench.py): its report and acceptance checks from saved
results, and its refusal to run without CUDA (all on the CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "benchmarks" / "gpu_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_report_from_results(tmp_path):
    bench = load_bench()
    rng = np.random.default_rng(0)
    results = []
    for backend, base_ms in (("tensorrt", 4.0), ("torch-bf16", 9.0), ("official-vos", 8.0), ("official-bf16", 14.0)):
        for n in (1, 8):
            secs = list(base_ms * n**0.5 / 1e3 * (1 + 0.02 * rng.random(120)))
            row = {"model": "sam2.1_hiera_tiny", "image_size": 1024, "objects": n, "backend": backend,
                   **bench.latency_stats(secs, warmup=20), "gpu_mem_mb": 900.0 + n, "mem_growth_mb": 0.0,
                   "floor_ms": 1.0 * n, "gflop": 900.0 * n}
            results.append(row)
    results.append({**results[0], "long_run": True, "frames": 1000, "mem_growth_mb": 2.0})
    results.append({"model": "sam2.1_hiera_tiny", "image_size": 1024, "objects": 16, "backend": "onnxruntime-cuda",
                    "error": "providers not available"})
    parity = [{"model": "sam2.1_hiera_tiny", "image_size": 1024, "objects": 3, "backend": "tensorrt", "frames": 30,
               **bench.mask_iou_stats(np.ones((30, 3, 8, 8), bool), np.ones((30, 3, 8, 8), bool))}]
    checks = {c["criterion"].split(",")[0] + str(c.get("detail")): c for c in bench.check_targets(results, parity)}
    assert all(c["passed"] for c in checks.values()), checks
    sp = {(s["backend"], s["objects"]): s["speedup"] for s in bench.speedups(results)}
    assert sp[("tensorrt", 1)] == pytest.approx(2.0, rel=0.05) and ("official-vos", 1) not in sp
    data = {"meta": {"device": "NVIDIA H100", "frames": 100, "warmup": 20, "matmul_tflops": 700.0},
            "results": results, "parity": parity,
            "projections": [{"model": "m", "image_size": 1024, "objects": 1, "gflop": 913.3, "device": "jetson_agx_orin_64gb",
                             "tflops_fp16": 42.6, "fps@0.25": 11.7, "fps@0.4": 18.7}]}
    (tmp_path / "results_gpu.json").write_text(json.dumps(data))
    assert bench.main(["--report-only", str(tmp_path / "results_gpu.json"), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "RESULTS_GPU.md").read_text()
    assert "| sam2.1_hiera_tiny | 1024 | 1 | tensorrt | " in md and "failed: providers not available" in md
    assert "## Targets" in md and "| NO |" not in md and "jetson_agx_orin_64gb" in md
    png = (tmp_path / "results_gpu.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_benchmark_checks_fail_when_targets_are_missed():
    bench = load_bench()
    slow = bench.latency_stats([0.010] * 50 + [0.030], warmup=0)
    assert slow["p99_over_median"] > 1.3
    rows = [{"model": "sam2.1_hiera_tiny", "image_size": 1024, "objects": n, "backend": b, **slow}
            for n in (1, 8) for b in ("tensorrt", "official-vos")]
    rows.append({**rows[0], "long_run": True, "mem_growth_mb": 300.0})
    parity = [{"model": "m", "image_size": 1024, "objects": 3, "backend": "tensorrt", "frames": 3,
               **bench.mask_iou_stats(np.ones((3, 1, 4, 4), bool), np.zeros((3, 1, 4, 4), bool))}]
    assert not any(c["passed"] for c in bench.check_targets(rows, parity))
    assert bench.memory_growth_mb([(0, 0), (10, 2**20), (500, 5 * 2**20)], skip_frames=10) == 4.0
    assert bench.click_grid(3, (100, 200)) == [(50.0, 25.0), (150.0, 25.0), (50.0, 75.0)]
    assert len(bench.stream_frames([np.zeros(1)] * 5, 23)) == 23
    with pytest.raises(ValueError):
        bench.latency_stats([0.1], warmup=1)


def test_benchmark_refuses_to_run_without_cuda(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the benchmark would run")
    assert load_bench().main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
