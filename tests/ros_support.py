"""Helpers of the ROS tests: an isolated ROS environment, a client node spinning in the
background, the node under test in its own process, and real video frames as messages.

Importing this module isolates ROS traffic: discovery stays on this machine and the
domain id is unique to this test session (the node processes inherit it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = os.environ.get("SAM2_ROS_TEST_DOMAIN_ID", str(1 + os.getpid() % 100))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from sam2_ros.postprocess import mask_iou  # noqa: E402,F401  (used by the ROS tests)
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
#: Frames of the tests: bedroom.mp4 scaled to this size (the model works at 256 anyway).
TEST_WH = (480, 270)


def video_frames(shared_data: Path, n: int, wh: tuple[int, int] = TEST_WH,
                 clip: str = "bedroom.mp4") -> list[np.ndarray]:
    """The first ``n`` frames of ``clip`` (a video of the shared data) as RGB uint8, resized to ``wh``."""
    from sam2_ros.io.video import iter_frames

    video = shared_data / "videos" / clip
    return [cv2.resize(f, wh, interpolation=cv2.INTER_AREA) for f in iter_frames(video, n)]


def image_msg(rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8", frame_id: str = "camera"):
    """A sensor_msgs/Image of ``rgb`` in ``encoding`` (converted with OpenCV) built with cv_bridge."""
    from cv_bridge import CvBridge

    conv = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "mono8": cv2.COLOR_RGB2GRAY,
            "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA}[encoding]
    arr = rgb if conv is None else cv2.cvtColor(rgb, conv)
    msg = CvBridge().cv2_to_imgmsg(np.ascontiguousarray(arr), encoding=encoding)
    set_stamp(msg.header.stamp, stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def set_stamp(stamp, ns: int):
    stamp.sec, stamp.nanosec = divmod(int(ns), 1_000_000_000)
    return stamp


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def mask_of(obj) -> np.ndarray:
    """TrackedObject.mask -> bool [H, W]."""
    from sam2_ros.ros.convert import mask_from_image_msg

    return mask_from_image_msg(obj.mask)


class Client:
    """A client node spinning in a background thread; collects what the tracker publishes.

    ``camera``: talk to that camera of a multi-camera node (topics ``<camera>/image``, ...;
    services ``<node>/<camera>/...``); empty: the single-camera names."""

    def __init__(self, name: str = "sam2_test_client", node_ns: str = "/sam2_tracker", image_qos=RELIABLE,
                 camera: str = ""):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        from sam2_ros_interfaces.msg import TrackedObjects

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.ns = f"{node_ns}/{camera}" if camera else node_ns
        topic = (lambda base: f"{camera}/{base}") if camera else (lambda base: base)
        self._cond = threading.Condition()
        self.objects: list = []
        self.arrived: dict[int, float] = {}  # objects message stamp -> time.perf_counter() at arrival
        self.diagnostics: list = []
        self.labels: list = []
        self._objects_sub = self.node.create_subscription(TrackedObjects, topic("objects"), self._on(self.objects),
                                                          RELIABLE)
        self.node.create_subscription(Image, topic("label_image"), self._on(self.labels), RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on(self.diagnostics), RELIABLE)
        self.image_pub = self.node.create_publisher(Image, topic("image"), image_qos)
        self._clients: dict = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on(self, sink: list):
        def cb(msg):
            now = time.perf_counter()
            with self._cond:
                sink.append(msg)
                if sink is self.objects:
                    self.arrived[stamp_ns(msg.header.stamp)] = now
                self._cond.notify_all()

        return cb

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition"):
        """Wait until ``predicate()`` is true (checked whenever a message arrives)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._cond.wait(min(left, 0.5))

    def wait_for_subscriber(self, timeout: float = 60.0):
        """Wait until the node's image subscription and its `objects` publisher are matched with
        ours: a message sent before discovery has matched both ends is lost."""
        deadline = time.monotonic() + timeout
        while self.image_pub.get_subscription_count() == 0 or self._objects_sub.get_publisher_count() == 0:
            if time.monotonic() > deadline:
                raise AssertionError("the tracker node never matched `image` and `objects`")
            time.sleep(0.05)

    def result_for(self, stamp: int, timeout: float = 60.0):
        """The TrackedObjects message with this stamp (waits for it)."""
        found = []

        def have():
            found[:] = [m for m in self.objects if stamp_ns(m.header.stamp) == stamp]
            return bool(found)

        self.wait_for(have, timeout, f"the result of frame {stamp}")
        return found[-1]

    def publish_and_wait(self, rgb: np.ndarray, stamp: int, encoding: str = "rgb8", timeout: float = 60.0):
        self.image_pub.publish(image_msg(rgb, stamp, encoding))
        return self.result_for(stamp, timeout)

    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        """Call ``<node>/<name>`` and return the response (fails the test on timeout)."""
        key = (srv_type, name)
        if key not in self._clients:
            cli = self.node.create_client(srv_type, f"{self.ns}/{name}")
            if not cli.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {self.ns}/{name} did not appear")
            self._clients[key] = cli
            # A service can be discovered before its reply path is: the first replies may be
            # lost. Ask something harmless until an answer comes back.
            probe = _probe_request(srv_type)
            if probe is not None:
                self._call_once(cli, probe, timeout, retry_every=2.0, what=name)
        return self._call_once(self._clients[key], request, timeout, what=name,
                               retry_every=2.0 if _idempotent(srv_type) else None)

    @staticmethod
    def _call_once(cli, request, timeout: float, what: str, retry_every: float | None = None):
        deadline = time.monotonic() + timeout
        done = threading.Event()  # set by whichever request is answered first
        futures = []
        while True:
            future = cli.call_async(request)
            future.add_done_callback(lambda _: done.set())
            futures.append(future)
            left = deadline - time.monotonic()
            if done.wait(max(left if retry_every is None else min(retry_every, left), 0.0)):
                return next(f for f in futures if f.done()).result()
            if time.monotonic() >= deadline:
                raise AssertionError(f"service {what} did not answer in {timeout:.0f} s")

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)


def _probe_request(srv_type):
    """A request of this type that changes nothing on the node (None: no such request)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from sam2_ros_interfaces.srv import AddPrompt, ListObjects, RemoveObject

    probes = {
        GetState: lambda: GetState.Request(),
        ChangeState: lambda: ChangeState.Request(transition=Transition(label="no_such_transition")),
        ListObjects: lambda: ListObjects.Request(),
        AddPrompt: lambda: AddPrompt.Request(object_id=-100),  # refused: bad id
        RemoveObject: lambda: RemoveObject.Request(object_id=-100),  # refused: unknown id
    }
    make = probes.get(srv_type)
    return make() if make else None


def _idempotent(srv_type) -> bool:
    from lifecycle_msgs.srv import GetState

    from sam2_ros_interfaces.srv import ListObjects, Reset

    return srv_type in (GetState, ListObjects, Reset)


class NodeProcess:
    """The tracker node in its own process (`python -m sam2_ros.ros.node`), stopped with SIGINT."""

    def __init__(self, log_path: Path, params: dict, params_file: Path | None = None, ros_args: tuple = ()):
        """``ros_args``: more arguments after --ros-args (remappings: ``("-r", "image:=/cam")``)."""
        args = [sys.executable, "-m", "sam2_ros.ros.node", "--ros-args", *ros_args]
        if params_file is not None:
            args += ["--params-file", str(params_file)]
        for k, v in params.items():
            v = str(v).lower() if isinstance(v, bool) else v
            args += ["-p", f"{k}:={v}"]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def assert_alive(self):
        assert self.proc.poll() is None, f"the node process died:\n{self.log()}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
