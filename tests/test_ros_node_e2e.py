"""The tracker node in its own process, driven like a robot would drive it.

This process publishes real frames of bedroom.mp4 as sensor_msgs/Image, drives the
lifecycle through its services, calls every tracker service (points, box, mask, refinement,
an object added mid-stream, removal, a prompt held for a frame not processed yet, reset)
and every kind of bad input, and collects what the node publishes. The same frames and
prompts go through the ROS-free tracker here: every message must carry its image's header
and the same masks (IoU >= 0.999), scores and IoU predictions.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import Point32  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from ros_support import (REPO, Client, NodeProcess, image_msg, mask_iou, mask_of, set_stamp, stamp_ns,  # noqa: E402
                          video_frames)
from sensor_msgs.msg import Image  # noqa: E402

from sam2_ros.backends import load_backend  # noqa: E402
from sam2_ros.tracker import Tracker  # noqa: E402
from sam2_ros_interfaces.srv import AddPrompt, ListObjects, RemoveObject, Reset  # noqa: E402

S = 1_000_000_000
N_FRAMES = 10
NEW = AddPrompt.Request.NEW_OBJECT


def stamp(k: int) -> int:
    return (k + 1) * S + 250_000_000


def points(*xy) -> list[Point32]:
    return [Point32(x=float(x), y=float(y)) for x, y in xy]


def mask_msg(mask: np.ndarray, encoding: str = "mono8") -> Image:
    m = Image(height=mask.shape[0], width=mask.shape[1], encoding=encoding, step=mask.shape[1])
    m.data = (mask.astype(np.uint8) * 255).tobytes()
    return m


def assert_object_matches(obj, ref, index: int, where: str):
    assert obj.id == ref.object_ids[index], where
    iou = mask_iou(mask_of(obj), ref.masks[index])
    assert iou >= 0.999, f"{where}: object {obj.id} mask IoU {iou:.5f} vs the tracker core"
    assert obj.score == pytest.approx(float(ref.scores[index]), abs=1e-3), where
    assert obj.iou == pytest.approx(float(ref.ious[index]), abs=1e-3), where
    assert obj.visible == bool(ref.scores[index] > 0), where
    np.testing.assert_allclose([obj.x0, obj.y0, obj.x1, obj.y1], ref.boxes[index], atol=1e-3, err_msg=where)


def assert_frame_matches(msg, ref, k: int):
    where = f"frame {k}"
    assert stamp_ns(msg.header.stamp) == stamp(k) and msg.header.frame_id == "camera", where
    assert msg.frame_index == ref.frame_index, where
    assert [o.id for o in msg.objects] == ref.object_ids, where
    for i, obj in enumerate(msg.objects):
        assert_object_matches(obj, ref, i, where)
        assert stamp_ns(obj.mask.header.stamp) == stamp(k)


@pytest.fixture(scope="module")
def frames(shared_data):
    return video_frames(shared_data, N_FRAMES)


def test_node_matches_the_tracker_core_and_survives_bad_input(tiny_export_256, frames, tmp_path):
    ref = Tracker(load_backend(tiny_export_256, "onnxruntime"), max_objects=3, cond_slots=2)
    node = NodeProcess(
        tmp_path / "node.log",
        {"engine_dir": tiny_export_256, "max_objects": 3, "autostart": False,
         "input_qos.reliability": "reliable", "input_qos.depth": 5, "diagnostics_period": 0.2},
        params_file=REPO / "config" / "sam2_tracker.yaml",
    )
    client = Client("e2e_client")
    try:
        # ------------------------------------------------ lifecycle through its services
        get_state = client.call(GetState, "get_state", GetState.Request())
        assert get_state.current_state.label == "unconfigured"
        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert client.call(ChangeState, "change_state", ChangeState.Request(transition=Transition(id=t))).success
        client.wait_for_subscriber()

        def add(expect_ok=True, **fields):
            reply = client.call(AddPrompt, "add_prompt", AddPrompt.Request(**fields))
            assert reply.success == expect_ok, reply.message
            return reply

        def refused(fragment, **fields):
            reply = add(expect_ok=False, **fields)
            assert fragment in reply.message, reply.message
            assert reply.object_id == -1

        refused("no frame has been processed yet", object_id=NEW, points=points((100, 100)), labels=[1])

        def step(k, encoding="rgb8"):
            msg = client.publish_and_wait(frames[k], stamp(k), encoding)
            assert_frame_matches(msg, ref.step(frames[k]), k)
            return msg

        def check_reply(reply, ref_result, k):
            i = ref_result.object_ids.index(reply.object_id)
            assert_object_matches(reply.object, ref_result, i, f"prompt reply on frame {k}")
            assert reply.frame_index == ref_result.frame_index and stamp_ns(reply.stamp) == stamp(k)

        # ------------------------------------------------ frame 0: points and a box
        step(0)
        reply = add(object_id=NEW, label="bed", points=points((240, 180)), labels=[1])
        assert reply.object_id == 1 and reply.object.label == "bed"
        check_reply(reply, ref.add_prompt(1, points=[[240, 180]], labels=[1]), 0)
        reply = add(object_id=NEW, box=[300.0, 20.0, 470.0, 150.0], stamp=client.objects[-1].header.stamp)
        assert reply.object_id == 2
        check_reply(reply, ref.add_prompt(2, box=[300, 20, 470, 150]), 0)

        # ------------------------------------------------ other encodings; a refinement
        step(1, "bgr8")
        step(2, "rgba8")
        reply = add(object_id=1, points=points((250, 200), (60, 40)), labels=[1, 0])
        check_reply(reply, ref.add_prompt(1, points=[[250, 200], [60, 40]], labels=[1, 0]), 2)
        step(3, "bgra8")

        # ------------------------------------------------ bad prompts: refused, nothing damaged
        remove = client.call(RemoveObject, "remove_object", RemoveObject.Request(object_id=42))
        assert not remove.success and "unknown object id 42" in remove.message
        refused("NaN", object_id=1, points=points((float("nan"), 3)), labels=[1])
        refused("empty prompt", object_id=1)
        refused("outside the 480x270 frame", object_id=1, points=points((600, 10)), labels=[1])
        refused("outside the 480x270 frame", object_id=NEW, box=[-5.0, 0.0, 100.0, 100.0])
        refused("same length", object_id=1, points=points((10, 10), (20, 20)), labels=[1])
        refused("box must be empty or [x0, y0, x1, y1]", object_id=1, box=[1.0, 2.0, 3.0])
        refused("object_id must be >= 0", object_id=-7, box=[1.0, 2.0, 30.0, 40.0])
        refused("labels must be 1 (positive) or 0", object_id=1, points=points((10, 10)), labels=[3])
        refused("mask must have the frame's shape", object_id=NEW, mask=mask_msg(np.ones((10, 10), bool)))
        refused("mask encoding must be mono8", object_id=NEW, mask=image_msg(frames[0], 0))
        # absurd sizes (docs/ROS.md "Limits"): refused with the limit named
        refused("300 prompt points are over the limit of 256", object_id=1, points=points(*[(9, 9)] * 300),
                labels=[1] * 300)
        refused("label of 1048576 characters is over the limit of 256", object_id=NEW, box=[1.0, 1.0, 50.0, 50.0],
                label="x" * 2**20)
        old = client.objects[-3].header.stamp  # frame 1: in the history, but object 1 was refined on frame 2
        refused("was prompted on frame 2, after frame 1", object_id=1, points=points((9, 9)), labels=[1], stamp=old)
        unknown = client.objects[-2].header.stamp  # between frames 2 and 3: never received
        unknown.nanosec += 1
        refused("no frame with stamp", object_id=1, points=points((9, 9)), labels=[1], stamp=unknown)

        # ------------------------------------------------ bad images: rejected, next frame fine
        def diag_values():
            for arr in reversed(client.diagnostics):
                for st in arr.status:
                    if st.name == "sam2_tracker: tracker":
                        return {kv.key: kv.value for kv in st.values}
            return {}

        # stamps between frames 3 and 4: in order (a stamp that jumps back restarts the stream,
        # docs/ROS.md "Time jumps"), and older than every frame still to come
        bad_images = []
        m = image_msg(frames[4], stamp(3) + S // 10, "rgb8")
        m.encoding = "16UC1"
        bad_images.append((m, "unsupported image encoding '16UC1'"))
        m = image_msg(frames[4], stamp(3) + 2 * S // 10, "rgb8")
        m.data = m.data[: len(m.data) // 2]
        bad_images.append((m, "truncated image data"))
        m = Image(encoding="rgb8")
        set_stamp(m.header.stamp, stamp(3) + 3 * S // 10)
        bad_images.append((m, "zero size"))
        for n, (m, error) in enumerate(bad_images, start=1):
            client.image_pub.publish(m)
            client.wait_for(lambda n=n: diag_values().get("frames_rejected") == str(n), 30, f"bad image {n} rejected")
            assert error in diag_values()["last_error"]
        node.assert_alive()
        step(4)

        # ------------------------------------------------ a mask prompt mid-stream; max_objects
        box_mask = np.zeros((270, 480), bool)
        box_mask[150:260, 20:200] = True
        reply = add(object_id=NEW, label="rug", mask=mask_msg(box_mask))
        assert reply.object_id == 3
        check_reply(reply, ref.add_prompt(3, mask=box_mask), 4)
        refused("max_objects=3", object_id=NEW, box=[10.0, 10.0, 50.0, 50.0])
        step(5)

        # ------------------------------------------------ removal
        assert client.call(RemoveObject, "remove_object", RemoveObject.Request(object_id=2)).success
        ref.remove_object(2)
        step(6)

        # ------------------------------------------------ a prompt held for a frame not processed yet
        client.image_pub.publish(image_msg(frames[7], stamp(7)))
        held = client.call(AddPrompt, "add_prompt", AddPrompt.Request(
            object_id=NEW, box=[300.0, 20.0, 470.0, 150.0], stamp=image_msg(frames[7], stamp(7)).header.stamp))
        assert held.success, held.message
        assert held.object_id == 4 and held.frame_index == 7
        ref.step(frames[7])
        ref7 = ref.add_prompt(4, box=[300, 20, 470, 150])
        check_reply(held, ref7, 7)
        msg7 = client.result_for(stamp(7))
        assert_frame_matches(msg7, ref7, 7)  # frame 7's message already has the held prompt's object

        # ------------------------------------------------ outputs: overlay on demand, label image
        overlays = []
        overlay_sub = client.node.create_subscription(Image, "overlay", overlays.append, 10)
        client.wait_for(lambda: overlay_sub.get_publisher_count() > 0, 30, "the overlay publisher")
        msg8 = step(8)
        client.wait_for(lambda: any(stamp_ns(o.header.stamp) == stamp(8) for o in overlays), 30, "overlay of frame 8")
        labels = [lm for lm in client.labels if stamp_ns(lm.header.stamp) == stamp(8)]
        assert labels and labels[0].encoding == "mono8"
        label = np.frombuffer(labels[0].data, np.uint8).reshape(270, 480)
        for obj in msg8.objects:  # pixel value = the object's id (stable across frames)
            assert (label == obj.id).any() == (obj.visible and mask_of(obj).any())
            assert np.all(mask_of(obj)[label == obj.id])  # every labelled pixel lies in its object's mask

        listed = client.call(ListObjects, "list_objects", ListObjects.Request())
        assert [(o.id, o.label, o.num_prompts) for o in listed.objects] == [(1, "bed", 2), (3, "rug", 1), (4, "", 1)]
        assert listed.frame_index == 8 and stamp_ns(listed.stamp) == stamp(8)

        # ------------------------------------------------ reset
        assert client.call(Reset, "reset", Reset.Request()).success
        ref.reset()
        msg9 = step(9)
        assert msg9.frame_index == 0 and list(msg9.objects) == []
        reply = add(object_id=NEW, box=[300.0, 20.0, 470.0, 150.0])
        check_reply(reply, ref.add_prompt(1, box=[300, 20, 470, 150]), 9)

        # ------------------------------------------------ the stream loops: a duplicate, then stamps jump back
        client.image_pub.publish(image_msg(frames[9], stamp(9)))  # duplicate: rejected
        client.wait_for(lambda: diag_values().get("frames_duplicate_stamp") == "1", 30, "the duplicate rejected")
        seen = len(client.objects)
        client.image_pub.publish(image_msg(frames[0], stamp(0)))  # 9 s back: a new stream, the camera reset
        client.wait_for(lambda: len(client.objects) > seen, 60, "the first frame of the new stream")
        ref.reset()
        assert_frame_matches(client.objects[-1], ref.step(frames[0]), 0)
        assert client.objects[-1].frame_index == 0 and list(client.objects[-1].objects) == []
        refused("received before the stream restarted", object_id=NEW, box=[1.0, 1.0, 50.0, 50.0],
                stamp=image_msg(frames[5], stamp(5)).header.stamp)  # a frame of the first loop
        client.wait_for(lambda: diag_values().get("stream_resets") == "1", 30, "stream_resets")

        values = diag_values()
        client.wait_for(lambda: diag_values().get("frames_processed") == str(N_FRAMES + 1), 30, "diagnostics")
        values = diag_values()
        assert values["backend"] == "onnxruntime" and values["frames_rejected"] == "4"
        assert values["state"] == "active" and float(values["latency_mean_ms"]) > 0
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()
    assert "Traceback" not in node.log(), node.log()
