"""The torch backend's fast path: CUDA-graph replay of the tracking step, torch.compile, warm-up.

Without a GPU, ``cuda_graph="emulate"`` runs the same static-tensor plumbing as CUDA graphs: its
"capture" keeps the step's closure and a "replay" re-runs it reading only the static tensors, so a
static input that is not refreshed gives a stale result exactly as a real replay would. The CUDA
tests (real capture, no allocation per replay, compile) skip without a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sam2_ros.backends import BACKEND_INFO, load_backend  # noqa: E402
from sam2_ros.backends.base import ComposedTrackStep, ImageFeatures  # noqa: E402
from sam2_ros.backends.torch_backend import cuda_graphs  # noqa: E402
from sam2_ros.errors import EngineError  # noqa: E402
from sam2_ros.memory_bank import AttentionInputs  # noqa: E402
from sam2_ros.tracker import Tracker  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the device machine)")


@pytest.fixture(scope="module")
def frames(shared_data):
    from sam2_ros.io.video import read_frames

    return read_frames(shared_data / "videos" / "bedroom.mp4", 26)


def open_torch(export, checkpoint, **options):
    return load_backend(export, "torch", checkpoint=str(checkpoint), **{"device": "cpu", **options})


@pytest.fixture(scope="module")
def eager(tiny_export_256, tiny_checkpoint):
    return open_torch(tiny_export_256, tiny_checkpoint, cuda_graph=False)


def _max_diff(a, b) -> float:
    return float((a - b).abs().max()) if isinstance(a, torch.Tensor) else float(np.abs(a - b).max())


# ----------------------------------------------------------------------------- options
def test_cuda_graph_option(tiny_export_256, tiny_checkpoint):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cuda_graphs.graph_mode("auto", cpu) is None and cuda_graphs.graph_mode("auto", cuda) == "cuda"
    assert cuda_graphs.graph_mode(False, cuda) is None and cuda_graphs.graph_mode("off", cuda) is None
    assert cuda_graphs.graph_mode("emulate", cpu) == "emulate" and cuda_graphs.graph_mode("on", cuda) == "cuda"
    assert {"cuda_graph", "compile"} <= set(BACKEND_INFO["torch"].options)
    with pytest.raises(EngineError, match="cuda_graph=True needs a CUDA device"):
        open_torch(tiny_export_256, tiny_checkpoint, device="cpu", cuda_graph=True)
    with pytest.raises(EngineError, match="cuda_graph must be one of"):
        open_torch(tiny_export_256, tiny_checkpoint, cuda_graph="sometimes")
    assert open_torch(tiny_export_256, tiny_checkpoint).track_graphs is None  # auto: eager on the CPU


def test_compile_option_wraps_every_graph_module(tiny_export_256, tiny_checkpoint):
    """Wiring only (compiling the graphs on this CPU takes minutes; the parity run is CUDA-only below)."""
    from sam2_ros.backends.torch_backend import COMPILE_MODES, GRAPH_MODULES, _compile_mode

    b = open_torch(tiny_export_256, tiny_checkpoint, compile=True)
    assert b.compiled and b.inference is torch.no_grad  # compiled code guards on inference tensors
    for name in GRAPH_MODULES:
        module = getattr(b, name)
        assert isinstance(module, torch._dynamo.eval_frame.OptimizedModule), name
        assert not any(p.requires_grad for p in module.parameters())
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _compile_mode(True, cpu, False) == COMPILE_MODES[0] == "default"
    assert _compile_mode(True, cuda, True) == COMPILE_MODES[1] == "max-autotune-no-cudagraphs"
    assert _compile_mode("off", cuda, True) is None and _compile_mode("max-autotune", cuda, False) == "max-autotune"
    with pytest.raises(EngineError, match="captures CUDA graphs of its own"):
        _compile_mode("reduce-overhead", cuda, True)
    with pytest.raises(EngineError, match="compile must be a bool or one of"):
        open_torch(tiny_export_256, tiny_checkpoint, compile="fastest")


# ----------------------------------------------------------------------------- the step, synthetic inputs
@pytest.fixture(scope="module")
def emulated(tiny_export_256, tiny_checkpoint):
    return open_torch(tiny_export_256, tiny_checkpoint, cuda_graph="emulate")


def _features(backend, seed: int):
    s = backend.manifest.spec.image_size
    image = np.random.default_rng(seed).standard_normal((1, 3, s, s)).astype(np.float32)
    return backend.encode_image(image)


def _inputs(backend, seed: int, n: int, path: str) -> AttentionInputs:
    """Attention inputs of ``n`` rows over a random bank (full recent rings, two conditioning
    slots). ``path``: every slot valid ("whole"), rows with different valid counts whose holes
    (unused conditioning slots) move with ``seed`` ("packed", the rows need reordering), a row
    without valid memory ("masked")."""
    spec = backend.manifest.spec
    rng = np.random.default_rng(seed)
    m, p = spec.num_maskmem - 1 + 2, spec.max_obj_ptrs_in_encoder - 1 + 2
    mem = torch.from_numpy(rng.standard_normal((n, m, spec.feat_size**2, spec.mem_dim)).astype(np.float32))
    ptrs = torch.from_numpy(rng.standard_normal((n, p, spec.hidden_dim)).astype(np.float32))
    mem_valid, ptr_valid = np.ones((n, m), bool), np.ones((n, p), bool)
    if path == "packed":  # rows 0 and 2: one conditioning slot unused, which one changes with seed; row 1 full
        mem_valid[0, m - 1 - seed % 2] = mem_valid[2, m - 2 + seed % 2] = False
        ptr_valid[0, p - 1 - seed % 2] = ptr_valid[2, p - 2 + seed % 2] = False
    elif path == "masked":
        mem_valid[1] = False
    tpos = rng.integers(0, spec.num_maskmem, (n, m))
    ptr_tpos = rng.uniform(-1, 1, (n, p)).astype(np.float32)
    return AttentionInputs(mem, tpos, mem_valid, ptrs, ptr_tpos, ptr_valid)


@pytest.mark.parametrize("path", ["whole", "packed", "masked"])
def test_each_replay_reads_the_inputs_of_its_call(emulated, path):
    """Eager, capture, then replays: each call with other features, bank contents, temporal rows
    and (packed) other hole positions, each equal to the eager step on that call's inputs."""
    graphs = emulated.track_graphs
    events = []
    for seed in range(4):
        feats, inp = _features(emulated, seed), _inputs(emulated, seed, 3, path)
        assert cuda_graphs.plan_step(feats, inp, True).path == path
        out, mem = emulated.track_step(feats, inp, True)
        events.append(graphs.last_event)
        ref, ref_mem = ComposedTrackStep.track_step(emulated, feats, inp, True)
        for got, want in zip((out.low_res_masks, out.iou, out.obj_ptr, out.object_score_logits, mem),
                             (ref.low_res_masks, ref.iou, ref.obj_ptr, ref.object_score_logits, ref_mem)):
            assert got.shape == want.shape and _max_diff(got, want) <= 1e-5, (path, seed, events)
    assert events == ["eager", "capture", "replay", "replay"]


