"""ROS 2 node ``sam2_tracker``: a managed (lifecycle) node over the ROS-free tracker.

    ros2 run sam2_ros sam2_tracker --ros-args -p engine_dir:=/path/to/export
    sam2-ros node --ros-args -p engine_dir:=/path/to/export        (same, without ros2 run)

Lifecycle: configure loads the engines once and allocates every camera's tracker memory
(fails cleanly when the engine directory is missing or does not match); activate subscribes
to the cameras and starts the tracking thread; deactivate unsubscribes and stops it (the
tracked objects are kept); cleanup releases the trackers and the engines. With ``autostart``
(default) the node configures and activates itself. SIGINT / SIGTERM: an orderly shutdown
(sam2_ros.ros.shutdown; docs/ROS.md, "Lifecycle and shutdown").

Cameras: without the ``cameras`` parameter the node serves one camera with the names below.
With ``cameras: [front, wrist]`` every camera has all of them under its name (``front/image``
in, ``front/objects`` out, ``~/front/add_prompt``, ...) and its own objects, ids, history and
diagnostics; one thread serves every camera (newest frame per camera, the waiting frames of
all cameras stepped together: sam2_ros.ros.worker). Per camera wiring: sam2_ros.ros.camera.

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
  (with cameras: ~/<camera>/add_prompt ..., topics <camera>/image ...)

docs/ROS.md has the parameters and command-line and Python examples.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from sam2_ros.errors import EngineError, TrackerInputError
from sam2_ros.ros.camera import CameraChannel
from sam2_ros.ros.params import (CONFIGURE_TIME, PARAMS_BY_NAME, declare_parameters, read_parameter, split_providers,
                                 validate_parameter)
from sam2_ros.ros.shutdown import (default_signal_action, install_signal_handlers, release_freed_memory, shut_down,
                                   spin_until_shutdown)
from sam2_ros.ros.worker import CameraWorker, Scheduler

#: Threads of the executor (plus one per camera beyond the first). Service calls may wait for
#: the tracker (held prompts), so at most ``EXECUTOR_THREADS - 2`` of them wait at once; the image
#: callbacks and the lifecycle/diagnostics callbacks always find a free thread.
EXECUTOR_THREADS = 6
#: The MultiTracker stream of the single-camera node (no ``cameras``; its topics have no prefix).
SINGLE_CAMERA = "camera"


def _logged_transition(fn):
    """rclpy turns an exception in a transition callback into ERROR without a word: say why."""

    @functools.wraps(fn)
    def wrapper(self, state):
        with self.transition_lock:  # held by the shutdown once it starts (main)
            if self.shutting_down:  # a transition asked for as the node ends: nothing to do
                return TransitionCallbackReturn.FAILURE
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
        self.service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.waiting_calls = threading.BoundedSemaphore(EXECUTOR_THREADS - 2)
        self.channels: list[CameraChannel] = []
        self._multi = None  # the MultiTracker over the loaded backend
        self._scheduler: Scheduler | None = None
        self._backend_name = ""
        self._engine_dir = ""
        self.state_label = "unconfigured"
        self._diagnostics_pub = None
        self._diag_timer = None
        #: Held while a transition callback runs (one at a time), and by the shutdown (main).
        self.transition_lock = threading.RLock()
        self.shutting_down = False
        #: Whether SIGINT / SIGTERM end the process at once while engines load (main() sets it).
        self.signals_end_loading = False

    # the single camera's parts (tests, tools): the first channel's
    @property
    def _worker(self) -> CameraWorker | None:
        return self.channels[0].worker if self.channels else None

    @property
    def _image_sub(self):
        return self.channels[0].image_sub if self.channels else None

    @property
    def _outputs(self) -> dict:
        return self.channels[0].outputs if self.channels else {}

    @property
    def _tracker_services(self) -> list:
        return [srv for c in self.channels for srv in c.services]

    # ----------------------------------------------------------- parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name not in PARAMS_BY_NAME:  # rclpy's own (use_sim_time, qos overrides, ...)
                continue
            error = validate_parameter(p.name, p.value)
            if error is None and self.channels and PARAMS_BY_NAME[p.name].applies == CONFIGURE_TIME:
                error = (f"{p.name} takes effect at configure; the node is configured: deactivate and clean it up "
                         "first, then set it and configure again")
            if error is not None:
                return SetParametersResult(successful=False, reason=error)
        return SetParametersResult(successful=True)

    def _param(self, name: str):
        return read_parameter(self, name)

    def camera_names(self) -> list[str]:
        """The ``cameras`` parameter (empty: the single camera)."""
        return list(self._param("cameras"))

    # ------------------------------------------------------------ lifecycle
    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from sam2_ros.backends import CUDA_GRAPH_CHOICES, backend_options, load_backend, takes_precision
        from sam2_ros.multi_tracker import MultiTracker

        engine_dir = self._param("engine_dir")
        backend = self._param("backend")
        if not engine_dir:
            self.get_logger().error("configure failed: parameter engine_dir is not set (an export directory "
                                    "made by `sam2-ros export`)")
            return TransitionCallbackReturn.FAILURE
        try:
            is_dir = Path(engine_dir).is_dir()
        except OSError as e:  # a name too long for the file system: Path.is_dir() raises
            self.get_logger().error(f"configure failed: engine_dir {engine_dir[:200]!r} cannot be used: {e.strerror}")
            return TransitionCallbackReturn.FAILURE
        if not is_dir:
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
        cameras = self.camera_names()
        engine = None
        try:
            with self._signals_end_process():
                engine = load_backend(engine_dir, backend, **options)  # once, for every camera
            multi = MultiTracker(
                engine, cameras or [SINGLE_CAMERA],
                max_objects=self._param("max_objects"),
                cond_slots=self._param("cond_slots"),
                mask_threshold=self._param("mask_threshold"),
                fill_hole_area=self._param("fill_hole_area"),
                corrections_as_conditioning=self._param("corrections_as_conditioning"),
                keep_first_cond_frame=self._param("keep_first_cond_frame"),
                history_frames=self._param("history_frames"),
            )
            first = next(iter(multi.trackers.values()))
            if self._param("warm_up"):
                engine.warm_up(first.max_objects, first.bank.cond_slots)
        except (EngineError, TrackerInputError, OSError, ValueError) as e:
            self.get_logger().error(f"configure failed: cannot load {backend} engines from {engine_dir!r}: {e}")
            self._close_engine(engine)
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # e.g. a backend library that fails to initialise
            self.get_logger().error(f"configure failed: {backend} backend error: {type(e).__name__}: {e}")
            self._close_engine(engine)
            return TransitionCallbackReturn.FAILURE

        self._backend_name, self._engine_dir = backend, str(engine_dir)
        self._multi = multi
        self._scheduler = Scheduler(multi.step)
        self.channels = [CameraChannel(self, name, name if cameras else "", self._scheduler, multi.tracker(name))
                         for name in multi.streams]
        # diagnostics also report an inactive (configured) node
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            self._param("diagnostics_period"), self._publish_diagnostics, callback_group=self._timer_group
        )
        self.state_label = "inactive"
        self.get_logger().info(
            f"configured: {backend} engines from {engine_dir} ({engine.manifest.spec.model} at "
            f"{engine.manifest.spec.image_size}px), "
            + (f"{len(cameras)} cameras ({', '.join(cameras)}), " if cameras else "")
            + f"up to {first.max_objects} objects{' per camera' if cameras else ''}, prompts on the last "
            f"{first.history_frames} frames"
        )
        return TransitionCallbackReturn.SUCCESS

    def _signals_end_process(self):
        """While engines load, SIGINT and SIGTERM take their default action (the process ends at
        once, status -2 / -15) when ``signals_end_loading``: creating an ONNX Runtime session holds
        Python's GIL for up to a second, so no Python signal handler could run before it is done."""
        return default_signal_action() if self.signals_end_loading else contextlib.nullcontext()

    @staticmethod
    def _close_engine(engine) -> None:
        if engine is not None:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - already failing; the configure error says why
                pass

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        reliability = (
            ReliabilityPolicy.RELIABLE if self._param("input_qos.reliability") == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        for channel in self.channels:
            channel.subscribe(reliability)
        LifecycleNode.on_activate(self, state)  # enables the lifecycle publishers
        self._scheduler.start()
        self.state_label = "active"
        topics = ", ".join(c.image_sub.topic_name for c in self.channels)
        self.get_logger().info(f"active: listening on {topics}")
        return TransitionCallbackReturn.SUCCESS

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

    def _deactivate(self, reason: str = "the node was deactivated") -> None:
        for channel in self.channels:
            channel.unsubscribe()
        if self._scheduler is not None:
            self._scheduler.stop(reason)
            self.state_label = "inactive"

    def _cleanup(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for channel in self.channels:
            channel.destroy()
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        if self._scheduler is not None:
            self._scheduler.stop("the node was cleaned up")  # no-op once deactivated
        if self._multi is not None:
            self._multi.close()  # frees the backend's sessions / engines / device memory now
        self.channels, self._multi, self._scheduler = [], None, None
        self.state_label = "unconfigured"
        release_freed_memory()

    # ------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        """One status per camera (name ``<node>: tracker``, or ``<node>: <camera>`` with cameras)."""
        pub, scheduler = self._diagnostics_pub, self._scheduler
        if pub is None or scheduler is None:
            return
        common = {"state": self.state_label, "backend": self._backend_name, "engine_dir": self._engine_dir}
        if len(self.channels) > 1:
            common["batch_size_mean"] = f"{scheduler.batch_size_mean():.2f}"
        msg = DiagnosticArray(status=[c.diagnostic_status(common) for c in self.channels])
        msg.header.stamp = self.get_clock().now().to_msg()
        pub.publish(msg)


def _autostart(node: Sam2TrackerNode) -> None:
    """Configure and activate (a thread of its own: the main loop spins and hears signals meanwhile)."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().error("autostart: configure failed; fix the parameters and configure again "
                                "(ros2 lifecycle set /sam2_tracker configure)")
    elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().error("autostart: activate failed")


def main(args=None) -> int:
    """Entry point of ``ros2 run sam2_ros sam2_tracker`` and ``sam2-ros node``."""
    stop = threading.Event()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)  # ours: shut down in order
    install_signal_handlers(stop)
    node = Sam2TrackerNode()
    node.signals_end_loading = True
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS + max(len(node.camera_names()) - 1, 0))
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            threading.Thread(target=_autostart, args=(node,), name="sam2_tracker_autostart", daemon=True).start()
        spin_until_shutdown(executor, node, stop)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001
        # a context shut down from outside under a spinning executor can fail with "context is
        # not valid" instead of ExternalShutdownException: a clean stop.
        if rclpy.ok():
            raise
    finally:
        shut_down(node, executor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
