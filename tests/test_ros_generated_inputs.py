"""Generated bad input on every interface of the node (issue 21, item 2): property-based, seeded
(``derandomize``), bounded in examples so the whole file stays within its CI budget.

One node runs in this process for the whole module (tiny_export_128, max_objects 3, detections,
clicks and depth enabled) on a MultiThreadedExecutor; most inputs reach it by calling its
subscription and service callbacks with real message objects, some through real DDS (a client
node calling the services, publishing images). A ROS-free reference :class:`Tracker` on the same
export sees the same good frames and the same prompts of object 1, and never a bad input.

Policy for accepted inputs (valid by chance): object 1 is the only tracked object. Generated
prompts, detections and clicks never refine it: their ids are never 1 (new ids, NEW_OBJECT,
unknown or invalid ids; RemoveObject never names it either) and detection re-seeding is off (``detection_prompts.reseed: never``;
a click on object 1 is ignored, ``click_prompts.on_tracked: ignore``). Whatever they create is
removed through ``~/remove_object`` before the next frame. Generated stamps that name a frame not
received yet are never the stamp of a good frame to come (the prompt times out, the detections
fail when the next frame arrives). A bad image that turns out to be a valid frame of the stream's
size is processed by the node: the reference steps the same decoded frame. A successful Reset is
applied to the reference too, and object 1 is prompted again on both.

Invariant after each case: every reply is success=false with a message, or an acceptance as
above; refused topic inputs are counted; the executor and the tracking thread are alive; no
exception was logged; and on the next good frame the node's masks and scores of object 1 are bit
for bit those of the reference. The cases run per interface are printed at the end (``-s``).

The compressed transport is checked on its decoder (``compressed_msg_to_rgb``, what the node's
worker calls; the node here subscribes to raw images); engine directories and the prompts file
without a node; parameters on a second, unconfigured node (configure with each accepted value).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("hypothesis")

import rclpy  # noqa: E402
from geometry_msgs.msg import Point, Point32  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_support import Client, image_msg, set_stamp, video_frames  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose  # noqa: E402

from sam2_ros.backends import load_backend  # noqa: E402
from sam2_ros.errors import EngineError, ImageConversionError, PromptsFileError, TrackerInputError  # noqa: E402
from sam2_ros.io.prompts_file import load_prompts  # noqa: E402
from sam2_ros.ros import convert as rc  # noqa: E402
from sam2_ros.ros.node import Sam2TrackerNode  # noqa: E402
from sam2_ros.ros.params import CONFIGURE_TIME, PARAMS, PARAMS_BY_NAME  # noqa: E402
from sam2_ros.ros.worker import LATEST  # noqa: E402
from sam2_ros.tracker import Tracker  # noqa: E402
from sam2_ros_interfaces.srv import AddPrompt, ListObjects, RemoveObject, Reset  # noqa: E402

S = 1_000_000_000
WH = (160, 120)  # the frames' size
BOX = [30.0, 20.0, 110.0, 100.0]  # object 1's box
TRACKED = 1
NEW = AddPrompt.Request.NEW_OBJECT
INT32 = (-(2**31), 2**31 - 1)
F32 = st.floats(width=32)  # NaN, inf, huge and negative included
SETTINGS = dict(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))

#: generated cases per interface (printed at the end of the module)
CASES: collections.Counter = collections.Counter()


def stamp_of(k: int) -> int:
    """The stamp of good frame ``k``: on a grid of 0.1 s that generated stamps avoid."""
    return 1000 * S + k * (S // 10)


def off_grid(ns: int) -> int:
    return ns + 1 if ns >= 1000 * S and (ns - 1000 * S) % (S // 10) == 0 else ns


class ExceptionLog(logging.Handler):
    """Records every log record with an exception (sam2_ros logs "internal error" that way)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        if record.exc_info:
            self.records.append(record)


