"""One camera of the ``sam2_tracker`` node: its topics, services, robot inputs and diagnostics.

A :class:`CameraChannel` wires one :class:`~sam2_ros.ros.worker.CameraWorker` (the camera's
tracker on the node's scheduler thread) to ROS: relative topics under the camera's prefix
(``image`` in, ``objects`` ... out; with ``cameras: [front]``: ``front/image``, ``front/objects``),
services under ``~/`` + prefix (``~/add_prompt``; ``~/front/add_prompt``). The single-camera node
has one channel with an empty prefix. Nothing here reaches another camera's state.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from sam2_ros import detections as dets
from sam2_ros.depth import DepthError, DepthSettings, StampPairer, object_point_cloud, objects_3d
from sam2_ros.errors import TrackerInputError
from sam2_ros.limits import check_label, check_points
from sam2_ros.outputs import MAX_LABEL_ID
from sam2_ros.ros import convert as rc
from sam2_ros.ros import vision as rv
from sam2_ros.ros.worker import LATEST, CameraWorker, CommandError, Frame, Scheduler, fmt_stamp
from sam2_ros.tracker import FrameResult, Tracker
from sam2_ros_interfaces.msg import ObjectState, TrackedObjects
from sam2_ros_interfaces.srv import AddPrompt, ListObjects, RemoveObject, Reset

if TYPE_CHECKING:
    from sam2_ros.ros.node import Sam2TrackerNode


class CameraChannel:
    """One camera's ROS side; made at configure (publishers, services), subscribed at activate.

    Args:
        node: the node (parameters, logger, service group, state).
        name: the camera's name (its stream in the node's MultiTracker).
        prefix: its topic and service prefix: the name, or "" for the single-camera node.
        scheduler: the node's tracking thread; tracker: this camera's tracker on it.
    """

    def __init__(self, node: Sam2TrackerNode, name: str, prefix: str, scheduler: Scheduler, tracker: Tracker):
        self.node = node
        self.name, self.prefix = name, prefix
        self._tag = f"camera {name}: " if prefix else ""  # log messages name the camera
        self.max_objects = tracker.max_objects
        decode = rc.compressed_msg_to_rgb if self._param("image_transport") == "compressed" else rc.image_msg_to_rgb
        self.worker = CameraWorker(scheduler, name, tracker, decode, self._publish_result, self._report,
                                   restart_after_ns=int(round(self._param("stream_restart_threshold") * 1e9)))
        self._image_group = MutuallyExclusiveCallbackGroup()
        self.image_sub = None
        self._inputs: list = []  # subscriptions of the robot inputs (detections, clicks, depth, camera_info)
        self._counts: collections.Counter = collections.Counter()  # refused / applied robot inputs
        self._counts_lock = threading.Lock()
        self._last_refused = self._last_rejected = self._last_resets = 0
        self._label_info_key = None
        self._last_click = -1e9
        self._intrinsics = None
        self._associator: dets.DetectionAssociator | None = None
        self._pairer: StampPairer | None = None
        self._depth_settings = DepthSettings()
        # results go out through lifecycle publishers: nothing is published unless the node is active
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = node.create_lifecycle_publisher
        self.outputs = {
            "objects": pub(TrackedObjects, self.topic("objects"), 10),
            "detections": pub(Detection2DArray, self.topic("detections"), 10),
            "label_image": pub(Image, self.topic("label_image"), 10),
            "label_info": pub(LabelInfo, self.topic("label_info"), latched),
            "overlay": pub(Image, self.topic("overlay"), 10),
        }
        if self._param("detection_prompts.enabled"):
            self._associator = dets.DetectionAssociator(dets.DetectionPolicy(
                iou_threshold=self._param("detection_prompts.iou_threshold"),
                min_score=self._param("detection_prompts.min_score"),
                classes=tuple(c.strip() for c in self._param("detection_prompts.classes").split(",") if c.strip()),
                match_class=self._param("detection_prompts.match_class"),
                reseed=self._param("detection_prompts.reseed"),
                reseed_lost_frames=self._param("detection_prompts.reseed_lost_frames"),
                reseed_every=self._param("detection_prompts.reseed_every"),
                remove_after=self._param("detection_prompts.remove_after"),
                max_boxes=self._param("detection_prompts.max_boxes"),
                use_track_ids=self._param("detection_prompts.use_track_ids"),
            ), history=max(64, tracker.history_frames))
        if self._param("depth.enabled"):
            self._pairer = StampPairer(int(round(self._param("depth.tolerance") * 1e9)))
            self._depth_settings = DepthSettings(
                outlier_k=self._param("depth.outlier_k"), min_band=self._param("depth.outlier_min_band"),
                box_percentile=self._param("depth.box_percentile"),
                min_valid_pixels=self._param("depth.min_valid_pixels"))
            self.outputs["detections_3d"] = pub(Detection3DArray, self.topic("detections_3d"), 10)
            self.outputs["markers"] = pub(MarkerArray, self.topic("markers"), 10)
            if self._param("depth.publish_points"):
                self.outputs["object_points"] = pub(PointCloud2, self.topic("object_points"), 10)
        g = node.service_group
        self.services = [
            node.create_service(AddPrompt, self.service("add_prompt"), self._srv_add_prompt, callback_group=g),
            node.create_service(RemoveObject, self.service("remove_object"), self._srv_remove_object,
                                callback_group=g),
            node.create_service(Reset, self.service("reset"), self._srv_reset, callback_group=g),
            node.create_service(ListObjects, self.service("list_objects"), self._srv_list_objects, callback_group=g),
        ]

    def _param(self, name: str):
        return self.node.get_parameter(name).value

    def topic(self, base: str) -> str:
        """The camera's relative topic name ``base`` (``front/objects``; ``objects`` without a prefix)."""
        return f"{self.prefix}/{base}" if self.prefix else base

    def service(self, base: str) -> str:
        return f"~/{self.topic(base)}"

    # ------------------------------------------------------------ lifecycle
    def subscribe(self, reliability) -> None:
        """At activate: the camera's image and the robot inputs that are enabled."""
        node, g = self.node, self._image_group
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._param("input_qos.depth"), reliability=reliability)
        image = self.topic("image")
        if self._param("image_transport") == "compressed":
            # as image_transport does: the remapped base topic + "/compressed" (-r image:=/cam moves both)
            self.image_sub = node.create_subscription(
                CompressedImage, node.resolve_topic_name(image) + "/compressed", self._on_image, qos, callback_group=g)
        else:
            self.image_sub = node.create_subscription(Image, image, self._on_image, qos, callback_group=g)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        if self._associator is not None:
            self._inputs.append(node.create_subscription(
                Detection2DArray, self.topic("prompt_detections"), self._on_detections, reliable, callback_group=g))
        if self._param("click_prompts.enabled"):
            # rqt_image_view publishes clicks on <its image topic>_mouse_left: follow a remapped `image`
            self._inputs.append(node.create_subscription(
                Point, node.resolve_topic_name(image) + "_mouse_left", self._on_click, reliable, callback_group=g))
        if self._pairer is not None:
            sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=reliability)
            depth_group = MutuallyExclusiveCallbackGroup()
            self._inputs.append(node.create_subscription(Image, self.topic("depth"), self._on_depth, sensor,
                                                         callback_group=depth_group))
            self._inputs.append(node.create_subscription(CameraInfo, self.topic("camera_info"), self._on_camera_info,
                                                         sensor, callback_group=depth_group))

    def unsubscribe(self) -> None:
        for sub in ([self.image_sub] if self.image_sub is not None else []) + self._inputs:
            self.node.destroy_subscription(sub)
        self.image_sub, self._inputs = None, []
        if self._pairer is not None:
            self._pairer.clear()

    def destroy(self) -> None:
        """At cleanup: services and publishers."""
        for srv in self.services:
            self.node.destroy_service(srv)
        for pub in self.outputs.values():
            self.node.destroy_lifecycle_publisher(pub)
        self.services, self.outputs = [], {}

    # ---------------------------------------------------------------- input
    def _on_image(self, msg) -> None:
        self.worker.submit(rc.stamp_to_ns(msg.header.stamp), msg)

    def _report(self, kind: str, message: str) -> None:
        if kind == "restart":  # the scheduler thread, before the new stream's first frame
            self.node.get_logger().warning(self._tag + message)
            if self._associator is not None:
                self._associator.reset()
            if self._pairer is not None:
                self._pairer.clear()
            return
        self.node.get_logger().error(self._tag + message, throttle_duration_sec=5.0)

    def _warn(self, message: str, **kwargs) -> None:
        self.node.get_logger().warning(self._tag + message, throttle_duration_sec=2.0, **kwargs)

    # --------------------------------------------------------------- output
    def labels(self) -> dict[int, str]:
        _, _, infos = self.worker.snapshot()
        return {oid: info.label for oid, info in infos.items()}

    def _publish_result(self, frame: Frame, rgb: np.ndarray, result: FrameResult) -> None:
        """Runs on the scheduler thread after each processed frame of this camera."""
        header = frame.payload.header
        pubs = self.outputs
        if not pubs:
            return
        labels = self.labels()
        if self._param("publish.objects"):
            pubs["objects"].publish(rc.tracked_objects_msg(header, result, labels, self._param("publish.object_masks")))
        if self._param("publish.detections"):
            pubs["detections"].publish(rv.detections_msg(header, result, labels))
        if self._param("publish.label_image"):
            key = tuple((oid, labels.get(oid, "")) for oid in result.object_ids)
            if key != self._label_info_key:  # latched: only when the objects or their labels change
                self._label_info_key = key
                pubs["label_info"].publish(rv.label_info_msg(header, result.object_ids, labels,
                                                             self._param("mask_threshold")))
            label, enc = rc.label_image(result, self.max_objects)
            pubs["label_image"].publish(rc.array_to_image_msg(label, enc, header))
        if self._param("publish.overlay") and pubs["overlay"].get_subscription_count() > 0:
            pubs["overlay"].publish(rc.array_to_image_msg(rc.overlay_image(rgb, result, labels), "rgb8", header))
        if self._associator is not None:
            self._associator.retain(result.object_ids)
            self._associator.observe(result.frame_index, result.object_ids, result.boxes, result.visible)
        if self._pairer is not None:
            colour = (header, result, labels)
            depth = self._pairer.add_colour(rc.stamp_to_ns(header.stamp), colour)
            if depth is not None:
                self._publish_3d(colour, depth)

    # ------------------------------------------------------------- robot inputs
    def _count(self, key: str, n: int = 1, warn: str | None = None) -> None:
        """Count an input event; ``warn``: also log it (throttled)."""
        with self._counts_lock:
            self._counts[key] += n
        if warn:
            self._warn(warn)

    def _on_detections(self, msg: Detection2DArray) -> None:
        assoc = self._associator
        if assoc is None:
            return
        self._count("detections_received")
        stamp = rc.stamp_to_ns(msg.header.stamp)
        if stamp == 0:
            self._count("detections_refused_unknown_stamp", warn="detections refused: a zero stamp names no image "
                        "(stamp the detections with the header of the image the detector saw)")
            return
        max_boxes = self._param("detection_prompts.max_boxes")
        if len(msg.detections) > max_boxes:  # before converting a single box
            self._count("detections_refused_too_many_boxes", len(msg.detections),
                        warn=f"detections refused: {len(msg.detections)} boxes in one message, more than "
                             f"detection_prompts.max_boxes={max_boxes}")
            return
        boxes = rv.detections_from_msg(msg)
        bad = next((why for b in boxes if (why := check_label(b.class_id))), None)
        if bad:
            self._count("detections_refused_bad_label", warn=f"detections refused: class id: {bad}")
            return

        def apply(w: CameraWorker, frame_stamp: int):
            return _apply_detections(w, assoc, frame_stamp, boxes, self.max_objects)

        def done(plan, error):
            if error is not None:
                reason = ("unknown_stamp" if "no frame with stamp" in error
                          else "frame_dropped" if "dropped" in error else "failed")
                self._count(f"detections_refused_{reason}", warn=f"detections of {fmt_stamp(stamp)} refused: {error}")
                return
            self._count_plan(plan, stamp)

        try:
            self.worker.post(apply, stamp, done, max_held=self._param("detection_prompts.max_waiting"))
        except CommandError as e:
            text = str(e)
            reason = ("too_old" if "older than the tracker's history" in text
                      else "queue_full" if "already wait" in text
                      else "inactive" if "not running" in text else "unknown_stamp")
            self._count(f"detections_refused_{reason}", warn=f"detections of {fmt_stamp(stamp)} refused: {text}")

    def _count_plan(self, plan: dets.Plan, stamp: int) -> None:
        for key, n in (("objects_created", len(plan.created)), ("objects_reseeded", len(plan.reseeded)),
                       ("objects_removed", len(plan.removed))):
            if n:
                self._count(f"detections_{key}", n)
        for reason, n in plan.refused.items():
            self._count(f"detections_refused_{reason}", n)
        if plan.messages:
            self._warn(f"detections of {fmt_stamp(stamp)}: " + "; ".join(plan.messages))

    def _on_click(self, msg: Point) -> None:
        self._count("clicks_received")
        now = time.monotonic()
        if now - self._last_click < self._param("click_prompts.min_interval"):
            self._count("clicks_refused_rate_limited", warn="click dropped: closer than click_prompts.min_interval "
                                                            "to the previous one")
            return
        self._last_click = now
        x, y = float(msg.x), float(msg.y)
        on_tracked = self._param("click_prompts.on_tracked")
        log = self.node.get_logger()

        def apply(w: CameraWorker, frame_stamp: int):
            return _apply_click(w, frame_stamp, x, y, on_tracked)

        def done(outcome, error):
            if error is not None:
                reason = ("before_first_frame" if "no frame has been processed" in error
                          else "outside_image" if "outside" in error or "not finite" in error
                          else "max_objects" if "max_objects" in error else "failed")
                self._count(f"clicks_refused_{reason}", warn=f"click ({x:.1f}, {y:.1f}) refused: {error}")
            elif outcome[0] == "ignored":
                self._count("clicks_on_tracked_ignored")
                log.info(f"{self._tag}click ({x:.1f}, {y:.1f}) on tracked object {outcome[1]}: ignored "
                         "(click_prompts.on_tracked = ignore)", throttle_duration_sec=2.0)
            else:
                self._count(f"clicks_{outcome[0]}")
                log.info(f"{self._tag}click ({x:.1f}, {y:.1f}): object {outcome[1]} {outcome[0]}")

        try:
            self.worker.post(apply, LATEST, done)
        except CommandError as e:
            self._count("clicks_refused_inactive", warn=f"click refused: {e}")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._intrinsics = rv.intrinsics_from_msg(msg)
        except DepthError as e:
            self._count("camera_info_refused", warn=f"camera_info refused: {e}")

    def _on_depth(self, msg: Image) -> None:
        pairer = self._pairer
        if pairer is None:
            return
        self._count("depth_received")
        try:
            depth_m = rv.depth_msg_to_metres(msg)
        except DepthError as e:
            self._count("depth_refused_bad_image", warn=f"depth image refused: {e}")
            return
        item = (msg.header, depth_m)
        colour = pairer.add_depth(rc.stamp_to_ns(msg.header.stamp), item)
        if colour is not None:
            self._publish_3d(colour, item)

    def _publish_3d(self, colour, depth) -> None:
        """Each visible object's 3D position from the depth image paired with its frame."""
        header, result, labels = colour
        depth_header, depth_m = depth
        k = self._intrinsics
        if k is None:
            self._count("depth_refused_no_camera_info", warn="no 3D output: no valid camera_info received yet")
            return
        if not np.isfinite(depth_m).any():
            self._count("depth_refused_all_invalid", warn="no 3D output: every pixel of the depth image is invalid")
            return
        try:
            objects, without = objects_3d(result, labels, depth_m, k, self._depth_settings)
        except DepthError as e:
            self._count("depth_refused_size", warn=f"no 3D output: {e}")
            return
        if without:
            self._count("depth_objects_without_valid_depth", without)
        out = Header(stamp=header.stamp, frame_id=depth_header.frame_id or header.frame_id)
        pubs = self.outputs
        if "detections_3d" in pubs:
            pubs["detections_3d"].publish(rv.detections_3d_msg(out, objects))
            pubs["markers"].publish(rv.markers_msg(out, objects))
        if "object_points" in pubs:
            points = object_point_cloud(result, depth_m, k, self._depth_settings, self._param("depth.points_stride"))
            pubs["object_points"].publish(rv.point_cloud_msg(out, points))

    # ------------------------------------------------------------ diagnostics
    def diagnostic_status(self, common: dict[str, str]) -> DiagnosticStatus:
        """This camera's /diagnostics status; ``common``: the node's values (state, backend, ...)."""
        state = common["state"]
        s = self.worker.window_stats()
        node_name = self.node.get_name()
        status = DiagnosticStatus(name=f"{node_name}: {self.name}" if self.prefix else f"{node_name}: tracker",
                                  hardware_id=common["backend"])
        new_rejects = s.rejected - self._last_rejected
        new_resets = s.stream_resets - self._last_resets
        self._last_rejected, self._last_resets = s.rejected, s.stream_resets
        if state != "active":
            status.level, status.message = DiagnosticStatus.OK, state
        elif new_resets:
            status.level, status.message = DiagnosticStatus.WARN, f"stream restarted {new_resets}x (stamps jumped back)"
        elif new_rejects:
            status.level, status.message = DiagnosticStatus.WARN, f"{new_rejects} frames rejected: {s.last_error}"
        elif s.processed == 0:
            status.level, status.message = DiagnosticStatus.OK, "waiting for images"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"tracking {s.objects} objects at {s.fps:.1f} FPS"
        values = dict(common)
        if self.prefix:
            values["camera"] = self.name
            values["image_topic"] = self.image_sub.topic_name if self.image_sub is not None else ""
        values.update({
            "processed_fps": f"{s.fps:.2f}",
            "latency_mean_ms": f"{s.latency_mean_ms:.1f}",
            "latency_max_ms": f"{s.latency_max_ms:.1f}",
            "tracker_step_mean_ms": f"{s.step_mean_ms:.1f}",
            "frames_received": str(s.received),
            "frames_processed": str(s.processed),
            "frames_dropped": str(s.dropped),
            "frames_rejected": str(s.rejected),
            "frames_out_of_order": str(s.out_of_order),
            "frames_duplicate_stamp": str(s.duplicate_stamps),
            "stream_resets": str(s.stream_resets),
            "queue_depth": str(s.queue_depth),
            "frames_in_flight": str(s.in_flight),
            "objects": str(s.objects),
            "max_objects": str(self.max_objects),
            "last_error": s.last_error,
        })
        if self._pairer is not None:
            for key, n in self._pairer.counts.items():
                values[key] = str(n)
        with self._counts_lock:
            counts = dict(self._counts)
        refused = sum(n for key, n in counts.items() if "refused" in key)
        values.update({key: str(n) for key, n in sorted(counts.items())})
        if refused > self._last_refused and status.level == DiagnosticStatus.OK and state == "active":
            status.level = DiagnosticStatus.WARN
            status.message = f"{refused - self._last_refused} inputs refused (see the *_refused_* values)"
        self._last_refused = refused
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    # ------------------------------------------------------------- services
    def _call_worker(self, fn, stamp_ns: int = LATEST, needs_frame: bool = True):
        """Run ``fn`` on the camera's tracker; raises CommandError with a message for the caller."""
        if not self.node.waiting_calls.acquire(blocking=False):
            raise CommandError("too many service calls in progress; try again")
        try:
            return self.worker.call(fn, stamp_ns, self._param("service_timeout"), needs_frame)
        finally:
            self.node.waiting_calls.release()

    def _srv_add_prompt(self, req: AddPrompt.Request, resp: AddPrompt.Response) -> AddPrompt.Response:
        resp.success, resp.object_id, resp.frame_index = False, -1, -1
        try:
            prompt = parse_prompt(req)
            oid, frame_stamp, result, header = self._call_worker(
                lambda w, frame_stamp: _apply_prompt(w, frame_stamp, req.object_id, req.label, prompt),
                rc.stamp_to_ns(req.stamp),
            )
        except (CommandError, ValueError) as e:
            resp.message = str(e)
            self.node.get_logger().warning(f"{self._tag}add_prompt (object {req.object_id}) refused: {e}")
            return resp
        i = result.object_ids.index(oid)
        labels = self.labels()
        rc.fill_tracked_object(resp.object, result, i, labels.get(oid, ""), header, with_mask=True)
        resp.success, resp.object_id, resp.frame_index = True, oid, int(result.frame_index)
        resp.stamp = header.stamp
        verb = "added" if prompt.get("is_new") else "prompted"
        resp.message = (f"object {oid} {verb} on frame {result.frame_index} (stamp {fmt_stamp(frame_stamp)}): "
                        f"score {result.scores[i]:.2f}, {int(result.areas[i])} mask pixels")
        if prompt.get("behind"):
            resp.message += (f"; {prompt['behind']} frames behind the latest, tracked up to frame "
                             f"{result.frame_index + prompt['behind']}")
        return resp

    def _srv_remove_object(self, req: RemoveObject.Request, resp: RemoveObject.Response) -> RemoveObject.Response:
        oid = req.object_id

        def remove(w: CameraWorker, frame_stamp):
            w.tracker.remove_object(oid)
            w.note_removed(oid)

        try:
            self._call_worker(remove, needs_frame=False)
        except CommandError as e:
            resp.success, resp.message = False, str(e)
            return resp
        resp.success, resp.message = True, f"object {oid} removed"
        return resp

    def _srv_reset(self, req: Reset.Request, resp: Reset.Response) -> Reset.Response:
        def reset(w: CameraWorker, frame_stamp):
            w.reset_tracker()
            if self._associator is not None:
                self._associator.reset()
            if self._pairer is not None:
                self._pairer.clear()

        try:
            self._call_worker(reset, needs_frame=False)
        except CommandError as e:
            resp.success, resp.message = False, str(e)
            return resp
        resp.success, resp.message = True, "tracker reset: no objects, the next frame is frame 0"
        return resp

    def _srv_list_objects(self, req: ListObjects.Request, resp: ListObjects.Response) -> ListObjects.Response:
        stamp, result, infos = self.worker.snapshot()
        resp.success = True
        resp.frame_index = int(result.frame_index) if result is not None else -1
        if stamp is not None:
            resp.stamp.sec, resp.stamp.nanosec = divmod(stamp, 1_000_000_000)
        objects = []
        if result is not None:
            for i, oid in enumerate(result.object_ids):
                info = infos.get(oid)
                st = ObjectState(id=int(oid), score=float(result.scores[i]), visible=bool(result.scores[i] > 0),
                                 iou=float(result.ious[i]), area=int(result.areas[i]))
                st.x0, st.y0, st.x1, st.y1 = (float(v) for v in result.boxes[i])
                if info is not None:
                    st.label, st.num_prompts = info.label, info.num_prompts
                    st.first_prompt_frame_index = int(info.first_frame_index)
                    first = st.first_prompt_stamp
                    first.sec, first.nanosec = divmod(info.first_stamp_ns, 1_000_000_000)
                objects.append(st)
        resp.objects = objects
        resp.message = f"{len(objects)} objects ({self.node.state_label})"
        return resp


