"""rosbag2 in, rosbag2 out for ``sam2-ros track --bag`` (the ``rosbags`` library: no rclpy, no ROS install).

Input: one image topic of a bag (mcap or sqlite3 storage; a bag folder or its single storage
file), ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage`` (chosen by the topic's
type), streamed one message at a time in log-time order. Message ``i`` of the topic is frame
``i`` of the prompts file; a prompt may name a message by its header stamp instead.

Output: a rosbag2 bag (mcap, zstd-compressed chunks) with, for every input message, written at
that message's log time and with exactly its header (stamp and frame_id):

* ``<ns>/sam2/objects``      sam2_ros_interfaces/msg/TrackedObjects, as the node publishes it;
* ``<ns>/sam2/detections``   vision_msgs/msg/Detection2DArray, as the node's;
* ``<ns>/sam2/label_image``  sensor_msgs/msg/Image mono8 / mono16, pixel = object id, as the node's;
* ``<ns>/sam2/label_info``   vision_msgs/msg/LabelInfo, written when the objects change (transient local);
* ``<ns>/sam2/detections_3d`` and ``<ns>/sam2/markers`` (vision_msgs/msg/Detection3DArray,
  visualization_msgs/msg/MarkerArray), when the bag has a depth and a camera_info topic
  (``--depth-topic``, ``--camera-info-topic``): each object's 3D position from the depth image
  paired with the frame by stamp (``sam2_ros.depth``, as the node);
* ``<ns>/sam2/overlay``      sensor_msgs/msg/Image rgb8 (on request).

Side inputs (:class:`BagSideTopics`) are read in a second stream beside the images, a bounded
look-ahead (``SIDE_LOOKAHEAD_NS`` of log time) so that detections logged after their image
still reach it: a detector topic (``--detections-topic``, vision_msgs/msg/Detection2DArray)
prompts the tracker on the frame each message's stamp names, through the node's association
(``sam2_ros.detections``, default policy). Objects started by detections are in the output bag;
masks.npz keeps the prompts file's objects.

``<ns>`` is the namespace of the image topic (``/camera/image_raw`` -> ``/camera``; a
CompressedImage topic's ``/compressed`` suffix is dropped first, as image_transport names it), so
the results replay next to the camera in RViz / Foxglove. What goes into the messages is the
node's own definition (``sam2_ros.outputs``).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator

import numpy as np
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from tqdm import tqdm

from sam2_ros import detections as dets
from sam2_ros import outputs
from sam2_ros.depth import DepthError, DepthSettings, Intrinsics, depth_to_metres, objects_3d
from sam2_ros.errors import ImageConversionError, Sam2RosError
from sam2_ros.images import compressed_image_to_rgb, raw_image_to_rgb
from sam2_ros.io.atomic import AtomicOutput
from sam2_ros.io.masks_file import MasksWriter
from sam2_ros.io.prompts_file import Prompt, resolve_stamps
from sam2_ros.io.runner import TrackRun, run_tracker
from sam2_ros.outputs import label_image, object_mask, object_values, overlay_image
from sam2_ros.tracker import FrameResult, Tracker

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TRACKED_OBJECTS = "sam2_ros_interfaces/msg/TrackedObjects"
DETECTION_2D_ARRAY = "vision_msgs/msg/Detection2DArray"
DETECTION_3D_ARRAY = "vision_msgs/msg/Detection3DArray"
LABEL_INFO = "vision_msgs/msg/LabelInfo"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
#: How far (log time) the side topics are read ahead of the current image: a detector's lag.
SIDE_LOOKAHEAD_NS = 2_000_000_000
#: rosbag2 metadata version of the output bag (ROS 2 Jazzy writes and reads 8).
OUTPUT_BAG_VERSION = 8
REPO = Path(__file__).resolve().parents[2]


class BagError(Sam2RosError, ValueError):
    """A bag, topic or message that ``sam2-ros track --bag`` cannot use; the message names it."""


def _interface_dirs() -> list[Path]:
    """Where our message definitions are: the checkout's msg/msg, else an installed sam2_ros_interfaces."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    return [REPO / "msg" / "msg"] + [Path(p) / "share" / "sam2_ros_interfaces" / "msg" for p in prefixes]


