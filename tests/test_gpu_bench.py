"""The GPU benchmark (benchmarks/gpu_bench.py), on the CPU: its report and acceptance checks
from saved results, the interleaving of the contenders, its refusal to run without CUDA, and
the whole benchmark as a CPU smoke run with random weights."""

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
    # (contender, ms at 1 object, growth exponent in the object count): ours scales better with objects
    for backend, base_ms, exp in (("tensorrt", 4.0, 0.3), ("torch-bf16", 9.0, 0.5), ("official-vos", 8.0, 0.5),
                                  ("official-bf16", 14.0, 0.5)):
        for n in (1, 8):
            secs = list(base_ms * n**exp / 1e3 * (1 + 0.02 * rng.random(120)))
            row = {"model": "sam2.1_hiera_tiny", "image_size": 1024, "objects": n, "backend": backend,
                   **bench.latency_stats(secs, warmup=20), "peak_device_mb": 950.0 + n, "retained_device_mb": 900.0 + n,
                   "retained_growth_device_mb": 0.0, "engine_median_ms": base_ms / 2,
                   "floor_ms": 0.5 * n, "gflop": 900.0 * n}
            results.append(row)
    results.append({**results[0], "long_run": True, "frames": 1000, "retained_growth_device_mb": 2.0})
    results.append({"model": "sam2.1_hiera_tiny", "image_size": 1024, "objects": 16, "backend": "onnxruntime-cuda",
                    "error": "providers not available"})
    parity = [{"model": "sam2.1_hiera_tiny", "image_size": 1024, "objects": 3, "backend": b, "frames": 30,
               **bench.mask_iou_stats(np.ones((30, 3, 8, 8), bool), np.ones((30, 3, 8, 8), bool)), "sign_agreement": 1.0}
              for b in ("tensorrt", "torch-fp32")]
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
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| sam2.1_hiera_tiny | 1024 | 1 | tensorrt | fp16 | " in md and "failed: providers not available" in md
    assert "| peak device MB | retained device MB |" in md and bench.MEMORY_DEFINITIONS in md
    trt1 = next(r for r in results if r["backend"] == "tensorrt" and r["objects"] == 1)
    assert f"| {trt1['median_ms']:.2f} | 2.00 | {trt1['p99_ms']:.2f} |" in md  # engine median beside end to end
    assert "## Targets" in md and "| NO |" not in md and "jetson_agx_orin_64gb" in md
    png = (tmp_path / "results_gpu.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_benchmark_checks_fail_when_targets_are_missed():
    bench = load_bench()
    slow = bench.latency_stats([0.010] * 50 + [0.030], warmup=0)
    assert slow["p99_over_median"] > 1.3
    rows = [{"model": "sam2.1_hiera_tiny", "image_size": 1024, "objects": n, "backend": b, **slow}
            for n in (1, 8) for b in ("tensorrt", "official-vos")]
    rows.append({**rows[0], "long_run": True, "retained_growth_device_mb": 300.0})
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


def test_benchmark_check_names_are_distinct_and_unmeasured_ones_say_so():
    bench = load_bench()
    checks = bench.check_targets([], [])
    prefixes = [c["criterion"].split(",")[0] for c in checks]
    assert len(set(prefixes)) == len(prefixes) == 9, prefixes
    assert all(c["passed"] is None and c["value"] is None for c in checks)
    md = bench.render_markdown([], {"smoke": True}, [], None, [])
    assert md.count("| not measured |") == 9 and bench.SMOKE_LABEL in md
    # fp32 parity is held to its own bound, bf16 / fp16 to theirs
    near = {"model": "m", "image_size": 1024, "objects": 2, "frames": 100, "mean_iou": 0.99, "min_iou": 0.97,
            "sign_agreement": 1.0}
    by = {c["criterion"]: c for c in bench.check_targets([], [{**near, "backend": "torch-bf16"}, {**near, "backend": "torch-fp32"}])}
    assert by["parity bf16 / fp16 mean IoU vs official fp32 (worst)"]["passed"] is True
    assert by["parity fp32 mean IoU vs official fp32 on the device (worst)"]["passed"] is False


class _FakeStream:
    def __init__(self, name, log, fail_at):
        self.name, self.log, self.fail_at = name, log, fail_at

    def step(self, i):
        if i == self.fail_at:
            raise RuntimeError("boom")
        self.log.append((self.name, i))

    def close(self):
        self.log.append((self.name, "closed"))


def test_contenders_take_turns_frame_by_frame_in_rotating_order():
    bench = load_bench()
    log = []

    class Fake(bench.Contender):
        def __init__(self, name, fail_at=None):
            super().__init__(name, None, {})
            self.fail_at = fail_at

        def stream(self, *args):
            return _FakeStream(self.name, log, self.fail_at)

    device = bench.Device("cpu")
    source = bench.FrameSource([np.zeros((4, 6, 3), np.uint8)] * 3)
    contenders = [Fake("torch-fp32"), Fake("torch-bf16", fail_at=4), Fake("official-bf16")]
    m = bench.interleaved(contenders, source, 2, 6, 2, device, 0, 128, 1)
    steps = [e for e in log if e[1] != "closed"]
    a, b, c = "torch-fp32", "torch-bf16", "official-bf16"
    assert steps[:9] == [(a, 0), (b, 0), (c, 0), (b, 1), (c, 1), (a, 1), (c, 2), (a, 2), (b, 2)]
    assert steps[9:] == [(a, 3), (b, 3), (c, 3), (c, 4), (a, 4), (c, 5), (a, 5)]  # b failed on frame 4
    assert sorted(e[0] for e in log if e[1] == "closed") == sorted([a, b, c])
    assert len(m[a]["seconds"]) == len(m[c]["seconds"]) == 4  # frames 2..5; 0 and 1 were warm-up
    assert "frame 4: RuntimeError: boom" in m[b]["error"] and len(m[b]["seconds"]) == 2
    rows = bench.cell_rows("sam2.1_hiera_tiny", 128, 2, contenders, m, 2, False)
    assert [r["backend"] for r in rows if r.get("error")] == [b]
    assert all(r["interleaved_with"] == [a, c] for r in rows)
    assert bench.rotations([a, b, c], 4) == [b, c, a]
    assert [source.index(i) for i in range(9)] == bench.stream_frames([0, 1, 2], 9)  # forth and back, no jump


def test_torch_options_are_passed_only_when_asked_for():
    bench = load_bench()
    assert bench.torch_backend_options(bench.parse_args([])) == {}
    a = bench.parse_args(["--torch-imaging", "device", "--cuda-graph", "off", "--compile"])
    assert bench.torch_backend_options(a) == {"imaging": "device", "cuda_graph": False, "compile": True}
    smoke = bench.parse_args(["--device", "cpu"])
    assert smoke.sizes == [256] and smoke.frames <= 8 and smoke.long_run_objects == max(smoke.objects)
    assert smoke.threads == 1 and bench.parse_args([]).threads is None  # GPU run: every core
    with pytest.raises(SystemExit):
        bench.parse_args(["--warmup", "0"])


def test_cpu_smoke_run_end_to_end(tmp_path, tiny_export_128, shared_data):
    """The whole benchmark on the CPU with random weights: every contender interleaved in each
    cell, the GPU-only ones skipped with their reasons, parity on a real clip with 2 objects."""
    bench = load_bench()
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--models", "tiny", "--sizes", "128", "--objects", "1", "2", "--frames", "2",
            "--warmup", "1", "--long-run-frames", "3", "--parity-frames", "3", "--parity-clicks", "400,150", "230,250",
            "--clip-frames", "4", "--threads", "1", "--video", str(shared_data / "videos" / "bedroom.mp4"),
            # conftest's artifacts hold the random checkpoint and export under the names cached_random_export uses
            "--work", str(tiny_export_128.parent), "--out", str(out)]
    assert bench.main(argv) == 0
    data = json.loads((out / "results_gpu.json").read_text())
    meta = data["meta"]
    assert meta["smoke"] is True and meta["command"].endswith(" ".join(argv[-4:]))
    assert "CUDA" in meta["matmul_skipped"]
    assert meta["gc"] == bench.GC_POLICY and meta["tf32"]["matmul"] == "ieee" and meta["tf32"]["cudnn_conv"] == "ieee"
    ran = {"torch-fp32", "torch-bf16", "official-bf16"}
    skipped = {s["backend"]: s["reason"] for s in data["skipped"]}
    assert set(skipped) == {"tensorrt", "onnxruntime-cuda", "torch-fp16", "official-vos"}
    assert "CUDA" in skipped["official-vos"] and "fp16" in skipped["torch-fp16"]
    for n, long_run, timed in ((1, False, 2), (2, False, 2), (2, True, 3)):
        cell = [r for r in data["results"] if r["objects"] == n and r["long_run"] == long_run]
        assert {r["backend"] for r in cell} == ran, cell
        for r in cell:
            assert not r.get("error"), r
            assert set(r["interleaved_with"]) == ran and r["order"] == "rotating"
            assert r["frames"] == timed
            for k in ("median_ms", "p99_ms", "fps"):
                assert np.isfinite(r[k]) and r[k] > 0, (k, r)
            assert r["floor_ms"] is None and r["gflop"] > 0
            # memory: named counters, the same device-level one (here the process RSS) for every contender
            counters = r["memory_counters"]
            assert set(counters) == {"peak_device_mb", "retained_device_mb", "retained_growth_device_mb",
                                     "torch_peak_allocated_mb", "torch_peak_reserved_mb"}
            assert "process RSS" in counters["peak_device_mb"] and "process RSS" in counters["retained_device_mb"]
            assert counters["torch_peak_allocated_mb"].startswith("not measured")
            assert r["torch_peak_allocated_mb"] is None and r["torch_peak_reserved_mb"] is None
            assert r["peak_device_mb"] >= max(0.0, r["retained_device_mb"]) and len(r["mem_samples"]) >= timed
            assert "mem_held_mb" not in r and "mem_counter" not in r
            # engine-only time: ours' graph calls, on the CPU by perf_counter, inside the end-to-end step
            if r["backend"].startswith("torch"):
                assert r["engine_clock"].startswith("perf_counter") and 0 < r["engine_median_ms"] <= r["median_ms"]
            else:
                assert r["engine_median_ms"] is None and r["engine_clock"].startswith("not measured")
    parity = {p["backend"]: p for p in data["parity"]}
    assert set(parity) == {"torch-fp32", "torch-bf16"}
    for p in parity.values():
        assert p["frames"] == 3 and p["objects"] == 2 and p["fill_hole_area"] == 0
        assert 0.0 <= p["min_iou"] <= p["mean_iou"] <= 1.0 and 0.0 <= p["sign_agreement"] <= 1.0
    assert parity["torch-fp32"]["mean_iou"] > 0.99  # same objects compared: fp32 on the CPU is exact
    md = (out / "RESULTS.md").read_text()
    assert bench.SMOKE_LABEL in md and bench.INTERLEAVING in md and meta["command"] in md
    assert "* peak_device_mb: process RSS" in md and "* perf_counter around the backend's graph calls" in md
    assert "| sam2.1_hiera_tiny | 128 | 2 | official-bf16 (long run) | bf16 |" in md
    assert "| sam2.1_hiera_tiny | 128 | official-vos |" in md  # skipped, with its reason
    png = (out / "results_gpu.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_only_merges_runs(tmp_path):
    bench = load_bench()
    row = {"model": "sam2.1_hiera_tiny", "image_size": 512, "objects": 1, "backend": "torch-bf16",
           **bench.latency_stats([0.01] * 5)}
    paths = []
    for i, size in enumerate((512, 1024)):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps({"meta": {"device": "NVIDIA H100", "command": f"python benchmarks/gpu_bench.py --sizes {size}"},
                                 "results": [{**row, "image_size": size}], "parity": [], "projections": [], "skipped": []}))
        paths.append(str(p))
    assert bench.main(["--report-only", *paths, "--out", str(tmp_path)]) == 0
    md = (tmp_path / "RESULTS.md").read_text()
    assert "--sizes 512" in md and "--sizes 1024" in md and "Merged from 2 runs" in md
    assert "| sam2.1_hiera_tiny | 512 | 1 | torch-bf16 |" in md and "| sam2.1_hiera_tiny | 1024 | 1 | torch-bf16 |" in md