def parse_prompt(req: AddPrompt.Request) -> dict:
    """Check an AddPrompt request's fields and turn them into tracker arguments (ValueError if bad)."""
    oid = int(req.object_id)
    if oid < 0 and oid != AddPrompt.Request.NEW_OBJECT:
        raise ValueError(f"object_id must be >= 0 or NEW_OBJECT ({AddPrompt.Request.NEW_OBJECT}), got {oid}")
    if oid > MAX_LABEL_ID:
        raise ValueError(f"object_id must be <= {MAX_LABEL_ID} (the label image and label_info hold ids as 16-bit "
                         f"values), got {oid}")
    n_pts, n_lab = len(req.points), len(req.labels)
    for why in (check_points(max(n_pts, n_lab)), check_label(req.label)):
        if why:
            raise ValueError(why)
    if n_pts != n_lab:
        raise ValueError(f"points and labels must have the same length, got {n_pts} points and {n_lab} labels")
    points = labels = None
    if n_pts:
        points = np.array([[p.x, p.y] for p in req.points], np.float64)
        labels = np.array(list(req.labels), np.int64)
    box = None
    if len(req.box):
        if len(req.box) != 4:
            raise ValueError(f"box must be empty or [x0, y0, x1, y1], got {len(req.box)} values")
        box = np.array(list(req.box), np.float64)
    mask = rc.mask_msg_to_bool(req.mask)
    if points is None and box is None and mask is None:
        raise ValueError("empty prompt: give points with labels, a box, or a mask")
    return {"points": points, "labels": labels, "box": box, "mask": mask}


