"""The node applies a prompt on the frame the operator saw (issue 10), in its own process.

Frames of bedroom.mp4 stream at a steady rate (faster than the node processes them on this
machine, so it also drops frames, as under a real camera). A prompt stamped with a frame
processed 10 frames before the latest one succeeds: the reply has the object's mask on that
frame, and every `objects` message from the next frame on has the object, equal (IoU >= 0.999)
to the ROS-free tracker run offline over the same processed frames with the prompt given on
that frame. A stamp older than the history fails, naming the oldest stamp available.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import Point32  # noqa: E402
from ros_support import REPO, Client, NodeProcess, image_msg, mask_iou, mask_of, stamp_ns, video_frames  # noqa: E402

from sam2_ros.backends import load_backend  # noqa: E402
from sam2_ros.tracker import Tracker  # noqa: E402
from sam2_ros_interfaces.srv import AddPrompt  # noqa: E402

S = 1_000_000_000
N_FRAMES = 90  # at most; the stream stops once the test has seen enough
PERIOD = 0.25  # seconds between two published frames
HISTORY = 16
BEHIND = 10
CLICK = (240.0, 180.0)


def stamp(k: int) -> int:
    return (k + 1) * S + 500_000_000


def test_a_prompt_stamped_10_frames_ago_is_applied_on_that_frame(tiny_export_256, shared_data, tmp_path):
    frames = video_frames(shared_data, N_FRAMES)
    node = NodeProcess(
        tmp_path / "node.log",
        {"engine_dir": tiny_export_256, "max_objects": 2, "history_frames": HISTORY,
         "input_qos.reliability": "reliable", "publish.overlay": False},
        params_file=REPO / "config" / "sam2_tracker.yaml",
    )
    client = Client("late_prompt_client")
    stop = threading.Event()
    published: list[int] = []

    def stream():
        t0 = time.monotonic()
        for k in range(N_FRAMES):
            if stop.is_set():
                return
            client.image_pub.publish(image_msg(frames[k], stamp(k)))
            published.append(k)
            time.sleep(max(0.0, t0 + (k + 1) * PERIOD - time.monotonic()))

    publisher = threading.Thread(target=stream, daemon=True)
    try:
        client.wait_for_subscriber()
        publisher.start()

        def by_index():
            return {m.frame_index: m for m in list(client.objects)}

        client.wait_for(lambda: max(by_index(), default=-1) >= HISTORY + 1, 120, f"frame {HISTORY + 1}")
        seen = by_index()
        latest = max(seen)
        target = seen[latest - BEHIND]
        reply = client.call(AddPrompt, "add_prompt", AddPrompt.Request(
            object_id=AddPrompt.Request.NEW_OBJECT, label="bed", points=[Point32(x=CLICK[0], y=CLICK[1])],
            labels=[1], stamp=target.header.stamp))
        assert reply.success, reply.message
        assert reply.object_id == 1 and reply.object.label == "bed"
        assert reply.frame_index == target.frame_index and stamp_ns(reply.stamp) == stamp_ns(target.header.stamp)
        assert "frames behind the latest" in reply.message, reply.message

        # a stamp older than the history: refused, naming the oldest stamp still available
        client.wait_for(lambda: max(by_index(), default=-1) >= HISTORY + 4, 120, "a few more frames")
        too_old = by_index()[0].header.stamp
        refused = client.call(AddPrompt, "add_prompt", AddPrompt.Request(
            object_id=AddPrompt.Request.NEW_OBJECT, box=[10.0, 10.0, 100.0, 100.0], stamp=too_old))
        assert not refused.success and refused.object_id == -1
        assert "older than the tracker's history of its last 16 frames" in refused.message, refused.message
        assert "the oldest frame a prompt may name has stamp" in refused.message, refused.message

        client.wait_for(lambda: max(by_index(), default=-1) >= reply.frame_index + BEHIND + 6, 120,
                        "frames after the prompt")
        stop.set()
        publisher.join(60)
        client.result_for(stamp(published[-1]), 120)  # the last frame is never dropped: nothing replaces it
        node.assert_alive()
    finally:
        stop.set()
        client.close()
        code = node.stop()
    assert code == 0, node.log()
    assert "Traceback" not in node.log(), node.log()

    # ------------------------------------------------ the same processed frames, offline, prompt on time
    msgs = sorted(client.objects, key=lambda m: m.frame_index)
    assert [m.frame_index for m in msgs] == list(range(len(msgs))), "a processed frame was not published"
    video_index = {stamp(k): k for k in range(N_FRAMES)}
    ref = Tracker(load_backend(tiny_export_256), max_objects=2, history_frames=HISTORY)
    with_object = 0
    for m in msgs:
        res = ref.step(frames[video_index[stamp_ns(m.header.stamp)]])
        if m.frame_index == reply.frame_index:
            res = ref.add_prompt(1, points=[CLICK], labels=[1])
            iou = mask_iou(mask_of(reply.object), res.masks[0])
            assert iou >= 0.999, f"reply: IoU {iou:.5f} with the prompt given on time"
            assert reply.object.score == pytest.approx(float(res.scores[0]), abs=1e-3)
        ids = [o.id for o in m.objects]
        if m.frame_index <= reply.frame_index or 1 not in ids:
            # published before the late prompt arrived: without the object; never again after it
            assert ids == [] and not with_object, f"frame {m.frame_index}: {ids}"
            continue
        obj = m.objects[0]
        iou = mask_iou(mask_of(obj), res.masks[0])
        assert iou >= 0.999, f"frame {m.frame_index}: IoU {iou:.5f} with the prompt given on time"
        assert obj.score == pytest.approx(float(res.scores[0]), abs=1e-3), f"frame {m.frame_index}"
        with_object += 1
    assert with_object >= 5, f"the object was published on {with_object} frames only"
    # the frames between the prompted one and the prompt's arrival went out without it
    assert not msgs[reply.frame_index + 1].objects
