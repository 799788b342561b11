"""The node as part of a robot's perception stack (issue 20), in its own process, on bedroom.mp4.

One node with every robot input enabled: detector boxes published 5 frames late start objects
on their own frame (the same masks as the tracker core given the boxes on time); repeated
detections keep the ids; clicks on `image_mouse_left` start objects; `detections` equals
`objects` on every frame; with a synthetic registered depth (a plane at 2.0 m with a region at
1.0 m, 16UC1 and 32FC1) and a camera_info, each object's 3D position is the back-projected robust
median depth over its published mask; the label image holds object ids and `label_info` maps
them; every bad input is refused and counted in /diagnostics while the node stays alive.
A second node on the "hard" export (objects never visible) shows a lost object re-seeded by a
later detection under the re-seed policy, and a detection held for a frame not received yet.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs")

from geometry_msgs.msg import Point  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_support import RELIABLE, Client, NodeProcess, image_msg, mask_iou, mask_of, set_stamp, stamp_ns, video_frames  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from vision_msgs.msg import Detection2D, Detection2DArray, Detection3DArray, LabelInfo, ObjectHypothesisWithPose  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from sam2_ros.backends import load_backend  # noqa: E402
from sam2_ros.tracker import Tracker  # noqa: E402
from sam2_ros_interfaces.srv import ListObjects  # noqa: E402

S = 1_000_000_000
WH = (320, 180)
FX, FY, CX, CY = 250.0, 260.0, 160.0, 90.0
REGION = (slice(40, 120), slice(60, 200))  # rows, columns of the 1.0 m region
DEPTH_FRAME = "camera_depth_optical_frame"
BOX_A, BOX_B = (20.0, 20.0, 120.0, 100.0), (160.0, 100.0, 300.0, 170.0)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp(k: int) -> int:
    return (k + 1) * S + 100_000_000


def scene(plane: float = 2.0, region: float | None = 1.0) -> np.ndarray:
    depth = np.full((WH[1], WH[0]), plane, np.float32)
    if region is not None:
        depth[REGION] = region
    return depth


def depth_msg(depth_m: np.ndarray, stamp_ns_: int, encoding: str) -> Image:
    if encoding == "16UC1":
        arr = np.where(np.isfinite(depth_m), np.round(depth_m * 1000), 0).astype("<u2")
    elif encoding == "32FC1":
        arr = depth_m.astype("<f4")
    else:  # a wrong encoding: the bytes of mono8
        arr = np.zeros(depth_m.shape, np.uint8)
    h, w = arr.shape
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * arr.itemsize, data=arr.tobytes())
    set_stamp(msg.header.stamp, stamp_ns_)
    msg.header.frame_id = DEPTH_FRAME
    return msg


def camera_info(k=(FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0), wh=WH) -> CameraInfo:
    msg = CameraInfo(width=wh[0], height=wh[1], k=list(k))
    msg.header.frame_id = DEPTH_FRAME
    return msg


def detections(stamp_ns_: int, boxes, classes=(), track_ids=(), scores=()) -> Detection2DArray:
    msg = Detection2DArray()
    set_stamp(msg.header.stamp, stamp_ns_)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in box)  # float64 fields take floats only (ints arrive as garbage)
        d = Detection2D()
        d.bbox.center.position.x, d.bbox.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
        d.bbox.size_x, d.bbox.size_y = x1 - x0, y1 - y0
        d.id = track_ids[i] if track_ids else ""
        h = ObjectHypothesisWithPose()
        h.hypothesis.class_id = classes[i] if classes else "thing"
        h.hypothesis.score = scores[i] if scores else 0.9
        d.results = [h]
        msg.detections.append(d)
    return msg


def expected_position(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What the node must report, computed here from the published mask: the component-wise median
    of the back-projected mask pixels whose depth is within 3 x 1.4826 x MAD (at least 2 cm) of the
    median depth."""
    v, u = np.nonzero(mask & np.isfinite(depth))
    z = depth[v, u].astype(np.float64)
    med = np.median(z)
    keep = np.abs(z - med) <= max(3 * 1.4826 * np.median(np.abs(z - med)), 0.02)
    u, v, z = u[keep], v[keep], z[keep]
    return np.median(np.stack([(u - CX) * z / FX, (v - CY) * z / FY, z], 1), axis=0)


