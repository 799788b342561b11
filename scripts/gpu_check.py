"""Everything a lent GPU must prove, in one run of a few minutes: ``bash scripts/gpu_check.sh``.

Stages, each a subprocess with its own time limit, its log ``<stage>.log`` and its result
``<stage>.json`` under ``--out``, then ``summary.json`` and a printed table:

``env``
    GPU, driver, CUDA, PyTorch and the versions of every package the checks use.
``tests``
    The CUDA-only tests (device imaging on CUDA, CUDA-graph replays equal to eager in fp32, no
    allocation per replay, ``torch.compile`` parity, the torch backend on CUDA against the
    official predictor; TensorRT's where it is installed): ``pytest -k "cuda or gpu or tensorrt"``.
``traffic``
    Host <-> device bytes per steady-state frame of the torch path (device imaging, CUDA graphs),
    two objects on a real clip, reading the label image and the boxes: counted from the CUDA
    memcpy records of PyTorch's profiler on a GPU (every crossing, whoever made it), from the
    numpy <-> torch crossings on the CPU. Target: one frame up + the outputs read.
``parity``
    The torch path in fp32, bf16 and fp16 against the official predictor in fp32 on the same
    device (``benchmarks/gpu_bench.py`` parity; real clip, 3 clicked objects). Targets: fp32 mean
    IoU >= 0.999; bf16 / fp16 mean >= 0.98 and >= 0.95 on every frame and object.
``bench``
    The quick cell of ``benchmarks/gpu_bench.py``: tiny @ 1024, 1 and 8 objects, ours (torch fp32 /
    bf16 / fp16) against the official predictor eager bf16 and ``vos_optimized``. It gets the time
    that is left; its results are saved after every cell, so a stage stopped at its limit keeps
    the cells it finished.

A stage that fails or runs out of time does not stop the next one. With ``--device cpu`` the same
stages run at smoke sizes (CUDA tests skip with their reason): that dry run is a test of this script
on machines without a GPU (``tests/test_gpu_check.py``). The exit status is 0 only when no stage
failed; a stage with nothing to run on this machine is reported as "skipped", never as passed.

Run it on a GPU machine with no network: ``bash scripts/gpu_check.sh --prepare`` (here, with
network) puts what such a machine lacks into ``.gpu_carry/`` (the official ``sam2`` package and the
pure-Python packages it needs, as wheels, and the shared video clips); then, there,
``bash scripts/gpu_check.sh --out DIR`` installs them into a temporary prefix and runs this script.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("env", "tests", "traffic", "parity", "bench")
#: The share of ``--budget-s`` each stage may use at most (the bench gets what is left).
STAGE_SHARE = {"env": 0.05, "tests": 0.3, "traffic": 0.15, "parity": 0.25, "bench": 1.0}
#: Pytest selection of the GPU-only tests (parametrised ``[cuda]`` ids, ``*_cuda_*`` names, TensorRT).
CUDA_TEST_FILES = ("tests/test_device_imaging.py", "tests/test_torch_fast_path.py", "tests/test_device_resident.py",
                   "tests/test_tensorrt.py")
CUDA_TEST_SELECTION = "cuda or gpu or tensorrt"
PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "sam2", "hydra-core", "opencv-python-headless", "pillow",
            "tensorrt", "cuda-python", "cuda-bindings", "cupy-cuda13x", "onnxruntime-gpu")
#: Parity targets (the GPU issue's).
PARITY_FP32_MEAN = 0.999
PARITY_LOW_MEAN = 0.98
PARITY_LOW_MIN = 0.95
#: Bytes per frame allowed above "one frame up + the outputs read" (the small per-call host arrays).
TRAFFIC_SLACK_BYTES = 64 * 1024


def sizes(device: str) -> dict:
    """Image size, frame counts and objects of each stage: the issue's on a GPU, smoke sizes on the CPU."""
    if device == "cpu":  # the dry run: every stage's code at the smallest sizes, fp32 (bf16 is slow on most CPUs)
        return dict(size=256, traffic_warm=3, traffic_frames=2, parity_frames=3, bench_frames=2, bench_warmup=1,
                    bench_objects=[1, 2], bench_backends=["torch-fp32", "official-fp32"],
                    parity_backends=["torch-fp32"], clip_frames=4)
    return dict(size=1024, traffic_warm=24, traffic_frames=10, parity_frames=60, bench_frames=100, bench_warmup=20,
                bench_objects=[1, 8], bench_backends=["torch-fp32", "torch-bf16", "torch-fp16", "official-bf16",
                                                       "official-vos"],
                parity_backends=["torch-fp32", "torch-bf16", "torch-fp16"], clip_frames=120)


