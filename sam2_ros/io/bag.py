"""rosbag2 in, rosbag2 out for ``sam2-ros track --bag`` (the ``rosbags`` library: no rclpy, no ROS install).

Input: one image topic of a bag (mcap or sqlite3 storage; a bag folder or its single storage
file), ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage`` (chosen by the topic's
type), streamed one message at a time in log-time order. Message ``i`` of the topic is frame
``i`` of the prompts file; a prompt may name a message by its header stamp instead.

Output: a rosbag2 bag (mcap, zstd-compressed chunks) with, for every input message, written at
that message's log time and with exactly its header (stamp and frame_id):

* ``<ns>/sam2/objects``      sam2_ros_interfaces/msg/TrackedObjects, as the node publishes it;
* ``<ns>/sam2/label_image``  sensor_msgs/msg/Image mono8 (mono16 above 255 objects), as the node's;
* ``<ns>/sam2/overlay``      sensor_msgs/msg/Image rgb8 (on request).

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
TRACKED_OBJECTS = "sam2_ros_interfaces/msg/TrackedObjects"
#: rosbag2 metadata version of the output bag (ROS 2 Jazzy writes and reads 8).
OUTPUT_BAG_VERSION = 8
REPO = Path(__file__).resolve().parents[2]


class BagError(Sam2RosError, ValueError):
    """A bag, topic or message that ``sam2-ros track --bag`` cannot use; the message names it."""


def _interface_dirs() -> list[Path]:
    """Where our message definitions are: the checkout's msg/msg, else an installed sam2_ros_interfaces."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    return [REPO / "msg" / "msg"] + [Path(p) / "share" / "sam2_ros_interfaces" / "msg" for p in prefixes]


@lru_cache(maxsize=1)
def typestore():
    """ROS 2 Jazzy's message types plus ours (``msg/msg/*.msg``), so bag readers see the real types."""
    store = get_typestore(Stores.ROS2_JAZZY)
    for folder in _interface_dirs():
        files = sorted(folder.glob("*.msg"))
        if any(f.stem == "TrackedObjects" for f in files):
            types = {}
            for f in files:
                types.update(get_types_from_msg(f.read_text(), f"sam2_ros_interfaces/msg/{f.stem}"))
            store.register(types)
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


def output_topics(image_topic: str, msgtype: str = IMAGE) -> dict[str, str]:
    """The output bag's topics for ``image_topic``: ``objects``, ``label_image``, ``overlay`` -> full names."""
    base = image_topic.rstrip("/")
    if msgtype == COMPRESSED_IMAGE and base.endswith("/compressed"):
        base = base[: -len("/compressed")]
    ns = base.rsplit("/", 1)[0] if "/" in base else ""
    return {name: f"{ns}/sam2/{name}" for name in ("objects", "label_image", "overlay")}


class BagResultWriter(AtomicOutput):
    """Writes each frame's result to a new rosbag2 bag (mcap); use as a context manager.

    The bag is written beside ``path`` and moved there by ``close``: a failed run leaves none. A bag
    from an earlier run at ``path`` (a folder with metadata.yaml) is replaced; anything else there
    is refused.
    """

    def __init__(self, path: str | Path, image_topic: str, image_msgtype: str, max_objects: int, overlay: bool):
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
        names = ["objects", "label_image"] + (["overlay"] if overlay else [])
        self._connections = {
            name: self._writer.add_connection(self.topics[name], TRACKED_OBJECTS if name == "objects" else IMAGE, typestore=store)
            for name in names
        }
        self.topics = {name: self.topics[name] for name in names}

    def _image(self, header: Any, array: np.ndarray, encoding: str):
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        return self._types[IMAGE](
            header=header, height=h, width=w, encoding=encoding,
            is_bigendian=int(array.dtype.itemsize > 1 and sys.byteorder == "big"),  # native byte order
            step=array.strides[0], data=array.reshape(-1).view(np.uint8),
        )

    def write(self, image: BagImage, result: FrameResult) -> None:
        """The outputs of one input message, at its log time and with its header."""
        header, T = image.header, self._types
        objects = T[TRACKED_OBJECTS](
            header=header, frame_index=int(result.frame_index),
            objects=[
                T["sam2_ros_interfaces/msg/TrackedObject"](
                    **object_values(result, i, ""), mask=self._image(header, object_mask(result, i), "mono8"),
                )
                for i in range(len(result.object_ids))
            ],
        )
        labels, encoding = label_image(result, self.max_objects)
        out = {"objects": (objects, TRACKED_OBJECTS), "label_image": (self._image(header, labels, encoding), IMAGE)}
        if self.overlay:
            out["overlay"] = (self._image(header, overlay_image(image.rgb, result), "rgb8"), IMAGE)
        for name, (msg, msgtype) in out.items():
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


def track_bag(
    tracker: Tracker, source: BagImageTopic, prompts: list[Prompt], out_dir: str | Path, max_objects: int,
    overlay: bool = False, max_frames: int | None = None, progress: bool = True,
) -> tuple[TrackRun, BagResultWriter]:
    """Track ``source``'s images with ``prompts``; write ``out_dir``/masks.npz and the output bag ``out_dir``/bag.

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

    with (
        MasksWriter(out_dir / "masks.npz", [p.object_id for p in prompts]) as masks,
        BagResultWriter(out_dir / "bag", source.topic, source.msgtype, max_objects, overlay) as bag,
    ):
        run = run_tracker(
            tracker, rgb_frames(), prompts, keep_masks=False, sink=masks.write,
            on_frame=lambda i, frame, result: bag.write(current[0], result),
        )
    return run, bag
