"""sam2_ros_interfaces: built and installed in this environment (scripts/install_ros.sh), importable,
registered in the ament index, and usable on the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_messages_and_services_import_with_their_fields():
    from sam2_ros_interfaces.msg import ObjectState, TrackedObject, TrackedObjects
    from sam2_ros_interfaces.srv import AddPrompt, ListObjects, RemoveObject, Reset

    assert TrackedObjects.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "frame_index": "int64",
        "objects": "sequence<sam2_ros_interfaces/TrackedObject>",
    }
    fields = TrackedObject.get_fields_and_field_types()
    for name in ("id", "label", "score", "visible", "iou", "x0", "y0", "x1", "y1", "mask"):
        assert name in fields
    req = AddPrompt.Request.get_fields_and_field_types()
    assert req == {
        "object_id": "int32", "label": "string", "points": "sequence<geometry_msgs/Point32>",
        "labels": "sequence<int8>", "box": "sequence<float>", "mask": "sensor_msgs/Image",
        "stamp": "builtin_interfaces/Time",
    }
    assert AddPrompt.Request.NEW_OBJECT == -1
    assert set(AddPrompt.Response.get_fields_and_field_types()) == {
        "success", "message", "object_id", "frame_index", "stamp", "object"}
    assert set(RemoveObject.Request.get_fields_and_field_types()) == {"object_id"}
    assert Reset.Request.get_fields_and_field_types() == {}
    assert "objects" in ListObjects.Response.get_fields_and_field_types()
    assert "area" in ObjectState.get_fields_and_field_types()


def test_registered_in_the_ament_index_from_this_source(monkeypatch):
    import os
    import sys

    from ament_index_python.packages import get_package_share_directory

    # the PyPI wheels install the ament index under the environment's prefix; a sourced ROS
    # install sets AMENT_PREFIX_PATH itself
    if not os.environ.get("AMENT_PREFIX_PATH"):
        monkeypatch.setenv("AMENT_PREFIX_PATH", sys.prefix)

    share = Path(get_package_share_directory("sam2_ros_interfaces"))
    for rel in ("msg/TrackedObjects.msg", "srv/AddPrompt.srv", "package.xml"):
        assert (share / rel).read_text() == (REPO / "msg" / rel).read_text(), (
            f"{rel} differs from the source: run scripts/install_ros.sh to rebuild the interfaces")


def test_round_trip_through_the_wire_format():
    from geometry_msgs.msg import Point32

    from sam2_ros_interfaces.msg import TrackedObject, TrackedObjects
    from sam2_ros_interfaces.srv import AddPrompt

    msg = TrackedObjects(frame_index=41, objects=[TrackedObject(id=3, label="cup", score=1.5, x0=float("nan"))])
    back = deserialize_message(serialize_message(msg), TrackedObjects)
    assert back.frame_index == 41 and back.objects[0].label == "cup" and back.objects[0].score == 1.5
    req = AddPrompt.Request(object_id=-1, points=[Point32(x=1.0, y=2.0)], labels=[1], box=[0.0, 0.0, 5.0, 5.0])
    back = deserialize_message(serialize_message(req), AddPrompt.Request)
    assert back.points[0].y == 2.0 and list(back.labels) == [1] and list(back.box) == [0.0, 0.0, 5.0, 5.0]