def shared_data() -> Path:
    return Path(os.environ.get("SAM2_ROS_SHARED_DATA", REPO.parent / "shared" / "data"))


# ============================================================== stages (run as subprocesses)
def stage_env(a: argparse.Namespace) -> dict:
    import torch

    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "packages": {}}
    for p in PACKAGES:
        try:
            out["packages"][p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out["packages"][p] = None
    if torch.cuda.is_available():
        dev = torch.device(a.device if a.device != "cpu" else "cuda")
        props = torch.cuda.get_device_properties(dev)
        out.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            out["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            out["driver"] = None
    out["status"] = "passed"
    return out


def stage_tests(a: argparse.Namespace) -> dict:
    junit = Path(a.out) / "tests.xml"
    cmd = [sys.executable, "-m", "pytest", *CUDA_TEST_FILES, "-k", CUDA_TEST_SELECTION, "-q", "-rs",
           "-p", "no:cacheprovider", f"--junitxml={junit}"]
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=REPO)
    counts = junit_counts(junit)
    if rc not in (0, 1, 5):  # 5: nothing collected
        status = "failed"
    elif counts["failed"] or counts["errors"]:
        status = "failed"
    elif counts["passed"] == 0:
        status = "skipped"
    else:
        status = "passed"
    return {"status": status, "returncode": rc, **counts, "selection": CUDA_TEST_SELECTION, "files": CUDA_TEST_FILES}


def junit_counts(path: Path) -> dict:
    """passed / failed / errors / skipped and the skip reasons of a pytest junit XML file."""
    import xml.etree.ElementTree as ET

    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "skip_reasons": {}, "failures": []}
    if not path.is_file():
        return counts
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag: child for child in case}
        if "failure" in kinds:
            counts["failed"] += 1
            counts["failures"].append(name)
        elif "error" in kinds:
            counts["errors"] += 1
            counts["failures"].append(name)
        elif "skipped" in kinds:
            counts["skipped"] += 1
            reason = kinds["skipped"].get("message", "")
            counts["skip_reasons"][reason] = counts["skip_reasons"].get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return counts


def memcpy_bytes(trace: dict) -> dict[str, int]:
    """Bytes of the host-to-device and device-to-host copies in a PyTorch profiler (Kineto) Chrome trace."""
    total = {"up": 0, "down": 0}
    for ev in trace.get("traceEvents", []):
        if ev.get("cat") != "gpu_memcpy":
            continue
        name, nbytes = ev.get("name", ""), int((ev.get("args") or {}).get("bytes", 0))
        if "HtoD" in name:
            total["up"] += nbytes
        elif "DtoH" in name:
            total["down"] += nbytes
    return total


def traffic_verdict(up: float, down: float, frame_bytes: int, read_bytes: int, slack: int = TRAFFIC_SLACK_BYTES) -> dict:
    """Per-frame bytes against the target "one frame up + the outputs read" (plus ``slack`` each way)."""
    excess_up, excess_down = up - frame_bytes, down - read_bytes
    ok = excess_up <= slack and excess_down <= slack
    return {"up_bytes": round(up), "down_bytes": round(down), "frame_bytes": frame_bytes, "read_bytes": read_bytes,
            "excess_up_bytes": round(excess_up), "excess_down_bytes": round(excess_down), "slack_bytes": slack,
            "status": "passed" if ok else "failed"}


