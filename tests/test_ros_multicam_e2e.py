"""One node, three cameras: the node in its own process with ``cameras: [front, wrist, robot2/front]``.

Each camera is fed its own real clip (cups, blocks, driving) at its own size and gets its own
prompts; the same frames and prompts go through three single-camera trackers here (each over
its own backend): every camera's messages must carry the same object ids, frame indices and
exactly the same masks (ONNX Runtime fp32 on one machine is deterministic). A bad prompt, a
bad image, a reset or a new resolution on one camera, and a camera that stops publishing,
leave the other cameras' results equal to their single-camera runs. One node process serves
every test of this module (the rig keeps the cameras' streams going from test to test).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import Point32  # noqa: E402
from ros_support import Client, NodeProcess, image_msg, mask_of, video_frames  # noqa: E402

from sam2_ros.backends import load_backend  # noqa: E402
from sam2_ros.tracker import Tracker  # noqa: E402
from sam2_ros_interfaces.srv import AddPrompt, ListObjects, Reset  # noqa: E402

S = 1_000_000_000
NEW = AddPrompt.Request.NEW_OBJECT
N_FRAMES = 12
MAX_OBJECTS = 2
#: camera -> (clip, frame size): three clips, three sizes
CAMERAS = {
    "front": ("02_cups.mp4", (256, 144)),
    "wrist": ("03_blocks.mp4", (192, 144)),
    "robot2/front": ("08_driving.mp4", (224, 128)),
}


def stamp(k: int) -> int:
    """Frame k's stamp: the same stamps on every camera (each camera has its own)."""
    return (k + 1) * S


class Camera:
    """One camera of the node: its client, its frames and its single-camera reference tracker."""

    def __init__(self, name: str, frames: list[np.ndarray], export, index: int):
        self.name, self.frames = name, frames
        self.client = Client(f"multicam_client_{index}", camera=name)
        self.ref = Tracker(load_backend(export, "onnxruntime"), max_objects=MAX_OBJECTS)
        self.k = 0  # the next frame to publish
        self.sent = self.processed = 0  # images published (bad ones too), results checked

    def publish(self, rgb: np.ndarray | None = None) -> int:
        k = self.k
        self.client.image_pub.publish(image_msg(self.frames[k] if rgb is None else rgb, stamp(k), frame_id=self.name))
        self.k += 1
        self.sent += 1
        return k

    def check(self, k: int, rgb: np.ndarray | None = None):
        """The node's message of frame k equals the reference's result on it."""
        msg = self.client.result_for(stamp(k))
        self.processed += 1
        ref = self.ref.step(self.frames[k] if rgb is None else rgb)
        assert msg.header.frame_id == self.name
        assert_same(msg, ref, f"camera {self.name}, frame {k}")
        return msg

    def prompt(self, ref_args: dict, **fields):
        reply = self.client.call(AddPrompt, "add_prompt", AddPrompt.Request(**fields))
        assert reply.success, f"{self.name}: {reply.message}"
        res = self.ref.add_prompt(reply.object_id, **ref_args)
        i = res.object_ids.index(reply.object_id)
        assert np.array_equal(mask_of(reply.object), res.masks[i]), f"{self.name}: prompt reply's mask"
        return reply


def assert_same(msg, ref, where: str):
    assert msg.frame_index == ref.frame_index, where
    assert [o.id for o in msg.objects] == ref.object_ids, where
    for i, obj in enumerate(msg.objects):
        assert np.array_equal(mask_of(obj), ref.masks[i]), f"{where}: object {obj.id}'s mask differs"
        assert obj.score == pytest.approx(float(ref.scores[i]), abs=1e-4), where
        assert obj.iou == pytest.approx(float(ref.ious[i]), abs=1e-4), where


def step_all(cams: list[Camera]) -> None:
    """One frame on each camera, published together (the node may step them in one batch)."""
    ks = [c.publish() for c in cams]
    for c, k in zip(cams, ks):
        c.check(k)


def diagnostics(client: Client, camera: str) -> dict[str, str]:
    for arr in reversed(client.diagnostics):
        for st in arr.status:
            if st.name == f"sam2_tracker: {camera}":
                return {kv.key: kv.value for kv in st.values}
    return {}