def test_contenders_that_cannot_run_are_skipped_with_the_reason(tmp_path):
    bench = load_bench()
    cpu = bench.Device("cpu")
    ctx = bench.RunContext(cpu, "sam2.1_hiera_tiny", 128, tmp_path / "none.pt", tmp_path, None,
                           "tensorrt is not installed", 2, {"no_such_option": 1}, 2)
    reasons = {}
    for name in ("tensorrt", "onnxruntime-cuda", "official-vos", "torch-bf16"):
        with pytest.raises(bench.Skip) as e:
            bench.open_contender(name, ctx)
        reasons[name] = str(e.value)
    assert reasons["tensorrt"] == "tensorrt is not installed"
    assert "CUDA" in reasons["onnxruntime-cuda"] and "torch.compile" in reasons["official-vos"]
    assert "no_such_option" in reasons["torch-bf16"]  # an option the backend does not take: not silently dropped
    assert bench.prepare_engines(tmp_path, tmp_path, [2], 2, cpu) == (None, "TensorRT needs a CUDA device")
    # engines per object count: the one tuned for the cell's count, else the fewest; the device option is taken
    ctx.engine_dirs = {1: tmp_path / "trt_opt1", 4: tmp_path / "trt_opt4"}
    for objects, expected in ((4, "trt_opt4"), (None, "trt_opt1"), (3, "trt_opt1")):
        with pytest.raises(bench.Skip) as e:
            bench.open_contender("tensorrt", ctx, objects)
        assert expected in str(e.value) and "no option" not in str(e.value), str(e.value)
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # a CPU build: the reason names the fix
        cpu.cuda = True  # as on a GPU machine whose onnxruntime has no CUDA provider
        with pytest.raises(bench.Skip, match="onnxruntime-gpu"):
            bench.open_contender("onnxruntime-cuda", ctx)


