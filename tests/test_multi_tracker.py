"""Several streams over one backend (MultiTracker): one batched image-encoder call per step, results
equal to independent single-stream trackers, a bad frame of one stream is that stream's error only,
and an export without a batch axis runs one stream at a time. Real clips, real ONNX Runtime."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sam2_ros.backends import load_backend
from sam2_ros.errors import EngineError, FrameSizeChanged, TrackerInputError
from sam2_ros.io.video import read_frames
from sam2_ros.multi_tracker import MultiTracker
from sam2_ros.tracker import Tracker

FRAMES = 5
CLIPS = {"bedroom": "bedroom.mp4", "cups": "02_cups.mp4", "blocks": "03_blocks.mp4"}


@pytest.fixture(scope="module")
def clips(shared_data) -> dict[str, list[np.ndarray]]:
    return {s: read_frames(shared_data / "videos" / v, FRAMES) for s, v in CLIPS.items()}


def _script(stream: str, t: int, tracker: Tracker, frame: np.ndarray) -> None:
    """Each stream's prompts: objects added on several frames, refined, removed mid-stream."""
    h, w = frame.shape[:2]
    if stream == "bedroom":
        if t == 0:
            tracker.add_prompt(1, points=[[w * 0.5, h * 0.6]], labels=[1])
        if t == 1:
            tracker.add_prompt(2, box=[w * 0.1, h * 0.1, w * 0.4, h * 0.5])
        if t == 3:
            tracker.remove_object(1)
    elif stream == "cups":
        if t == 1:
            mask = np.zeros((h, w), bool)
            mask[h // 3 : h // 2, w // 4 : w // 2] = True
            tracker.add_prompt(7, mask=mask)
        if t == 2:
            tracker.add_prompt(7, points=[[w * 0.3, h * 0.4], [w * 0.9, h * 0.9]], labels=[1, 0])
    elif stream == "blocks" and t == 0:
        tracker.add_prompt(3, points=[[w * 0.4, h * 0.5]], labels=[1])
        tracker.add_prompt(4, points=[[w * 0.7, h * 0.3]], labels=[1])


def _independent(export, clips, count: int = FRAMES) -> dict[str, list]:
    """Each stream alone (its first ``count`` frames): its own backend and tracker."""
    out = {}
    for s, frames in clips.items():
        tracker = Tracker(load_backend(export), max_objects=3)
        out[s] = []
        for t, frame in enumerate(frames[:count]):
            tracker.step(frame)
            _script(s, t, tracker, frame)
            out[s].append(tracker.current_result())
        tracker.close()
    return out


def _assert_same(a, b) -> None:
    assert a.frame_index == b.frame_index and a.object_ids == b.object_ids
    np.testing.assert_array_equal(a.low_res_logits, b.low_res_logits)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.ious, b.ious)


def _batches(backend) -> list[int]:
    """Record the size of each ``encode_images`` call (the real method runs)."""
    sizes, real = [], backend.encode_images

    def encode_images(images):
        sizes.append(len(images))
        return real(images)

    backend.encode_images = encode_images
    return sizes


@pytest.fixture(scope="module")
def reference(tiny_export_128, clips):
    return _independent(tiny_export_128, clips)


def _run_multi(export, clips, count: int = FRAMES, **kwargs):
    backend = load_backend(export)
    sizes = _batches(backend)
    multi = MultiTracker(backend, list(clips), max_objects=3, **kwargs)
    results = {s: [] for s in clips}
    for t in range(count):
        step = multi.step({s: clips[s][t] for s in clips})
        assert list(step) == list(clips)  # in the order asked for
        for s in clips:
            _script(s, t, multi.tracker(s), clips[s][t])
            results[s].append(multi.tracker(s).current_result())
    multi.close()
    return results, sizes


def test_batched_streams_equal_independent_trackers(tiny_export_128, clips, reference):
    """Three clips, prompts per stream (points, box, mask, refinement, removal): bit for bit the
    results of three single-stream trackers, from one encoder call of 3 frames per step."""
    results, sizes = _run_multi(tiny_export_128, clips)
    assert sizes == [len(clips)] * FRAMES
    for s in clips:
        assert [r.object_ids for r in results[s]] == [r.object_ids for r in reference[s]]
        for got, want in zip(results[s], reference[s]):
            _assert_same(got, want)
    assert reference["bedroom"][-1].object_ids == [2] and reference["blocks"][-1].object_ids == [3, 4]