def _vision_dirs() -> list[Path]:
    """vision_msgs' definitions: the checkout's msg/vision_msgs/msg (4.1.1, field for field), else an installed one."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    return [REPO / "msg" / "vision_msgs" / "msg"] + [Path(p) / "share" / "vision_msgs" / "msg" for p in prefixes]


def _register(store, folders: list[Path], package: str, marker: str) -> bool:
    for folder in folders:
        files = sorted(folder.glob("*.msg"))
        if any(f.stem == marker for f in files):
            types = {}
            for f in files:
                types.update(get_types_from_msg(f.read_text(), f"{package}/msg/{f.stem}"))
            store.register(types)
            return True
    return False


@lru_cache(maxsize=1)
def typestore():
    """ROS 2 Jazzy's message types plus ours (``msg/msg/*.msg``) and vision_msgs, so bag readers see the real types."""
    store = get_typestore(Stores.ROS2_JAZZY)
    if not _register(store, _vision_dirs(), "vision_msgs", "Detection2DArray"):
        raise BagError("cannot find the vision_msgs message definitions (Detection2DArray.msg) in "
                       + ", ".join(str(d) for d in _vision_dirs()))
    if _register(store, _interface_dirs(), "sam2_ros_interfaces", "TrackedObjects"):
        return store
    raise BagError(
        "cannot find the sam2_ros_interfaces message definitions (TrackedObjects.msg) in "
        + ", ".join(str(d) for d in _interface_dirs())
    )


def stamp_ns(header: Any) -> int:
    """std_msgs/Header stamp -> integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass(frozen=True)
class BagImage:
    """One image message of the input topic, decoded."""

    index: int  # position in the topic (frame index)
    log_time: int  # ns, when the bag recorded it
    header: Any  # its std_msgs/msg/Header (a rosbags message object)
    rgb: np.ndarray  # [H, W, 3] uint8

    @property
    def stamp(self) -> int:
        return stamp_ns(self.header)


class BagImageTopic:
    """An image topic of a rosbag2 bag, read as a stream; use as a context manager."""

    def __init__(self, path: str | Path, topic: str):
        self.path, self.topic = Path(path), topic
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise BagError(f"{self.path} is a folder without metadata.yaml: not a rosbag2 bag")
        self._store = typestore()
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as e:  # noqa: BLE001 - whatever the storage library raises: the file is not a readable bag
            raise BagError(f"cannot read bag {self.path} (corrupt, truncated or not a rosbag2 bag): {e}") from None
        try:
            self.msgtype, self.count, self._connections = self._select(self._reader.topics)
        except BaseException:
            self.close()
            raise

    def _select(self, topics: dict) -> tuple[str, int, list]:
        images = {t: i.msgtype for t, i in topics.items() if i.msgtype in (IMAGE, COMPRESSED_IMAGE)}
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(images.items())) or "none"
        if self.topic not in topics:
            raise BagError(f"bag {self.path} has no topic {self.topic}; its image topics: {listing}")
        info = topics[self.topic]
        if info.msgtype not in (IMAGE, COMPRESSED_IMAGE):
            raise BagError(
                f"topic {self.topic} of bag {self.path} has type {info.msgtype or 'mixed types'}, "
                f"not {IMAGE} or {COMPRESSED_IMAGE}; the bag's image topics: {listing}"
            )
        if not info.msgcount:
            raise BagError(f"topic {self.topic} of bag {self.path} has no messages")
        return info.msgtype, int(info.msgcount), info.connections

    def _raw(self) -> Iterator[tuple[int, int, Any]]:
        """(index, log time, deserialised message) of each message of the topic, in log-time order."""
        messages = self._reader.messages(connections=self._connections)
        index = 0
        while True:
            try:
                item = next(messages, None)
                if item is None:
                    return
                _, log_time, raw = item
                msg = self._store.deserialize_cdr(raw, self.msgtype)
            except Exception as e:  # noqa: BLE001 - the storage library or the CDR decoder on a damaged record
                raise BagError(
                    f"cannot read message {index} of {self.topic} in bag {self.path} (corrupt or truncated): {e}"
                ) from None
            yield index, log_time, msg
            index += 1

    def frames(self) -> Iterator[BagImage]:
        """Every message of the topic as an RGB frame; refuses a frame size change."""
        first_hw = None
        for index, log_time, msg in self._raw():
            where = f"message {index} of {self.topic} (stamp {stamp_ns(msg.header)})"
            try:
                if self.msgtype == IMAGE:
                    rgb = raw_image_to_rgb(msg.data, msg.height, msg.width, msg.step, msg.encoding)
                else:
                    rgb = compressed_image_to_rgb(msg.data, msg.format)
            except ImageConversionError as e:
                raise BagError(f"{where}: {e}") from None
            if first_hw is None:
                first_hw = rgb.shape[:2]
            elif rgb.shape[:2] != first_hw:
                raise BagError(
                    f"{where} is {rgb.shape[1]}x{rgb.shape[0]} but the topic's first image is "
                    f"{first_hw[1]}x{first_hw[0]}: the frame size must not change within the bag"
                )
            yield BagImage(index, log_time, msg.header, rgb)

    def frame_of_stamps(self, stamps: set[int]) -> dict[int, int]:
        """Index of the message with each header stamp in ``stamps`` (one pass reading headers only).

        Stamps no message has are left out; a wanted stamp on two messages is an error.
        """
        found: dict[int, int] = {}
        if stamps:
            for index, _, msg in self._raw():
                stamp = stamp_ns(msg.header)
                if stamp in stamps:
                    if stamp in found:
                        raise BagError(
                            f"stamp {stamp} is on messages {found[stamp]} and {index} of {self.topic}: "
                            "a prompt cannot choose between them, give its 'frame' instead"
                        )
                    found[stamp] = index
        return found

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagImageTopic:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


OUTPUT_NAMES = ("objects", "detections", "label_image", "label_info", "detections_3d", "markers", "overlay")


def output_topics(image_topic: str, msgtype: str = IMAGE) -> dict[str, str]:
    """The output bag's topics for ``image_topic``: each of :data:`OUTPUT_NAMES` -> its full name."""
    base = image_topic.rstrip("/")
    if msgtype == COMPRESSED_IMAGE and base.endswith("/compressed"):
        base = base[: -len("/compressed")]
    ns = base.rsplit("/", 1)[0] if "/" in base else ""
    return {name: f"{ns}/sam2/{name}" for name in OUTPUT_NAMES}