def test_memory_peak_and_retained_from_samples():
    bench = load_bench()
    mb = 2**20
    # baseline 1000 MB (others' memory); the opening adds 100; step 0 grows 50 with a 30 MB excursion inside;
    # step 1 frees 20 while others' memory is unchanged; step 2 grows 5
    steps = [(0, 1100 * mb, 1150 * mb, 1180 * mb), (1, 1150 * mb, 1130 * mb, 1160 * mb), (2, 1130 * mb, 1135 * mb)]
    f = bench.memory_figures(1000 * mb, 1100 * mb, steps)
    assert f["peak"] == 180 * mb  # held 100 + the excursion of step 0 to 1180
    assert f["retained"] == 135 * mb  # 100 + 50 - 20 + 5
    assert f["series"] == [(0, 150 * mb), (1, 130 * mb), (2, 135 * mb)]
    # interleaved: another contender's memory between this one's steps is not charged (only the deltas are)
    g = bench.memory_figures(0, 10, [(0, 10, 12), (1, 5000, 5002), (2, 9000, 9002)])
    assert g["peak"] == g["retained"] == 16 and g["series"][-1] == (2, 16)
    # device-level samples (no in-step peak): the peak is the most held at any sample
    h = bench.memory_figures(0, 40, [(0, 40, 100), (1, 100, 60)])
    assert (h["peak"], h["retained"]) == (100, 60)
    assert bench.memory_growth_mb([(f, b) for f, b in f["series"]], skip_frames=1) == 5.0