def test_a_static_input_not_refreshed_gives_a_stale_replay(emulated, monkeypatch):
    """The emulation has teeth: a replay whose features were not copied in computes on the old ones."""
    graphs = emulated.track_graphs
    inp = _inputs(emulated, 0, 1, "whole")
    outs = {}
    for seed in (10, 11):  # eager, capture
        outs[seed] = emulated.track_step(_features(emulated, seed), inp, False)[0].low_res_masks.clone()
    assert graphs.last_event == "capture"
    load = cuda_graphs.CapturedTrackStep.load

    def load_but_the_features(step, feats, ai, plan):
        load(step, step.feats, ai, plan)  # the static features stay those of the last call

    monkeypatch.setattr(cuda_graphs.CapturedTrackStep, "load", load_but_the_features)
    stale = emulated.track_step(_features(emulated, 12), inp, False)[0].low_res_masks
    assert graphs.last_event == "replay"
    fresh = ComposedTrackStep.track_step(emulated, _features(emulated, 12), inp, False)[0].low_res_masks
    assert _max_diff(stale, outs[11]) <= 1e-6 and _max_diff(stale, fresh) > 1e-3


def test_a_new_key_is_captured_again_and_old_graphs_leave_the_lru(tiny_export_256, tiny_checkpoint):
    b = open_torch(tiny_export_256, tiny_checkpoint, cuda_graph="emulate")
    graphs = b.track_graphs
    feats = _features(b, 0)
    one, two = _inputs(b, 0, 1, "whole"), _inputs(b, 0, 2, "whole")
    events = []
    for inp in (one, one, one, two, two, two):  # a new object: n 1 -> 2
        b.track_step(feats, inp, True)
        events.append(graphs.last_event)
    assert events == ["eager", "capture", "replay", "eager", "capture", "replay"]
    assert graphs.captures == 2 and [k[1] for k in graphs.keys] == [1, 2]
    b.track_step(feats, one, False)  # multimask is part of the key
    assert graphs.last_event == "eager"
    graphs.max_graphs = 1
    b.track_step(feats, one, False)
    assert graphs.last_event == "capture" and [(k[1], k[6]) for k in graphs.keys] == [(1, False)]
    b.track_step(feats, two, True)  # evicted: seen again from scratch
    assert graphs.last_event == "eager"