def _apply_prompt(w: CameraWorker, frame_stamp: int, object_id: int, label: str, prompt: dict):
    """Runs on the scheduler thread, on the frame the prompt refers to (the latest processed frame,
    or an earlier one still in the tracker's history: applied there and caught up)."""
    tracked = w.tracker.object_ids
    oid = _new_id(w) if object_id == AddPrompt.Request.NEW_OBJECT else int(object_id)
    args = {k: prompt[k] for k in ("points", "labels", "box", "mask")}
    frame_index = w.frame_index_of(frame_stamp)
    result = w.tracker.add_prompt(oid, **args, frame_index=frame_index)
    prompt["is_new"] = oid not in tracked
    prompt["behind"] = w.tracker.frame_index - frame_index
    w.note_prompt(oid, label, frame_stamp, frame_index)
    header = Header(frame_id=w.current_frame.payload.header.frame_id)  # the frame's camera: the current one's
    header.stamp.sec, header.stamp.nanosec = divmod(frame_stamp, 1_000_000_000)
    return oid, frame_stamp, result, header


def _new_id(w: CameraWorker) -> int:
    oid = w.new_object_id()
    if oid > MAX_LABEL_ID:
        raise TrackerInputError(f"object ids are used up to {MAX_LABEL_ID} (16-bit label values): reset the tracker")
    return oid