def test_engine_builds_per_benchmarked_object_count():
    bench = load_bench()
    plan = bench.engine_build_plan([8, 1, 4, 8, 16], 16, 1, "/w/timing.cache")
    assert sorted(plan) == [1, 4, 8, 16]
    for n, kw in plan.items():
        assert kw == {"fp16": True, "max_objects": 16, "opt_objects": n, "device": 1, "timing_cache": "/w/timing.cache"}
    with pytest.raises(ValueError):
        bench.engine_build_plan([1, 32], 16, 0, "c")
    with pytest.raises(ValueError):
        bench.engine_build_plan([], 16, 0, "c")
    # the builder takes every planned keyword (BuildLimits' fields and BuildOptions' device / timing cache)
    from dataclasses import fields

    from sam2_ros.backends.tensorrt.build import BuildLimits, BuildOptions

    taken = {f.name for f in fields(BuildOptions)} | {f.name for f in fields(BuildLimits)}
    assert set(plan[4]) <= taken
    BuildLimits(max_objects=16, opt_objects=4)  # a valid profile for every planned count


def test_gc_is_paused_for_the_timed_frames_and_restored_after():
    import gc
    import weakref

    bench = load_bench()

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    before = cycle()
    with bench.gc_paused() as info:
        assert before() is None and info["collected_before"] >= 2  # collected on entry
        assert not gc.isenabled() and gc.get_freeze_count() > frozen
        inside = cycle()
        for _ in range(50_000):  # far past the generation-0 threshold: no automatic collection while paused
            Node()
            cycle()
        assert inside() is not None
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    assert inside() is None and info["collected_after"] >= 2  # collected on exit