_NUMPY = {"float64": np.float64, "float32": np.float32, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
          "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
          "byte": np.uint8, "char": np.uint8}


def make_message(store, typename: str, values: dict | None = None):
    """A rosbags message of ``typename`` from nested dicts (sam2_ros.outputs), every other field at its default."""
    from rosbags.typesys.base import Nodetype

    values = values or {}
    _, fields = store.fielddefs[typename]

    def default(node):
        kind, detail = node
        if kind == Nodetype.BASE:
            name = detail[0]
            return "" if name == "string" else False if name == "bool" else 0.0 if name.startswith("float") else 0
        if kind == Nodetype.NAME:
            return make_message(store, detail)
        sub, n = detail
        numeric = sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY
        if kind == Nodetype.ARRAY:
            return np.zeros(n, _NUMPY[sub[1][0]]) if numeric else [default(sub) for _ in range(n)]
        return np.zeros(0, _NUMPY[sub[1][0]]) if numeric else []

    def convert(node, value):
        kind, detail = node
        if isinstance(value, dict) and kind == Nodetype.NAME:
            return make_message(store, detail, value)
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) and isinstance(value, list):
            sub = detail[0]
            if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY:
                return np.asarray(value, _NUMPY[sub[1][0]])
            return [convert(sub, v) for v in value]
        return value

    kwargs = {name: convert(node, values[name]) if name in values else default(node) for name, node in fields}
    if typename == "geometry_msgs/msg/Quaternion" and "w" not in values:
        kwargs["w"] = 1.0  # the identity, the message's declared default (as in rclpy)
    return store.types[typename](**kwargs)


@dataclass
class SideFrame:
    """What the side topics hold for one image: its depth (metres), the latest camera_info, its detections."""

    depth: tuple[Any, np.ndarray] | None = None  # (depth message header, [H, W] float32 metres)
    intrinsics: Intrinsics | None = None
    detections: list[list[dets.Detection]] = None  # one list per detector message stamped with the image