def _apply_detections(w: CameraWorker, assoc: dets.DetectionAssociator, frame_stamp: int,
                      boxes: list[dets.Detection], max_objects: int) -> dets.Plan:
    """Runs on the scheduler thread on the detections' frame (held until it is processed, or in the
    history): sam2_ros.detections.apply_detections, then the camera's bookkeeping."""
    f = w.frame_index_of(frame_stamp)
    labels = {oid: info.label for oid, info in w.objects.items()}
    plan = dets.apply_detections(w.tracker, assoc, boxes, f, labels, lambda: _new_id(w), max_objects)
    for oid, det in plan.created:
        w.note_prompt(oid, det.class_id, frame_stamp, f)
    for oid, _ in plan.reseeded:
        w.note_prompt(oid, "", frame_stamp, f)
    for oid in plan.removed:
        w.note_removed(oid)
    return plan


def _apply_click(w: CameraWorker, frame_stamp: int, x: float, y: float, on_tracked: str) -> tuple[str, int]:
    """Runs on the scheduler thread on the latest processed frame: a click on no visible object
    starts one there; on a tracked one it is ignored or refines it (click_prompts.on_tracked)."""
    res = w.tracker.current_result()
    h, wd = res.frame_hw
    why = dets.check_click(x, y, wd, h)
    if why is not None:
        raise CommandError(why)
    hit = dets.clicked_object(res.object_ids, res.masks, res.scores, x, y) if res.object_ids else None
    if hit is not None and on_tracked == "ignore":
        return "ignored", hit
    oid = hit if hit is not None else _new_id(w)
    w.tracker.add_prompt(oid, points=[[x, y]], labels=[1])
    w.note_prompt(oid, "", frame_stamp)
    return ("refined" if hit is not None else "created"), oid