def test_fp32_precision_is_set_explicitly_and_restored():
    torch = pytest.importorskip("torch")
    bench = load_bench()
    saved = bench.fp32_precision_state(torch)
    try:
        off = bench.set_fp32_precision(torch, False)
        assert (off["matmul"], off["cudnn_conv"]) == ("ieee", "ieee")
        assert off == bench.fp32_precision_state(torch)
        on = bench.set_fp32_precision(torch, True)
        assert (on["matmul"], on["cudnn_conv"]) == ("tf32", "tf32")
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
            assert on["api"] == "fp32_precision" and torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        restored = bench.set_fp32_precision(torch, False, saved)
    assert restored == saved


def test_engine_timer_times_the_graph_calls_inside_each_step(tiny_export_128, tiny_checkpoint, bedroom_frames):
    """On the CPU (perf_counter clock): per-frame totals of the real torch backend's graph calls,
    each no longer than the tracker's whole step, nested calls counted once, methods restored."""
    import time

    bench = load_bench()
    from sam2_ros.backends import load_backend
    from sam2_ros.tracker import Tracker

    backend = load_backend(tiny_export_128, "torch", checkpoint=tiny_checkpoint, device="cpu", precision="fp32")
    try:
        timer = bench.EngineTimer(backend, bench.Device("cpu").engine_clock(backend))
        assert timer.label.startswith("perf_counter") and "encode_image" in vars(backend)
        tracker = Tracker(backend, max_objects=2)
        frames = [np.ascontiguousarray(f[::4, ::4]) for f in bedroom_frames[:3]]
        totals = []
        for i, frame in enumerate(frames):
            calls = timer.calls
            timer.begin_frame()
            t0 = time.perf_counter()
            tracker.step(frame)
            if i == 0:
                tracker.add_prompt(1, points=[[60.0, 40.0]], labels=[1])
            wall = time.perf_counter() - t0
            totals.append((timer.end_frame(), wall, timer.calls - calls))
        for engine, wall, _ in totals:
            assert 0 < engine <= wall
        # a tracked frame: encode_image and track_step; the composed track_step's attend_memory, decode and
        # encode_memory (CPU, no CUDA graph) run inside it and are not counted again
        assert totals[2][2] == 2, totals
        timer.remove()
        assert not any(m in vars(backend) for m in bench.EngineTimer.METHODS)
    finally:
        backend.close()