def test_a_failed_capture_runs_eagerly_from_then_on_and_logs_once(tiny_export_256, tiny_checkpoint, monkeypatch, caplog):
    b = open_torch(tiny_export_256, tiny_checkpoint, cuda_graph="emulate")
    graphs = b.track_graphs

    def failing_capture(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs.capturer, "capture", failing_capture)
    feats, inp = _features(b, 0), _inputs(b, 0, 3, "packed")
    ref = ComposedTrackStep.track_step(b, feats, inp, True)[0].low_res_masks
    with caplog.at_level(logging.WARNING, logger=cuda_graphs.__name__):
        for _ in range(4):
            out = b.track_step(feats, inp, True)[0].low_res_masks
            assert graphs.last_event == "eager" and _max_diff(out, ref) <= 1e-5
    assert len(graphs.failed) == 1 and graphs.captures == 0 and graphs.eager_runs == 4
    assert len([r for r in caplog.records if "capture" in r.getMessage()]) == 1


def test_rows_with_filling_rings_keep_one_key(emulated):
    """Pure planning: an object's first 15 tracked frames (rings filling, one conditioning frame) give
    one key with the rings known (masked path), and a new packed key almost every frame without."""
    spec = emulated.manifest.spec
    r, rp, n = spec.num_maskmem - 1, spec.max_obj_ptrs_in_encoder - 1, 2
    m, p = r + 1, rp + 1
    feats = ImageFeatures(*(np.zeros(s, np.float32) for s in ((1, 32, 64, 64), (1, 64, 32, 32), (1, 256, 16, 16))))
    with_rings, without = set(), set()
    for age in range(1, rp + 1):  # frames after the prompt: `age - 1` recent frames held (row 0), row 1 full
        mem_valid, ptr_valid = np.ones((n, m), bool), np.ones((n, p), bool)
        mem_valid[0, min(age - 1, r):r] = False
        ptr_valid[0, age - 1:rp] = False
        ai = AttentionInputs(np.zeros((n, m, 4, 64), np.float32), np.zeros((n, m), np.int64), mem_valid,
                             np.zeros((n, p, 256), np.float32), np.zeros((n, p), np.float32), ptr_valid)
        assert cuda_graphs.rings_filling(mem_valid, ptr_valid, (r, rp))
        plan = cuda_graphs.plan_step(feats, ai, True, rings=(r, rp))
        assert plan.path == "masked" and plan.values["mem_valid"].tolist() == mem_valid.tolist()
        with_rings.add(plan.key)
        without.add(cuda_graphs.plan_step(feats, ai, True).key)
    assert len(with_rings) == 1 and len(without) >= rp - 1
    full = AttentionInputs(ai.mem_feats, ai.mem_tpos_row, np.ones((n, m), bool), ai.obj_ptrs, ai.ptr_tpos,
                           np.ones((n, p), bool))
    assert not cuda_graphs.rings_filling(full.mem_valid, full.ptr_valid, (r, rp))
    assert cuda_graphs.plan_step(feats, full, True, rings=(r, rp)).path == "whole"


