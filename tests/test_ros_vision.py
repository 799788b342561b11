"""vision_msgs / visualization_msgs conversions of the node (sam2_ros.ros.vision), through the wire."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection2D, Detection2DArray, Detection3DArray, LabelInfo, ObjectHypothesisWithPose  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from sam2_ros.depth import DepthError, Intrinsics, ObjectGeometry  # noqa: E402
from sam2_ros.ros import vision as rv  # noqa: E402
from sam2_ros.tracker import FrameResult  # noqa: E402


def wire(msg):
    return deserialize_message(serialize_message(msg), type(msg))


@pytest.fixture
def header():
    h = Header(frame_id="cam")
    h.stamp.sec, h.stamp.nanosec = 7, 250
    return h


def test_detections_follow_the_masks_and_leave_out_absent_objects(header):
    masks = np.zeros((3, 40, 60), bool)
    masks[0, 5:15, 10:30] = True
    masks[1, 20:30, 0:5] = True  # not visible (score <= 0)
    boxes = np.array([[10, 5, 30, 15], [0, 20, 5, 30], [np.nan] * 4], np.float32)  # object 9: empty mask
    r = FrameResult(4, [3, 5, 9], masks=masks, scores=np.float32([1.0, -0.5, 2.0]),
                    ious=np.float32([1.3, 0.4, 0.7]), boxes=boxes)
    msg = wire(rv.detections_msg(header, r, {3: "cup"}))
    assert msg.header == header and [d.id for d in msg.detections] == ["3"]
    d = msg.detections[0]
    assert d.header == header
    assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) == (20, 10, 20, 10)
    assert d.results[0].hypothesis.class_id == "cup" and d.results[0].hypothesis.score == 1.0  # IoU clipped to 1
    info = wire(rv.label_info_msg(header, [3, 5, 9], {3: "cup"}, 0.0))
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(3, "cup"), (5, "object"), (9, "object")]
    assert info.threshold == pytest.approx(0.5) and info.header == header


def test_3d_detections_and_markers(header):
    g = ObjectGeometry((0.1, -0.2, 1.5), (0.11, -0.19, 1.52), (0.2, 0.3, 0.05), (0.01, 0.02, 0.003), 812, 790)
    msg = wire(rv.detections_3d_msg(header, [(4, "bottle", 0.8, g)]))
    assert isinstance(msg, Detection3DArray) and msg.header == header
    d = msg.detections[0]
    assert d.id == "4" and d.results[0].hypothesis.class_id == "bottle"
    p = d.results[0].pose.pose
    assert (p.position.x, p.position.y, p.position.z, p.orientation.w) == (0.1, -0.2, 1.5, 1.0)
    assert d.results[0].pose.covariance[0] == pytest.approx(1e-4) and d.results[0].pose.covariance[14] == pytest.approx(9e-6)
    assert (d.bbox.size.x, d.bbox.size.y, d.bbox.size.z) == (0.2, 0.3, 0.05)
    markers = wire(rv.markers_msg(header, [(4, "bottle", 0.8, g)]))
    assert isinstance(markers, MarkerArray)
    kinds = [(m.action, m.type, m.ns, m.id) for m in markers.markers]
    assert kinds == [(Marker.DELETEALL, 0, "", 0), (Marker.ADD, Marker.CUBE, "sam2_boxes", 4),
                     (Marker.ADD, Marker.TEXT_VIEW_FACING, "sam2_labels", 4)]
    assert markers.markers[2].text == "4 bottle 1.50 m (812 px)"
    assert all(m.header == header for m in markers.markers)


def test_detector_boxes_in():
    msg = Detection2DArray()
    for (cx, cy, w, h, theta), tid, hyps in [((50.0, 40.0, 20.0, 10.0, 0.0), "a", [("cup", 0.3), ("mug", 0.9)]),
                                             ((10.0, 10.0, 4.0, 2.0, math.pi / 2), "", [])]:
        d = Detection2D(id=tid)
        d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.theta = cx, cy, theta
        d.bbox.size_x, d.bbox.size_y = w, h
        for cls, score in hyps:
            o = ObjectHypothesisWithPose()
            o.hypothesis.class_id, o.hypothesis.score = cls, score
            d.results.append(o)
        msg.detections.append(d)
    a, b = rv.detections_from_msg(wire(msg))
    assert a.box == (40, 35, 60, 45) and (a.class_id, a.score, a.track_id) == ("mug", 0.9, "a")
    np.testing.assert_allclose(b.box, (9, 8, 11, 12), atol=1e-9)  # rotated 90 degrees: its upright extent
    assert (b.class_id, b.score) == ("", 1.0)


def test_depth_and_camera_info_in():
    mm = np.array([[1000, 0], [2500, 65535]], "<u2")
    msg = Image(height=2, width=2, encoding="16UC1", step=4, data=mm.tobytes())
    out = rv.depth_msg_to_metres(wire(msg))
    assert out[0, 0] == pytest.approx(1.0) and np.isnan(out[0, 1]) and out[1, 1] == pytest.approx(65.535)
    msg.encoding = "bgr8"
    with pytest.raises(DepthError, match="depth encoding"):
        rv.depth_msg_to_metres(msg)
    info = CameraInfo(width=640, height=480, k=[500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0])
    assert rv.intrinsics_from_msg(wire(info)) == Intrinsics(500, 505, 320, 240, 640, 480)
    with pytest.raises(DepthError, match="invalid intrinsics"):
        rv.intrinsics_from_msg(CameraInfo(width=640, height=480))  # K all zero: an uncalibrated camera


def test_point_cloud(header):
    from sensor_msgs.msg import PointCloud2, PointField

    from sam2_ros.depth import POINT_DTYPE

    pts = np.zeros(3, POINT_DTYPE)
    pts["x"], pts["z"], pts["object_id"] = [0.1, 0.2, 0.3], [1.0, 1.5, 2.0], [4, 4, 9]
    msg = wire(rv.point_cloud_msg(header, pts))
    assert isinstance(msg, PointCloud2) and msg.header == header
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense) == (1, 3, 16, 48, True)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("object_id", 12, PointField.UINT32, 1)]
    back = np.frombuffer(bytes(msg.data), POINT_DTYPE)
    np.testing.assert_array_equal(back, pts)