def stage_traffic(a: argparse.Namespace) -> dict:
    import torch

    from sam2_ros.backends import load_backend
    from sam2_ros.io.video import read_frames
    from sam2_ros_export.onnx_export import cached_random_export

    s = sizes(a.device)
    cuda = a.device != "cpu"
    ckpt, export = cached_random_export("sam2.1_hiera_tiny", s["size"], a.work)
    frames = read_frames(shared_data() / "videos" / "bedroom.mp4", s["traffic_warm"] + s["traffic_frames"])
    from sam2_ros.tracker import Tracker

    backend = load_backend(export, "torch", checkpoint=str(ckpt), device=a.device if cuda else "cpu",
                           imaging="device", **({} if cuda else {"cuda_graph": "emulate"}))
    tracker = Tracker(backend, max_objects=2, fill_hole_area=8)
    backend.warm_up(2)
    tracker.step(frames[0])
    tracker.add_prompt(1, points=[[400, 150]], labels=[1])
    tracker.add_prompt(2, points=[[230, 250]], labels=[1])

    def read(result) -> int:
        """What a node publishing ``label_image`` + ``objects`` reads: the label image and the boxes."""
        label = np.asarray(result.label_image(np.arange(len(result.object_ids)), np.uint8))
        boxes = np.asarray(result.boxes)
        return int(label.nbytes + boxes.nbytes)

    for f in frames[1 : s["traffic_warm"]]:
        read(tracker.step(f))
    timed = frames[s["traffic_warm"] :]
    read_bytes = 0
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize(backend.device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for f in timed:
                read_bytes += read(tracker.step(f))
            torch.cuda.synchronize(backend.device)
        trace_path = Path(a.work) / "traffic_trace.json"
        prof.export_chrome_trace(str(trace_path))
        moved = memcpy_bytes(json.loads(trace_path.read_text()))
        counter = "CUDA memcpy records of torch.profiler (HtoD, DtoH)"
    else:
        moved = {"up": 0, "down": 0}
        from_numpy, to_numpy = torch.from_numpy, torch.Tensor.numpy

        def counting_from_numpy(x):
            moved["up"] += int(x.nbytes)
            return from_numpy(x)

        def counting_numpy(t, *args, **kwargs):
            x = to_numpy(t, *args, **kwargs)
            moved["down"] += int(x.nbytes)
            return x

        torch.from_numpy, torch.Tensor.numpy = counting_from_numpy, counting_numpy
        try:
            for f in timed:
                read_bytes += read(tracker.step(f))
        finally:
            torch.from_numpy, torch.Tensor.numpy = from_numpy, to_numpy
        counter = "numpy <-> torch crossings (CPU dry run: no real transfer)"
    n = len(timed)
    frame_bytes = int(frames[0].nbytes)
    out = traffic_verdict(moved["up"] / n, moved["down"] / n, frame_bytes, read_bytes // n)
    out.update(frames=n, objects=2, image_size=s["size"], counter=counter)
    backend.close()
    return out


def parity_verdict(rows: list[dict]) -> dict:
    """Each parity row against its precision's target."""
    checks, status = [], "skipped"
    for r in rows:
        if r.get("error"):
            checks.append({"backend": r["backend"], "passed": False, "error": r["error"]})
            status = "failed"
            continue
        if r["precision"] == "fp32":
            ok, target = r["mean_iou"] >= PARITY_FP32_MEAN, f"mean IoU >= {PARITY_FP32_MEAN}"
        else:
            ok = r["mean_iou"] >= PARITY_LOW_MEAN and r["min_iou"] >= PARITY_LOW_MIN
            target = f"mean IoU >= {PARITY_LOW_MEAN}, every frame >= {PARITY_LOW_MIN}"
        checks.append({"backend": r["backend"], "mean_iou": r["mean_iou"], "min_iou": r["min_iou"],
                       "sign_agreement": r.get("sign_agreement"), "target": target, "passed": bool(ok)})
        if status != "failed":
            status = "passed" if ok else "failed"
    return {"status": status, "checks": checks}


def _gpu_bench(a: argparse.Namespace, out: Path, args: list[str]) -> tuple[int, dict]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_bench.py"), "--device", a.device, "--work", a.work,
           "--out", str(out), "--models", "tiny", "--video", str(shared_data() / "videos" / "bedroom.mp4"), *args]
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=REPO)
    path = out / "results_gpu.json"
    return rc, (json.loads(path.read_text()) if path.is_file() else {})


def stage_parity(a: argparse.Namespace) -> dict:
    s = sizes(a.device)
    rc, data = _gpu_bench(a, Path(a.work) / "parity", [
        "--sizes", str(s["size"]), "--objects", "1", "--frames", "1", "--warmup", "1", "--long-run-frames", "0",
        "--parity-frames", str(s["parity_frames"]), "--clip-frames", str(s["parity_frames"]),
        "--backends", *s["parity_backends"]])
    out = parity_verdict(data.get("parity", []))
    out.update(returncode=rc, frames=s["parity_frames"], image_size=s["size"], skipped=data.get("skipped", []))
    if rc != 0:
        out["status"] = "failed"
    return out


def stage_bench(a: argparse.Namespace) -> dict:
    s = sizes(a.device)
    out_dir = Path(a.out) / "bench"
    rc, data = _gpu_bench(a, out_dir, [
        "--sizes", str(s["size"]), "--objects", *map(str, s["bench_objects"]), "--frames", str(s["bench_frames"]),
        "--warmup", str(s["bench_warmup"]), "--long-run-frames", "0", "--parity-frames", "0",
        "--clip-frames", str(s["clip_frames"]), "--backends", *s["bench_backends"]])
    rows = [r for r in data.get("results", []) if not r.get("error")]
    table = [{k: r.get(k) for k in ("objects", "backend", "median_ms", "p99_ms", "fps")} for r in rows]
    return {"status": "passed" if rc == 0 and rows else "failed", "returncode": rc, "rows": table,
            "skipped": data.get("skipped", []), "report": str(out_dir / "RESULTS.md")}