# ----------------------------------------------------------------------------- the image encoder
def _fields(feats: ImageFeatures) -> list:
    return [feats.feat_s0, feats.feat_s1, feats.image_embed]


def test_encoder_replays_equal_eager_bit_for_bit(emulated, eager):
    """The image encoder through the graph cache: eager, capture, then replays, each bit for bit the
    eager backend's features; the returned features are the caller's (a later call leaves them)."""
    graphs = emulated.encoder_graphs
    graphs.clear()
    events, kept = [], []
    for seed in range(20, 24):
        got = _features(emulated, seed)
        events.append(graphs.last_event)
        want = _features(eager, seed)
        for g, w in zip(_fields(got), _fields(want)):
            assert g.shape == w.shape and torch.equal(g, w), (seed, events)
        kept.append((got, want))
    assert events == ["eager", "capture", "replay", "replay"]
    for got, want in kept:  # not overwritten by the later replays
        assert all(torch.equal(g, w) for g, w in zip(_fields(got), _fields(want)))
    assert [k[0] for k in graphs.keys] == [(1, 3, 256, 256)]


def test_a_stale_encoder_input_is_caught(emulated, monkeypatch):
    graphs = emulated.encoder_graphs
    graphs.clear()
    first = [_features(emulated, seed) for seed in (30, 31)]  # eager, capture
    assert graphs.last_event == "capture"
    monkeypatch.setattr(cuda_graphs.CapturedEncoder, "load", lambda step, image: None)  # frame not copied in
    stale = _features(emulated, 32)
    assert graphs.last_event == "replay"
    assert torch.equal(stale.image_embed, first[1].image_embed)
    monkeypatch.undo()
    fresh = _features(emulated, 32)
    assert graphs.last_event == "replay" and _max_diff(fresh.image_embed, stale.image_embed) > 1e-3


# ----------------------------------------------------------------------------- host arrays, devices
def test_a_calls_host_arrays_go_up_in_one_copy(emulated, monkeypatch):
    """Staging: several arrays of one call, one host->device crossing, typed views of it; on the
    CPU a packed call owns its buffer (a later change of the arrays does not reach it)."""
    from sam2_ros.backends.torch_backend.storage import HostStaging

    crossings = []
    from_numpy = torch.from_numpy
    monkeypatch.setattr(torch, "from_numpy", lambda a: (crossings.append(a.nbytes), from_numpy(a))[1])
    staging = HostStaging("cpu")
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([True, False, True]),
              np.arange(5, dtype=np.int64), np.full((1, 1), -1, np.int32), np.float64([0.5])]
    got = staging.upload(arrays)
    assert len(crossings) == 1 and staging.uploads == 1
    for t, a in zip(got, arrays):
        assert t.dtype == cuda_graphs.torch_dtype(a.dtype) and t.numpy().tolist() == a.tolist()
    arrays[0][:] = 7
    assert got[0].numpy().max() == 5.0
    # a decoder call: six host arrays, one upload
    spec = emulated.manifest.spec
    feats = _features(emulated, 0)
    lr = spec.low_res_size
    before = emulated.staging.uploads
    out = emulated.decode(feats, feats.image_embed, np.ones(1, np.float32), np.full((1, 1, 2), 100.0, np.float32),
                          np.ones((1, 1), np.int32), np.zeros((1, 1, lr, lr), np.float32), np.zeros(1, np.float32),
                          np.ones(1, np.float32))
    assert emulated.staging.uploads == before + 1 and out.low_res_masks.shape == (1, 1, lr, lr)


