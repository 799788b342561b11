"""What one frame's result becomes on the outputs: the label image and its label info, each
object's values, mask and 2D detection, the overlay. One definition for every writer of these
outputs: the node's topics (``sam2_ros.ros.convert`` / ``sam2_ros.ros.vision``) and the output bag
of ``sam2-ros track --bag`` (``sam2_ros.io.bag``). numpy and OpenCV only: no ROS, no torch.

Label image values are **stable per object**: pixel = the object id (0 = background), so a
consumer that reads only the label image sees the same value for an object on every frame; the
label info maps each value to the object's label. mono8 while every value fits (max_objects and
every id <= 255), mono16 otherwise; ids above :data:`MAX_LABEL_ID` cannot be labelled.
"""

from __future__ import annotations

import cv2
import numpy as np

from sam2_ros.palette import object_color
from sam2_ros.tracker import FrameResult


#: The largest object id a label image (mono16) and a vision_msgs/LabelInfo (uint16) can hold.
MAX_LABEL_ID = 65535
#: Detection2D / LabelInfo class of an object without a label.
DEFAULT_CLASS = "object"


def label_encoding(object_ids, max_objects: int) -> str:
    """mono8 while max_objects and every id fit in 8 bits, mono16 otherwise."""
    return "mono8" if max_objects <= 255 and max(object_ids, default=0) <= 255 else "mono16"


def label_image(result: FrameResult, max_objects: int) -> tuple[np.ndarray, str]:
    """Pixel = the object's id (stable across frames); 0 = background. Where masks overlap, the
    object with the higher object score wins. mono8, or mono16 (:func:`label_encoding`). Built
    where the result's masks are (on the GPU for a GPU backend); only the id lookup runs here."""
    ids = list(result.object_ids)
    if ids and max(ids) > MAX_LABEL_ID:
        raise ValueError(f"object id {max(ids)} does not fit a mono16 label image (ids up to {MAX_LABEL_ID})")
    enc = label_encoding(ids, max_objects)
    dtype = np.uint8 if enc == "mono8" else np.uint16
    index = result.label_image(np.argsort(result.scores, kind="stable"), np.uint8 if len(ids) <= 255 else np.uint16)
    lut = np.array([0, *ids], dtype)
    return lut[np.asarray(index)], enc


def label_classes(object_ids, labels: dict[int, str]) -> list[tuple[int, str]]:
    """The label info of a label image: (pixel value = object id, the object's label or "object")."""
    return [(int(oid), labels.get(oid) or DEFAULT_CLASS) for oid in sorted(object_ids)]


def detection_values(result: FrameResult, index: int, label: str) -> dict | None:
    """The fields of a vision_msgs/Detection2D for row ``index`` of ``result``, None when the object
    is not present (object score <= 0 or an empty mask).

    ``id`` = the object id as a string; the box is the mask's (centre and size in pixels, x1, y1
    exclusive, so a one-pixel mask at (u, v) has centre (u + 0.5, v + 0.5) and size 1);
    ``class_id`` = the label or "object"; ``score`` = the decoder's predicted IoU clipped to [0, 1]."""
    if not result.scores[index] > 0:
        return None
    x0, y0, x1, y1 = (float(v) for v in result.boxes[index])
    if not np.isfinite([x0, y0, x1, y1]).all():
        return None
    return {
        "id": str(int(result.object_ids[index])),
        "center_x": (x0 + x1) / 2, "center_y": (y0 + y1) / 2, "size_x": x1 - x0, "size_y": y1 - y0,
        "class_id": label or DEFAULT_CLASS,
        "score": float(np.clip(result.ious[index], 0.0, 1.0)),
    }


def object_values(result: FrameResult, index: int, label: str) -> dict:
    """The scalar fields of a sam2_ros_interfaces/TrackedObject for row ``index`` of ``result``."""
    x0, y0, x1, y1 = (float(v) for v in result.boxes[index])
    return {
        "id": int(result.object_ids[index]),
        "label": label,
        "score": float(result.scores[index]),
        "visible": bool(result.scores[index] > 0),
        "iou": float(result.ious[index]),
        "x0": x0, "y0": y0, "x1": x1, "y1": y1,
    }


def object_mask(result: FrameResult, index: int) -> np.ndarray:
    """TrackedObject.mask of row ``index`` as an array: mono8 [H, W], 255 = object."""
    return result.masks[index].astype(np.uint8) * 255