class RobotClient(Client):
    """The test client plus the robot topics: detector, clicks, depth in; vision_msgs out."""

    def __init__(self, name: str):
        super().__init__(name)
        n = self.node
        self.detections, self.detections_3d, self.markers, self.label_info, self.points = [], [], [], [], []
        self._det_sub = n.create_subscription(Detection2DArray, "detections", self._on(self.detections), RELIABLE)
        n.create_subscription(Detection3DArray, "detections_3d", self._on(self.detections_3d), RELIABLE)
        n.create_subscription(MarkerArray, "markers", self._on(self.markers), RELIABLE)
        n.create_subscription(PointCloud2, "object_points", self._on(self.points), RELIABLE)
        self.prompt_pub = n.create_publisher(Detection2DArray, "prompt_detections", RELIABLE)
        self.click_pub = n.create_publisher(Point, "image_mouse_left", RELIABLE)
        self.depth_pub = n.create_publisher(Image, "depth", RELIABLE)
        self.info_pub = n.create_publisher(CameraInfo, "camera_info", RELIABLE)

    def subscribe_label_info(self):
        self.node.create_subscription(LabelInfo, "label_info", self._on(self.label_info), LATCHED)

    def wait_for_inputs(self, pubs, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while any(p.get_subscription_count() == 0 for p in pubs) or self._det_sub.get_publisher_count() == 0:
            assert time.monotonic() < deadline, "the node never subscribed to the robot inputs"
            time.sleep(0.05)

    def diag(self) -> dict:
        for arr in reversed(self.diagnostics):
            for st in arr.status:
                if st.name == "sam2_tracker: tracker":
                    return {kv.key: kv.value for kv in st.values}
        return {}

    def wait_count(self, key: str, value: int, timeout: float = 30.0):
        try:
            self.wait_for(lambda: int(self.diag().get(key, "0")) >= value, timeout, f"{key} >= {value}")
        except AssertionError as e:
            raise AssertionError(f"{e}; diagnostics: {self.diag()}") from None
        assert int(self.diag()[key]) == value, f"{key} = {self.diag()[key]}, expected {value}"

    def by_stamp(self, sink: list, s: int, timeout: float = 30.0):
        found = []

        def have():
            found[:] = [m for m in sink if stamp_ns(m.header.stamp) == s]
            return bool(found)

        self.wait_for(have, timeout, f"a message stamped {s}")
        return found[-1]


def params(engine_dir, **extra) -> dict:
    base = {"engine_dir": engine_dir, "input_qos.reliability": "reliable", "input_qos.depth": 5,
            "publish.overlay": False, "diagnostics_period": 0.2, "history_frames": 8,
            "detection_prompts.enabled": True}
    base.update(extra)
    return base


def test_detector_clicks_depth_and_vision_msgs(tiny_export_256, shared_data, tmp_path):
    frames = video_frames(shared_data, 13, WH)
    node = NodeProcess(tmp_path / "node.log", params(
        tiny_export_256, max_objects=4, **{"depth.enabled": True, "depth.tolerance": 0.0, "depth.publish_points": True,
                                           "detection_prompts.match_class": True, "detection_prompts.max_boxes": 50,
                                           "click_prompts.enabled": True, "click_prompts.min_interval": 0.5}))
    client = RobotClient("robot_client")
    depths: dict[int, np.ndarray] = {}
    try:
        client.wait_for_subscriber()
        client.wait_for_inputs([client.prompt_pub, client.click_pub, client.depth_pub, client.info_pub])
        client.wait_for(lambda: bool(client.diag()), 30, "diagnostics")

        # ------------------------------------------------ before the first frame: a click is refused
        client.click_pub.publish(Point(x=10.0, y=10.0))
        client.wait_count("clicks_refused_before_first_frame", 1)

        def step(k, depth=None, encoding="16UC1", info=True, depth_stamp=None):
            if info:
                client.info_pub.publish(camera_info())
            if depth is not None:
                depths[stamp(k)] = depth
                client.depth_pub.publish(depth_msg(depth, depth_stamp or stamp(k), encoding))
            time.sleep(0.05)
            return client.publish_and_wait(frames[k], stamp(k))

        # frame 0: depth but no camera_info yet -> no 3D, counted
        step(0, scene(), info=False)
        client.wait_count("depth_refused_no_camera_info", 1)
        for k in range(1, 6):
            step(k, scene(), "16UC1" if k % 2 else "32FC1")

        # ------------------------------------------------ detections made on frame 0, 5 frames late
        client.prompt_pub.publish(detections(stamp(0), [BOX_A, BOX_B], ["bed", "lamp"]))
        client.wait_count("detections_objects_created", 2)
        msg6 = step(6, scene())
        assert [(o.id, o.label) for o in msg6.objects] == [(1, "bed"), (2, "lamp")]
        listed = client.call(ListObjects, "list_objects", ListObjects.Request())
        assert [(o.id, o.first_prompt_frame_index, o.num_prompts) for o in listed.objects] == [(1, 0, 1), (2, 0, 1)]
        assert all(stamp_ns(o.first_prompt_stamp) == stamp(0) for o in listed.objects)
        ref = Tracker(load_backend(tiny_export_256), max_objects=4, history_frames=8)
        for k in range(7):
            res = ref.step(frames[k])
            if k == 0:
                ref.add_prompt(1, box=list(BOX_A))
                res = ref.add_prompt(2, box=list(BOX_B))
        for i, obj in enumerate(msg6.objects):  # as if the detector had answered on time
            assert mask_iou(mask_of(obj), res.masks[i]) >= 0.999

        # ------------------------------------------------ the same objects detected again: same ids
        det6 = client.by_stamp(client.detections, stamp(6))
        again = [(d.bbox.center.position.x - d.bbox.size_x / 2, d.bbox.center.position.y - d.bbox.size_y / 2,
                  d.bbox.center.position.x + d.bbox.size_x / 2, d.bbox.center.position.y + d.bbox.size_y / 2)
                 for d in det6.detections]
        step(7, scene(plane=2.0, region=None))  # a known plane: every object at 2.0 m
        client.prompt_pub.publish(detections(stamp(6), again, ["bed", "lamp"]))
        client.wait_count("detections_received", 2)
        msg8 = step(8, scene())
        assert [o.id for o in msg8.objects] == [1, 2]
        assert int(client.diag()["detections_objects_created"]) == 2

        # ------------------------------------------------ clicks: on a tracked object, on nothing
        label8 = client.by_stamp(client.labels, stamp(8))
        labels = np.frombuffer(label8.data, np.uint8).reshape(WH[1], WH[0])
        assert set(np.unique(labels)) <= {0, 1, 2}
        ys, xs = np.nonzero(labels == 1)
        client.click_pub.publish(Point(x=float(xs[0]) + 0.5, y=float(ys[0]) + 0.5))
        client.wait_count("clicks_on_tracked_ignored", 1)
        client.click_pub.publish(Point(x=5.0, y=5.0))  # right after: rate limited
        client.wait_count("clicks_refused_rate_limited", 1)
        time.sleep(0.6)
        client.click_pub.publish(Point(x=400.0, y=10.0))  # outside the 320x180 image
        client.wait_count("clicks_refused_outside_image", 1)
        time.sleep(0.6)
        ys, xs = np.nonzero(labels == 0)
        assert len(xs), "no background pixel on frame 8"
        click = (float(xs[len(xs) // 2]), float(ys[len(ys) // 2]))
        client.click_pub.publish(Point(x=click[0], y=click[1]))
        client.wait_count("clicks_created", 1)
        msg9 = step(9, scene(), "32FC1")
        assert [o.id for o in msg9.objects] == [1, 2, 3]
        listed = client.call(ListObjects, "list_objects", ListObjects.Request())
        assert listed.objects[2].first_prompt_frame_index == 8

        # ------------------------------------------------ bad detections: refused, counted, nothing damaged
        nan = float("nan")
        client.prompt_pub.publish(detections(stamp(9), [(nan, 1, 5, 5), (50, 50, 40, 60), (400, 10, 500, 50)]))
        client.wait_count("detections_refused_bad_box", 3)
        client.prompt_pub.publish(Detection2DArray(header=client.objects[-1].header))  # empty
        client.wait_count("detections_refused_empty", 1)
        client.prompt_pub.publish(detections(stamp(9), [(1, 1, 9, 9)] * 2000))  # thousands of boxes
        client.wait_count("detections_refused_too_many_boxes", 2000)
        client.prompt_pub.publish(detections(stamp(8) + 7, [BOX_A]))  # an image never received
        client.wait_count("detections_refused_unknown_stamp", 1)
        client.prompt_pub.publish(detections(stamp(0), [BOX_A]))  # older than the history of 8 frames
        client.wait_count("detections_refused_too_old", 1)
        client.prompt_pub.publish(detections(stamp(9), [(200, 5, 240, 30)], ["cup"], scores=[0.1]))  # low score
        client.wait_count("detections_refused_low_score", 1)

        # ------------------------------------------------ bad depth and camera_info
        client.depth_pub.publish(depth_msg(scene(), stamp(10), "mono8"))
        client.wait_count("depth_refused_bad_image", 1)
        small = scene()[::2, ::2]
        step(10, small)  # the wrong size for its frame
        client.wait_count("depth_refused_size", 1)
        step(11, np.full((WH[1], WH[0]), np.nan, np.float32), "32FC1")  # all invalid
        client.wait_count("depth_refused_all_invalid", 1)
        client.info_pub.publish(camera_info(k=[0.0] * 9))
        client.wait_count("camera_info_refused", 1)
        client.depth_pub.publish(depth_msg(scene(), stamp(11) + 5, "16UC1"))  # no colour frame has this stamp
        client.info_pub.publish(camera_info(wh=(640, 360)))  # disagrees with the 320x180 image
        step(12, scene(), info=False)
        client.wait_count("depth_refused_size", 2)
        client.wait_for(lambda: int(client.diag().get("depth_unmatched", "0")) >= 1, 30, "depth_unmatched")
        node.assert_alive()

        # ------------------------------------------------ label info: latched, maps ids to labels
        client.subscribe_label_info()
        client.wait_for(lambda: bool(client.label_info), 30, "label_info")
        assert [(c.class_id, c.class_name) for c in client.label_info[-1].class_map] == [
            (1, "bed"), (2, "lamp"), (3, "object")]
        diag = client.diag()
        assert int(diag["detections_objects_created"]) == 2 and int(diag["clicks_created"]) == 1
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()
    assert "Traceback" not in node.log(), node.log()

    # ------------------------------------------------ every frame: detections == objects, 3D from depth
    labels_by_stamp = {stamp_ns(m.header.stamp): m for m in client.labels}
    checked_3d = 0
    for msg in client.objects:
        s = stamp_ns(msg.header.stamp)
        det = [d for d in client.detections if stamp_ns(d.header.stamp) == s]
        assert len(det) == 1 and det[0].header == msg.header
        present = [o for o in msg.objects if o.visible and math.isfinite(o.x0)]
        assert [d.id for d in det[0].detections] == [str(o.id) for o in present]
        for d, o in zip(det[0].detections, present):
            assert d.header == msg.header
            assert (d.bbox.center.position.x, d.bbox.center.position.y) == ((o.x0 + o.x1) / 2, (o.y0 + o.y1) / 2)
            assert (d.bbox.size_x, d.bbox.size_y) == (o.x1 - o.x0, o.y1 - o.y0)
            assert d.results[0].hypothesis.class_id == (o.label or "object")
            assert d.results[0].hypothesis.score == pytest.approx(min(max(o.iou, 0), 1), abs=1e-6)
        label = labels_by_stamp[s]
        values = np.frombuffer(label.data, np.uint8).reshape(WH[1], WH[0])
        for o in msg.objects:  # label value = object id, inside its mask
            assert np.all(mask_of(o)[values == o.id])
        d3 = [m for m in client.detections_3d if stamp_ns(m.header.stamp) == s]
        depth = depths.get(s)
        if depth is None or depth.shape != (WH[1], WH[0]) or not np.isfinite(depth).any() or s in (stamp(0), stamp(12)):
            assert not d3, f"3D output for frame {s} without usable depth"
            continue
        assert len(d3) == 1 and d3[0].header.frame_id == DEPTH_FRAME
        assert [d.id for d in d3[0].detections] == [str(o.id) for o in present]
        for d, o in zip(d3[0].detections, present):
            want = expected_position(depth, mask_of(o))
            p = d.results[0].pose.pose.position
            np.testing.assert_allclose([p.x, p.y, p.z], want, atol=1e-3, err_msg=f"object {o.id} at {s}")
            if s == stamp(7):
                assert p.z == pytest.approx(2.0, abs=1e-3)  # the known plane
            checked_3d += 1
        cloud = [m for m in client.points if stamp_ns(m.header.stamp) == s]
        assert len(cloud) == 1 and cloud[0].header.frame_id == DEPTH_FRAME
        pts = np.frombuffer(bytes(cloud[0].data), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<u4")])
        assert set(pts["id"]) == {o.id for o in present}
        for o in present:  # each object's points lie on its mask, at the depth there
            mine = pts[pts["id"] == o.id]
            u = np.round(mine["x"] * FX / mine["z"] + CX).astype(int)
            v = np.round(mine["y"] * FY / mine["z"] + CY).astype(int)
            assert np.all(mask_of(o)[v, u]) and np.allclose(mine["z"], depth[v, u], atol=1e-3)
        mk = [m for m in client.markers if m.markers and stamp_ns(m.markers[0].header.stamp) == s]
        assert len(mk) == 1 and mk[0].markers[0].action == Marker.DELETEALL
        assert sorted((m.ns, m.id) for m in mk[0].markers[1:]) == sorted(
            (ns, o.id) for o in present for ns in ("sam2_boxes", "sam2_labels"))
    assert checked_3d >= 9, checked_3d


def test_a_lost_object_is_reseeded_by_a_later_detection(hard_export_256, shared_data, tmp_path):
    """On the hard export objects are never visible: every object is lost from its first frame."""
    frames = video_frames(shared_data, 7, WH)
    node = NodeProcess(tmp_path / "node.log", params(
        hard_export_256, max_objects=2, **{"detection_prompts.reseed": "lost",
                                           "detection_prompts.reseed_lost_frames": 3}))
    client = RobotClient("reseed_client")
    try:
        client.wait_for_subscriber()
        client.wait_for_inputs([client.prompt_pub])
        client.wait_for(lambda: bool(client.diag()), 30, "diagnostics")
        # a detection that overtakes its image: held until frame 0 is processed, applied before it goes out
        client.prompt_pub.publish(detections(stamp(0), [BOX_A], ["bed"], ["trk-7"]))
        client.wait_count("detections_received", 1)
        msg0 = client.publish_and_wait(frames[0], stamp(0))
        assert [(o.id, o.label, o.visible) for o in msg0.objects] == [(1, "bed", False)]
        client.wait_count("detections_objects_created", 1)

        def prompts():
            return [(o.id, o.num_prompts) for o in client.call(ListObjects, "list_objects", ListObjects.Request()).objects]

        client.publish_and_wait(frames[1], stamp(1))
        client.prompt_pub.publish(detections(stamp(1), [(22, 20, 120, 102)], ["bed"]))  # lost for 2 frames < 3
        client.wait_count("detections_received", 2)
        for k in range(2, 5):
            client.publish_and_wait(frames[k], stamp(k))
        assert prompts() == [(1, 1)]  # matched (its prompting box), not re-seeded, no new object
        client.prompt_pub.publish(detections(stamp(3), [(24, 20, 122, 100)], ["bed"]))  # lost for 4 frames
        client.wait_count("detections_objects_reseeded", 1)
        assert prompts() == [(1, 2)]
        # the detector's track id keys the association, wherever the box is
        client.prompt_pub.publish(detections(stamp(4), [(200, 100, 300, 170)], ["bed"], ["trk-7"]))
        client.wait_count("detections_objects_reseeded", 2)
        assert prompts() == [(1, 3)]
        assert int(client.diag()["detections_objects_created"]) == 1
        msg5 = client.publish_and_wait(frames[5], stamp(5))
        assert [o.id for o in msg5.objects] == [1]
        det5 = client.by_stamp(client.detections, stamp(5))
        assert det5.detections == []  # not visible: no Detection2D
        node.assert_alive()
    finally:
        client.close()
        code = node.stop()
    assert code == 0, node.log()
    assert "Traceback" not in node.log(), node.log()
