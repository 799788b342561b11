"""vision_msgs / visualization_msgs in and out of the node (the standard robot messages).

Out: what goes into the messages is defined once, ROS-free, in ``sam2_ros.outputs`` (nested
dicts, shared with the output bag of ``sam2-ros track --bag``); :func:`fill` puts them into rclpy
messages. In: detector boxes (``vision_msgs/Detection2DArray``), depth images and camera_info are
turned into the core's types (``sam2_ros.detections``, ``sam2_ros.depth``), which validate them.
"""

from __future__ import annotations

import importlib

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, Detection3D, Detection3DArray, LabelInfo
from visualization_msgs.msg import Marker, MarkerArray

from sam2_ros import outputs
from sam2_ros.depth import Intrinsics, depth_to_metres
from sam2_ros.detections import Detection
from sam2_ros.tracker import FrameResult


def _element_class(msg, name: str):
    """The message class of the elements of sequence field ``name`` of ``msg``."""
    slot = dict(zip(msg.get_fields_and_field_types(), msg.SLOT_TYPES))[name]
    elem = slot.value_type
    return getattr(importlib.import_module(".".join(elem.namespaces)), elem.name)


def fill(msg, values: dict):
    """Set ``values`` (nested dicts / lists of dicts, see sam2_ros.outputs) on rclpy message ``msg``."""
    for name, value in values.items():
        if isinstance(value, dict):
            fill(getattr(msg, name), value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            cls = _element_class(msg, name)
            setattr(msg, name, [fill(cls(), v) for v in value])
        else:
            setattr(msg, name, value)
    return msg


def _with_header(cls, header: Header, values: dict):
    msg = fill(cls(), values)
    msg.header = header
    return msg


def detections_msg(header: Header, result: FrameResult, labels: dict[int, str]) -> Detection2DArray:
    """vision_msgs/Detection2DArray of one frame: the image's header; one Detection2D per visible object."""
    return Detection2DArray(header=header, detections=[
        _with_header(Detection2D, header, d) for d in outputs.detections_2d(result, labels)])


def label_info_msg(header: Header, object_ids, labels: dict[int, str], mask_threshold: float) -> LabelInfo:
    """vision_msgs/LabelInfo: label image value (the object id) -> the object's label."""
    return _with_header(LabelInfo, header, outputs.label_info(object_ids, labels, mask_threshold))


def detections_3d_msg(header: Header, objects) -> Detection3DArray:
    """vision_msgs/Detection3DArray; ``header`` = the image's stamp with the depth image's frame_id."""
    return Detection3DArray(header=header, detections=[
        _with_header(Detection3D, header, d) for d in outputs.detections_3d(objects)])


def markers_msg(header: Header, objects) -> MarkerArray:
    return MarkerArray(markers=[_with_header(Marker, header, m) for m in outputs.markers(objects)])


def point_cloud_msg(header: Header, points: np.ndarray) -> PointCloud2:
    """sensor_msgs/PointCloud2 of the objects' points (``sam2_ros.depth.object_point_cloud``)."""
    values = outputs.point_cloud(points)
    data = values.pop("data")
    msg = fill(PointCloud2(header=header), values)
    msg.data = data
    return msg


def detections_from_msg(msg: Detection2DArray) -> list[Detection]:
    """Detector boxes of a Detection2DArray: the box (centre and size; rotated boxes use their
    axis-aligned extent), the best hypothesis' class and score (score 1 without one), the track id."""
    out = []
    for d in msg.detections:
        best = max(d.results, key=lambda r: r.hypothesis.score, default=None)
        score = float(best.hypothesis.score) if best is not None else 1.0
        class_id = str(best.hypothesis.class_id) if best is not None else ""
        w, h, theta = float(d.bbox.size_x), float(d.bbox.size_y), float(d.bbox.center.theta)
        if theta and np.isfinite(theta):
            c, s = abs(np.cos(theta)), abs(np.sin(theta))
            w, h = w * c + h * s, w * s + h * c
        out.append(Detection.from_center(float(d.bbox.center.position.x), float(d.bbox.center.position.y), w, h,
                                         score, class_id, str(d.id)))
    return out


def depth_msg_to_metres(msg: Image) -> np.ndarray:
    """sensor_msgs/Image 16UC1 (mm, 0 invalid) or 32FC1 (m, NaN invalid) -> [H, W] float32 m (DepthError)."""
    return depth_to_metres(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian))


def intrinsics_from_msg(msg: CameraInfo) -> Intrinsics:
    """The pinhole intrinsics of a CameraInfo (DepthError when K is missing or zero)."""
    return Intrinsics.from_k(list(msg.k), int(msg.width), int(msg.height))