def overlay_image(rgb: np.ndarray, result: FrameResult, labels: dict[int, str] | None = None) -> np.ndarray:
    """The frame with each visible object's mask tinted, its box and ``id label`` drawn."""
    out = rgb.copy()
    for i, oid in enumerate(result.object_ids):
        if not result.scores[i] > 0:
            continue
        color = np.array(object_color(oid), np.float32)
        m = result.masks[i]
        out[m] = (0.5 * out[m] + 0.5 * color).astype(np.uint8)
        box = result.boxes[i]
        if np.isfinite(box).all():
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            c = tuple(int(v) for v in color)
            cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), c, 2)
            text = f"{oid} {labels.get(oid, '')}".strip() if labels else str(oid)
            cv2.putText(out, text, (x0 + 2, max(12, y0 + 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1, cv2.LINE_AA)
    return out


# ----------------------------------------------------------------------------------------------
# vision_msgs / visualization_msgs content, as nested dicts (field name -> value, a dict for a
# sub-message, a list of dicts for a sequence of messages). The node fills rclpy messages from
# them (sam2_ros.ros.vision.fill), the output bag rosbags messages (sam2_ros.io.bag): one
# definition of what goes out. Headers are set by the writers.

def detections_2d(result: FrameResult, labels: dict[int, str]) -> list[dict]:
    """The vision_msgs/Detection2D of every visible object of ``result`` (:func:`detection_values`)."""
    out = []
    for i, oid in enumerate(result.object_ids):
        v = detection_values(result, i, labels.get(oid, ""))
        if v is None:
            continue
        out.append({
            "id": v["id"],
            "bbox": {"center": {"position": {"x": v["center_x"], "y": v["center_y"]}, "theta": 0.0},
                     "size_x": v["size_x"], "size_y": v["size_y"]},
            "results": [{"hypothesis": {"class_id": v["class_id"], "score": v["score"]}}],
        })
    return out


def label_info(object_ids, labels: dict[int, str], mask_threshold: float = 0.0) -> dict:
    """vision_msgs/LabelInfo of the label image: class_id = pixel value = object id, class_name =
    its label (or "object"); threshold = the mask threshold as a probability (sigmoid of the logit)."""
    return {
        "class_map": [{"class_id": v, "class_name": name} for v, name in label_classes(object_ids, labels)],
        "threshold": float(1.0 / (1.0 + np.exp(-mask_threshold))),
    }


def _pose(p) -> dict:
    return {"position": {"x": p[0], "y": p[1], "z": p[2]}, "orientation": {"w": 1.0}}


def detections_3d(objects) -> list[dict]:
    """vision_msgs/Detection3D of each (object id, label, score, :class:`~sam2_ros.depth.ObjectGeometry`):
    ``id`` = the object id, ``results[0].pose`` = the robust position (covariance diagonal = the
    kept points' robust variance per axis), ``bbox`` = the percentile box (axis-aligned in the
    camera's optical frame)."""
    out = []
    for oid, label, score, g in objects:
        cov = [0.0] * 36
        for axis in range(3):
            cov[axis * 7] = g.spread[axis] ** 2
        out.append({
            "id": str(int(oid)),
            "bbox": {"center": _pose(g.box_center), "size": dict(zip("xyz", g.box_size))},
            "results": [{"hypothesis": {"class_id": label or DEFAULT_CLASS, "score": float(score)},
                         "pose": {"pose": _pose(g.position), "covariance": cov}}],
        })
    return out


#: Marker namespaces: one cube (the 3D box) and one text (id, label, distance, valid depth pixels) per object.
MARKER_NS = ("sam2_boxes", "sam2_labels")
MARKER_DELETEALL, MARKER_CUBE, MARKER_TEXT, MARKER_ADD = 3, 1, 9, 0


def markers(objects) -> list[dict]:
    """visualization_msgs/Marker list for RViz: DELETEALL (objects gone since the last message
    disappear), then per (object id, label, score, geometry) a translucent cube in the object's
    colour and a text above it: ``<id> <label> <distance> m (<valid pixels> px)``."""
    out = [{"action": MARKER_DELETEALL}]
    for oid, label, _, g in objects:
        r, gr, b = (c / 255.0 for c in object_color(oid))
        out.append({"ns": MARKER_NS[0], "id": int(oid), "type": MARKER_CUBE, "action": MARKER_ADD,
                    "pose": _pose(g.box_center),
                    "scale": {k: max(float(v), 0.01) for k, v in zip("xyz", g.box_size)},
                    "color": {"r": r, "g": gr, "b": b, "a": 0.4}})
        top = (g.box_center[0], g.box_center[1] - g.box_size[1] / 2 - 0.05, g.box_center[2])
        text = f"{oid} {label}".strip() + f" {g.position[2]:.2f} m ({g.valid_pixels} px)"
        out.append({"ns": MARKER_NS[1], "id": int(oid), "type": MARKER_TEXT, "action": MARKER_ADD,
                    "pose": _pose(top), "scale": {"z": 0.05}, "color": {"r": r, "g": gr, "b": b, "a": 1.0},
                    "text": text})
    return out


#: sensor_msgs/PointField datatypes
POINTFIELD_TYPES = {"<f4": 7, "<u4": 6}


def point_cloud(points: np.ndarray) -> dict:
    """sensor_msgs/PointCloud2 (unorganised, little endian) of a structured array (``sam2_ros.depth.POINT_DTYPE``)."""
    dt = points.dtype
    return {
        "height": 1, "width": int(len(points)), "is_bigendian": False, "is_dense": True,
        "point_step": dt.itemsize, "row_step": dt.itemsize * len(points),
        "fields": [{"name": name, "offset": dt.fields[name][1], "datatype": POINTFIELD_TYPES[dt.fields[name][0].str],
                    "count": 1} for name in dt.names],
        "data": points.tobytes(),
    }