@pytest.fixture(scope="module")
def rig(tiny_export_128, shared_data, tmp_path_factory):
    """The node with three cameras, each already tracking objects from prompts on its frame 0."""
    names = list(CAMERAS)
    node = NodeProcess(tmp_path_factory.mktemp("multicam") / "node.log", {
        "engine_dir": tiny_export_128, "max_objects": MAX_OBJECTS, "input_qos.reliability": "reliable",
        "input_qos.depth": 5, "diagnostics_period": 0.2, "cameras": "[" + ", ".join(names) + "]"})
    cams = {}
    try:
        for i, (name, (clip, wh)) in enumerate(CAMERAS.items()):
            cams[name] = Camera(name, video_frames(shared_data, N_FRAMES, wh, clip), tiny_export_128, i)
        for c in cams.values():
            c.client.wait_for_subscriber()
        step_all(list(cams.values()))
        # prompts of every kind, each on its own camera; every camera's first object is its id 1
        front, wrist, robot2 = cams.values()
        assert front.prompt({"points": [[120, 80]], "labels": [1]}, object_id=NEW, label="cup",
                            points=[Point32(x=120.0, y=80.0)], labels=[1]).object_id == 1
        assert wrist.prompt({"box": [40, 30, 150, 120]}, object_id=NEW, box=[40.0, 30.0, 150.0, 120.0]).object_id == 1
        assert wrist.prompt({"points": [[20, 20], [100, 70]], "labels": [1, 0]}, object_id=NEW,
                            points=[Point32(x=20.0, y=20.0), Point32(x=100.0, y=70.0)], labels=[1, 0]).object_id == 2
        assert robot2.prompt({"box": [60, 40, 180, 110]}, object_id=NEW, label="car",
                             box=[60.0, 40.0, 180.0, 110.0]).object_id == 1
        yield node, cams
    finally:
        for c in cams.values():
            c.client.close()
        code = node.stop()
    assert code == 0, node.log()
    assert "Traceback" not in node.log(), node.log()


def test_three_cameras_match_three_single_camera_runs(rig):
    node, cams = rig
    for _ in range(3):
        step_all(list(cams.values()))
    listed = {n: c.client.call(ListObjects, "list_objects", ListObjects.Request()) for n, c in cams.items()}
    assert [(o.id, o.label) for o in listed["front"].objects] == [(1, "cup")]
    assert [o.id for o in listed["wrist"].objects] == [1, 2]
    assert [(o.id, o.label) for o in listed["robot2/front"].objects] == [(1, "car")]
    assert all(r.frame_index == cams[n].k - 1 for n, r in listed.items())
    node.assert_alive()