def test_every_cuda_call_names_the_backends_device():
    """Which device a CUDA call uses, checked without CUDA: "cuda" is fixed to an index at
    construction, and the scope every upload, capture and replay runs in names that index."""
    from sam2_ros.backends.torch_backend.storage import concrete_device, device_scope

    def no_call():
        raise AssertionError("the current device was read for a device with an index")

    assert concrete_device(torch.device("cuda"), lambda: 1) == torch.device("cuda", 1)
    assert concrete_device("cuda:2", no_call) == torch.device("cuda", 2)
    assert concrete_device("cpu", no_call) == torch.device("cpu")
    scope = device_scope(torch.device("cuda", 1))
    assert isinstance(scope, torch.cuda.device) and scope.idx == 1
    with device_scope(torch.device("cpu")):
        pass
    with pytest.raises(ValueError, match="has no index"):
        device_scope(torch.device("cuda"))


# ----------------------------------------------------------------------------- a tracker on real video
def run_stream(backend, frames, script, max_objects=3, before=None) -> tuple[list, list, Tracker]:
    """Track ``frames``; ``script[i](tracker)`` after the step of frame ``i``, ``before[i](tracker)``
    before it. Returns the results, the graph event of each frame's step, and the tracker."""
    tracker = Tracker(backend, max_objects=max_objects, cond_slots=2)
    results, events = [], []
    for i, frame in enumerate(frames):
        if before and i in before:
            before[i](tracker)
        if backend.track_graphs is not None:
            backend.track_graphs.last_event = None
        result = tracker.step(frame)
        events.append(backend.track_graphs.last_event if backend.track_graphs is not None else None)
        if i in script:
            result = script[i](tracker)
        results.append(result)
    return results, events, tracker


def _assert_same_results(a, b, tol=1e-5):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.object_ids == y.object_ids, i
        assert _max_diff(x.low_res_logits, y.low_res_logits) <= tol, i
        assert np.array_equal(x.scores > 0, y.scores > 0), i


def _busy_stream():
    """Prompts of the main scenario: two objects, a third one mid-stream, two refinements of
    object 1 (the second evicts its first conditioning frame, cond_slots=2), a removal."""
    return {
        0: lambda t: (t.add_prompt(1, points=[[300, 200]], labels=[1]), t.add_prompt(2, box=[600, 250, 800, 450]))[1],
        1: lambda t: t.add_prompt(3, points=[[150, 400]], labels=[1]),
        2: lambda t: t.add_prompt(1, points=[[320, 220], [100, 100]], labels=[1, 0]),
        3: lambda t: t.add_prompt(1, points=[[310, 205]], labels=[1]),
    }


def test_tracker_with_emulated_graphs_equals_eager(eager, frames, tiny_export_256, tiny_checkpoint):
    script = _busy_stream()
    before = {22: lambda t: t.remove_object(2)}  # the middle row: the last one moves into its place
    want, _, _ = run_stream(eager, frames, script, before=before)
    b = open_torch(tiny_export_256, tiny_checkpoint, cuda_graph="emulate")  # no graph from other tests
    got, events, tracker = run_stream(b, frames, script, before=before)
    _assert_same_results(got, want)
    assert got[-1].object_ids == [1, 3]
    assert tracker.bank.conditioning_frames(tracker._ids.index(1)) == [2, 3]  # frame 0 was evicted
    # the rings fill, holes of conditioning frames close, then the key holds: captured, replayed,
    # and again for the two objects left after the removal
    graphs = b.track_graphs
    assert graphs.captures >= 2 and graphs.replays >= 2, " ".join(map(str, events))
    replayed_n = {len(got[i].object_ids) for i, e in enumerate(events) if e == "replay"}
    assert replayed_n == {2, 3}, events
    # while the rings fill (objects new on frames 0 and 1, conditioning frames 2 and 3 in the recent
    # windows up to frame 18) the key stays the masked one of n = 3 and M = 6 + 2 (from frame 3, after the
    # second conditioning frame): one eager run, one capture, replays (packed keys would change on every
    # one of these frames, each run eagerly)
    assert events[3:5] == ["eager", "capture"] and set(events[5:19]) == {"replay"}, events
    assert graphs.eager_runs <= 5 and graphs.captures <= 4, (graphs.eager_runs, graphs.captures, events)


