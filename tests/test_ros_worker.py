"""The node's tracker loop without ROS: newest-frame slot, drops, prompts by stamp, failures.

Real tracker (ONNX Runtime, tiny export at 256) on real frames of bedroom.mp4. Each frame's
payload carries a gate that its decode waits on, so the test decides when the worker may
go on: what is pending, in flight or processed is known exactly, no sleeps.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from sam2_ros.backends import load_backend
from sam2_ros.ros.worker import LATEST, CommandError, FrameStatus, TrackerWorker
from sam2_ros.tracker import Tracker

S = 1_000_000_000  # one second in ns: frame k has stamp (k + 1) s


class GatedStream:
    """Frames whose decoding waits until the test opens their gate."""

    def __init__(self, frames):
        self.frames = frames
        self.gates = [threading.Event() for _ in frames]
        self.entered = [threading.Event() for _ in frames]
        self.published: list = []  # (stamp, object_ids, frame_index)
        self.reports: list = []
        self._cond = threading.Condition()

    def decode(self, payload):
        k = payload
        self.entered[k].set()
        assert self.gates[k].wait(60), f"gate {k} never opened"
        if isinstance(self.frames[k], Exception):
            raise self.frames[k]
        return self.frames[k]

    def publish(self, frame, rgb, result):
        with self._cond:
            self.published.append((frame.stamp_ns, list(result.object_ids), result.frame_index))
            self._cond.notify_all()

    def report(self, kind, message):
        with self._cond:
            self.reports.append(message)
            self._cond.notify_all()

    def wait_published(self, n: int):
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.published) >= n, 60), f"only {self.published}"

    def wait_reports(self, n: int):
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.reports) >= n, 60), f"only {self.reports}"


@pytest.fixture(scope="module")
def frames(shared_data):
    from sam2_ros.io.video import iter_frames

    return [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA)
            for f in iter_frames(shared_data / "videos" / "bedroom.mp4", 6)]


@pytest.fixture(scope="module")
def backend(tiny_export_256):
    return load_backend(tiny_export_256, "onnxruntime")


@pytest.fixture
def stream_worker(backend, frames):
    stream = GatedStream(list(frames))
    worker = TrackerWorker(Tracker(backend, max_objects=3), stream.decode, stream.publish, stream.report)
    worker.start()
    yield stream, worker
    for g in stream.gates:
        g.set()
    worker.stop()


def call_in_thread(worker, fn, stamp, timeout=60.0):
    """Start worker.call in a thread; returns (thread, box) with box['value'] or box['error']."""
    box: dict = {}

    def run():
        try:
            box["value"] = worker.call(fn, stamp, timeout)
        except CommandError as e:
            box["error"] = str(e)

    t = threading.Thread(target=run)
    t.start()
    return t, box


def click(object_id, x=100.0, y=90.0):
    def fn(w, frame_stamp):
        index = w.frame_index_of(frame_stamp)
        res = w.tracker.add_prompt(object_id, points=[[x, y]], labels=[1], frame_index=index)
        w.note_prompt(object_id, "", frame_stamp, index)
        return frame_stamp, res.frame_index, list(res.object_ids)

    return fn


def test_prompt_before_first_frame_is_refused(stream_worker):
    _, worker = stream_worker
    with pytest.raises(CommandError, match="no frame has been processed yet"):
        worker.call(click(1), LATEST, 10)


def test_newest_frame_wins_and_held_prompts_follow_their_frame(stream_worker):
    stream, worker = stream_worker
    worker.submit(1 * S, 0)
    assert stream.entered[0].wait(30)  # frame 0 is in flight, held at its gate
    worker.submit(2 * S, 1)  # pending
    t_held, held = call_in_thread(worker, click(1), 2 * S)  # refers to the pending frame
    worker.submit(3 * S, 2)  # replaces frame 1: dropped, and the prompt held for it fails
    t_held.join(30)
    assert "dropped" in held["error"], held
    t_ok, ok = call_in_thread(worker, click(1), 3 * S)  # frame 2 is pending now: held
    stream.gates[0].set()
    stream.gates[2].set()
    t_ok.join(60)
    assert ok["value"] == (3 * S, 1, [1]), ok  # applied on frame 2 = frame_index 1, right after it
    stream.wait_published(2)
    # frame 2's message already contains the held prompt's object
    assert stream.published == [(1 * S, [], 0), (3 * S, [1], 1)]
    stats = worker.window_stats()
    assert (stats.received, stats.processed, stats.dropped, stats.queue_depth) == (3, 2, 1, 0)


def test_stamp_errors_name_the_problem(backend, frames):
    stream = GatedStream(list(frames))
    worker = TrackerWorker(Tracker(backend, max_objects=3, history_frames=1), stream.decode, stream.publish,
                           stream.report)
    worker.start()
    try:
        _stamp_errors(stream, worker)
    finally:
        for g in stream.gates:
            g.set()
        worker.stop()


def _stamp_errors(stream, worker):
    for k in range(2):
        stream.gates[k].set()
        worker.submit((k + 1) * S, k)
        stream.wait_published(k + 1)
    with pytest.raises(CommandError, match=r"older than the tracker's history of its last 1 frames \(history_frames\): "
                                           r"the oldest frame a prompt may name has stamp 2.000000000 \(frame index 1\)"):
        worker.call(click(1), 1 * S, 10)
    with pytest.raises(CommandError, match="no frame with stamp 1.500000000 was received"):
        worker.call(click(1), S + S // 2, 10)
    # the latest processed frame by its own stamp and by LATEST
    assert worker.call(click(1), 2 * S, 30)[:2] == (2 * S, 1)
    assert worker.call(click(2, 50, 40), LATEST, 30)[2] == [1, 2]
    # a stamp newer than every frame received waits for its frame ...
    t_future, future = call_in_thread(worker, click(3, 20, 20), 4 * S)
    stream.gates[2].set()
    worker.submit(4 * S, 2)
    t_future.join(60)
    assert future["value"][:2] == (4 * S, 2), future
    # ... and fails when a newer frame comes first
    t_never, never = call_in_thread(worker, click(3), 5 * S + 1)
    stream.gates[3].set()
    worker.submit(6 * S, 3)
    t_never.join(30)
    assert "no frame with stamp 5.000000001 arrived" in never["error"], never


def test_explicit_stamp_still_lands_on_its_frame_once_the_tracker_moved_on(stream_worker):
    stream, worker = stream_worker
    stream.gates[0].set()
    worker.submit(1 * S, 0)
    stream.wait_published(1)
    worker.submit(2 * S, 1)
    assert stream.entered[1].wait(30)  # frame 1 in flight: stamp 1 s is still the latest processed
    t_old, old = call_in_thread(worker, click(1), 1 * S)
    t_latest, latest = call_in_thread(worker, click(2), LATEST)
    stream.gates[1].set()
    t_old.join(60)
    t_latest.join(60)
    # the tracker moved on to frame 1 before the prompt ran: it is applied on frame 0 (in the history)
    assert old["value"] == (1 * S, 0, [1]), old
    assert latest["value"][:2] == (2 * S, 1), latest  # LATEST lands on whatever is latest
    _, _, infos = worker.snapshot()
    assert infos[1].first_frame_index == 0 and infos[2].first_frame_index == 1


def test_a_stamp_that_leaves_the_history_before_its_prompt_runs_fails(backend, frames):
    stream = GatedStream(list(frames))
    worker = TrackerWorker(Tracker(backend, max_objects=3, history_frames=2), stream.decode, stream.publish,
                           stream.report)
    worker.start()
    try:
        for k in range(2):
            stream.gates[k].set()
            worker.submit((k + 1) * S, k)
            stream.wait_published(k + 1)
        worker.submit(3 * S, 2)
        assert stream.entered[2].wait(30)  # frame 2 in flight: stamp 1 s is still in the history of 2 frames
        t_old, old = call_in_thread(worker, click(1), 1 * S)
        stream.gates[2].set()
        t_old.join(60)
        assert "older than the tracker's history of its last 2 frames" in old["error"], old
        assert "stamp 2.000000000 (frame index 1)" in old["error"], old
        assert worker.call(click(1), 2 * S, 30)[:2] == (2 * S, 1)  # one frame behind: applied there
        assert worker.snapshot()[1].object_ids == [1]
    finally:
        for g in stream.gates:
            g.set()
        worker.stop()


def test_bad_frames_are_rejected_without_touching_objects(stream_worker, frames):
    stream, worker = stream_worker
    stream.frames[1] = ValueError("unsupported image encoding '16UC1'")
    stream.frames[2] = np.ascontiguousarray(frames[2][:90])  # another size while objects are tracked
    stream.gates[0].set()
    worker.submit(1 * S, 0)
    stream.wait_published(1)
    assert worker.call(click(1), LATEST, 30)[2] == [1]
    t_held, held = call_in_thread(worker, click(2), 2 * S)  # held for the frame that will be rejected
    stream.gates[1].set()
    worker.submit(2 * S, 1)
    t_held.join(60)
    assert "rejected: unsupported image encoding" in held["error"], held
    stream.gates[2].set()
    worker.submit(3 * S, 2)
    stream.wait_reports(2)
    assert "size changed from 320x180 to 320x90" in stream.reports[1]
    stream.gates[3].set()
    worker.submit(4 * S, 3)
    stream.wait_published(2)
    assert stream.published[-1] == (4 * S, [1], 1)  # object 1 still tracked on the next good frame
    s = worker.window_stats()
    assert (s.processed, s.rejected) == (2, 2)


def test_reset_and_stop_answer_every_waiting_caller(stream_worker, frames):
    stream, worker = stream_worker
    stream.gates[0].set()
    worker.submit(1 * S, 0)
    stream.wait_published(1)
    assert worker.call(click(1), LATEST, 30)[2] == [1]
    worker.submit(2 * S, 1)
    assert stream.entered[1].wait(30)
    t_held, held = call_in_thread(worker, click(2), 2 * S)
    t_reset, reset = call_in_thread(worker, lambda w, s: w.reset_tracker(), LATEST)
    stream.gates[1].set()
    t_held.join(60)
    t_reset.join(60)
    # frame 1 was processed with its held prompt, then the reset ran
    assert held["value"][:2] == (2 * S, 1) and "value" in reset
    assert worker.snapshot()[:2] == (None, None)
    # a frame of another size is fine after a reset (and with no objects at all)
    stream.frames[2] = np.ascontiguousarray(frames[2][:90])
    stream.gates[2].set()
    worker.submit(3 * S, 2)
    stream.wait_published(3)
    assert stream.published[-1] == (3 * S, [], 0)
    # stop() answers a caller that waits for a frame
    t_wait, wait = call_in_thread(worker, click(3), 9 * S)
    worker.stop("the node was deactivated")
    t_wait.join(30)
    assert wait["error"] == "the node was deactivated"
    with pytest.raises(CommandError, match="not running"):
        worker.call(click(3), LATEST, 5)
    assert worker.window_stats().queue_depth == 0
    assert FrameStatus.STALE.name == "STALE"


def test_counters_add_up_with_a_frame_in_flight_and_after_stop(stream_worker):
    """received = processed + dropped + rejected + waiting + in flight at any moment; the frame
    still waiting when the worker stops is counted as dropped (it was lost from the sum)."""
    stream, worker = stream_worker

    def counts():
        s = worker.window_stats()
        return s.received, s.processed, s.dropped, s.rejected, s.queue_depth, s.in_flight

    worker.submit(1 * S, 0)
    assert stream.entered[0].wait(30)  # frame 0 in flight, held at its gate
    worker.submit(2 * S, 1)
    assert counts() == (2, 0, 0, 0, 1, 1)
    stopping = threading.Thread(target=worker.stop)
    stopping.start()
    with worker.scheduler.cond:
        assert worker.scheduler.cond.wait_for(lambda: not worker.scheduler.accepting, 30)
    stream.gates[0].set()  # frame 0 finishes; the thread stops before frame 1
    stopping.join(30)
    assert counts() == (2, 1, 1, 0, 0, 0)


def test_one_scheduler_steps_the_waiting_frames_of_every_camera_together(backend, frames):
    """Three cameras on one scheduler over a MultiTracker: the newest frame of each camera, every
    camera with a frame waiting in the same step call, a fast camera cannot push the others out,
    a silent camera blocks nobody, and a new resolution or a prompt stays with its camera."""
    from sam2_ros.multi_tracker import MultiTracker
    from sam2_ros.ros.worker import CameraWorker, Scheduler

    multi = MultiTracker(backend, ["a", "b", "c"], max_objects=2)
    calls: list[list[str]] = []

    def step(batch):
        calls.append(sorted(batch))
        return multi.step(batch)

    scheduler = Scheduler(step)
    streams = {n: GatedStream(list(frames)) for n in "abc"}
    cams = {n: CameraWorker(scheduler, n, multi.tracker(n), s.decode, s.publish, s.report) for n, s in streams.items()}
    a, b, c = streams.values()

    def feed(frames: dict[str, tuple[int, int]]):
        """Submit {camera: (stamp, frame k)}, then let them all be decoded."""
        for name, (stamp, k) in frames.items():
            cams[name].submit(stamp, k)
        for name, (_, k) in frames.items():
            streams[name].gates[k].set()

    scheduler.start()
    try:
        cams["a"].submit(1 * S, 0)
        assert a.entered[0].wait(30)  # camera a's frame 0 in flight, held at its gate
        cams["a"].submit(2 * S, 1)  # camera a is fast: its frame 1 is replaced by frame 2 (dropped)
        cams["a"].submit(3 * S, 2)
        cams["b"].submit(1 * S, 0)
        cams["c"].submit(1 * S, 0)
        for s, k in ((a, 0), (a, 2), (b, 0), (c, 0)):
            s.gates[k].set()
        for s, n in ((a, 2), (b, 1), (c, 1)):
            s.wait_published(n)
        assert calls == [["a"], ["a", "b", "c"]]  # one call for the three waiting frames
        assert cams["a"].window_stats().dropped == 1 and a.published == [(1 * S, [], 0), (3 * S, [], 1)]
        # a prompt on camera a: its objects only
        assert cams["a"].call(click(1), LATEST, 30)[2] == [1]
        assert multi.tracker("b").object_ids == [] and cams["b"].snapshot()[2] == {}
        # camera c stops publishing: the others go on without it
        feed({"a": (4 * S, 3), "b": (2 * S, 1)})
        a.wait_published(3)
        b.wait_published(2)
        assert calls[-1] == ["a", "b"] and a.published[-1] == (4 * S, [1], 2)
        # new resolutions: camera b (no objects) follows alone; camera a (tracking) rejects it
        a.frames[4] = np.ascontiguousarray(frames[4][:90])
        b.frames[2] = np.ascontiguousarray(frames[2][:90])
        feed({"a": (5 * S, 4), "b": (3 * S, 2)})
        a.wait_reports(1)
        b.wait_published(3)
        assert "size changed from 320x180 to 320x90" in a.reports[0] and b.published[-1] == (3 * S, [], 0)
        assert multi.tracker("a").frame_index == 2 and multi.tracker("c").frame_index == 0
        assert (cams["a"].window_stats().rejected, cams["b"].window_stats().rejected) == (1, 0)
    finally:
        for s in streams.values():
            for g in s.gates:
                g.set()
        scheduler.stop()