class Rig:
    """The node under test, its reference tracker and the good frames."""

    def __init__(self, export: Path, frames: list[np.ndarray]):
        self.frames = frames
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        overrides = {
            "engine_dir": str(export), "intra_op_threads": 1, "max_objects": 3, "history_frames": 4, "service_timeout": 0.3,
            "input_qos.reliability": "reliable", "input_qos.depth": 10, "diagnostics_period": 0.5,
            "detection_prompts.enabled": True, "detection_prompts.reseed": "never",
            "click_prompts.enabled": True, "click_prompts.min_interval": 0.0,
            "depth.enabled": True, "depth.publish_points": True,
        }
        self.node = Sam2TrackerNode(context=self.ctx,
                                    parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        self.executor = MultiThreadedExecutor(num_threads=6, context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        self.channel = self.node.channels[0]
        self.worker = self.channel.worker
        self.scheduler_thread = self.node._scheduler._thread
        self.ref = Tracker(load_backend(export, "onnxruntime", intra_op_threads=1), max_objects=3, cond_slots=2, history_frames=4)
        self.k = 0  # next good frame
        self.sub = 0  # stamps of bad images between good frames
        self.errors = ExceptionLog()
        logging.getLogger("sam2_ros").addHandler(self.errors)
        self.client = Client("sam2_generated_client")
        self.client.wait_for_subscriber()
        self.need_seed = True
        self.next_frame()

    def close(self):
        logging.getLogger("sam2_ros").removeHandler(self.errors)
        self.client.close()
        self.node._deactivate()
        self.node._cleanup()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
        self.thread.join(5)
        self.ref.close()

    # ------------------------------------------------------------ plumbing
    def settle(self, timeout: float = 30.0) -> None:
        """Until every frame received is processed, dropped or rejected and no command waits."""
        w, deadline = self.worker, time.monotonic() + timeout
        while True:
            with w._cond:
                s = w.stats
                if w._pending is None and not w._commands and s.received == s.processed + s.dropped + s.rejected:
                    break
            assert time.monotonic() < deadline, "the tracker never settled"
            time.sleep(0.002)
        self.barrier()

    def barrier(self) -> None:
        """Wait until the scheduler ran every command queued before this one."""
        self.worker.call(lambda w, s: None, LATEST, 30.0, needs_frame=False)

    def counts(self) -> dict:
        with self.worker._cond:
            s = self.worker.stats
            return {"received": s.received, "processed": s.processed, "rejected": s.rejected, "dropped": s.dropped}

    def refused(self) -> int:
        with self.channel._counts_lock:
            return sum(n for k, n in self.channel._counts.items() if "refused" in k)

    def current(self):
        return self.worker.snapshot()[1]

    def newest(self) -> int:
        with self.worker._cond:
            return self.worker._newest_received or stamp_of(self.k - 1)

    def bad_stamp(self) -> int:
        """A stamp between the last good frame and the next one (newer than anything received)."""
        self.sub += 1
        return max(self.newest(), stamp_of(self.k - 1)) + 1000 * self.sub % (S // 20) + 7

    def srv(self, name: str, request, dds: bool = False):
        types = {"add_prompt": AddPrompt, "remove_object": RemoveObject, "reset": Reset, "list_objects": ListObjects}
        if dds:
            CASES["(through DDS)"] += 1
            return self.client.call(types[name], name, request, timeout=30)
        fn = getattr(self.channel, f"_srv_{name}")
        return fn(request, types[name].Response())

    # ------------------------------------------------------------ checks
    def assert_alive(self) -> None:
        assert self.thread.is_alive(), "the executor thread died"
        assert self.scheduler_thread.is_alive() and self.node._scheduler._thread is self.scheduler_thread
        assert self.node.state_label == "active"
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]
        with self.worker._cond:  # the counters add up (nothing waits or is in flight once settled)
            s = self.worker.stats
            assert s.received == s.processed + s.dropped + s.rejected + s.queue_depth + s.in_flight

    def remove_extras(self) -> None:
        """Remove every object but object 1 (created by an accepted generated input)."""
        reply = self.srv("list_objects", ListObjects.Request())
        assert reply.success
        for o in reply.objects:
            if o.id != TRACKED:
                removed = self.srv("remove_object", RemoveObject.Request(object_id=o.id))
                assert removed.success, removed.message

    def mirror(self, msg: Image, before: dict) -> None:
        """A bad image that the node processed (a valid frame): the reference steps it too."""
        if self.counts()["processed"] > before["processed"]:
            res = self.ref.step(rc.image_msg_to_rgb(msg))
            self.assert_same(self.current(), res)

    @staticmethod
    def assert_same(got, want) -> None:
        assert got is not None and got.object_ids == want.object_ids, (got and got.object_ids, want.object_ids)
        assert np.array_equal(got.masks, want.masks), "masks differ from the reference tracker"
        assert np.array_equal(got.scores, want.scores) and np.array_equal(got.ious, want.ious)

    def deliver(self, msg: Image, dds: bool = False) -> None:
        """Hand an image to the camera (through DDS: published, then waited for until the node
        counts it; else: its subscription callback) and let the tracking thread finish it."""
        if dds:
            received = self.counts()["received"]
            self.client.image_pub.publish(msg)
            deadline = time.monotonic() + 30
            while self.counts()["received"] == received:
                assert time.monotonic() < deadline, "the image never arrived"
                time.sleep(0.002)
        else:
            self.channel._on_image(msg)
        self.settle()

    def next_frame(self, dds: bool = False) -> None:
        """Feed the next good frame; object 1's masks must equal the reference's bit for bit."""
        self.remove_extras()
        k = self.k
        rgb = self.frames[k % len(self.frames)]
        msg = image_msg(rgb, stamp_of(k))
        before = self.counts()
        self.deliver(msg, dds)
        self.k, self.sub = k + 1, 0
        assert self.counts()["processed"] == before["processed"] + 1, self.worker.stats.last_error
        want = self.ref.step(rgb)
        if self.need_seed:
            reply = self.srv("add_prompt", AddPrompt.Request(object_id=TRACKED, box=BOX))
            assert reply.success and reply.object_id == TRACKED, reply.message
            want = self.ref.add_prompt(TRACKED, box=BOX)
            self.need_seed = False
        self.assert_same(self.current(), want)
        self.assert_alive()


@pytest.fixture(scope="module")
def rig(tiny_export_128, shared_data):
    r = Rig(tiny_export_128, video_frames(shared_data, 8, WH))
    yield r
    try:
        r.next_frame()  # the last batch of generated inputs is checked too
    finally:
        r.close()
    print("\ngenerated cases per interface:")
    for key, n in sorted(CASES.items()):
        print(f"  {key:<40} {n:>6}")


# ------------------------------------------------------------------ strategies
def text(max_size: int = 40):
    """Any text: unicode, NUL and control characters, lone surrogates, now and then 300 characters."""
    chars = st.one_of(st.characters(), st.sampled_from(["\x00", "\x1b", "\n", "\ud800", "\udfff", "é", "🙂"]))
    return st.one_of(st.text(chars, max_size=max_size), st.builds(lambda c, n: c * n, st.sampled_from("xü"),
                                                                  st.sampled_from([256, 257, 300])))


def dds_safe(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: how a generated stamp is chosen (resolved against the node's state when the case runs)
STAMP_KINDS = st.sampled_from(["zero", "zero", "latest", "history", "future", "old", "raw"])
RAW_STAMP = st.tuples(st.integers(*INT32), st.integers(0, 2**32 - 1))


def resolve_stamp(rig: Rig, kind: str, raw: tuple[int, int]):
    """(sec, nanosec) for a stamp kind; never a good frame to come."""
    w = rig.worker
    with w._cond:
        history = list(w._in_history)
        latest = w.current_stamp or 0
    ns = {"zero": 0, "latest": latest, "history": history[raw[1] % len(history)] if history else latest,
          "future": off_grid(rig.newest() + 1 + raw[1] % (5 * S)),
          "old": max(1, latest - S // 10 * (5 + raw[1] % 1000))}.get(kind)
    if ns is None:  # raw: any sec (negative too), any nanosec (over 1e9 too)
        sec, nsec = raw
        total = sec * S + nsec
        return (sec, nsec) if not (total > rig.newest() and total == off_grid(total) - 1) else (sec, nsec + 1)
    return divmod(ns, S)


@st.composite
def image_fields(draw, max_side: int = 200):
    """height, width, step, encoding and data of a generated sensor_msgs/Image (any of them bad)."""
    enc = draw(st.one_of(st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "mono16", "16UC1", "32FC1",
                                          "bayer_rggb8", "yuv422", "8UC3", "8UC1", "RGB8", " rgb8", ""]), text(12)))
    same = draw(st.integers(0, 3)) == 0  # now and then the stream's size (a valid frame by chance)
    w = WH[0] if same else draw(st.one_of(st.integers(0, max_side), st.sampled_from([2**32 - 1, 2**31, 100_000])))
    h = WH[1] if same else draw(st.one_of(st.integers(0, max_side), st.sampled_from([2**32 - 1, 1, 70_000])))
    ch = {"mono8": 1, "8UC1": 1, "mono16": 2, "16UC1": 2, "32FC1": 4, "rgba8": 4, "bgra8": 4}.get(enc, 3)
    step = draw(st.one_of(st.just(w * ch), st.builds(lambda p: w * ch + p, st.integers(1, 9)),
                          st.integers(0, 2**32 - 1)))
    step = min(step, 2**32 - 1)
    full = step * h if step * h < 400_000 else draw(st.integers(0, 4000))
    size = max(0, min(400_000, full + draw(st.one_of(st.just(0), st.integers(-200, 200), st.integers(-full, 0)))))
    data = np.random.default_rng(draw(st.integers(0, 2**16))).bytes(size)
    return h, w, step, enc, data


def image_from(fields) -> Image:
    h, w, step, enc, data = fields
    msg = Image(height=h, width=w, step=step, encoding=enc)
    msg.data = data
    return msg


@st.composite
def add_prompt_requests(draw):
    """AddPrompt requests of any kind: never for object 1 (see the module docstring)."""
    oid = draw(st.one_of(st.just(NEW), st.integers(*INT32), st.sampled_from([0, 2, 3, 65535, 65536, -2, 2**31 - 1]))
               .filter(lambda i: i != TRACKED))
    valid = draw(st.integers(0, 3)) == 0  # a valid prompt now and then: accepted, then removed
    n = draw(st.integers(0, 5))
    if valid:
        xy = st.floats(0, WH[0] - 1, width=32), st.floats(0, WH[1] - 1, width=32)
        points = [Point32(x=draw(xy[0]), y=draw(xy[1])) for _ in range(max(n, 1))]
        labels = [draw(st.integers(0, 1)) for _ in points]
    else:
        points = [Point32(x=draw(F32), y=draw(F32), z=draw(F32)) for _ in range(n)]
        labels = draw(st.lists(st.one_of(st.integers(-128, 127), st.integers(0, 1)), max_size=6))
        if draw(st.booleans()):
            labels = labels[: len(points)] + [1] * (len(points) - len(labels))
    box = [] if valid else draw(st.one_of(st.just([]), st.lists(F32, min_size=4, max_size=4), st.lists(F32, max_size=7),
                         st.builds(lambda x, y, bw, bh: [x, y, x + bw, y + bh], st.floats(-20, 170, width=32),
                                   st.floats(-20, 130, width=32), st.floats(-10, 90, width=32),
                                   st.floats(-10, 90, width=32))))
    mask = Image()
    if not valid and draw(st.integers(0, 2)) == 0:
        if draw(st.booleans()):  # a mask of the frame's size, mono8
            m = np.zeros((WH[1], WH[0]), np.uint8)
            m[draw(st.integers(0, 60)):, draw(st.integers(0, 80)):] = draw(st.sampled_from([0, 1, 255]))
            mask = Image(height=WH[1], width=WH[0], step=WH[0], encoding=draw(st.sampled_from(["mono8", "8UC1",
                                                                                               "rgb8", ""])))
            mask.data = m.tobytes()[: draw(st.sampled_from([None, -1, 5]))] + bytes(draw(st.sampled_from([0, 0, 3])))
        else:
            mask = image_from(draw(image_fields()))
    label = draw(st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=12) if valid else text())
    req = AddPrompt.Request(object_id=oid, label=label, points=points, labels=labels, box=box, mask=mask)
    set_stamp(req.stamp, 0)
    return req, draw(STAMP_KINDS), draw(RAW_STAMP)


@st.composite
def service_ops(draw):
    """A batch of service calls, mostly AddPrompt."""
    ops = draw(st.lists(st.sampled_from(["add_prompt"] * 6 + ["remove_object", "list_objects", "reset"]),
                        min_size=2, max_size=5))
    out = []
    for op in ops:
        arg = {"add_prompt": add_prompt_requests(), "list_objects": st.none(),
               "remove_object": st.one_of(st.integers(*INT32), st.integers(-3, 5)).filter(lambda i: i != TRACKED),
               "reset": st.integers(0, 3).map(lambda i: i == 0)}[op]
        out.append((op, draw(arg)))
    return out


# ------------------------------------------------------------------ 1. services
@settings(max_examples=30, **SETTINGS)
@given(ops=service_ops(), dds=st.lists(st.integers(0, 9), min_size=5, max_size=5))
def test_generated_service_requests(rig, ops, dds):
    for (op, arg), d in zip(ops, dds):
        over_dds = d == 0
        if op != "reset" or arg:
            CASES[f"1 services: {op}"] += 1
        if op == "add_prompt":
            req, kind, raw = arg
            req.stamp.sec, req.stamp.nanosec = resolve_stamp(rig, kind, raw)
            over_dds = over_dds and dds_safe(req.label)
            reply = rig.srv("add_prompt", req, over_dds)
            assert reply.message, "a reply without a message"
            if reply.success:  # a valid prompt by chance: a new object, never object 1
                assert reply.object_id != TRACKED and req.object_id in (NEW, reply.object_id)
                CASES["1 services: add_prompt accepted"] += 1
        elif op == "remove_object":
            reply = rig.srv("remove_object", RemoveObject.Request(object_id=arg), over_dds)
            assert reply.message and (reply.success or "unknown object id" in reply.message), reply.message
        elif op == "list_objects":
            reply = rig.srv("list_objects", ListObjects.Request(), over_dds)
            assert reply.success and (rig.need_seed or TRACKED in [o.id for o in reply.objects])
        elif arg:  # reset: a documented acceptance, the reference forgets object 1 as well
            reply = rig.srv("reset", Reset.Request(), over_dds)
            assert reply.success and reply.message
            rig.ref.reset()
            rig.need_seed = True
    rig.next_frame(dds=dds[0] == 1)


# ------------------------------------------------------------------ 2. images
@settings(max_examples=30, **SETTINGS)
@given(images=st.lists(st.tuples(image_fields(), st.sampled_from(["new", "zero", "new", "duplicate", "new", "older"]),
                                 st.integers(0, 9)), min_size=2, max_size=4))
def test_generated_images(rig, images):
    for fields, stamp_kind, d in images:
        msg = image_from(fields)
        ns = {"new": rig.bad_stamp(), "zero": 0, "duplicate": rig.newest(),
              "older": rig.newest() - S // 100 * (1 + d)}[stamp_kind]
        set_stamp(msg.header.stamp, ns)
        msg.header.frame_id = "camera"
        CASES[f"2 images: stamp {stamp_kind}"] += 1
        before, refused = rig.counts(), rig.worker.stats.rejected
        if d == 0:
            CASES["(through DDS)"] += 1
        rig.deliver(msg, dds=d == 0)
        after = rig.counts()
        assert after["received"] == before["received"] + 1
        assert after["processed"] + after["rejected"] == before["processed"] + before["rejected"] + 1
        if after["rejected"] > refused:
            assert rig.worker.stats.last_error, "a rejected frame without a reason"
            CASES["2 images: rejected"] += 1
        rig.mirror(msg, before)
    rig.next_frame()


def _encoded(ext: str) -> bytes:
    import cv2

    rng = np.random.default_rng(0)
    return cv2.imencode(ext, rng.integers(0, 255, (WH[1], WH[0], 3), np.uint8))[1].tobytes()


JPEG, PNG = _encoded(".jpg"), _encoded(".png")


@settings(max_examples=60, **SETTINGS)
@given(base=st.sampled_from(["jpeg", "png", "garbage", "empty"]), cut=st.floats(0, 1), flips=st.lists(
    st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4), fmt=st.one_of(
    st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "tiff", "", "bayer"]), text(12)))
def test_generated_compressed_images(base, cut, flips, fmt):
    """CompressedImage: garbage, truncated or bit-flipped JPEG / PNG, any format string: an RGB
    frame or an ImageConversionError, nothing else (the decoder of the compressed transport)."""
    CASES[f"2 compressed: {base}"] += 1
    data = bytearray({"jpeg": JPEG, "png": PNG, "empty": b"",
                      "garbage": np.random.default_rng(len(flips)).bytes(int(cut * 5000))}[base])
    if base in ("jpeg", "png"):
        data = data[: max(1, int(len(data) * cut))] if cut < 0.9 else data
    for where, value in flips:
        if data:
            data[int(where * (len(data) - 1))] = value
    try:
        rgb = rc.compressed_msg_to_rgb(CompressedImage(format=fmt, data=bytes(data)))
    except ImageConversionError as e:
        assert str(e)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous


# ------------------------------------------------------------------ 3. robot inputs
@st.composite
def detection_messages(draw):
    n = draw(st.one_of(st.integers(0, 5), st.just(101)))
    f64 = st.one_of(st.floats(), st.floats(-50, 200))
    dets = []
    for _ in range(n if n <= 5 else 1):
        d = Detection2D(id=draw(text(10)) if draw(st.booleans()) else "")
        d.bbox.center.position.x, d.bbox.center.position.y = draw(f64), draw(f64)
        d.bbox.size_x, d.bbox.size_y, d.bbox.center.theta = draw(f64), draw(f64), draw(st.one_of(st.just(0.0), f64))
        for _ in range(draw(st.integers(0, 2))):
            h = ObjectHypothesisWithPose()
            h.hypothesis.class_id, h.hypothesis.score = draw(text()), draw(st.one_of(st.floats(), st.floats(0, 1)))
            d.results.append(h)
        dets.append(d)
    if n > 5:
        dets = dets * n  # over detection_prompts.max_boxes
    return Detection2DArray(detections=dets), draw(STAMP_KINDS), draw(RAW_STAMP)


@st.composite
def depth_messages(draw):
    fields = draw(image_fields(max_side=170))
    if draw(st.booleans()):  # the colour frames' size in a depth encoding
        enc = draw(st.sampled_from(["16UC1", "32FC1"]))
        it = 2 if enc == "16UC1" else 4
        vals = draw(st.sampled_from(["zeros", "random", "nan"]))
        rng = np.random.default_rng(draw(st.integers(0, 99)))
        arr = (np.zeros((WH[1], WH[0]), np.uint16 if it == 2 else np.float32) if vals == "zeros"
               else np.full((WH[1], WH[0]), np.nan, np.float32) if vals == "nan" and it == 4
               else rng.integers(0, 65535, (WH[1], WH[0])).astype(np.uint16) if it == 2
               else rng.normal(1, 5, (WH[1], WH[0])).astype(np.float32))
        fields = (WH[1], WH[0], WH[0] * it, enc, arr.tobytes())
    msg = image_from(fields)
    msg.is_bigendian = draw(st.integers(0, 1))
    return msg, draw(st.sampled_from(["latest", "next", "raw"])), draw(RAW_STAMP)


@st.composite
def camera_infos(draw):
    k = draw(st.one_of(st.lists(st.floats(), min_size=9, max_size=9),
                       st.builds(lambda f, c: [f, 0.0, c, 0.0, f, c, 0.0, 0.0, 1.0], st.floats(-10, 500),
                                 st.floats(-10, 200))))
    return CameraInfo(k=k, width=draw(st.integers(0, 2**32 - 1)), height=draw(st.integers(0, 300)))


@st.composite
def robot_ops(draw):
    ops = draw(st.lists(st.sampled_from(["detections", "click", "depth", "camera_info"]), min_size=2, max_size=5))
    click = st.tuples(st.one_of(st.floats(-5, 170), st.floats()), st.one_of(st.floats(-5, 130), st.floats()),
                      st.floats())
    return [(op, draw({"detections": detection_messages(), "click": click, "depth": depth_messages(),
                       "camera_info": camera_infos()}[op])) for op in ops]


@settings(max_examples=25, **SETTINGS)
@given(ops=robot_ops())
def test_generated_robot_inputs(rig, ops):
    ch = rig.channel
    for op, arg in ops:
        CASES[f"3 robot inputs: {op}"] += 1
        with ch._counts_lock:
            seen = sum(ch._counts.values())
        if op == "detections":
            msg, kind, raw = arg
            msg.header.stamp.sec, msg.header.stamp.nanosec = resolve_stamp(rig, kind, raw)
            ch._on_detections(msg)
        elif op == "click":
            ch._on_click(Point(x=arg[0], y=arg[1], z=arg[2]))
        elif op == "depth":
            msg, kind, raw = arg
            ns = {"latest": rig.worker.current_stamp or 0, "next": stamp_of(rig.k)}.get(kind)
            if ns is None:
                msg.header.stamp.sec, msg.header.stamp.nanosec = raw
            else:
                set_stamp(msg.header.stamp, ns)
            ch._on_depth(msg)
        else:
            ch._on_camera_info(arg)
        rig.barrier()
        if op != "camera_info":
            with ch._counts_lock:
                assert sum(ch._counts.values()) > seen, f"{op}: neither counted as received nor refused"
        rig.assert_alive()
    rig.next_frame()


# ------------------------------------------------------------------ 4. the prompts file
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
KEYS = ["frame", "stamp", "object_id", "points", "labels", "box", "mask", "received_at"]


@st.composite
def prompt_entries(draw):
    entry = {}
    for key in KEYS:
        if draw(st.integers(0, 2)):
            good = {"frame": st.integers(0, 20), "stamp": st.integers(0, 2**63), "object_id": st.integers(0, 9),
                    "points": st.lists(st.lists(st.floats(0, 100), min_size=2, max_size=2), min_size=1, max_size=3),
                    "labels": st.lists(st.integers(0, 1), min_size=1, max_size=3),
                    "box": st.just([1.0, 2.0, 30.0, 40.0]), "mask": st.just(None),
                    "received_at": st.integers(0, 30)}[key]
            entry[key] = draw(st.one_of(good, JSON_VALUES) if draw(st.booleans()) else good)
    return entry


@settings(max_examples=150, **SETTINGS)
@given(doc=st.one_of(st.lists(prompt_entries(), max_size=4), JSON_VALUES), raw=st.one_of(
    st.none(), st.text(max_size=40), st.sampled_from(["[{", "- frame: 1\n  object_id: 2\n", "[1e999]",
                                                       '[{"frame": NaN, "object_id": 1, "box": [1,2,3,4]}]'])))
def test_generated_prompts_files(doc, raw, tmp_path_factory):
    """load_prompts gives prompts the tracker can take (types and shapes checked) or raises
    PromptsFileError naming the entry; never a raw KeyError / TypeError / JSON error."""
    CASES["4 prompts file"] += 1
    path = tmp_path_factory.getbasetemp() / "generated_prompts.json"
    path.write_text(raw if raw is not None else json.dumps(doc), encoding="utf-8", errors="surrogatepass")
    try:
        prompts = load_prompts(path)
    except PromptsFileError as e:
        assert str(path) in str(e)
        CASES["4 prompts file: refused"] += 1
        return
    for p in prompts:
        assert isinstance(p.object_id, int) and (p.frame is None or (isinstance(p.frame, int) and p.frame >= 0))
        if p.points is not None:
            assert p.points.ndim == 2 and p.points.shape[1] == 2 and np.isfinite(p.points).all()
            assert p.labels is not None and p.labels.shape == (len(p.points),) and np.isin(p.labels, (0, 1)).all()
        if p.box is not None:
            assert p.box.shape == (4,) and np.isfinite(p.box).all()


# ------------------------------------------------------------------ 5. engine directories
CORRUPTIONS = st.one_of(
    st.tuples(st.just("graph_missing"), st.sampled_from(["image_encoder", "memory_attention", "mask_decoder",
                                                          "memory_encoder", "memory_attention_dense"]), st.none()),
    st.tuples(st.just("graph_truncated"), st.sampled_from(["mask_decoder", "memory_encoder", "memory_attention_dense"]),
              st.floats(0, 0.99)),
    st.tuples(st.just("graph_flipped"), st.sampled_from(["mask_decoder", "memory_encoder"]),
              st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("manifest_missing"), st.none(), st.none()),
    st.tuples(st.just("manifest_truncated"), st.none(), st.floats(0, 0.99)),
    st.tuples(st.just("manifest_field"), st.sampled_from(
        ["format_version", "model", "flags", "graphs", "constants", "image_size", "flags.image_size",
         "flags.feat_size", "flags.hidden_dim", "flags.mem_dim", "flags.num_maskmem", "flags.mem_tokens",
         "flags.mem_rope_grid", "flags.pred_obj_scores", "flags.max_obj_ptrs_in_encoder",
         "graphs.mask_decoder", "graphs.image_encoder.inputs"]), JSON_VALUES),
    st.tuples(st.just("image_size"), st.none(), st.sampled_from([64, 256, 512, 1024, 0, -128])),
    st.tuples(st.just("constants"), st.sampled_from(["missing", "truncated", "garbage"]), st.none()),
)


def corrupt_copy(src: Path, dst: Path, kind: str, what, how) -> None:
    """``src`` as ``dst``: every file linked, the corrupted one written."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)

    def rewrite(name: str, data: bytes | None):
        (dst / name).unlink()
        if data is not None:
            (dst / name).write_bytes(data)

    manifest = json.loads((src / "manifest.json").read_text())
    if kind == "graph_missing":
        rewrite(f"{what}.onnx", None)
    elif kind == "graph_truncated":
        data = (src / f"{what}.onnx").read_bytes()
        rewrite(f"{what}.onnx", data[: int(len(data) * how)])
    elif kind == "graph_flipped":
        data = bytearray((src / f"{what}.onnx").read_bytes())
        for where, value in how:
            data[int(where * (len(data) - 1))] = value
        rewrite(f"{what}.onnx", bytes(data))
    elif kind == "manifest_missing":
        rewrite("manifest.json", None)
    elif kind == "manifest_truncated":
        data = (src / "manifest.json").read_bytes()
        rewrite("manifest.json", data[: int(len(data) * how)])
    elif kind == "manifest_field":
        node, *path = what.split(".")
        parent, key = manifest, node
        for part in path:
            parent, key = parent[key], part
        parent[key] = how
        rewrite("manifest.json", json.dumps(manifest).encode())
    elif kind == "image_size":
        manifest["image_size"] = manifest["flags"]["image_size"] = how
        manifest["graphs"]["image_encoder"]["inputs"]["image"]["shape"][2:] = [how, how]
        rewrite("manifest.json", json.dumps(manifest).encode())
    else:  # constants
        data = (src / "constants.npz").read_bytes()
        rewrite("constants.npz", None if what == "missing" else data[: len(data) // 2] if what == "truncated"
                else np.random.default_rng(0).bytes(500))


@settings(max_examples=15, **SETTINGS)
@given(corruption=CORRUPTIONS)
def test_generated_engine_directories(corruption, tiny_export_128, tmp_path_factory, frames_small):
    """A corrupted copy of the export: load_backend raises EngineError naming the problem, or (a
    corruption that leaves a valid export: flipped weight bytes, an unused manifest field) loads
    and tracks a frame, refusing nothing but with TrackerInputError for a bad prompt."""
    kind, what, how = corruption
    CASES[f"5 engine dirs: {kind}"] += 1
    base = tmp_path_factory.getbasetemp() / "generated_engines"
    base.mkdir(exist_ok=True)
    dst = base / f"case{CASES['5 engine dirs: total']}"
    CASES["5 engine dirs: total"] += 1
    try:
        corrupt_copy(tiny_export_128, dst, kind, what, how)
        try:
            backend = load_backend(dst, "onnxruntime", intra_op_threads=1)
        except EngineError as e:
            assert str(e)
            CASES["5 engine dirs: refused (EngineError)"] += 1
            return
        CASES["5 engine dirs: loaded"] += 1
        try:
            tracker = Tracker(backend, max_objects=1, history_frames=1)
            tracker.step(frames_small)
            tracker.add_prompt(1, box=BOX)
            tracker.step(frames_small)
        except (TrackerInputError, EngineError):
            pass
        finally:
            backend.close()
    finally:
        shutil.rmtree(dst, ignore_errors=True)


@pytest.fixture(scope="module")
def frames_small(shared_data):
    return video_frames(shared_data, 1, WH)[0]


# ------------------------------------------------------------------ 6. parameters
def _values(spec):
    """Generated values for one parameter: its range's edges, wrong types, NaN, huge."""
    common = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), text(20),
                       st.lists(text(8), max_size=3), st.lists(st.integers(-5, 5), min_size=1, max_size=3))
    t = spec.type_name
    if t == "integer":
        lo, hi = spec.int_range or (-(2**63), 2**63 - 1)
        edges = st.sampled_from(sorted({max(lo - 1, -(2**63)), lo, min(lo + 1, hi), hi, min(hi + 1, 2**63 - 1)}))
        return _pick(edges, st.integers(lo, hi), common)
    if t == "double":
        lo, hi = spec.float_range or (-1e308, 1e308)
        edges = st.sampled_from([lo, hi, math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf), math.nan,
                                 math.inf, -math.inf, 1e308])
        return _pick(edges, st.floats(lo, hi), common)
    if t == "string":
        good = st.sampled_from(list(spec.choices) + [c.upper() for c in spec.choices] + ["", "cpu", "cuda,cpu"])
        return _pick(good, text(30), common)
    if t == "bool":
        return _pick(st.booleans(), st.booleans(), common)
    names = st.lists(st.one_of(st.sampled_from(["front", "wrist", "robot1/front", "a", "_x", "1a", "a//b", "front"]),
                               text(10)), max_size=4)
    return _pick(names, st.just([]), common)


