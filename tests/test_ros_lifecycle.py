"""The node's lifecycle and parameters in this process (real rclpy, real engines):
configure fails cleanly on missing / mismatched engines; configure, activate, deactivate and
cleanup create and release what they should; the default sensor-data QoS receives images."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("rclpy")

import rclpy  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.lifecycle.publisher import LifecyclePublisher  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from ros_support import Client, video_frames  # noqa: E402

from sam2_ros.ros.node import Sam2TrackerNode  # noqa: E402
from sam2_ros_interfaces.srv import AddPrompt, ListObjects  # noqa: E402

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


@pytest.fixture
def tracker_node():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Sam2TrackerNode(context=ctx, parameter_overrides=[Parameter("max_objects", value=2)])
    ex = MultiThreadedExecutor(num_threads=6, context=ctx)
    ex.add_node(node)
    t = threading.Thread(target=ex.spin, daemon=True)
    t.start()
    yield node
    node._deactivate()
    node._cleanup()
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)
    t.join(5)


def state(node) -> str:
    return node._state_machine.current_state[1]


def set_param(node, name, value):
    return node.set_parameters([Parameter(name, value=value)])[0]


def test_configure_fails_cleanly_without_usable_engines(tracker_node, tmp_path, tiny_export_256, capfd):
    node = tracker_node
    assert node.trigger_configure() == FAILURE
    assert "parameter engine_dir is not set" in capfd.readouterr().err
    assert set_param(node, "engine_dir", str(tmp_path / "nowhere")).successful
    assert node.trigger_configure() == FAILURE
    assert "is not a directory" in capfd.readouterr().err
    assert set_param(node, "engine_dir", str(tmp_path)).successful  # exists, but no export in it
    assert node.trigger_configure() == FAILURE
    err = capfd.readouterr().err
    assert "configure failed: cannot load onnxruntime engines" in err and "manifest" in err
    assert set_param(node, "engine_dir", str(tiny_export_256)).successful
    assert set_param(node, "backend", "tensorrt").successful  # ONNX files, no TensorRT here
    assert node.trigger_configure() == FAILURE
    assert "configure failed" in capfd.readouterr().err
    assert state(node) == "unconfigured" and node._worker is None
    assert set_param(node, "use_sim_time", True).successful  # rclpy's own parameters pass through
    # a bad value never gets in
    res = set_param(node, "backend", "tflite")
    assert not res.successful and "must be one of onnxruntime, openvino, torch, tensorrt" in res.reason


def test_lifecycle_round_trip_with_sensor_data_qos(tracker_node, tiny_export_256, shared_data):
    node = tracker_node
    assert set_param(node, "engine_dir", str(tiny_export_256)).successful
    assert set_param(node, "fill_hole_area", 0).successful  # the official CPU behaviour
    assert set_param(node, "corrections_as_conditioning", False).successful  # the official default
    assert set_param(node, "keep_first_cond_frame", True).successful
    assert node.trigger_configure() == SUCCESS and state(node) == "inactive"
    tracker = node._worker.tracker
    assert tracker.fill_hole_area == 0 and not tracker.corrections_as_conditioning
    assert tracker.bank.keep_first_cond_frame
    outputs = dict(node._outputs)
    # results go through lifecycle publishers: silent unless the node is active
    assert set(outputs) == {"objects", "detections", "label_image", "label_info", "overlay"}  # depth.enabled: false
    assert all(isinstance(p, LifecyclePublisher) and not p.is_activated for p in outputs.values())
    # engine parameters are frozen while configured; output switches are not
    res = set_param(node, "max_objects", 5)
    assert not res.successful and "takes effect at configure" in res.reason
    assert set_param(node, "publish.overlay", False).successful

    client = Client("lifecycle_client", image_qos=qos_profile_sensor_data)  # best effort, like a camera
    try:
        reply = client.call(AddPrompt, "add_prompt", AddPrompt.Request(object_id=-1, box=[1.0, 1.0, 9.0, 9.0]))
        assert not reply.success and "not running (node not active)" in reply.message
        assert node.trigger_activate() == SUCCESS and state(node) == "active"
        assert all(p.is_activated for p in outputs.values())
        client.wait_for_subscriber()
        frame = video_frames(shared_data, 1)[0]
        from ros_support import image_msg

        # best effort may lose a sample: offer the frame until its result comes back
        got = []
        for _ in range(20):
            client.image_pub.publish(image_msg(frame, 1_000_000_000))
            try:
                got.append(client.result_for(1_000_000_000, timeout=10))
                break
            except AssertionError:
                continue
        assert got and got[0].header.frame_id == "camera"
        for oid in (-1, -1):
            request = AddPrompt.Request(object_id=oid, box=[5.0, 5.0, 90.0, 90.0])
            assert client.call(AddPrompt, "add_prompt", request).success
        full = client.call(AddPrompt, "add_prompt", AddPrompt.Request(object_id=-1, box=[5.0, 5.0, 90.0, 90.0]))
        assert not full.success and "max_objects=2" in full.message
        listed = client.call(ListObjects, "list_objects", ListObjects.Request())
        assert [o.id for o in listed.objects] == [1, 2] and listed.frame_index == 0

        assert node.trigger_deactivate() == SUCCESS and state(node) == "inactive"
        assert node._image_sub is None and not node._worker.running
        assert not any(p.is_activated for p in outputs.values())
        reply = client.call(AddPrompt, "add_prompt", AddPrompt.Request(object_id=1, box=[1.0, 1.0, 9.0, 9.0]))
        assert not reply.success and "not active" in reply.message
        # deactivating keeps the objects
        assert [o.id for o in client.call(ListObjects, "list_objects", ListObjects.Request()).objects] == [1, 2]

        backend = node._worker.tracker.backend
        assert backend.sessions
        assert node.trigger_cleanup() == SUCCESS and state(node) == "unconfigured"
        assert node._worker is None and node._tracker_services == [] and node._outputs == {}
        assert backend.sessions == {}  # released at cleanup, not left to the garbage collector
        assert set_param(node, "max_objects", 5).successful  # unconfigured: allowed again
    finally:
        client.close()


def test_compressed_transport(tracker_node, tiny_export_256, shared_data):
    import cv2
    from sensor_msgs.msg import CompressedImage

    from ros_support import RELIABLE, set_stamp

    node = tracker_node
    for name, value in (("engine_dir", str(tiny_export_256)), ("image_transport", "compressed"),
                        ("input_qos.reliability", "reliable")):
        assert set_param(node, name, value).successful
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert node._image_sub.topic_name == "/image/compressed"
    client = Client("compressed_client")
    try:
        pub = client.node.create_publisher(CompressedImage, "image/compressed", RELIABLE)
        client.wait_for(lambda: pub.get_subscription_count() > 0 and client._objects_sub.get_publisher_count() > 0,
                        30, "matching")
        frame = video_frames(shared_data, 1)[0]
        msg = CompressedImage(format="png")
        msg.data = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
        set_stamp(msg.header.stamp, 7_000_000_000)
        msg.header.frame_id = "compressed_camera"
        pub.publish(msg)
        result = client.result_for(7_000_000_000, timeout=30)
        assert result.header.frame_id == "compressed_camera" and result.frame_index == 0
        reply = client.call(AddPrompt, "add_prompt", AddPrompt.Request(object_id=-1, box=[5.0, 5.0, 90.0, 90.0]))
        assert reply.success and reply.object.mask.width == frame.shape[1]
        bad = CompressedImage(format="jpeg")
        bad.data = b"not an image"
        set_stamp(bad.header.stamp, 8_000_000_000)
        pub.publish(bad)
        client.wait_for(lambda: node._worker.window_stats().rejected == 1, 30, "the corrupt image rejected")
        assert "cannot decode compressed image" in node._worker.window_stats().last_error
    finally:
        client.close()


def test_compressed_topic_follows_the_remapped_image_topic(tiny_export_256):
    """`-r image:=/camera/image_raw` moves the compressed subscription too, as image_transport does."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = Sam2TrackerNode(
            context=ctx, cli_args=["--ros-args", "-r", "image:=/camera/image_raw"],
            parameter_overrides=[Parameter("engine_dir", value=str(tiny_export_256)),
                                 Parameter("image_transport", value="compressed")],
        )
        assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
        assert node._image_sub.topic_name == "/camera/image_raw/compressed"
        node._deactivate()
        node._cleanup()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