# ----------------------------------------------------------------------------- warm-up
def _steady_stream():
    """Two objects prompted on frame 0 and tracked: from frame 16 on (recent rings full, one
    conditioning frame each) the tracking step has the steady-state shapes warm_up prepares."""
    return {0: lambda t: (t.add_prompt(1, points=[[300, 200]], labels=[1]), t.add_prompt(2, box=[600, 250, 800, 450]))[1]}


STEADY_FRAMES = 18


@pytest.fixture(scope="module")
def steady_reference(eager, frames):
    return run_stream(eager, frames[:STEADY_FRAMES], _steady_stream(), max_objects=2)[0]


def test_warm_up_changes_no_tracker_state(eager, frames, steady_reference, monkeypatch):
    """A warm-up in the middle of a live tracker (sharing the backend) leaves its results bit-identical."""
    calls = []
    step = eager.track_step
    monkeypatch.setattr(eager, "track_step", lambda *a: (calls.append(a[1].mem_valid.shape[0]), step(*a))[1])
    got, _, _ = run_stream(eager, frames[:STEADY_FRAMES], _steady_stream(), max_objects=2,
                           before={3: lambda t: eager.warm_up(max_objects=2)})
    assert calls[:4] == [2, 2, 2, 1]  # frames 1, 2, then the warm-up's steps of n = 2 and 1
    _assert_same_results(got, steady_reference, tol=0.0)


def test_warm_up_leaves_graphs_that_the_first_steady_frames_replay(tiny_export_256, tiny_checkpoint, frames,
                                                                    steady_reference):
    b = open_torch(tiny_export_256, tiny_checkpoint, cuda_graph="emulate")
    graphs = b.track_graphs
    b.warm_up(max_objects=2)
    assert graphs.captures == 4 and sorted(k[:4] for k in graphs.keys) == [
        ("masked", 1, 7, 16), ("masked", 2, 7, 16), ("whole", 1, 7, 16), ("whole", 2, 7, 16)]
    assert b.encoder_graphs.captures == 1
    got, events, _ = run_stream(b, frames[:STEADY_FRAMES], _steady_stream(), max_objects=2)
    # no eager run, no capture: warm-up's graphs, the rings filling (frames 1-15) and full (16, 17)
    assert events[1:] == ["replay"] * (STEADY_FRAMES - 1), events
    assert graphs.captures == 4 and graphs.eager_runs == 4  # the warm-up's first sightings
    assert b.encoder_graphs.captures == 1 and b.encoder_graphs.replays == STEADY_FRAMES
    _assert_same_results(got, steady_reference)


# ----------------------------------------------------------------------------- CUDA only
@needs_cuda
def test_cuda_graphs_equal_eager_on_cuda(tiny_export_256, tiny_checkpoint, frames):
    script, before = _busy_stream(), {22: lambda t: t.remove_object(2)}
    want, _, _ = run_stream(open_torch(tiny_export_256, tiny_checkpoint, device="cuda", cuda_graph=False), frames,
                         script, before=before)
    b = open_torch(tiny_export_256, tiny_checkpoint, device="cuda", cuda_graph=True)
    got, events, _ = run_stream(b, frames, script, before=before)
    assert b.track_graphs.capturer.name == "cuda" and not b.track_graphs.failed
    assert events.count("replay") >= 2, events
    _assert_same_results(got, want)