def test_unbatched_and_old_exports_run_one_stream_per_call(tiny_export_128, clips, reference, tmp_path):
    """``batch_frames=False``, and an export whose image encoder has a fixed batch of 1 (from
    before the frames axis; ONNX Runtime refuses 2 frames there): one call per stream, no error."""
    two = {s: clips[s] for s in ("bedroom", "cups")}
    results, sizes = _run_multi(tiny_export_128, two, count=3, batch_frames=False)
    assert sizes == [1] * (3 * len(two))
    for s in two:
        _assert_same(results[s][-1], reference[s][2])

    import onnx

    old = tmp_path / "old_export"
    shutil.copytree(tiny_export_128, old)
    model = onnx.load(str(old / "image_encoder.onnx"))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(old / "image_encoder.onnx"))
    manifest = json.loads((old / "manifest.json").read_text())
    graph = manifest["graphs"]["image_encoder"]
    for io in (graph["inputs"], graph["outputs"]):
        for desc in io.values():
            desc["shape"][0] = 1
    del manifest["image_batch"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    backend = load_backend(old)
    assert backend.limits.frames == 1
    image = np.zeros((1, 3, 128, 128), np.float32)
    with pytest.raises(EngineError, match="re-export"):
        backend.encode_images([image, image])
    backend.close()
    results, sizes = _run_multi(old, two, count=3)
    assert sizes == [1] * (3 * len(two))
    # ONNX Runtime optimises the graph with a static batch a little differently (~3e-7): the
    # reference is the same export, one tracker per stream
    alone = _independent(old, two, count=3)
    for s in two:
        _assert_same(results[s][-1], alone[s][-1])


def test_a_bad_frame_is_its_streams_error_only(tiny_export_128, clips, reference):
    """Wrong dtype, a changed frame size and a wrong shape are caught before the batch runs: that
    stream's result is its error and its state is untouched; the other streams proceed, and the
    bad stream's next good frame gives what it would have given."""
    backend = load_backend(tiny_export_128)
    sizes = _batches(backend)
    multi = MultiTracker(backend, list(clips), max_objects=3)
    bad = {2: ("bedroom", lambda f: f.astype(np.float32), TrackerInputError),
           3: ("cups", lambda f: f[:100], FrameSizeChanged),
           4: ("blocks", lambda f: f[..., :2], TrackerInputError)}
    for t in range(FRAMES):
        frames = {s: clips[s][t] for s in clips}
        if t in bad:
            s, spoil, error = bad[t]
            out = multi.step({**frames, s: spoil(frames[s])})
            assert type(out[s]) is error
            assert multi.tracker(s).frame_index == t - 1
            assert all(out[o].frame_index == t for o in clips if o != s)
            frames = {s: frames[s]}  # the others are done; the bad stream's good frame now
        multi.step(frames)
        for s in clips:
            _script(s, t, multi.tracker(s), clips[s][t])
            _assert_same(multi.tracker(s).current_result(), reference[s][t])
    assert sizes == [3, 3, 2, 1, 2, 1, 2, 1]  # the bad stream left out of its step's batch
    out = multi.step({s: clips[s][0][:50] for s in clips})  # every frame bad: no encoder call
    assert all(type(e) is FrameSizeChanged for e in out.values()) and len(sizes) == 8
    with pytest.raises(TrackerInputError, match="unknown stream"):
        multi.step({"nope": clips["cups"][0]})
    multi.close()


def test_torch_graphs_do_not_read_another_streams_bank(tiny_export_128, tiny_checkpoint, clips):
    """Two streams over one torch backend whose tracking step replays captured graphs (emulated on
    the CPU: a replay reads only the static tensors): a graph captured on one stream's step serves
    the other stream from that stream's own bank and features, as two backends alone compute."""
    pytest.importorskip("torch")
    streams, count = ["bedroom", "cups"], 4  # frame 1: eager, then captured; frames 2, 3: replays

    def open_torch(graphs):
        return load_backend(tiny_export_128, "torch", checkpoint=str(tiny_checkpoint), device="cpu",
                            cuda_graph=graphs)

    def prompt(tracker, frame):
        h, w = frame.shape[:2]
        tracker.add_prompt(1, points=[[w * 0.5, h * 0.5]], labels=[1])

    want, eager = {}, open_torch(False)  # each stream alone, without graphs
    for s in streams:
        tracker = Tracker(eager, max_objects=2)
        want[s] = [tracker.step(f) if t else (tracker.step(f), prompt(tracker, f))[0]
                   for t, f in enumerate(clips[s][:count])]
        want[s][0] = tracker.result_at(0)
    eager.close()
    backend = open_torch("emulate")
    multi = MultiTracker(backend, streams, max_objects=2)
    events = []
    for t in range(count):
        out = multi.step({s: clips[s][t] for s in streams})
        events.append(backend.track_graphs.last_event)
        if t == 0:
            for s in streams:
                prompt(multi.tracker(s), clips[s][0])
                out[s] = multi.tracker(s).current_result()
        for s in streams:
            got, ref = out[s], want[s][t]
            assert got.object_ids == ref.object_ids
            # one batched encoder call against one call per frame: float rounding of the batched convolutions (~3e-7)
            np.testing.assert_allclose(got.low_res_logits, ref.low_res_logits, atol=1e-5)
    graphs = backend.track_graphs
    assert graphs.captures == 1 and graphs.replays == 2 * (count - 2), events  # one key, both streams
    a, b = (multi.tracker(s).current_result().low_res_logits for s in streams)
    assert np.abs(a - b).max() > 0.1  # the streams differ: reading the other's bank would show
    multi.close()
