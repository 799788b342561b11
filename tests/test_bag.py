"""``sam2-ros track --bag``: real rosbag2 bags (mcap and sqlite3) of bedroom.mp4 frames in, an output bag of
the node's result topics out, read back with rosbags. Results must equal the in-memory run of the same
frames and prompts; every bad input is a clear exit 2."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from sam2_ros import cli
from sam2_ros.backends import backend_options, load_backend
from sam2_ros.io.prompts_file import load_prompts
from sam2_ros.io.runner import run_tracker
from sam2_ros.io.video import iter_frames
from sam2_ros.outputs import label_image, object_values, overlay_image
from sam2_ros.tracker import Tracker

N_FRAMES = 5
WH = (320, 180)
TOPIC = "/camera/image_raw"
STAMP0 = 1_732_200_000_250_000_000  # header stamps: every 33.3 ms from here
LOG_DELAY = 7_000_000  # the bag recorded each image 7 ms after its stamp
MAX_OBJECTS = 8
# bedroom_prompts.json scaled from 960x540 to WH: two objects on frame 0, a third on frame 3
PROMPTS = [
    {"object_id": 1, "points": [[140, 87]], "labels": [1], "box": None},
    {"object_id": 2, "points": None, "labels": None, "box": [200, 67, 287, 140]},
    {"object_id": 3, "points": [[67, 127], [87, 40]], "labels": [1, 0], "box": None},
]
PROMPT_FRAMES = [0, 0, 3]
TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types


def stamp(i: int) -> int:
    return STAMP0 + i * 33_333_333


def _header(i: int):
    sec, nsec = divmod(stamp(i), 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id="camera_optical")


@pytest.fixture(scope="module")
def frames(shared_data) -> list[np.ndarray]:
    video = shared_data / "videos" / "bedroom.mp4"
    return [cv2.resize(f, WH, interpolation=cv2.INTER_AREA) for f in iter_frames(video, N_FRAMES)]


def _encode(rgb: np.ndarray, i: int, kind: str):
    """(message type, message, the RGB frame the tracker must see) of frame ``i`` as ``kind``."""
    h, w = rgb.shape[:2]
    if kind == "jpeg":
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
        seen = cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # the same jpeg bytes, decoded
        return "sensor_msgs/msg/CompressedImage", T["sensor_msgs/msg/CompressedImage"](
            header=_header(i), format="jpeg", data=jpg.reshape(-1)), seen
    arr = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "16UC1": np.zeros((h, w, 2), np.uint8)}[kind]
    arr = np.ascontiguousarray(arr)
    msg = T["sensor_msgs/msg/Image"](header=_header(i), height=h, width=w, encoding=kind, is_bigendian=0,
                                     step=arr.shape[1] * arr.shape[2], data=arr.reshape(-1))
    return "sensor_msgs/msg/Image", msg, rgb


def write_bag(path, frames, kind="rgb8", storage="mcap", topic=TOPIC) -> list[np.ndarray]:
    """A real rosbag2 bag: ``frames`` on ``topic`` (interleaved with a chatter topic); returns what the tracker sees."""
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    seen = []
    with Writer(path, version=8, storage_plugin=plugin) as w:
        chatter = w.add_connection("/chatter", "std_msgs/msg/String", typestore=TS)
        conn = None
        for i, rgb in enumerate(frames):
            msgtype, msg, rgb_seen = _encode(rgb, i, kind)
            conn = conn or w.add_connection(topic, msgtype, typestore=TS)
            w.write(chatter, stamp(i) + 1000, TS.serialize_cdr(T["std_msgs/msg/String"](data=f"hi {i}"), "std_msgs/msg/String"))
            w.write(conn, stamp(i) + LOG_DELAY, TS.serialize_cdr(msg, msgtype))
            seen.append(rgb_seen)
    return seen


def prompts_file(path, by_stamp=False):
    entries = [
        {**p, ("stamp" if by_stamp else "frame"): stamp(f) if by_stamp else f} for p, f in zip(PROMPTS, PROMPT_FRAMES)
    ]
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module")
def reference(tiny_export_256, tmp_path_factory):
    """The in-memory run (what `sam2-ros track --video` computes) of given frames: masks, scores, results."""
    cache = {}
    prompts = load_prompts(prompts_file(tmp_path_factory.mktemp("ref") / "p.json"))
    backend = load_backend(tiny_export_256, "onnxruntime", **backend_options("onnxruntime"))

    def run(seen: list[np.ndarray]):
        key = b"".join(f.tobytes() for f in seen)
        if key not in cache:
            tracker = Tracker(backend, max_objects=MAX_OBJECTS, cond_slots=2, fill_hole_area=8)
            results = []
            r = run_tracker(tracker, seen, prompts, on_frame=lambda i, f, res: results.append(res))
            cache[key] = (r, results)
        return cache[key]

    return run


def track(capsys, *args):
    rc = cli.main(["track", *map(str, args)])
    return rc, capsys.readouterr()


def read_bag(path) -> dict[str, list]:
    """Topic -> [(log time, message)], deserialised with the definitions stored in the bag itself."""
    out: dict[str, list] = {}
    with AnyReader([path]) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append((t, r.deserialize(raw, conn.msgtype), conn.msgtype))
    return out


@pytest.mark.parametrize(
    "storage, kind, by_stamp, overlay, as_file",
    [
        pytest.param("mcap", "rgb8", False, True, False, id="mcap-rgb8-overlay"),
        pytest.param("sqlite3", "bgr8", True, False, False, id="sqlite3-bgr8-prompts-by-stamp"),
        pytest.param("mcap", "jpeg", False, False, True, id="mcap-file-compressed-jpeg"),
    ],
)
def test_track_bag_writes_the_node_topics(
    storage, kind, by_stamp, overlay, as_file, frames, reference, tiny_export_256, tmp_path, capsys,
):
    bag = tmp_path / "in"
    seen = write_bag(bag, frames, kind, storage)
    src = next(bag.glob("*.mcap")) if as_file else bag
    out = tmp_path / "out"
    rc, io = track(capsys, "--engines", tiny_export_256, "--bag", src, "--topic", TOPIC, "--prompts",
                   prompts_file(tmp_path / "p.json", by_stamp), "--out", out, *(["--overlay-topic"] if overlay else []))
    assert rc == 0, io.err
    ref, results = reference(seen)  # by stamp or by frame: the same run as prompts by frame on the same frames

    with np.load(out / "masks.npz") as z:
        np.testing.assert_array_equal(z["masks"], ref.masks)
        np.testing.assert_array_equal(z["scores"], ref.scores)
        assert z["object_ids"].tolist() == [1, 2, 3]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["frames"] == N_FRAMES and stats["topic"] == TOPIC and stats["output_bag"] == str(out / "bag")
    assert sorted(p.name for p in out.iterdir()) == ["bag", "masks.npz", "stats.json"]

    topics = read_bag(out / "bag")
    names = ["/camera/sam2/objects", "/camera/sam2/label_image"] + (["/camera/sam2/overlay"] if overlay else [])
    vision = ["/camera/sam2/detections", "/camera/sam2/label_info"]
    assert sorted(topics) == sorted(names + vision)
    assert stats["output_topics"] == {k: f"/camera/sam2/{k}" for k in
                                      ["objects", "detections", "label_image", "label_info"] + (["overlay"] if overlay else [])}
    assert len(topics[vision[0]]) == N_FRAMES
    # label_info goes out when the objects change: frame 0 (objects 1, 2) and frame 3 (object 3)
    assert [[(c.class_id, c.class_name) for c in m.class_map] for _, m, _ in topics[vision[1]]] == [
        [(1, "object"), (2, "object")], [(1, "object"), (2, "object"), (3, "object")]]
    for i, (_, det, _) in enumerate(topics[vision[0]]):
        assert det.header.stamp == topics[names[0]][i][1].header.stamp
        assert [d.id for d in det.detections] == [str(o.id) for o in topics[names[0]][i][1].objects
                                                  if o.visible and np.isfinite(o.x0)]
    for name in names:
        msgs = topics[name]
        assert len(msgs) == N_FRAMES, name  # one per input frame
        for i, (t, msg, _) in enumerate(msgs):
            assert t == stamp(i) + LOG_DELAY  # written at the input's log time
            assert (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, msg.header.frame_id) == (stamp(i), "camera_optical")
    assert topics[names[0]][0][2] == "sam2_ros_interfaces/msg/TrackedObjects"
    for i, res in enumerate(results):
        objects = topics[names[0]][i][1]
        assert objects.frame_index == i and [o.id for o in objects.objects] == res.object_ids
        for j, o in enumerate(objects.objects):
            values = {k: getattr(o, k) for k in object_values(res, j, "")}
            np.testing.assert_equal(values, {k: np.float32(v) if isinstance(v, float) else v
                                             for k, v in object_values(res, j, "").items()})
            assert (o.mask.encoding, o.mask.height, o.mask.width) == ("mono8", WH[1], WH[0])
            assert o.mask.header.stamp == objects.header.stamp
            np.testing.assert_array_equal(o.mask.data.reshape(WH[1], WH[0]) > 0, res.masks[j])
        labels = topics[names[1]][i][1]
        expected, encoding = label_image(res, MAX_OBJECTS)
        assert (labels.encoding, labels.height, labels.width, labels.step) == (encoding, WH[1], WH[0], WH[0])
        np.testing.assert_array_equal(labels.data.reshape(WH[1], WH[0]), expected)
        if overlay:
            over = topics[names[2]][i][1]
            assert over.encoding == "rgb8"
            np.testing.assert_array_equal(over.data.reshape(WH[1], WH[0], 3), overlay_image(seen[i], res))
    assert len(results[0].object_ids) == 2 and len(results[3].object_ids) == 3  # both prompt frames applied


def test_output_bag_messages_are_the_ros_types(frames, tiny_export_256, tmp_path, capsys):
    """What the bag holds deserialises with the real ROS 2 message classes (when they are installed)."""
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message
    from sam2_ros_interfaces.msg import TrackedObjects
    from sensor_msgs.msg import Image

    write_bag(tmp_path / "in", frames[:2])
    rc, io = track(capsys, "--engines", tiny_export_256, "--bag", tmp_path / "in", "--topic", TOPIC,
                   "--prompts", prompts_file(tmp_path / "p.json"), "--out", tmp_path / "out")
    assert rc == 0, io.err
    with AnyReader([tmp_path / "out" / "bag"]) as r:
        raw = {c.topic: bytes(d) for c, _, d in r.messages()}  # the last message of each topic
    msg = deserialize_message(raw["/camera/sam2/objects"], TrackedObjects)
    assert msg.header.frame_id == "camera_optical" and [o.id for o in msg.objects] == [1, 2]
    assert msg.objects[0].mask.encoding == "mono8" and len(msg.objects[0].mask.data) == WH[0] * WH[1]
    assert deserialize_message(raw["/camera/sam2/label_image"], Image).encoding == "mono8"


def test_prompt_stamp_in_no_message_is_named(frames, tiny_export_256, tmp_path, capsys):
    write_bag(tmp_path / "in", frames[:2])
    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"stamp": stamp(0) + 1, "object_id": 4, "points": [[10, 10]], "labels": [1]}]))
    rc, io = track(capsys, "--engines", tiny_export_256, "--bag", tmp_path / "in", "--topic", TOPIC,
                   "--prompts", p, "--out", tmp_path / "out")
    assert rc == 2 and f"stamp {stamp(0) + 1}" in io.err and TOPIC in io.err and "object 4" in io.err
    assert not (tmp_path / "out" / "masks.npz").exists() and not (tmp_path / "out" / "bag").exists()
    # a stamp needs a bag: a video has none
    rc, io = track(capsys, "--engines", tiny_export_256, "--video", "x.mp4", "--prompts", p, "--out", tmp_path / "o2")
    assert rc == 2 and "'stamp'" in io.err and "--bag" in io.err


def _truncated(tmp_path, frames, storage):
    bag = tmp_path / f"whole_{storage}"
    write_bag(bag, frames[:3], storage=storage)
    cut = tmp_path / f"cut_{storage}"
    shutil.copytree(bag, cut)
    data = next(cut.glob("*.mcap" if storage == "mcap" else "*.db3"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return cut


def _bag_with(tmp_path, frames, kind="rgb8", sizes=None):
    fs = frames[:2] if sizes is None else [cv2.resize(frames[0], s) for s in sizes]
    write_bag(tmp_path / "odd", fs, kind)
    return tmp_path / "odd"


@pytest.mark.parametrize(
    "make, topic, messages",
    [
        pytest.param(lambda tmp, fr: tmp / "nowhere", TOPIC, ["nowhere", "does not exist"], id="no-such-bag"),
        pytest.param(lambda tmp, fr: _truncated(tmp, fr, "mcap"), TOPIC, ["cut_mcap", "corrupt"], id="truncated-mcap"),
        pytest.param(lambda tmp, fr: _truncated(tmp, fr, "sqlite3"), TOPIC, ["cut_sqlite3", "corrupt"], id="truncated-sqlite3"),
        pytest.param(lambda tmp, fr: _bag_with(tmp, fr), "/camera/rgb", ["no topic /camera/rgb", f"{TOPIC} (sensor_msgs/msg/Image)"],
                     id="missing-topic"),
        pytest.param(lambda tmp, fr: _bag_with(tmp, fr), "/chatter", ["/chatter", "std_msgs/msg/String", TOPIC], id="not-an-image"),
        pytest.param(lambda tmp, fr: _bag_with(tmp, fr, "16UC1"), TOPIC, ["'16UC1'", "rgb8, bgr8, mono8", "message 0"],
                     id="unsupported-encoding"),
        pytest.param(lambda tmp, fr: _bag_with(tmp, fr, sizes=[(320, 180), (160, 90)]), TOPIC,
                     ["message 1", "160x90", "320x180", "size must not change"], id="frame-size-change"),
    ],
)
def test_bad_bags_fail_clearly(make, topic, messages, frames, tiny_export_256, tmp_path, capsys):
    src = make(tmp_path, frames)
    out = tmp_path / "out"
    rc, io = track(capsys, "--engines", tiny_export_256, "--bag", src, "--topic", topic,
                   "--prompts", prompts_file(tmp_path / "p.json"), "--out", out)
    assert rc == 2, io.err
    assert io.err.strip().splitlines()[-1].startswith("sam2-ros: error: ") and "Traceback" not in io.err
    for m in messages:
        assert m in io.err
    assert not (out / "masks.npz").exists() and not (out / "bag").exists()
    assert not [p for p in out.iterdir() if "part" in p.name]  # nothing half-written left behind


def test_bag_arguments(tiny_export_256, tmp_path, capsys):
    base = ["--engines", tiny_export_256, "--prompts", "p.json", "--out", tmp_path / "o"]
    rc, io = track(capsys, *base, "--bag", tmp_path)
    assert rc == 2 and "--bag needs --topic" in io.err
    rc, io = track(capsys, *base, "--video", "x.mp4", "--topic", TOPIC)
    assert rc == 2 and "--topic, --overlay-topic, --depth-topic" in io.err and "go with --bag" in io.err
    rc, io = track(capsys, *base, "--video", "x.mp4", "--detections-topic", "/det")
    assert rc == 2 and "go with --bag" in io.err
    with pytest.raises(SystemExit) as e:
        track(capsys, *base, "--video", "x.mp4", "--bag", tmp_path, "--topic", TOPIC)
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


class _FakeTracker:
    """Stands in for the model (run_tracker needs step / add_prompt): a moving box per object."""

    fill_hole_area = 8

    def __init__(self):
        self.index, self.ids, self.hw = -1, [], None

    def step(self, frame):
        self.index, self.hw = self.index + 1, frame.shape[:2]
        return self._result()

    def add_prompt(self, object_id, **_):
        self.ids = sorted({*self.ids, object_id})
        return self._result()

    def _result(self):
        from sam2_ros.postprocess import boxes_from_masks
        from sam2_ros.tracker import FrameResult

        n = len(self.ids)
        masks = np.zeros((n, *self.hw), bool)
        for k in range(n):
            masks[k, 10 * k : 10 * k + 50, self.index % 200 : self.index % 200 + 80] = True
        return FrameResult(self.index, list(self.ids), masks, np.ones(n, np.float32), np.ones(n, np.float32),
                           boxes_from_masks(masks), np.zeros((n, 4, 4), np.float32))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_memory_stays_flat_in_the_bag_length(storage, tmp_path):
    """Reading, masks.npz and the output bag all stream: peak memory is a few frames, not the bag."""
    import tracemalloc

    from sam2_ros.io.bag import BagImageTopic, track_bag

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (270, 480, 3), np.uint8) for _ in range(3)] * 40
    write_bag(tmp_path / "in", frames, "rgb8", storage)
    data = sum(f.nbytes for f in frames)  # 47 MB of images, then as much again of masks, label images, overlays
    prompts = load_prompts(prompts_file(tmp_path / "p.json"))
    tracemalloc.start()
    try:
        with BagImageTopic(tmp_path / "in", TOPIC) as src:
            run, bag = track_bag(_FakeTracker(), src, prompts, tmp_path / "out", MAX_OBJECTS, overlay=True, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(run.frame_seconds) == len(frames) and run.masks is None
    # holding all images, all masks (as much again) or all output messages would exceed this many times over
    assert peak < 0.4 * data, f"peak {peak / 1e6:.1f} MB for {data / 1e6:.0f} MB of images"
    with np.load(tmp_path / "out" / "masks.npz") as z:
        assert z["masks"].shape == (len(frames), 3, 270, 480)
    # objects, detections, label_image, overlay per frame; label_info when the objects change (frames 0 and 3)
    assert sum(len(v) for v in read_bag(bag.path).values()) == 4 * len(frames) + 2


DEPTH_TOPIC, INFO_TOPIC, DET_TOPIC = "/camera/depth/image_rect_raw", "/camera/camera_info", "/detector/detections"
FX, FY, CX, CY = 250.0, 260.0, 160.0, 90.0


def _scene() -> np.ndarray:
    depth = np.full((WH[1], WH[0]), 2.0, np.float32)  # a plane at 2 m with a region at 1 m
    depth[40:120, 60:200] = 1.0
    return depth


def test_track_bag_with_depth_camera_info_and_detections(frames, tiny_export_256, tmp_path, capsys):
    """The bag's depth, camera_info and detector topics give what the node would publish: the
    detector's box (logged two frames after its image) starts an object on its own frame,
    detections_3d holds each object's robust back-projected median depth over its mask."""
    from sam2_ros.io.bag import make_message, typestore

    store = typestore()  # Jazzy + vision_msgs
    bag = tmp_path / "in"
    n = 4
    mm = np.round(_scene() * 1000).astype("<u2")
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        img = w.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        dep = w.add_connection(DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        info = w.add_connection(INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=store)
        det = w.add_connection(DET_TOPIC, "vision_msgs/msg/Detection2DArray", typestore=store)
        msgs = []
        for i in range(n):
            h = _header(i)
            msgs.append((stamp(i) + LOG_DELAY, img, "sensor_msgs/msg/Image", T["sensor_msgs/msg/Image"](
                header=h, height=WH[1], width=WH[0], encoding="rgb8", is_bigendian=0, step=WH[0] * 3,
                data=np.ascontiguousarray(frames[i]).reshape(-1))))
            dh = make_message(store, "std_msgs/msg/Header", {"stamp": h.stamp, "frame_id": "depth_optical"})
            msgs.append((stamp(i) + LOG_DELAY + 1, dep, "sensor_msgs/msg/Image", make_message(store, "sensor_msgs/msg/Image", {
                "header": dh, "height": WH[1], "width": WH[0], "encoding": "16UC1", "step": WH[0] * 2,
                "data": mm.reshape(-1).view(np.uint8)})))
            msgs.append((stamp(i) + LOG_DELAY + 2, info, "sensor_msgs/msg/CameraInfo", make_message(
                store, "sensor_msgs/msg/CameraInfo", {"header": dh, "width": WH[0], "height": WH[1],
                                                      "k": [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]})))

        def detection(i, extra_ns, box, cls):
            x0, y0, x1, y1 = box
            h = _header(i)
            h.stamp.nanosec += extra_ns
            return make_message(store, "vision_msgs/msg/Detection2DArray", {"header": h, "detections": [
                {"header": h, "id": "", "bbox": {"center": {"position": {"x": (x0 + x1) / 2, "y": (y0 + y1) / 2}},
                                                 "size_x": x1 - x0, "size_y": y1 - y0},
                 "results": [{"hypothesis": {"class_id": cls, "score": 0.9}}]}]})

        # made on frame 1, logged after frame 3's image: two frames late; one more for a stamp no image has
        msgs.append((stamp(3) + LOG_DELAY + 10, det, "vision_msgs/msg/Detection2DArray",
                     detection(1, 0, (200.0, 67.0, 287.0, 140.0), "bed")))
        msgs.append((stamp(3) + LOG_DELAY + 11, det, "vision_msgs/msg/Detection2DArray",
                     detection(1, 5, (10.0, 10.0, 50.0, 50.0), "cup")))
        for t, conn, msgtype, msg in sorted(msgs, key=lambda m: m[0]):
            w.write(conn, t, store.serialize_cdr(msg, msgtype))
    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"frame": 0, "object_id": 1, "points": [[140, 87]], "labels": [1]}]))
    out = tmp_path / "out"
    rc, io = track(capsys, "--engines", tiny_export_256, "--bag", bag, "--topic", TOPIC, "--prompts", p, "--out", out,
                   "--depth-topic", DEPTH_TOPIC, "--camera-info-topic", INFO_TOPIC, "--detections-topic", DET_TOPIC)
    assert rc == 0, io.err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["side_counts"] == {"detections_objects_created": 1, "detections_unmatched": 1}, stats
    topics = read_bag(out / "bag")
    assert sorted(topics) == sorted(f"/camera/sam2/{k}" for k in
                                    ["objects", "detections", "label_image", "label_info", "detections_3d", "markers"])

    # the same frames in memory, the detector's box given on frame 1 as a prompt of object 2
    tracker = Tracker(load_backend(tiny_export_256), max_objects=MAX_OBJECTS)
    depth = _scene()
    checked = 0
    for i in range(n):
        res = tracker.step(frames[i])
        if i == 0:
            res = tracker.add_prompt(1, points=[[140, 87]], labels=[1])
        if i == 1:
            res = tracker.add_prompt(2, box=[200, 67, 287, 140])
        objects = topics["/camera/sam2/objects"][i][1]
        assert [(o.id, o.label) for o in objects.objects] == list(zip(res.object_ids, ["", "bed"]))
        for j, o in enumerate(objects.objects):
            np.testing.assert_array_equal(o.mask.data.reshape(WH[1], WH[0]) > 0, res.masks[j])
        d3 = topics["/camera/sam2/detections_3d"][i][1]
        assert d3.header.frame_id == "depth_optical" and d3.header.stamp == objects.header.stamp
        present = [j for j in range(len(res.object_ids)) if res.scores[j] > 0 and res.masks[j].any()]
        assert [d.id for d in d3.detections] == [str(res.object_ids[j]) for j in present]
        for d, j in zip(d3.detections, present):
            v, u = np.nonzero(res.masks[j])
            z = depth[v, u].astype(np.float64)
            med = np.median(z)
            keep = np.abs(z - med) <= max(3 * 1.4826 * np.median(np.abs(z - med)), 0.02)
            want = np.median(np.stack([(u[keep] - CX) * z[keep] / FX, (v[keep] - CY) * z[keep] / FY, z[keep]], 1), 0)
            pos = d.results[0].pose.pose.position
            np.testing.assert_allclose([pos.x, pos.y, pos.z], want, atol=1e-3)
            checked += 1
        markers = topics["/camera/sam2/markers"][i][1].markers
        assert markers[0].action == 3 and len(markers) == 1 + 2 * len(present)
    assert checked >= 4
    info = topics["/camera/sam2/label_info"]
    assert [[(c.class_id, c.class_name) for c in m.class_map] for _, m, _ in info] == [
        [(1, "object")], [(1, "object"), (2, "bed")]]
    try:  # the real ROS classes read what the bag holds (same type hashes)
        from rclpy.serialization import deserialize_message
        from vision_msgs.msg import Detection3DArray
    except ImportError:
        return
    with AnyReader([out / "bag"]) as r:
        raw = {c.topic: bytes(d) for c, _, d in r.messages()}
    assert deserialize_message(raw["/camera/sam2/detections_3d"], Detection3DArray).header.frame_id == "depth_optical"
