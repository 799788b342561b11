"""ROS 2 node ``sam2_tracker``: a managed (lifecycle) node over the ROS-free tracker.

    ros2 run sam2_ros sam2_tracker --ros-args -p engine_dir:=/path/to/export
    sam2-ros node --ros-args -p engine_dir:=/path/to/export        (same, without ros2 run)

Lifecycle: configure loads the engines and allocates the tracker's memory (fails cleanly
when the engine directory is missing or does not match); activate subscribes to the
camera and starts the worker thread; deactivate unsubscribes and stops the worker (the
tracked objects are kept); cleanup releases the tracker. With ``autostart`` (default) the
node configures and activates itself.

Topics (relative names, remap them):
  in   image               sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8), sensor-data QoS
  in   image/compressed    sensor_msgs/CompressedImage, when image_transport = compressed
  in   prompt_detections   vision_msgs/Detection2DArray, detector boxes applied on their image's frame
                           (detection_prompts.enabled; association: sam2_ros.detections)
  in   image_mouse_left    geometry_msgs/Point, operator clicks (click_prompts.enabled; follows `image`)
  in   depth, camera_info  sensor_msgs/Image + CameraInfo registered to the colour image (depth.enabled;
                           geometry: sam2_ros.depth)
  out  objects             sam2_ros_interfaces/TrackedObjects, the image's header
  out  detections          vision_msgs/Detection2DArray, the image's header, id = object id
  out  label_image         sensor_msgs/Image mono8/mono16, pixel = object id, 0 = background
  out  label_info          vision_msgs/LabelInfo (transient local): object id -> label
  out  detections_3d       vision_msgs/Detection3DArray (depth.enabled), the image's stamp, depth frame_id
  out  markers             visualization_msgs/MarkerArray (depth.enabled): boxes and labels for RViz
  out  object_points       sensor_msgs/PointCloud2 (depth.publish_points): x y z object_id, subsampled
  out  overlay             sensor_msgs/Image rgb8, only while someone subscribes
  out  /diagnostics        diagnostic_msgs/DiagnosticArray: FPS, latency, drops, backend, refused inputs
Services (~ = the node's name):
  ~/add_prompt  ~/remove_object  ~/reset  ~/list_objects   (sam2_ros_interfaces/srv/*)

docs/ROS.md has the parameters and command-line and Python examples.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from geometry_msgs.msg import Point
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from sam2_ros import detections as dets
from sam2_ros.depth import DepthError, DepthSettings, StampPairer, object_point_cloud, objects_3d
from sam2_ros.outputs import MAX_LABEL_ID
from sam2_ros.ros import convert as rc
from sam2_ros.ros import vision as rv
from sam2_ros.errors import EngineError, TrackerInputError
from sam2_ros.ros.params import CONFIGURE_TIME, PARAMS_BY_NAME, declare_parameters, split_providers, validate_parameter
from sam2_ros.ros.worker import LATEST, CommandError, Frame, TrackerWorker, fmt_stamp
from sam2_ros.tracker import FrameResult
from sam2_ros_interfaces.msg import ObjectState, TrackedObjects
from sam2_ros_interfaces.srv import AddPrompt, ListObjects, RemoveObject, Reset

#: Threads of the executor. Service calls may wait for the worker (held prompts), so at
#: most ``EXECUTOR_THREADS - 2`` of them wait at once; the image callback and the
#: lifecycle/diagnostics callbacks always find a free thread.
EXECUTOR_THREADS = 6


def _logged_transition(fn):
    """rclpy turns an exception in a transition callback into ERROR without a word: say why."""

    @functools.wraps(fn)
    def wrapper(self, state):
        try:
            return fn(self, state)
        except Exception as e:
            self.get_logger().error(f"{fn.__name__} failed: {type(e).__name__}: {e}")
            raise

    return wrapper


class Sam2TrackerNode(LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "sam2_tracker", **kwargs):
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._waiting_calls = threading.BoundedSemaphore(EXECUTOR_THREADS - 2)
        self._worker: TrackerWorker | None = None
        self._backend_name = ""
        self._engine_dir = ""
        self._max_objects = 0
        self._state_label = "unconfigured"
        self._image_sub = None
        self._outputs: dict = {}
        self._diagnostics_pub = None
        self._tracker_services: list = []
        self._diag_timer = None
        self._last_rejected = 0
        self._inputs: list = []  # subscriptions of the robot inputs (detections, clicks, depth, camera_info)
        self._counts: collections.Counter = collections.Counter()  # refused / applied robot inputs
        self._counts_lock = threading.Lock()
        self._last_refused = 0
        self._associator: dets.DetectionAssociator | None = None
        self._pairer: StampPairer | None = None
        self._depth_settings = DepthSettings()
        self._intrinsics = None
        self._label_info_key = None
        self._last_click = -1e9

    # ----------------------------------------------------------- parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name not in PARAMS_BY_NAME:  # rclpy's own (use_sim_time, qos overrides, ...)
                continue
            error = validate_parameter(p.name, p.value)
            if error is None and self._worker is not None and PARAMS_BY_NAME[p.name].applies == CONFIGURE_TIME:
                error = (f"{p.name} takes effect at configure; the node is configured: deactivate and clean it up "
                         "first, then set it and configure again")
            if error is not None:
                return SetParametersResult(successful=False, reason=error)
        return SetParametersResult(successful=True)

    def _param(self, name: str):
        return self.get_parameter(name).value

    # ------------------------------------------------------------ lifecycle
    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from sam2_ros.backends import CUDA_GRAPH_CHOICES, backend_options, load_backend, takes_precision
        from sam2_ros.tracker import Tracker

        engine_dir = self._param("engine_dir")
        backend = self._param("backend")
        if not engine_dir:
            self.get_logger().error("configure failed: parameter engine_dir is not set (an export directory "
                                    "made by `sam2-ros export`)")
            return TransitionCallbackReturn.FAILURE
        if not Path(engine_dir).is_dir():
            self.get_logger().error(f"configure failed: engine_dir {engine_dir!r} is not a directory")
            return TransitionCallbackReturn.FAILURE
        precision = self._param("precision")
        if precision != "fp32" and not takes_precision(backend):
            self.get_logger().error(f"configure failed: precision {precision} is a torch / openvino setting; the "
                                    f"{backend} backend's precision comes from its export / engine build")
            return TransitionCallbackReturn.FAILURE
        options = backend_options(
            backend, providers=split_providers(self._param("providers")),
            intra_op_threads=self._param("intra_op_threads"), threads=self._param("intra_op_threads"),
            device=self._param("device") if backend == "torch" else None, precision=precision,
            imaging=self._param("imaging"), cuda_graph=CUDA_GRAPH_CHOICES[self._param("cuda_graph")],
            compile=self._param("compile") or None,
        )
        try:
            engine = load_backend(engine_dir, backend, **options)
            tracker = Tracker(
                engine,
                max_objects=self._param("max_objects"),
                cond_slots=self._param("cond_slots"),
                mask_threshold=self._param("mask_threshold"),
                fill_hole_area=self._param("fill_hole_area"),
                corrections_as_conditioning=self._param("corrections_as_conditioning"),
                keep_first_cond_frame=self._param("keep_first_cond_frame"),
                history_frames=self._param("history_frames"),
            )
            if self._param("warm_up"):
                engine.warm_up(tracker.max_objects, tracker.bank.cond_slots)
        except (EngineError, TrackerInputError, OSError, ValueError) as e:
            self.get_logger().error(f"configure failed: cannot load {backend} engines from {engine_dir!r}: {e}")
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # e.g. a backend library that fails to initialise
            self.get_logger().error(f"configure failed: {backend} backend error: {type(e).__name__}: {e}")
            return TransitionCallbackReturn.FAILURE

        self._backend_name, self._engine_dir = backend, str(engine_dir)
        self._max_objects = tracker.max_objects
        self._worker = TrackerWorker(tracker, self._decoder(), self._publish_result, self._report)
        # results go out through lifecycle publishers: nothing is published unless the node is active
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._outputs = {
            "objects": self.create_lifecycle_publisher(TrackedObjects, "objects", 10),
            "detections": self.create_lifecycle_publisher(Detection2DArray, "detections", 10),
            "label_image": self.create_lifecycle_publisher(Image, "label_image", 10),
            "label_info": self.create_lifecycle_publisher(LabelInfo, "label_info", latched),
            "overlay": self.create_lifecycle_publisher(Image, "overlay", 10),
        }
        self._label_info_key = None
        with self._counts_lock:
            self._counts.clear()
        self._associator = self._pairer = self._intrinsics = None
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
            self._outputs["detections_3d"] = self.create_lifecycle_publisher(Detection3DArray, "detections_3d", 10)
            self._outputs["markers"] = self.create_lifecycle_publisher(MarkerArray, "markers", 10)
            if self._param("depth.publish_points"):
                self._outputs["object_points"] = self.create_lifecycle_publisher(PointCloud2, "object_points", 10)
        # diagnostics also report an inactive (configured) node
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        g = self._service_group
        self._tracker_services = [
            self.create_service(AddPrompt, "~/add_prompt", self._srv_add_prompt, callback_group=g),
            self.create_service(RemoveObject, "~/remove_object", self._srv_remove_object, callback_group=g),
            self.create_service(Reset, "~/reset", self._srv_reset, callback_group=g),
            self.create_service(ListObjects, "~/list_objects", self._srv_list_objects, callback_group=g),
        ]
        self._diag_timer = self.create_timer(
            self._param("diagnostics_period"), self._publish_diagnostics, callback_group=self._timer_group
        )
        self._state_label = "inactive"
        self.get_logger().info(
            f"configured: {backend} engines from {engine_dir} ({engine.manifest.spec.model} at "
            f"{engine.manifest.spec.image_size}px), up to {tracker.max_objects} objects, prompts on the last "
            f"{tracker.history_frames} frames"
        )
        return TransitionCallbackReturn.SUCCESS

    def _decoder(self):
        return rc.compressed_msg_to_rgb if self._param("image_transport") == "compressed" else rc.image_msg_to_rgb

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        reliability = (
            ReliabilityPolicy.RELIABLE if self._param("input_qos.reliability") == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._param("input_qos.depth"), reliability=reliability)
        if self._param("image_transport") == "compressed":
            # as image_transport does: the remapped base topic + "/compressed" (-r image:=/cam moves both)
            self._image_sub = self.create_subscription(
                CompressedImage, self.resolve_topic_name("image") + "/compressed", self._on_image, qos,
                callback_group=self._image_group,
            )
        else:
            self._image_sub = self.create_subscription(
                Image, "image", self._on_image, qos, callback_group=self._image_group
            )
        self._subscribe_inputs(reliability)
        LifecycleNode.on_activate(self, state)  # enables the lifecycle publishers
        self._worker.start()
        self._state_label = "active"
        self.get_logger().info(f"active: listening on {self._image_sub.topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def _subscribe_inputs(self, reliability) -> None:
        """The robot inputs that are enabled: detector boxes, operator clicks, depth + camera_info."""
        g = self._image_group
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        if self._associator is not None:
            self._inputs.append(self.create_subscription(
                Detection2DArray, "prompt_detections", self._on_detections, reliable, callback_group=g))
        if self._param("click_prompts.enabled"):
            # rqt_image_view publishes clicks on <its image topic>_mouse_left: follow a remapped `image`
            self._inputs.append(self.create_subscription(
                Point, self.resolve_topic_name("image") + "_mouse_left", self._on_click, reliable, callback_group=g))
        if self._pairer is not None:
            sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=reliability)
            depth_group = MutuallyExclusiveCallbackGroup()
            self._inputs.append(self.create_subscription(Image, "depth", self._on_depth, sensor,
                                                         callback_group=depth_group))
            self._inputs.append(self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, sensor,
                                                         callback_group=depth_group))

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        LifecycleNode.on_deactivate(self, state)  # disables the lifecycle publishers
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> None:
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._pairer is not None:
            self._pairer.clear()
        if self._worker is not None:
            self._worker.stop("the node was deactivated")
            self._state_label = "inactive"

    def _cleanup(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for srv in self._tracker_services:
            self.destroy_service(srv)
        self._tracker_services = []
        for pub in self._outputs.values():
            self.destroy_lifecycle_publisher(pub)
        self._outputs = {}
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        if self._worker is not None:
            self._worker.stop("the node was cleaned up")  # no-op once deactivated
            self._worker.tracker.close()  # frees the backend's sessions / engines / device memory now
        self._worker = None
        self._state_label = "unconfigured"

    # ---------------------------------------------------------------- input
    def _on_image(self, msg) -> None:
        worker = self._worker
        if worker is not None:
            worker.submit(rc.stamp_to_ns(msg.header.stamp), msg)

    def _report(self, kind: str, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=5.0)

    # --------------------------------------------------------------- output
    def _labels(self) -> dict[int, str]:
        _, _, infos = self._worker.snapshot()
        return {oid: info.label for oid, info in infos.items()}

    def _publish_result(self, frame: Frame, rgb: np.ndarray, result: FrameResult) -> None:
        """Runs on the worker thread after each processed frame."""
        header = frame.payload.header
        pubs = self._outputs
        if not pubs:
            return
        labels = self._labels()
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
            label, enc = rc.label_image(result, self._max_objects)
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
            self.get_logger().warning(warn, throttle_duration_sec=2.0)

    def _on_detections(self, msg: Detection2DArray) -> None:
        worker, assoc = self._worker, self._associator
        if worker is None or assoc is None:
            return
        self._count("detections_received")
        stamp = rc.stamp_to_ns(msg.header.stamp)
        if stamp == 0:
            self._count("detections_refused_unknown_stamp", warn="detections refused: a zero stamp names no image "
                        "(stamp the detections with the header of the image the detector saw)")
            return
        boxes = rv.detections_from_msg(msg)

        def apply(w: TrackerWorker, frame_stamp: int):
            return _apply_detections(w, assoc, frame_stamp, boxes, self._max_objects)

        def done(plan, error):
            if error is not None:
                reason = ("unknown_stamp" if "no frame with stamp" in error
                          else "frame_dropped" if "dropped" in error else "failed")
                self._count(f"detections_refused_{reason}", warn=f"detections of {fmt_stamp(stamp)} refused: {error}")
                return
            self._count_plan(plan, stamp)

        try:
            worker.post(apply, stamp, done, max_held=self._param("detection_prompts.max_waiting"))
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
            self.get_logger().warning(f"detections of {fmt_stamp(stamp)}: " + "; ".join(plan.messages),
                                      throttle_duration_sec=2.0)

    def _on_click(self, msg: Point) -> None:
        worker = self._worker
        if worker is None:
            return
        self._count("clicks_received")
        now = time.monotonic()
        if now - self._last_click < self._param("click_prompts.min_interval"):
            self._count("clicks_refused_rate_limited", warn="click dropped: closer than click_prompts.min_interval "
                                                            "to the previous one")
            return
        self._last_click = now
        x, y = float(msg.x), float(msg.y)
        on_tracked = self._param("click_prompts.on_tracked")

        def apply(w: TrackerWorker, frame_stamp: int):
            return _apply_click(w, frame_stamp, x, y, on_tracked)

        def done(outcome, error):
            if error is not None:
                reason = ("before_first_frame" if "no frame has been processed" in error
                          else "outside_image" if "outside" in error or "not finite" in error
                          else "max_objects" if "max_objects" in error else "failed")
                self._count(f"clicks_refused_{reason}", warn=f"click ({x:.1f}, {y:.1f}) refused: {error}")
            elif outcome[0] == "ignored":
                self._count("clicks_on_tracked_ignored")
                self.get_logger().info(f"click ({x:.1f}, {y:.1f}) on tracked object {outcome[1]}: ignored "
                                       "(click_prompts.on_tracked = ignore)", throttle_duration_sec=2.0)
            else:
                self._count(f"clicks_{outcome[0]}")
                self.get_logger().info(f"click ({x:.1f}, {y:.1f}): object {outcome[1]} {outcome[0]}")

        try:
            worker.post(apply, LATEST, done)
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
        pubs = self._outputs
        if "detections_3d" in pubs:
            pubs["detections_3d"].publish(rv.detections_3d_msg(out, objects))
            pubs["markers"].publish(rv.markers_msg(out, objects))
        if "object_points" in pubs:
            points = object_point_cloud(result, depth_m, k, self._depth_settings, self._param("depth.points_stride"))
            pubs["object_points"].publish(rv.point_cloud_msg(out, points))

    def _publish_diagnostics(self) -> None:
        worker = self._worker
        pub = self._diagnostics_pub
        if worker is None or pub is None:
            return
        s = worker.window_stats()
        status = DiagnosticStatus(name=f"{self.get_name()}: tracker", hardware_id=self._backend_name)
        new_rejects = s.rejected - self._last_rejected
        self._last_rejected = s.rejected
        if self._state_label != "active":
            status.level, status.message = DiagnosticStatus.OK, self._state_label
        elif new_rejects:
            status.level, status.message = DiagnosticStatus.WARN, f"{new_rejects} frames rejected: {s.last_error}"
        elif s.processed == 0:
            status.level, status.message = DiagnosticStatus.OK, "waiting for images"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"tracking {s.objects} objects at {s.fps:.1f} FPS"
        values = {
            "state": self._state_label,
            "backend": self._backend_name,
            "engine_dir": self._engine_dir,
            "processed_fps": f"{s.fps:.2f}",
            "latency_mean_ms": f"{s.latency_mean_ms:.1f}",
            "latency_max_ms": f"{s.latency_max_ms:.1f}",
            "tracker_step_mean_ms": f"{s.step_mean_ms:.1f}",
            "frames_received": str(s.received),
            "frames_processed": str(s.processed),
            "frames_dropped": str(s.dropped),
            "frames_rejected": str(s.rejected),
            "queue_depth": str(s.queue_depth),
            "objects": str(s.objects),
            "max_objects": str(self._max_objects),
            "last_error": s.last_error,
        }
        if self._pairer is not None:
            for key, n in self._pairer.counts.items():
                values[key] = str(n)
        with self._counts_lock:
            counts = dict(self._counts)
        refused = sum(n for key, n in counts.items() if "refused" in key)
        values.update({key: str(n) for key, n in sorted(counts.items())})
        if refused > self._last_refused and status.level == DiagnosticStatus.OK and self._state_label == "active":
            status.level = DiagnosticStatus.WARN
            status.message = f"{refused - self._last_refused} inputs refused (see the *_refused_* values)"
        self._last_refused = refused
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        pub.publish(msg)

    # ------------------------------------------------------------- services
    def _call_worker(self, fn, stamp_ns: int = LATEST, needs_frame: bool = True):
        """Run ``fn`` on the worker; raises CommandError with a message for the caller."""
        worker = self._worker
        if worker is None:
            raise CommandError("the node is not configured")
        if not self._waiting_calls.acquire(blocking=False):
            raise CommandError("too many service calls in progress; try again")
        try:
            return worker.call(fn, stamp_ns, self._param("service_timeout"), needs_frame)
        finally:
            self._waiting_calls.release()

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
            self.get_logger().warning(f"add_prompt (object {req.object_id}) refused: {e}")
            return resp
        i = result.object_ids.index(oid)
        labels = self._labels()
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

        def remove(w: TrackerWorker, frame_stamp):
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
        try:
            def reset(w: TrackerWorker, frame_stamp):
                w.reset_tracker()
                if self._associator is not None:
                    self._associator.reset()
                if self._pairer is not None:
                    self._pairer.clear()

            self._call_worker(reset, needs_frame=False)
        except CommandError as e:
            resp.success, resp.message = False, str(e)
            return resp
        resp.success, resp.message = True, "tracker reset: no objects, the next frame is frame 0"
        return resp

    def _srv_list_objects(self, req: ListObjects.Request, resp: ListObjects.Response) -> ListObjects.Response:
        worker = self._worker
        if worker is None:
            resp.success, resp.message, resp.frame_index = False, "the node is not configured", -1
            return resp
        stamp, result, infos = worker.snapshot()
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
        resp.message = f"{len(objects)} objects ({self._state_label})"
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


def _apply_prompt(w: TrackerWorker, frame_stamp: int, object_id: int, label: str, prompt: dict):
    """Runs on the worker thread, on the frame the prompt refers to (the latest processed frame,
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


def _new_id(w: TrackerWorker) -> int:
    oid = w.new_object_id()
    if oid > MAX_LABEL_ID:
        raise TrackerInputError(f"object ids are used up to {MAX_LABEL_ID} (16-bit label values): reset the tracker")
    return oid


def _apply_detections(w: TrackerWorker, assoc: dets.DetectionAssociator, frame_stamp: int,
                      boxes: list[dets.Detection], max_objects: int) -> dets.Plan:
    """Runs on the worker thread on the detections' frame (held until it is processed, or in the
    history): sam2_ros.detections.apply_detections, then the worker's bookkeeping."""
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


def _apply_click(w: TrackerWorker, frame_stamp: int, x: float, y: float, on_tracked: str) -> tuple[str, int]:
    """Runs on the worker thread on the latest processed frame: a click on no visible object
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


#: Longest wait of the main loop before it checks for shutdown again (seconds).
SPIN_PERIOD = 0.25


def main(args=None) -> int:
    """Entry point of ``ros2 run sam2_ros sam2_tracker`` and ``sam2-ros node``."""
    rclpy.init(args=args)
    node = Sam2TrackerNode()
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed; fix the parameters and configure again "
                                        "(ros2 lifecycle set /sam2_tracker configure)")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed")
        # spin in bounded waits: a shutdown (SIGTERM / SIGINT) that lands between the executor's
        # check of the context and its wait is then seen within SPIN_PERIOD instead of never
        while rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_PERIOD)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001
        # SIGTERM (launch, systemd) shuts the context down under a spinning executor, which can
        # then fail with "context is not valid" instead of ExternalShutdownException: a clean stop.
        if rclpy.ok():
            raise
    finally:
        node._deactivate()
        node._cleanup()
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
