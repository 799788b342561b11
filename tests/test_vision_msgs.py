"""vision_msgs and visualization_msgs for the node's standard outputs.

vision_msgs has no PyPI wheel: scripts/install_ros.sh builds our copy (msg/vision_msgs) when no
vision_msgs is importable. Real consumers accept our messages only if every type hash equals the
real package's, so the hashes are checked three ways against known values of upstream 4.1.1:
our .msg files (hashed by rosbags, no ROS needed), the generated package's ament description
(share/vision_msgs/msg/<Name>.json) and the hash the middleware advertises for a publisher
(rclpy's graph). Then a real rclpy round trip of what the node will publish.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OUR_MSGS = REPO / "msg" / "vision_msgs" / "msg"

# RIHS01 hashes of every message of ros-perception/vision_msgs at tag 4.1.1 (commit
# e77fa2d97d69abaaa546592892d2d5d16cec9977, the newest 4.1.x on the ros2 branch, what Jazzy ships),
# computed from the upstream vision_msgs/msg/*.msg texts with rosbags 0.11.9:
# get_types_from_msg(text, "vision_msgs/msg/<Name>") for all 16, registered in
# get_typestore(Stores.ROS2_JAZZY), then Typestore.hash_rihs01("vision_msgs/msg/<Name>").
UPSTREAM_4_1_1 = {
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "BoundingBox2DArray": "RIHS01_2464e82838009386d371b523211c21c91d74d313fcdd6788223c531d621cf691",
    "BoundingBox3D": "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "BoundingBox3DArray": "RIHS01_a81938db9576b10c2eecd7c5a5da3eac496efd00221b25ed051dfbc81fb56da6",
    "Classification": "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "Detection3D": "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "VisionInfo": "RIHS01_95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
}


def _rosbags_hashes(texts: dict[str, str]) -> dict[str, str]:
    """RIHS01 hash of each vision_msgs definition in ``texts`` (name -> .msg text), by rosbags."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict = {}
    for name, text in texts.items():
        types.update(get_types_from_msg(text, f"vision_msgs/msg/{name}"))
    store.register(types)
    return {name: store.hash_rihs01(f"vision_msgs/msg/{name}") for name in texts}


def _our_texts() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(OUR_MSGS.glob("*.msg"))}


def _imported_vision_msgs() -> tuple[Path, bool]:
    """Where ``vision_msgs`` is imported from, and whether it is our copy (distribution
    sam2-ros-vision-msgs, built by scripts/install_ros.sh) rather than a real vision_msgs."""
    spec = importlib.util.find_spec("vision_msgs")
    if spec is None or spec.origin is None:
        pytest.skip("no vision_msgs importable: run scripts/install_ros.sh")
    init = Path(os.path.realpath(spec.origin))
    try:
        dist = importlib.metadata.distribution("sam2-ros-vision-msgs")
    except importlib.metadata.PackageNotFoundError:
        return init.parent, False
    ours = any(Path(os.path.realpath(dist.locate_file(f))) == init for f in dist.files or ())
    return init.parent, ours


def _which(where: Path, ours: bool) -> str:
    return f"{'our copy (msg/vision_msgs)' if ours else 'a real vision_msgs'} imported from {where}"


@pytest.fixture
def ros_context():
    """An rclpy context of its own, on this machine and this test session's domain id."""
    pytest.importorskip("rclpy")
    import ros_support  # noqa: F401  (isolates discovery: localhost, a per-session domain id)
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


# -- our definitions, without ROS --------------------------------------------------------------

def test_our_definitions_hash_like_upstream_4_1_1():
    pytest.importorskip("rosbags")
    ours = _rosbags_hashes(_our_texts())
    assert sorted(ours) == sorted(UPSTREAM_4_1_1), "msg/vision_msgs must hold exactly upstream's messages"
    wrong = {name: h for name, h in ours.items() if h != UPSTREAM_4_1_1[name]}
    assert not wrong, f"msg/vision_msgs/msg differs from vision_msgs 4.1.1 (type hash) in: {sorted(wrong)}"


