"""scripts/gpu_check.sh, the one command a lent GPU runs: its CPU dry run end to end (every stage's
code at smoke sizes, the GPU-only tests skipping with their reason), and the verdicts it prints
from what it measured (transfers counted from a profiler trace, parity per precision, pytest's
junit report)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_memcpy_bytes_counts_host_device_copies_of_a_profiler_trace():
    check = load_check()
    trace = {"traceEvents": [
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pinned -> Device)", "args": {"bytes": 1000}},
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "args": {"bytes": 24}},
        {"cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pinned)", "args": {"bytes": 500}},
        {"cat": "gpu_memcpy", "name": "Memcpy DtoD (Device -> Device)", "args": {"bytes": 10**9}},
        {"cat": "kernel", "name": "HtoD-looking kernel", "args": {"bytes": 7}},
        {"cat": "gpu_memset", "name": "Memset (Device)", "args": {"bytes": 99}},
    ]}
    assert check.memcpy_bytes(trace) == {"up": 1024, "down": 500}


def test_traffic_verdict_holds_the_target_of_one_frame_up_and_the_outputs_read():
    check = load_check()
    frame, read = 1920 * 1080 * 3, 1920 * 1080 + 32
    assert check.traffic_verdict(frame + 200, read + 100, frame, read)["status"] == "passed"
    # the low-res logits of 2 objects at 1024 px (2 x 256 KiB) downloaded every frame for nobody
    bad = check.traffic_verdict(frame + 200, read + 2 * 256 * 1024, frame, read)
    assert bad["status"] == "failed" and bad["excess_down_bytes"] == 2 * 256 * 1024
    assert check.traffic_verdict(2 * frame, read, frame, read)["status"] == "failed"  # the frame went up twice


def test_parity_verdict_applies_each_precisions_target():
    check = load_check()
    row = lambda b, p, mean, mn: {"backend": b, "precision": p, "mean_iou": mean, "min_iou": mn}  # noqa: E731
    assert check.parity_verdict([row("torch-fp32", "fp32", 0.9995, 0.99), row("torch-bf16", "bf16", 0.985, 0.96)])[
        "status"] == "passed"
    assert check.parity_verdict([row("torch-fp32", "fp32", 0.998, 0.99)])["status"] == "failed"
    low = check.parity_verdict([row("torch-fp32", "fp32", 1.0, 1.0), row("torch-fp16", "fp16", 0.99, 0.94)])
    assert low["status"] == "failed" and [c["passed"] for c in low["checks"]] == [True, False]
    later_ok = check.parity_verdict([row("torch-bf16", "bf16", 0.5, 0.5), row("torch-fp32", "fp32", 1.0, 1.0)])
    assert later_ok["status"] == "failed"  # a later passing row does not hide an earlier failure
    assert check.parity_verdict([{"backend": "torch-fp16", "precision": "fp16", "error": "boom"}])["status"] == "failed"
    assert check.parity_verdict([])["status"] == "skipped"


def test_junit_counts(tmp_path):
    check = load_check()
    (tmp_path / "r.xml").write_text(
        '<testsuites><testsuite>'
        '<testcase classname="a" name="ok"/>'
        '<testcase classname="a" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="a" name="gpu[cuda]"><skipped message="needs a CUDA GPU"/></testcase>'
        '<testcase classname="a" name="gpu2[cuda]"><skipped message="needs a CUDA GPU"/></testcase>'
        '</testsuite></testsuites>')
    c = check.junit_counts(tmp_path / "r.xml")
    assert (c["passed"], c["failed"], c["skipped"]) == (1, 1, 2)
    assert c["skip_reasons"] == {"needs a CUDA GPU": 2} and c["failures"] == ["a::bad"]


def test_refuses_a_gpu_run_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the check would run")
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr


def test_cpu_dry_run_end_to_end(tmp_path, artifacts, tiny_export_256, shared_data):
    """Every stage runs on the CPU at smoke sizes and says what it measured; exports are shared
    with the other tests (the same cache layout)."""
    out = tmp_path / "out"
    env = {**os.environ, "SAM2_ROS_SHARED_DATA": str(shared_data)}
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--out", str(out),
                        "--work", str(artifacts), "--budget-s", "600"],
                       capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:], {k: v.get("status") for k, v in stages.items()})
    assert summary["dry_run"] and summary["ok"]
    assert list(stages) == ["env", "tests", "traffic", "parity", "bench"]
    assert all(s["status"] == "passed" for s in stages.values()), {k: v["status"] for k, v in stages.items()}
    assert stages["env"]["torch"] and "packages" in stages["env"]
    # the GPU-only tests were collected and skipped with their reason (no GPU here)
    tests = stages["tests"]
    assert tests["skipped"] > 0 and tests["failed"] == tests["errors"] == 0
    assert any("CUDA" in reason for reason in tests["skip_reasons"]), tests["skip_reasons"]
    # one frame up per frame, the outputs read down, counted at the numpy <-> torch crossings
    traffic = stages["traffic"]
    assert traffic["up_bytes"] >= traffic["frame_bytes"] == 540 * 960 * 3
    assert traffic["down_bytes"] >= traffic["read_bytes"] > 540 * 960  # the label image at least
    assert "crossings" in traffic["counter"]
    parity = stages["parity"]["checks"]
    assert [c["backend"] for c in parity] == ["torch-fp32"] and parity[0]["mean_iou"] >= 0.999
    bench = stages["bench"]
    assert {(row["backend"], row["objects"]) for row in bench["rows"]} == {
        (b, n) for b in ("torch-fp32", "official-fp32") for n in (1, 2)}
    assert all(row["median_ms"] > 0 for row in bench["rows"])
    assert (out / "bench" / "RESULTS.md").is_file() and (out / "summary.md").read_text().startswith("| stage |")
    for stage in stages:
        assert (out / f"{stage}.log").is_file()
