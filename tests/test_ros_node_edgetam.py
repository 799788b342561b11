"""The tracker node running an EdgeTAM export end to end (issue 18): the same node, parameters and
services as for SAM 2; only the engine directory differs. Its messages must equal the ROS-free
tracker's on the same frames and prompts (which tests/test_edgetam.py proves exact against Meta's
EdgeTAM predictor)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from ros_support import REPO, Client, NodeProcess, video_frames  # noqa: E402

from sam2_ros.backends import load_backend  # noqa: E402
from sam2_ros.tracker import Tracker  # noqa: E402
from sam2_ros_interfaces.srv import AddPrompt  # noqa: E402
from test_ros_node_e2e import assert_frame_matches, points, stamp  # noqa: E402

NEW = AddPrompt.Request.NEW_OBJECT


def test_node_tracks_an_edgetam_export(edgetam_export, shared_data, tmp_path):
    frames = video_frames(shared_data, 4)
    ref = Tracker(load_backend(edgetam_export, "onnxruntime"), max_objects=2, cond_slots=2)
    node = NodeProcess(
        tmp_path / "node.log",
        {"engine_dir": edgetam_export, "max_objects": 2, "autostart": False,
         "input_qos.reliability": "reliable", "input_qos.depth": 5},
        params_file=REPO / "config" / "sam2_tracker.yaml",
    )
    client = Client("edgetam_client")
    try:
        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert client.call(ChangeState, "change_state", ChangeState.Request(transition=Transition(id=t))).success
        client.wait_for_subscriber()
        seen = []
        for k, frame in enumerate(frames):
            msg = client.publish_and_wait(frame, stamp(k), "rgb8")
            assert_frame_matches(msg, ref.step(frame), k)
            seen.append(len(msg.objects))
            if k == 0:
                reply = client.call(AddPrompt, "add_prompt",
                                    AddPrompt.Request(object_id=NEW, points=points((240, 180)), labels=[1]))
                assert reply.success and reply.object_id == 1, reply.message
                ref.add_prompt(1, points=[[240, 180]], labels=[1])
            if k == 1:  # an object added mid-stream
                reply = client.call(AddPrompt, "add_prompt", AddPrompt.Request(object_id=NEW, box=[300.0, 20.0, 470.0, 150.0]))
                assert reply.success and reply.object_id == 2, reply.message
                ref.add_prompt(2, box=[300, 20, 470, 150])
        assert seen == [0, 1, 2, 2]
        node.assert_alive()
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()
    assert "Traceback" not in node.log(), node.log()