STAGE_FUNCS = {"env": stage_env, "tests": stage_tests, "traffic": stage_traffic, "parity": stage_parity,
               "bench": stage_bench}


# ============================================================== the driver
def run_stage_process(stage: str, a: argparse.Namespace, limit_s: float) -> dict:
    """``stage`` in a subprocess with a time limit; its output goes to ``<out>/<stage>.log``."""
    out = Path(a.out)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--device", a.device, "--out", a.out,
           "--work", a.work]
    t0 = time.monotonic()
    with open(out / f"{stage}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=max(limit_s, 1)).returncode
        except subprocess.TimeoutExpired:
            rc = None
    seconds = round(time.monotonic() - t0, 1)
    path = out / f"{stage}.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if rc is None:
        result.update(status="timeout", reason=f"stopped after its limit of {limit_s:.0f} s")
    elif rc != 0 and result.get("status") in (None, "passed"):
        result.update(status="failed", reason=f"exit status {rc} (see {stage}.log)")
    result["seconds"] = seconds
    path.write_text(json.dumps(result, indent=1, default=str))
    return result


def summarize(results: dict[str, dict]) -> str:
    lines = ["| stage | status | seconds | detail |", "|---|---|---|---|"]
    for stage, r in results.items():
        if stage == "env":
            detail = f"{r.get('gpu', 'no GPU')}, driver {r.get('driver', '-')}, torch {r.get('torch')}, CUDA {r.get('cuda', '-')}"
        elif stage == "tests":
            detail = f"{r.get('passed', 0)} passed, {r.get('failed', 0)} failed, {r.get('errors', 0)} errors, {r.get('skipped', 0)} skipped"
        elif stage == "traffic":
            detail = (f"up {r.get('up_bytes')} B/frame (frame {r.get('frame_bytes')}), down {r.get('down_bytes')} B/frame "
                      f"(read {r.get('read_bytes')})") if "up_bytes" in r else r.get("reason", "")
        elif stage == "parity":
            detail = "; ".join(f"{c['backend']} {c.get('mean_iou', 'error')}/{c.get('min_iou', '')}"
                               for c in r.get("checks", [])) or r.get("reason", "")
        else:
            detail = "; ".join(f"{x['backend']}@{x['objects']}: {x['median_ms']:.1f} ms" for x in r.get("rows", [])
                               if x.get("median_ms") is not None) or r.get("reason", "")
        lines.append(f"| {stage} | {r.get('status')} | {r.get('seconds')} | {detail} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="logs, <stage>.json, summary.json and the bench report go here")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run at smoke sizes")
    ap.add_argument("--budget-s", type=float, default=480.0, help="the whole run's time (default 480 s = 8 minutes)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--work", default=None, help="exports shared by the stages (default: a temporary directory)")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: run one stage in this process
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    a.work = a.work or tempfile.mkdtemp(prefix="gpu_check_")
    Path(a.work).mkdir(parents=True, exist_ok=True)
    if a.stage:  # one stage, in this (sub)process
        result = STAGE_FUNCS[a.stage](a)
        (Path(a.out) / f"{a.stage}.json").write_text(json.dumps(result, indent=1, default=str))
        return 0
    if a.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: PyTorch sees no CUDA GPU; run it on a GPU machine, or --device cpu for a dry run",
                  file=sys.stderr)
            return 2
    t_end = time.monotonic() + a.budget_s
    results: dict[str, dict] = {}
    for stage in a.stages:
        left = t_end - time.monotonic()
        limit = left if stage == "bench" else min(left, STAGE_SHARE[stage] * a.budget_s)
        if limit < 5:
            results[stage] = {"status": "timeout", "reason": "no time left in --budget-s", "seconds": 0}
            continue
        print(f"gpu_check: {stage} (limit {limit:.0f} s) ...", flush=True)
        results[stage] = run_stage_process(stage, a, limit)
        print(f"gpu_check: {stage}: {results[stage]['status']} in {results[stage]['seconds']} s", flush=True)
    table = summarize(results)
    summary = {"device": a.device, "dry_run": a.device == "cpu", "budget_s": a.budget_s, "stages": results,
               "ok": not any(r.get("status") in ("failed", "timeout") for r in results.values())}
    (Path(a.out) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (Path(a.out) / "summary.md").write_text(table + "\n")
    print(table)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.path[:0] = [str(REPO), str(REPO / "export")]
    raise SystemExit(main())