@needs_cuda
def test_a_cuda_replay_allocates_no_memory(tiny_export_256, tiny_checkpoint, frames):
    b = open_torch(tiny_export_256, tiny_checkpoint, device="cuda")  # auto: CUDA graphs on
    assert b.cuda_graph == "cuda"
    b.warm_up(max_objects=2)
    tracker = Tracker(b, max_objects=2)
    tracker.step(frames[0])
    _steady_stream()[0](tracker)
    for i in range(1, STEADY_FRAMES):
        tracker.step(frames[i % len(frames)])
    torch.cuda.synchronize()
    allocated = []
    for i in range(50):
        tracker.step(frames[i % len(frames)])
        assert b.track_graphs.last_event == "replay" and b.encoder_graphs.last_event == "replay"
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    assert len(set(allocated)) == 1, allocated


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="compiling the graphs for warm_up(2) took 175 s on the 2-core CPU of the test machine (cold "
           "inductor cache; about 40 s warm), far beyond the suite's budget: runs on CUDA only",
)
def test_compiled_graphs_equal_eager(tiny_export_256, tiny_checkpoint, frames):
    """Compiled graphs inside our CUDA graphs. Mode "default": compile=True's max-autotune differs in
    kernel choice only and autotunes for minutes, too long for the suite."""
    script = _steady_stream()
    want, _, _ = run_stream(open_torch(tiny_export_256, tiny_checkpoint, device="cuda", cuda_graph=False),
                            frames[:STEADY_FRAMES], script, max_objects=2)
    b = open_torch(tiny_export_256, tiny_checkpoint, device="cuda", compile="default")
    b.warm_up(max_objects=2)
    got, events, _ = run_stream(b, frames[:STEADY_FRAMES], script, max_objects=2)
    assert events[16:] == ["replay", "replay"] and not b.track_graphs.failed, events
    _assert_same_results(got, want, tol=1e-4)


@needs_cuda
def test_a_capture_keeps_the_allocator_cache(tiny_export_256, tiny_checkpoint):
    """A key first seen mid-stream is captured without synchronising the device or emptying the
    caching allocator (torch.cuda.graph does both): memory the allocator holds stays reserved."""
    b = open_torch(tiny_export_256, tiny_checkpoint, device="cuda", cuda_graph=True)
    feats, inp = _features(b, 0), _inputs(b, 0, 2, "whole")
    b.track_step(feats, _move(inp, b.device), True)  # eager
    block = torch.empty(64 << 20, dtype=torch.uint8, device=b.device)
    del block  # cached by the allocator, not in use
    torch.cuda.synchronize(b.device)
    reserved = torch.cuda.memory_reserved(b.device)
    b.track_step(feats, _move(inp, b.device), True)
    assert b.track_graphs.last_event == "capture"
    assert torch.cuda.memory_reserved(b.device) >= reserved


def _move(ai: AttentionInputs, device) -> AttentionInputs:
    return AttentionInputs(ai.mem_feats.to(device), ai.mem_tpos_row, ai.mem_valid, ai.obj_ptrs.to(device), ai.ptr_tpos,
                           ai.ptr_valid)


@needs_cuda
def test_graphs_leave_the_threads_device_and_stream(tiny_export_256, tiny_checkpoint, frames):
    b = open_torch(tiny_export_256, tiny_checkpoint, device="cuda", cuda_graph=True)
    assert b.device.index is not None  # "cuda" fixed to the constructing thread's device
    device, stream = torch.cuda.current_device(), torch.cuda.current_stream()
    run_stream(b, frames[:4], _steady_stream(), max_objects=2)
    assert b.encoder_graphs.captures == 1 and b.track_graphs.captures >= 1
    assert torch.cuda.current_device() == device and torch.cuda.current_stream() == stream


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_graphs_on_another_device_than_the_threads_current(tiny_export_256, tiny_checkpoint, frames):
    """The backend on cuda:1 driven from a thread whose current device is 0 (as a ROS callback
    thread): page-locked uploads, captures and replays run on cuda:1's stream and give the eager
    results; the thread's current device is left as it was."""
    script = _steady_stream()
    want, _, _ = run_stream(open_torch(tiny_export_256, tiny_checkpoint, device="cuda:1", cuda_graph=False),
                            frames[:STEADY_FRAMES], script, max_objects=2)
    with torch.cuda.device(0):
        b = open_torch(tiny_export_256, tiny_checkpoint, device="cuda:1", cuda_graph=True)
        got, events, _ = run_stream(b, frames[:STEADY_FRAMES], script, max_objects=2)
        assert torch.cuda.current_device() == 0
    assert events.count("replay") >= 10 and not b.track_graphs.failed, events
    _assert_same_results(got, want)