class BagSideTopics:
    """The depth, camera_info and detection topics of a bag, read beside its image topic; a context manager.

    :meth:`for_image` reads ahead (at most :data:`SIDE_LOOKAHEAD_NS` of log time past the image)
    and returns what belongs to that image; what can no longer belong to a later image is
    dropped, so memory stays bounded. Problems are counted in :attr:`counts` (and the first
    message of each kind kept in :attr:`errors`), as the node counts them.
    """

    KINDS = {"depth": (IMAGE,), "camera_info": (CAMERA_INFO,), "detections": (DETECTION_2D_ARRAY,)}

    def __init__(self, path: str | Path, topics: dict[str, str | None], tolerance_ns: int = 5_000_000):
        self.topics = {k: t for k, t in topics.items() if t}
        self.tolerance_ns = tolerance_ns
        self.counts: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self._store = typestore()
        self._reader = None
        self._kind_of: dict[str, str] = {}
        self._pending: list[tuple[str, int, Any]] = []  # (kind, stamp, payload), read ahead
        self._log_time = -1
        self._intrinsics: Intrinsics | None = None
        self._done = True
        if not self.topics:
            return
        self._reader = Reader(Path(path))
        self._reader.open()
        by_topic = self._reader.topics
        for kind, topic in self.topics.items():
            if topic not in by_topic:
                self.close()
                raise BagError(f"bag {path} has no topic {topic} (--{kind.replace('_', '-')}-topic)")
            if by_topic[topic].msgtype not in self.KINDS[kind]:
                self.close()
                raise BagError(f"topic {topic} has type {by_topic[topic].msgtype}, not {self.KINDS[kind][0]} "
                               f"(--{kind.replace('_', '-')}-topic)")
        self._kind_of = {t: k for k, t in self.topics.items()}
        conns = [c for t in self.topics.values() for c in by_topic[t].connections]
        self._messages = self._reader.messages(connections=conns)
        self._done = False

    def _count(self, key: str, message: str = "") -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        if message:
            self.errors.setdefault(key, message)

    def _read_until(self, log_time: int) -> None:
        while not self._done and self._log_time <= log_time:
            item = next(self._messages, None)
            if item is None:
                self._done = True
                return
            conn, self._log_time, raw = item
            kind = self._kind_of[conn.topic]
            msg = self._store.deserialize_cdr(raw, conn.msgtype)
            stamp = stamp_ns(msg.header)
            try:
                if kind == "depth":
                    payload = (msg.header, depth_to_metres(msg.data, msg.height, msg.width, msg.step, msg.encoding,
                                                           bool(msg.is_bigendian)))
                elif kind == "camera_info":
                    payload = Intrinsics.from_k(list(msg.k), int(msg.width), int(msg.height))
                else:
                    payload = [dets.Detection.from_center(
                        float(d.bbox.center.position.x), float(d.bbox.center.position.y), float(d.bbox.size_x),
                        float(d.bbox.size_y),
                        float(max(d.results, key=lambda r: r.hypothesis.score).hypothesis.score) if d.results else 1.0,
                        str(max(d.results, key=lambda r: r.hypothesis.score).hypothesis.class_id) if d.results else "",
                        str(d.id)) for d in msg.detections]
            except DepthError as e:
                self._count(f"{kind}_refused", f"{conn.topic} at stamp {stamp}: {e}")
                continue
            self._pending.append((kind, stamp, payload))

    def for_image(self, image: BagImage) -> SideFrame:
        """The side inputs of ``image`` (read ahead as needed)."""
        self._read_until(image.log_time + SIDE_LOOKAHEAD_NS)
        s, tol = image.stamp, self.tolerance_ns
        out = SideFrame(detections=[])
        keep = []
        best = None
        for item in self._pending:
            kind, stamp, payload = item
            if kind == "camera_info":
                if stamp <= s + tol or self._intrinsics is None:
                    self._intrinsics = payload
                else:
                    keep.append(item)
            elif kind == "detections" and stamp == s:
                out.detections.append(payload)
            elif kind == "depth" and abs(stamp - s) <= tol:
                if best is not None:
                    self._count("depth_unmatched")
                if best is None or abs(stamp - s) < abs(best[0] - s):
                    best = (stamp, payload)
            elif stamp > s + (tol if kind == "depth" else 0):
                keep.append(item)  # for a later image
            else:
                self._count(f"{kind}_unmatched")  # no image has its stamp
        self._pending = keep
        out.depth = best[1] if best is not None else None
        out.intrinsics = self._intrinsics
        return out

    def close(self) -> None:
        if self._reader is not None and self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagSideTopics:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


