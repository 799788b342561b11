"""Time and stream faults of a camera, without ROS: stamps that jump back (a looping rosbag, a
simulator clock reset), duplicate and out-of-order stamps, a pause, a new resolution, a burst.

Real tracker (ONNX Runtime, tiny export at 256) on real frames of bedroom.mp4 behind the node's
worker; the gated frames of test_ros_worker decide what is pending, in flight or processed.
The policy (sam2_ros.ros.worker): a jump back of more than the threshold restarts the stream
(camera reset, counted), a duplicate or a smaller step back is rejected and counted.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_ros_worker import GatedStream, backend, call_in_thread, click, frames  # noqa: F401 (fixtures)

from sam2_ros.ros.worker import LATEST, CommandError, TrackerWorker
from sam2_ros.tracker import Tracker

S = 1_000_000_000


def fed(stream, worker, stamps_frames, start: int):
    """Open the gates of frames ``k`` and submit them with their stamps, one at a time, each
    published before the next; ``start``: how many were published before."""
    for n, (stamp, k) in enumerate(stamps_frames, start + 1):
        stream.gates[k].set()
        worker.submit(stamp, k)
        stream.wait_published(n)


def consistent(worker) -> None:
    """received = processed + dropped + rejected + pending (waiting or in flight)."""
    s = worker.window_stats()
    assert s.received == s.processed + s.dropped + s.rejected + s.queue_depth + s.in_flight, s


def test_a_looping_stream_restarts_the_camera_and_old_stamps_are_refused(backend, frames):  # noqa: F811
    stream = GatedStream(list(frames))
    worker = TrackerWorker(Tracker(backend, max_objects=3), stream.decode, stream.publish, stream.report)
    worker.start()
    try:
        # the first loop of a bag: stamps 1..4 s, an object prompted on 2 s
        fed(stream, worker, [(1 * S, 0), (2 * S, 1)], 0)
        assert worker.call(click(1), 2 * S, 30)[:2] == (2 * S, 1)
        fed(stream, worker, [(3 * S, 2), (4 * S, 3)], 2)
        assert stream.published[-1] == (4 * S, [1], 3)
        t_held, held = call_in_thread(worker, click(2), 5 * S)  # held for a frame of the old loop
        # the bag loops: stamp 1 s again, 3 s back (threshold 1 s); its frame waits at its gate
        worker.submit(1 * S, 4)
        t_held.join(30)
        assert "the stream restarted: stamp 1.000000000 is 3.000 s behind" in held["error"], held
        # a prompt stamped with a frame of the old loop is refused, not held for the new loop's frame 3 s
        with pytest.raises(CommandError, match="3.000000000 was received before the stream restarted"):
            worker.call(click(2), 3 * S, 10)
        # the new stream's first frame has another size: it follows it (the camera was reset first)
        stream.frames[4] = np.ascontiguousarray(frames[4][:90])
        stream.gates[4].set()
        stream.wait_published(5)
        assert stream.published[-1] == (1 * S, [], 0)
        assert any("stream restarted" in r and "camera reset, objects dropped" in r for r in stream.reports)
        assert worker.snapshot()[2] == {} and worker.window_stats().stream_resets == 1
        # a prompt on the new stream gets id 1 again and lands on the new frame
        assert worker.call(click(1, 100, 40), 1 * S, 30)[:3] == (1 * S, 0, [1])
        # duplicate and slightly older stamps are rejected and leave the stream alone
        worker.submit(1 * S, 5)
        worker.submit(S // 2, 5)
        stream.wait_reports(3)
        assert "duplicate stamp" in stream.reports[-2] and "behind the newest frame" in stream.reports[-1]
        s = worker.window_stats()
        assert (s.duplicate_stamps, s.out_of_order, s.rejected, s.queue_depth) == (1, 1, 2, 0)
        # a resolution change mid-stream with an object: rejected, the object kept
        stream.frames[5] = np.ascontiguousarray(frames[5])  # 320x180 again
        stream.gates[5].set()
        worker.submit(2 * S, 5)
        stream.wait_reports(4)
        assert "size changed from 320x90 to 320x180 while objects are tracked" in stream.reports[-1]
        # a pause of ten minutes: no reset, the object goes on
        stream.frames[0] = np.ascontiguousarray(frames[0][:90])
        stream.gates[0].set()
        worker.submit(600 * S, 0)
        stream.wait_published(6)
        assert stream.published[-1] == (600 * S, [1], 1)
        assert worker.window_stats().stream_resets == 1
        consistent(worker)
        # the new stream equals a fresh tracker fed the same frames and prompt: nothing left over
        fresh = Tracker(backend, max_objects=3)
        fresh.step(np.ascontiguousarray(frames[4][:90]))
        fresh.add_prompt(1, points=[[100, 40]], labels=[1])
        ref = fresh.step(np.ascontiguousarray(frames[0][:90]))
        got = worker.call(lambda w, s: w.tracker.current_result(), LATEST, 30)
        np.testing.assert_array_equal(got.masks, ref.masks)
        np.testing.assert_array_equal(got.scores, ref.scores)
    finally:
        for g in stream.gates:
            g.set()
        worker.stop()


class Burst:
    """Frames decoded at once (no gates); counts what is published."""

    def __init__(self, frames):
        self.frames = frames
        self.published: list[int] = []
        self.done = threading.Event()
        self.last = None

    def decode(self, k):
        return self.frames[k % len(self.frames)]

    def publish(self, frame, rgb, result):
        self.published.append(frame.stamp_ns)
        if frame.stamp_ns == self.last:
            self.done.set()


def test_a_burst_of_1000_frames_processes_the_newest_and_counts_every_frame(backend, frames):  # noqa: F811
    burst = Burst(list(frames))
    worker = TrackerWorker(Tracker(backend, max_objects=3), burst.decode, burst.publish,
                           lambda kind, msg: None)
    worker.start()
    try:
        stamps = [S + k * S // 1000 for k in range(1000)]  # 1,000 frames within one second of stamps
        burst.last = stamps[-1]
        # a few repeated and reordered stamps in the burst, as a flaky driver sends them
        order = stamps[:500] + [stamps[499], stamps[498]] + stamps[500:]
        for k, stamp in enumerate(order):
            worker.submit(stamp, k)
        assert burst.done.wait(60), burst.published
        worker.call(lambda w, stamp: None, LATEST, 30)  # runs once the last frame is finished
        s = worker.window_stats()
        assert burst.published[-1] == stamps[-1] and len(burst.published) == s.processed
        assert (s.received, s.duplicate_stamps, s.out_of_order, s.rejected) == (1002, 1, 1, 2)
        assert s.processed < 100 and s.queue_depth == 0 and s.stream_resets == 0
        consistent(worker)
    finally:
        worker.stop()


def test_a_restart_of_one_camera_leaves_the_others_alone(backend, frames):  # noqa: F811
    """Two cameras on one scheduler over a MultiTracker: camera a loops (reset, counted), camera
    b keeps its object, frame count and stamps."""
    from sam2_ros.multi_tracker import MultiTracker
    from sam2_ros.ros.worker import CameraWorker, Scheduler

    multi = MultiTracker(backend, ["a", "b"], max_objects=2)
    scheduler = Scheduler(multi.step)
    streams = {n: GatedStream(list(frames)) for n in "ab"}
    cams = {n: CameraWorker(scheduler, n, multi.tracker(n), s.decode, s.publish, s.report) for n, s in streams.items()}
    scheduler.start()
    try:
        for n in "ab":
            fed(streams[n], cams[n], [(1 * S, 0), (3 * S, 1)], 0)
            assert cams[n].call(click(1), LATEST, 30)[2] == [1]
        fed(streams["a"], cams["a"], [(1 * S, 2)], 2)  # a loops back to its first stamp, 2 s back
        fed(streams["b"], cams["b"], [(4 * S, 2)], 2)
        assert streams["a"].published[-1] == (1 * S, [], 0) and cams["a"].window_stats().stream_resets == 1
        assert streams["b"].published[-1] == (4 * S, [1], 2) and cams["b"].window_stats().stream_resets == 0
        assert cams["b"].call(click(2), 1 * S, 30)[:3] == (1 * S, 0, [2])  # b's history still answers by stamp
        for cam in cams.values():
            consistent(cam)
    finally:
        for s in streams.values():
            for g in s.gates:
                g.set()
        scheduler.stop()