def _pick(*strategies):
    """One of ``strategies``, each as likely (st.one_of leans to the first)."""
    return st.integers(0, len(strategies) - 1).flatmap(lambda i: strategies[i])


#: configure is not tried for these accepted values: heavy imports or allocations (seconds to minutes)
def _configure_skipped(name: str, value) -> bool:
    return ((name == "backend" and value in ("torch", "openvino")) or (name == "max_objects" and value > 16)
            or (name == "history_frames" and value > 50) or (name == "intra_op_threads" and value > 4)
            or (name == "cameras" and len(value) > 3) or (name == "fill_hole_area" and value > 256))


@pytest.fixture(scope="module")
def probe_node(rig, tiny_export_128):
    node = Sam2TrackerNode("sam2_param_probe", context=rig.ctx, parameter_overrides=[
        Parameter("engine_dir", value=str(tiny_export_128)), Parameter("max_objects", value=1),
        Parameter("intra_op_threads", value=1),
        Parameter("history_frames", value=2)])
    yield node
    node._deactivate()
    node._cleanup()
    node.destroy_node()


@settings(max_examples=30, **SETTINGS)
@given(data=st.data(), spec=st.sampled_from(PARAMS))
def test_generated_parameters(probe_node, spec, data, capfd):
    """Each parameter set to a generated value through set_parameters: refused with a reason, or
    accepted; an accepted value then configures, or fails configure with a logged error (the
    transition never raises: rclpy would report ERROR)."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    node = probe_node
    value = data.draw(_values(spec))
    CASES[f"6 parameters: {spec.applies}"] += 1
    old = node.get_parameter(spec.name)
    try:
        result = node.set_parameters([Parameter(spec.name, value=value)])[0]
    except (InvalidParameterTypeException, InvalidParameterValueException, TypeError) as e:
        CASES["6 parameters: refused by rclpy (type)"] += 1  # rclpy's own check of the value's type
        assert str(e)
        return
    if not result.successful:
        assert result.reason, f"{spec.name}={value!r} refused without a reason"
        CASES["6 parameters: refused"] += 1
        return
    CASES["6 parameters: accepted"] += 1
    try:
        if spec.applies == CONFIGURE_TIME and not _configure_skipped(spec.name, node.get_parameter(spec.name).value):
            capfd.readouterr()
            outcome = node.trigger_configure()
            assert outcome in (TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE), (
                f"configure with {spec.name}={value!r} raised (rclpy: {outcome})")
            CASES[f"6 parameters: configure {'ok' if outcome == TransitionCallbackReturn.SUCCESS else 'failed'}"] += 1
            if outcome == TransitionCallbackReturn.FAILURE:
                assert "configure failed" in capfd.readouterr().err, f"{spec.name}={value!r}: no reason logged"
            if outcome == TransitionCallbackReturn.SUCCESS:
                assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            assert node.state_label == "unconfigured" and not node.channels
    finally:
        restore = node.set_parameters([old if old.type_ != Parameter.Type.NOT_SET else
                                       Parameter(spec.name, value=PARAMS_BY_NAME[spec.name].default)])[0]
        assert restore.successful, restore.reason


def test_configure_with_an_engine_dir_name_too_long_fails_cleanly(probe_node, capfd):
    """Found by the generated parameters: a 256-character engine_dir made configure raise (Path.is_dir
    raises ENAMETOOLONG), which rclpy turned into the ERROR transition without a word."""
    node = probe_node
    old = node.get_parameter("engine_dir")
    assert node.set_parameters([Parameter("engine_dir", value="x" * 256)])[0].successful
    try:
        capfd.readouterr()
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        err = capfd.readouterr().err
        assert "configure failed: engine_dir 'xxx" in err and "cannot be used: File name too long" in err, err
        assert node.state_label == "unconfigured"
    finally:
        assert node.set_parameters([old])[0].successful