def test_a_renamed_or_retyped_field_changes_the_hashes():
    """The check above is sensitive: one renamed field changes its message's hash and the hash of
    every message that nests it; so does one changed type."""
    pytest.importorskip("rosbags")
    texts = _our_texts()
    assert "\nstring id\n" in texts["Detection2D"]
    renamed = dict(texts, Detection2D=texts["Detection2D"].replace("\nstring id\n", "\nstring track_id\n"))
    hashes = _rosbags_hashes(renamed)
    assert hashes["Detection2D"] != UPSTREAM_4_1_1["Detection2D"]
    assert hashes["Detection2DArray"] != UPSTREAM_4_1_1["Detection2DArray"]
    assert hashes["Detection3D"] == UPSTREAM_4_1_1["Detection3D"]
    retyped = dict(texts, VisionClass=texts["VisionClass"].replace("uint16 class_id", "uint32 class_id"))
    assert _rosbags_hashes(retyped)["LabelInfo"] != UPSTREAM_4_1_1["LabelInfo"]


# -- the package this environment imports --------------------------------------------------------

def test_the_imported_package_describes_the_upstream_hashes(monkeypatch):
    """share/vision_msgs/msg/<Name>.json (rosidl's type description, written at build time)."""
    pytest.importorskip("rclpy")
    from ament_index_python.packages import get_package_share_directory

    where, ours = _imported_vision_msgs()
    if not os.environ.get("AMENT_PREFIX_PATH"):  # the wheels' ament index is under the prefix
        monkeypatch.setenv("AMENT_PREFIX_PATH", sys.prefix)
    share = Path(get_package_share_directory("vision_msgs")) / "msg"
    got = {}
    for name in UPSTREAM_4_1_1:
        described = json.loads((share / f"{name}.json").read_text())["type_hashes"]
        got[name] = next(h["hash_string"] for h in described if h["type_name"] == f"vision_msgs/msg/{name}")
    assert got == UPSTREAM_4_1_1, _which(where, ours)


def test_the_middleware_advertises_the_upstream_hashes(ros_context):
    """What a real consumer compares: the type hash of our publishers in the ROS graph."""
    import rclpy
    import vision_msgs.msg
    from visualization_msgs.msg import MarkerArray

    where, ours = _imported_vision_msgs()
    node = rclpy.create_node("vision_msgs_hashes", context=ros_context)
    try:
        got = {}
        for name in UPSTREAM_4_1_1:
            node.create_publisher(getattr(vision_msgs.msg, name), f"hash_{name}", 1)
            (info,) = node.get_publishers_info_by_topic(f"hash_{name}")
            got[name] = str(info.topic_type_hash)
        assert got == UPSTREAM_4_1_1, _which(where, ours)
        # visualization_msgs comes from its wheel: its hash is Jazzy's as rosbags knows it
        if importlib.util.find_spec("rosbags") is not None:
            from rosbags.typesys import Stores, get_typestore

            node.create_publisher(MarkerArray, "hash_markers", 1)
            (info,) = node.get_publishers_info_by_topic("hash_markers")
            jazzy = get_typestore(Stores.ROS2_JAZZY).hash_rihs01("visualization_msgs/msg/MarkerArray")
            assert str(info.topic_type_hash) == jazzy
    finally:
        node.destroy_node()


def test_our_installed_copy_is_built_from_these_sources(monkeypatch):
    pytest.importorskip("rclpy")
    from ament_index_python.packages import get_package_share_directory

    where, ours = _imported_vision_msgs()
    if not ours:
        pytest.skip(f"{_which(where, ours)}: our msg/vision_msgs is checked by rosbags only")
    if not os.environ.get("AMENT_PREFIX_PATH"):
        monkeypatch.setenv("AMENT_PREFIX_PATH", sys.prefix)
    share = Path(get_package_share_directory("vision_msgs"))
    for name, text in _our_texts().items():
        assert (share / "msg" / f"{name}.msg").read_text() == text, (
            f"{name}.msg differs from msg/vision_msgs: run scripts/install_ros.sh to rebuild it")