def test_bad_input_on_one_camera_leaves_the_others_untouched(rig):
    _, cams = rig
    front, wrist, robot2 = cams.values()
    # bad prompts on the wrist camera: refused, its objects and the others' unchanged
    for fields, error in (({"object_id": 1, "points": [Point32(x=500.0, y=10.0)], "labels": [1]}, "outside"),
                          ({"object_id": NEW, "box": [1.0, 1.0, 9.0, 9.0]}, f"max_objects={MAX_OBJECTS}")):
        reply = wrist.client.call(AddPrompt, "add_prompt", AddPrompt.Request(**fields))
        assert not reply.success and error in reply.message, reply.message
    # an image in an encoding the node refuses, on the wrist camera
    bad = image_msg(wrist.frames[wrist.k], stamp(wrist.k) - S // 2)
    bad.encoding = "16UC1"
    wrist.client.image_pub.publish(bad)
    wrist.sent += 1
    wrist.client.wait_for(lambda: diagnostics(wrist.client, "wrist").get("frames_rejected") == "1", 30,
                          "the wrist camera's bad image rejected")
    assert "unsupported image encoding '16UC1'" in diagnostics(wrist.client, "wrist")["last_error"]
    # a new object on the front camera: id 2 there, nothing new elsewhere
    assert front.prompt({"box": [10, 10, 90, 100]}, object_id=NEW, box=[10.0, 10.0, 90.0, 100.0]).object_id == 2
    step_all([front, wrist, robot2])
    # robot2/front resets, then its images change size twice: only it starts again at frame 0
    assert robot2.client.call(Reset, "reset", Reset.Request()).success
    robot2.ref.reset()
    smaller = np.ascontiguousarray(robot2.frames[robot2.k][:96, :160])
    ks = [front.publish(), wrist.publish(), robot2.publish(smaller)]
    front.check(ks[0])
    wrist.check(ks[1])
    assert robot2.check(ks[2], smaller).frame_index == 0
    robot2.ref.reset()  # no objects to lose: the node follows the next size change by itself
    ks = [front.publish(), robot2.publish()]
    assert front.check(ks[0]).frame_index == ks[0]
    msg = robot2.check(ks[1])
    assert msg.frame_index == 0 and not msg.objects
    assert robot2.prompt({"box": [60, 40, 180, 110]}, object_id=NEW, box=[60.0, 40.0, 180.0, 110.0]).object_id == 1
    assert [o.id for o in front.client.objects[-1].objects] == [1, 2]
    assert [o.id for o in wrist.client.objects[-1].objects] == [1, 2]


def test_a_camera_that_stops_does_not_stall_the_others(rig):
    node, cams = rig
    front, wrist, robot2 = cams.values()
    wrist_processed = wrist.processed
    for _ in range(3):  # the wrist camera publishes nothing meanwhile
        step_all([front, robot2])
    assert wrist.processed == wrist_processed
    step_all([front, wrist, robot2])  # and it picks up where it stopped
    node.assert_alive()


def test_diagnostics_per_camera(rig):
    _, cams = rig
    client = cams["front"].client
    for name, c in cams.items():
        client.wait_for(lambda name=name, c=c: diagnostics(client, name).get("frames_processed") == str(c.processed),
                        30, f"diagnostics of camera {name}")
        values = diagnostics(client, name)
        assert values["camera"] == name and values["image_topic"] == f"/{name}/image"
        assert values["frames_received"] == str(c.sent)
        assert values["frames_dropped"] == "0" and values["queue_depth"] == "0"
        assert values["max_objects"] == str(MAX_OBJECTS) and values["state"] == "active"
        assert values["objects"] == str(len(c.client.objects[-1].objects))
        assert float(values["latency_mean_ms"]) > 0
        assert 1.0 <= float(values["batch_size_mean"]) <= len(CAMERAS)


def test_camera_names_are_relative_and_remappable(tiny_export_128):
    """In this process: per camera topics and services, a remapped camera image with its compressed
    and click topics following it, one backend shared by every camera."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from sam2_ros.ros.node import Sam2TrackerNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = Sam2TrackerNode(
            context=ctx, cli_args=["--ros-args", "-r", "__ns:=/robot1", "-r", "wrist/image:=/arm/camera/image_raw"],
            parameter_overrides=[Parameter("engine_dir", value=str(tiny_export_128)),
                                 Parameter("cameras", value=["front", "wrist"]),
                                 Parameter("image_transport", value="compressed"),
                                 Parameter("click_prompts.enabled", value=True)])
        ok = TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == ok and node.trigger_activate() == ok
        front, wrist = node.channels
        assert front.image_sub.topic_name == "/robot1/front/image/compressed"
        assert wrist.image_sub.topic_name == "/arm/camera/image_raw/compressed"
        assert wrist._inputs[0].topic_name == "/arm/camera/image_raw_mouse_left"
        assert front.outputs["objects"].topic_name == "/robot1/front/objects"
        assert wrist.outputs["label_image"].topic_name == "/robot1/wrist/label_image"
        assert [s.service_name for s in wrist.services] == [f"/robot1/sam2_tracker/wrist/{n}" for n in (
            "add_prompt", "remove_object", "reset", "list_objects")]
        assert front.worker.tracker is not wrist.worker.tracker
        assert front.worker.tracker.backend is wrist.worker.tracker.backend  # loaded once
        assert not node.set_parameters([Parameter("cameras", value=["front"])])[0].successful  # configured
        node._deactivate()
        node._cleanup()
        assert node.set_parameters([Parameter("cameras", value=["front", "2nd"])])[0].reason.startswith(
            "cameras must be ROS names")
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