class BagResultWriter(AtomicOutput):
    """Writes each frame's result to a new rosbag2 bag (mcap); use as a context manager.

    The bag is written beside ``path`` and moved there by ``close``: a failed run leaves none. A bag
    from an earlier run at ``path`` (a folder with metadata.yaml) is replaced; anything else there
    is refused.
    """

    def __init__(self, path: str | Path, image_topic: str, image_msgtype: str, max_objects: int, overlay: bool,
                 depth: bool = False):
        self.path = Path(path)
        if self.path.exists() and not (self.path / "metadata.yaml").is_file():
            raise BagError(f"{self.path} exists and is not a bag from an earlier run: choose another --out")
        self.max_objects, self.overlay = max_objects, overlay
        self.topics = output_topics(image_topic, image_msgtype)
        self._store = store = typestore()
        self._types = {name: store.types[name] for name in (TRACKED_OBJECTS, "sam2_ros_interfaces/msg/TrackedObject", IMAGE)}
        self._staging = self.path.with_name(f"{self.path.name}.partial")
        if self._staging.exists():
            shutil.rmtree(self._staging)
        self._staging.mkdir(parents=True)
        self._writer = Writer(self._staging / self.path.name, version=OUTPUT_BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        msgtypes = {"objects": TRACKED_OBJECTS, "detections": DETECTION_2D_ARRAY, "label_image": IMAGE,
                    "label_info": LABEL_INFO, "detections_3d": DETECTION_3D_ARRAY, "markers": MARKER_ARRAY,
                    "overlay": IMAGE}
        names = ["objects", "detections", "label_image", "label_info"] + (["detections_3d", "markers"] if depth else [])
        names += ["overlay"] if overlay else []
        self._msgtypes = msgtypes
        self._connections = {
            name: self._writer.add_connection(self.topics[name], msgtypes[name], typestore=store,
                                              offered_qos_profiles=[_latched()] if name == "label_info" else ())
            for name in names
        }
        self.topics = {name: self.topics[name] for name in names}
        self._label_info_key = None

    def _image(self, header: Any, array: np.ndarray, encoding: str):
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        return self._types[IMAGE](
            header=header, height=h, width=w, encoding=encoding,
            is_bigendian=int(array.dtype.itemsize > 1 and sys.byteorder == "big"),  # native byte order
            step=array.strides[0], data=array.reshape(-1).view(np.uint8),
        )

    def _array(self, typename: str, element: str, header: Any, items: list[dict], key: str):
        store = self._store
        return make_message(store, typename, {
            "header": header, key: [make_message(store, element, {**item, "header": header}) for item in items]})

    def write(self, image: BagImage, result: FrameResult, labels: dict[int, str] | None = None,
              objects_3d: list | None = None, depth_frame_id: str = "") -> None:
        """The outputs of one input message, at its log time and with its header; ``objects_3d``:
        :func:`sam2_ros.depth.objects_3d` of the frame (None: no usable depth for it)."""
        header, T, store = image.header, self._types, self._store
        labels = labels or {}
        objects = T[TRACKED_OBJECTS](
            header=header, frame_index=int(result.frame_index),
            objects=[
                T["sam2_ros_interfaces/msg/TrackedObject"](
                    **object_values(result, i, labels.get(oid, "")),
                    mask=self._image(header, object_mask(result, i), "mono8"),
                )
                for i, oid in enumerate(result.object_ids)
            ],
        )
        label_values, encoding = label_image(result, self.max_objects)
        out = {
            "objects": objects,
            "detections": self._array(DETECTION_2D_ARRAY, "vision_msgs/msg/Detection2D", header,
                                      outputs.detections_2d(result, labels), "detections"),
            "label_image": self._image(header, label_values, encoding),
        }
        key = tuple((oid, labels.get(oid, "")) for oid in result.object_ids)
        if key != self._label_info_key:  # as the node: only when the objects or their labels change
            self._label_info_key = key
            out["label_info"] = make_message(store, LABEL_INFO, {
                "header": header, **outputs.label_info(result.object_ids, labels)})
        if objects_3d is not None and "detections_3d" in self._connections:
            h3 = make_message(store, "std_msgs/msg/Header", {"stamp": header.stamp,
                                                             "frame_id": depth_frame_id or header.frame_id})
            out["detections_3d"] = self._array(DETECTION_3D_ARRAY, "vision_msgs/msg/Detection3D", h3,
                                               outputs.detections_3d(objects_3d), "detections")
            out["markers"] = make_message(store, MARKER_ARRAY, {"markers": [
                make_message(store, "visualization_msgs/msg/Marker", {**m, "header": h3})
                for m in outputs.markers(objects_3d)]})
        if self.overlay:
            out["overlay"] = self._image(header, overlay_image(image.rgb, result, labels), "rgb8")
        for name, msg in out.items():
            msgtype = self._msgtypes[name]
            self._writer.write(self._connections[name], image.log_time, self._store.serialize_cdr(msg, msgtype))

    def close(self) -> Path:
        """Finish the bag and move it to ``path``."""
        self._writer.close()
        if self.path.exists():
            shutil.rmtree(self.path)
        (self._staging / self.path.name).rename(self.path)
        self._staging.rmdir()
        return self.path

    def abort(self) -> None:
        """Drop the bag being written."""
        self._writer.abort()
        shutil.rmtree(self._staging, ignore_errors=True)


def _latched():
    """The QoS a transient-local publisher offers (label_info), so a replay latches it as the node does."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(2147483647, 4294967295)  # rosbag2's "infinite"
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               never, never, QosLiveliness.AUTOMATIC, never, False)


def track_bag(
    tracker: Tracker, source: BagImageTopic, prompts: list[Prompt], out_dir: str | Path, max_objects: int,
    overlay: bool = False, max_frames: int | None = None, progress: bool = True, side: BagSideTopics | None = None,
) -> tuple[TrackRun, BagResultWriter]:
    """Track ``source``'s images with ``prompts``; write ``out_dir``/masks.npz and the output bag ``out_dir``/bag.

    ``side``: the bag's depth / camera_info / detection topics: detections prompt the tracker on
    their frame (the node's association, default policy), depth gives detections_3d and markers.
    Memory stays flat in the bag's length: messages are streamed and masks go to disk frame by frame.
    Returns the run (without masks) and the closed bag writer (its ``path`` and ``topics``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(p.stamp is not None for p in prompts):
        prompts = resolve_stamps(
            prompts, source.frame_of_stamps({p.stamp for p in prompts if p.stamp is not None}),
            f"{source.topic} in bag {source.path}",
        )
    total = source.count if max_frames is None else min(source.count, max_frames)
    current: list[BagImage] = []

    def rgb_frames() -> Iterator[np.ndarray]:
        images = islice(source.frames(), total)
        for image in tqdm(images, total=total, desc="track", unit="frame", disable=not progress):
            current[:] = [image]
            yield image.rgb

    labels: dict[int, str] = {}
    used_ids = {p.object_id for p in prompts}  # the prompts file's ids are taken, even before their frame

    def new_id() -> int:
        oid = max([0, *used_ids, *tracker.object_ids]) + 1
        used_ids.add(oid)
        return oid

    assoc = (dets.DetectionAssociator(dets.DetectionPolicy(), history=max(64, tracker.history_frames))
             if side is not None and "detections" in side.topics else None)
    depth_settings = DepthSettings()

    def on_frame(i: int, frame: np.ndarray, result: FrameResult) -> None:
        image = current[0]
        found = side.for_image(image) if side is not None else None
        if found is not None and found.detections:
            for boxes in found.detections:  # on this very frame: offline, nothing is late
                plan = dets.apply_detections(tracker, assoc, boxes, tracker.frame_index, labels, new_id, max_objects)
                for oid, det in plan.created:
                    labels.setdefault(oid, det.class_id)
                for key, n in [("detections_objects_created", len(plan.created)),
                               ("detections_objects_reseeded", len(plan.reseeded)),
                               ("detections_objects_removed", len(plan.removed)),
                               *((f"detections_refused_{r}", n) for r, n in plan.refused.items())]:
                    if n:
                        side.counts[key] = side.counts.get(key, 0) + n
            result = tracker.current_result()
        if assoc is not None:
            assoc.retain(result.object_ids)
            assoc.observe(result.frame_index, result.object_ids, result.boxes, result.visible)
        objects_3d, depth_frame = None, ""
        if found is not None and found.depth is not None:
            depth_header, depth_m = found.depth
            if found.intrinsics is None:
                side._count("depth_refused_no_camera_info")
            elif not np.isfinite(depth_m).any():
                side._count("depth_refused_all_invalid")
            else:
                try:
                    objects_3d, _ = objects_3d_of(result, labels, depth_m, found.intrinsics, depth_settings)
                    depth_frame = depth_header.frame_id
                except DepthError as e:
                    side._count("depth_refused_size", str(e))
        bag.write(image, result, labels, objects_3d, depth_frame)

    has_depth = side is not None and "depth" in side.topics and "camera_info" in side.topics
    with (
        MasksWriter(out_dir / "masks.npz", [p.object_id for p in prompts]) as masks,
        BagResultWriter(out_dir / "bag", source.topic, source.msgtype, max_objects, overlay, depth=has_depth) as bag,
    ):
        run = run_tracker(tracker, rgb_frames(), prompts, keep_masks=False, sink=masks.write, on_frame=on_frame)
    return run, bag


objects_3d_of = objects_3d