# -- what the node publishes, over a real middleware -----------------------------------------------

def test_detections_label_info_and_markers_round_trip(ros_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from ros_support import RELIABLE, set_stamp
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, LabelInfo,
                                 ObjectHypothesisWithPose, VisionClass)
    from visualization_msgs.msg import Marker, MarkerArray

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node = rclpy.create_node("vision_msgs_round_trip", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        detections = Detection2DArray()
        set_stamp(detections.header.stamp, 1_732_200_000_250_000_000)
        detections.header.frame_id = "camera_color_optical_frame"
        for obj_id, label, score, (cx, cy, w, h) in ((3, "cup", 0.875, (120.5, 80.0, 40.0, 30.0)),
                                                      (7, "object", 0.5, (300.0, 200.25, 12.0, 64.0))):
            det = Detection2D(header=detections.header, id=str(obj_id))
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id, hyp.hypothesis.score = label, score
            det.results.append(hyp)
            det.bbox = BoundingBox2D(size_x=w, size_y=h)
            det.bbox.center.position.x, det.bbox.center.position.y = cx, cy
            detections.detections.append(det)
        label_info = LabelInfo(header=detections.header, threshold=0.0,
                               class_map=[VisionClass(class_id=1, class_name="3"),
                                          VisionClass(class_id=2, class_name="7")])
        cube = Marker(header=detections.header, ns="sam2_objects", id=3, type=Marker.CUBE,
                      action=Marker.ADD, frame_locked=False)
        cube.pose.position.x, cube.pose.position.z, cube.pose.orientation.w = 0.25, 1.0, 1.0
        cube.scale.x = cube.scale.y = cube.scale.z = 0.1
        cube.color.r, cube.color.a = 1.0, 0.5
        text = Marker(header=detections.header, ns="sam2_labels", id=3, type=Marker.TEXT_VIEW_FACING,
                      text="3: cup")
        markers = MarkerArray(markers=[cube, text])

        # LabelInfo is latched: published before anyone subscribes, a late subscriber gets it
        label_pub = node.create_publisher(LabelInfo, "label_info", latched)
        label_pub.publish(label_info)
        got: dict[str, list] = {"detections": [], "label_info": [], "markers": []}
        node.create_subscription(Detection2DArray, "detections", got["detections"].append, RELIABLE)
        node.create_subscription(LabelInfo, "label_info", got["label_info"].append, latched)
        node.create_subscription(MarkerArray, "markers", got["markers"].append, RELIABLE)
        det_pub = node.create_publisher(Detection2DArray, "detections", RELIABLE)
        marker_pub = node.create_publisher(MarkerArray, "markers", RELIABLE)

        deadline = time.monotonic() + 20.0
        while not (got["detections"] and got["label_info"] and got["markers"]):
            assert time.monotonic() < deadline, f"timed out; received {[k for k, v in got.items() if v]}"
            if det_pub.get_subscription_count() and not got["detections"]:
                det_pub.publish(detections)
            if marker_pub.get_subscription_count() and not got["markers"]:
                marker_pub.publish(markers)
            executor.spin_once(timeout_sec=0.1)

        back = got["detections"][0]
        assert back == detections
        assert [d.id for d in back.detections] == ["3", "7"]
        assert back.detections[0].results[0].hypothesis.class_id == "cup"
        assert back.detections[0].results[0].hypothesis.score == 0.875
        assert (back.detections[1].bbox.center.position.y, back.detections[1].bbox.size_y) == (200.25, 64.0)
        assert back.header.stamp.nanosec == 250_000_000
        assert got["label_info"][0] == label_info
        assert [(c.class_id, c.class_name) for c in got["label_info"][0].class_map] == [(1, "3"), (2, "7")]
        assert got["markers"][0] == markers
        assert got["markers"][0].markers[1].text == "3: cup"
    finally:
        executor.shutdown()
        node.destroy_node()
