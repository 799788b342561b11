"""Parameters of the ``sam2_tracker`` node: one table, used to declare them, validate them and document them.

ROS-free on purpose: :func:`validate_parameter` and :func:`load_params_file` check a
parameter file (``config/sam2_tracker.yaml``) without a running node, and
:func:`declare_parameters` turns the same table into ROS parameter descriptors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2_ros.backends import BACKENDS
from sam2_ros.backends.onnxruntime_backend import PROVIDER_ALIASES

IMAGE_TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")

#: Parameters that only take effect at the ``configure`` transition.
CONFIGURE_TIME = "configure"
#: Parameters that may change at any time.
DYNAMIC = "dynamic"
#: Parameters read once, when the node starts.
STARTUP = "startup"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    applies: str = CONFIGURE_TIME
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)

    @property
    def type_name(self) -> str:
        if isinstance(self.default, list):
            return "string_array"
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "integer"
        if isinstance(self.default, float):
            return "double"
        return "string"


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "engine_dir", "",
        "Directory of an export made by `sam2-ros export` (ONNX graphs + manifest.json) or "
        "`sam2-ros build` (TensorRT engines). Required: configure fails when it is empty, "
        "missing, or does not match the backend.",
    ),
    ParamSpec("backend", "onnxruntime", "Inference backend: onnxruntime, openvino, torch or tensorrt.",
              choices=BACKENDS),
    ParamSpec(
        "providers", "",
        "ONNX Runtime execution providers in order of preference, comma-separated, e.g. "
        "'cuda,cpu'; empty uses the backend's default. Ignored by other backends.",
    ),
    ParamSpec(
        "device", "auto",
        "torch backend: the PyTorch device (cpu, cuda, cuda:N; auto = cuda when available). Ignored by "
        "other backends.",
    ),
    ParamSpec(
        "precision", "fp32",
        "torch backend: fp32 (the parity reference), bf16 (GPU, or a CPU with bf16 matrix units) or fp16 "
        "(GPU), by autocast. openvino backend: fp32 (exact) or bf16 (a CPU with AMX / AVX-512 BF16; several "
        "times faster, not exact). Other backends take their precision from the export / engine build and "
        "refuse anything but fp32 here.",
        choices=("fp32", "bf16", "fp16"),
    ),
    ParamSpec(
        "imaging", "auto",
        "torch backend: where frames are resized and masks, boxes and the label image are built: device (the "
        "uint8 frame goes up once, only published outputs come down), host (the exact PIL / OpenCV path) or auto "
        "(device on CUDA, host on the CPU). Other backends process on the host.",
        choices=("auto", "device", "host"),
    ),
    ParamSpec(
        "cuda_graph", "auto",
        "torch backend: replay the tracking step from CUDA graphs, one per shape (objects, memory slots): on, off "
        "or auto (on for a CUDA device). The TensorRT backend always uses its own.",
        choices=("auto", "on", "off"),
    ),
    ParamSpec(
        "compile", False,
        "torch backend: torch.compile the graphs (faster steps, minutes of compilation at configure with warm_up).",
    ),
    ParamSpec(
        "warm_up", True,
        "At configure, run every graph once at the steady-state shapes of max_objects and cond_slots (kernel "
        "selection, compilation, CUDA-graph capture), so the first tracked frames are not slow. A no-op for ONNX "
        "Runtime, OpenVINO and TensorRT; on the torch backend it costs max_objects x cond_slots tracking steps (twice "
        "that with CUDA graphs, which it captures; with compile, minutes of compilation).",
    ),
    ParamSpec(
        "intra_op_threads", 0,
        "ONNX Runtime / OpenVINO threads per graph; 0 lets the runtime decide (one per core). Ignored by "
        "other backends.",
        int_range=(0, 256),
    ),
    ParamSpec(
        "max_objects", 8,
        "Objects tracked at once, per camera; memory for this many is allocated at configure. AddPrompt "
        "for one more object fails. Above 255 the label image switches from mono8 to mono16.",
        int_range=(1, 4096),
    ),
    ParamSpec(
        "cond_slots", 2,
        "Prompted (conditioning) frames remembered per object; the latest ones are kept (the official "
        "predictor with max_cond_frames_in_attn = cond_slots; it keeps all by default).",
        int_range=(1, 64),
    ),
    ParamSpec(
        "keep_first_cond_frame", False,
        "Keep each object's first prompted frame plus the latest cond_slots - 1 (needs cond_slots >= 2).",
    ),
    ParamSpec(
        "corrections_as_conditioning", True,
        "A prompt on an object already tracked on that frame makes the frame a conditioning frame (true: the "
        "official add_all_frames_to_correct_as_cond=True, as in Meta's own configurations), or only replaces "
        "that frame's recent memory, forgotten after 6 frames (false: the official predictor's default).",
    ),
    ParamSpec(
        "history_frames", 30,
        "Latest processed frames an AddPrompt stamp may name (the latest included): a prompt on an earlier frame "
        "is applied there and its object tracked up to the latest frame from cached image features. Allocated at "
        "configure and the first frame: image features of each frame (16 MiB at 1024 px, 4 MiB at 512, 1 MiB at 256) plus about "
        "1.3 MiB per object and frame at 1024 px (0.3 MiB at 512).",
        int_range=(1, 1000),
    ),
    ParamSpec(
        "mask_threshold", 0.0,
        "Mask logit threshold: a pixel belongs to an object when its logit exceeds it (0 as in SAM 2).",
        float_range=(-32.0, 32.0),
    ),
    ParamSpec(
        "fill_hole_area", 8,
        "Fill background holes of at most this many low-res pixels in each mask: 8 reproduces the official "
        "predictor on GPU (its CUDA extension), 0 the official predictor on CPU (the step is skipped there).",
        int_range=(0, 4096),
    ),
    ParamSpec(
        "cameras", [],
        "Camera names, e.g. [front, wrist] (a name may have namespaces: robot1/front): one tracker per camera "
        "over one loaded backend, each with its own objects, ids, history and max_objects, its topics under "
        "`<camera>/` (`<camera>/image` in, `<camera>/objects` out, ...) and its services under "
        "`~/<camera>/`. Empty: one camera with the plain names (`image`, `~/add_prompt`, ...).",
    ),
    ParamSpec(
        "image_transport", "raw",
        "raw: subscribe to `image` (sensor_msgs/Image); compressed: subscribe to "
        "`image/compressed` (sensor_msgs/CompressedImage, jpeg or png).",
        choices=IMAGE_TRANSPORTS,
    ),
    ParamSpec(
        "input_qos.reliability", "best_effort",
        "Reliability of the image subscription: best_effort (sensor-data QoS, matches any "
        "camera driver) or reliable (only matches reliable publishers).",
        choices=RELIABILITIES,
    ),
    ParamSpec(
        "input_qos.depth", 1,
        "History depth of the image subscription. The node keeps only the newest frame "
        "anyway; a larger depth just buffers more in the middleware.",
        int_range=(1, 100),
    ),
    ParamSpec("publish.objects", True, "Publish `objects` (sam2_ros_interfaces/TrackedObjects).", applies=DYNAMIC),
    ParamSpec(
        "publish.object_masks", True,
        "Fill each TrackedObject's `mask` (mono8, full resolution). Off: masks are left empty "
        "(use the label image), which saves bandwidth with many objects.",
        applies=DYNAMIC,
    ),
    ParamSpec(
        "publish.label_image", True,
        "Publish `label_image`: pixel = the object id (stable across frames), 0 = background; mono8 while "
        "max_objects and every id are <= 255, mono16 otherwise; and `label_info` (vision_msgs/LabelInfo, "
        "transient local: id -> label), republished when the objects or their labels change.",
        applies=DYNAMIC,
    ),
    ParamSpec(
        "publish.detections", True,
        "Publish `detections` (vision_msgs/Detection2DArray, one per processed frame: every visible object, "
        "id = object id, box from the mask, class = label or 'object', score = predicted IoU).",
        applies=DYNAMIC,
    ),
    ParamSpec(
        "publish.overlay", True,
        "Publish `overlay` (rgb8, masks and boxes drawn on the frame), only while someone subscribes.",
        applies=DYNAMIC,
    ),
    ParamSpec(
        "depth.enabled", False,
        "Subscribe to `depth` (sensor_msgs/Image registered to the colour image, same size: 16UC1 mm with 0 = "
        "invalid, or 32FC1 m with NaN = invalid) and `camera_info` (the colour camera's), and publish each "
        "object's 3D position and box on `detections_3d` (vision_msgs/Detection3DArray) and `markers` "
        "(visualization_msgs/MarkerArray).",
    ),
    ParamSpec(
        "depth.tolerance", 0.005,
        "Largest stamp difference (seconds) between a colour frame and the depth image paired with it; 0 = the "
        "same stamp.",
        float_range=(0.0, 1.0),
    ),
    ParamSpec(
        "depth.outlier_k", 3.0,
        "Depth outlier rejection: a mask pixel counts when its depth is within max(outlier_k x 1.4826 x MAD, "
        "depth.outlier_min_band) of the mask's median depth.",
        float_range=(0.5, 100.0),
    ),
    ParamSpec(
        "depth.outlier_min_band", 0.02,
        "Smallest depth band (metres) kept around the median by the outlier rejection.",
        float_range=(0.0, 10.0),
    ),
    ParamSpec(
        "depth.box_percentile", 5.0,
        "The 3D box spans the [p, 100 - p] percentiles of the kept points on each camera axis.",
        float_range=(0.0, 49.0),
    ),
    ParamSpec(
        "depth.min_valid_pixels", 10,
        "An object with fewer mask pixels of valid depth gets no 3D output on that frame.",
        int_range=(1, 1_000_000),
    ),
    ParamSpec(
        "depth.publish_points", False,
        "Also publish `object_points` (sensor_msgs/PointCloud2: x, y, z float32 and object_id uint32, the kept "
        "depth points of every object on a grid of depth.points_stride pixels).",
    ),
    ParamSpec(
        "depth.points_stride", 4,
        "object_points takes the pixels whose row and column are multiples of this.",
        int_range=(1, 64),
    ),
    ParamSpec(
        "detection_prompts.enabled", False,
        "Subscribe to `prompt_detections` (vision_msgs/Detection2DArray): each message's boxes are applied on the "
        "frame its header stamp names (held until that frame is processed, or applied in the history).",
    ),
    ParamSpec(
        "detection_prompts.iou_threshold", 0.5,
        "Smallest IoU between a detection box and an object's mask box for the box to match the object.",
        float_range=(0.01, 1.0),
    ),
    ParamSpec(
        "detection_prompts.min_score", 0.5,
        "Smallest detection score for an unmatched box to start a new object.",
        float_range=(0.0, 1.0),
    ),
    ParamSpec(
        "detection_prompts.classes", "",
        "Comma-separated classes an unmatched box must have to start an object; empty = any class.",
    ),
    ParamSpec(
        "detection_prompts.match_class", False,
        "A box only matches an object with the same label (objects and boxes without one match any).",
    ),
    ParamSpec(
        "detection_prompts.reseed", "lost",
        "When a matched box re-seeds its object (a box refinement on the detection's frame): never; lost = when "
        "the object has not been visible for reseed_lost_frames frames; every_n = every reseed_every-th match.",
        choices=("never", "lost", "every_n"),
    ),
    ParamSpec("detection_prompts.reseed_lost_frames", 5, "K of reseed = lost.", int_range=(1, 1000)),
    ParamSpec("detection_prompts.reseed_every", 10, "N of reseed = every_n.", int_range=(1, 100000)),
    ParamSpec(
        "detection_prompts.remove_after", 0,
        "Remove an object that no box matched in this many consecutive detection messages; 0 = never.",
        int_range=(0, 100000),
    ),
    ParamSpec(
        "detection_prompts.max_boxes", 100,
        "A detection message with more boxes is refused whole (counted).",
        int_range=(1, 10000),
    ),
    ParamSpec(
        "detection_prompts.use_track_ids", True,
        "A detector's track id (Detection2D.id) bound to an object matches it without IoU.",
    ),
    ParamSpec(
        "detection_prompts.max_waiting", 8,
        "Detection messages held at once for frames not processed yet; more are refused (counted).",
        int_range=(1, 256),
    ),
    ParamSpec(
        "click_prompts.enabled", False,
        "Subscribe to `<image>_mouse_left` (geometry_msgs/Point, pixels of the image; what rqt_image_view publishes): "
        "a click on no tracked object starts one there on the latest processed frame.",
    ),
    ParamSpec(
        "click_prompts.on_tracked", "ignore",
        "A click on a visible tracked object: ignore (logged and counted) or refine (a positive point on it).",
        choices=("ignore", "refine"),
    ),
    ParamSpec(
        "click_prompts.min_interval", 0.3,
        "Clicks closer together than this (seconds) are dropped (counted): a double click starts one object.",
        float_range=(0.0, 60.0),
    ),
    ParamSpec(
        "stream_restart_threshold", 1.0,
        "Seconds: an image stamped more than this before the newest image received restarts the camera's "
        "stream (a looping rosbag, a simulator clock reset): the camera is reset (objects dropped, logged, "
        "counted in stream_resets). An image with the newest stamp again, or at most this much older, is "
        "rejected (frames_duplicate_stamp, frames_out_of_order).",
        float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "diagnostics_period", 1.0, "Seconds between two /diagnostics messages.",
        float_range=(0.05, 60.0),
    ),
    ParamSpec(
        "service_timeout", 10.0,
        "Longest a service call waits for the tracker (e.g. for a prompt held for a frame "
        "that is not processed yet) before it fails.",
        applies=DYNAMIC, float_range=(0.1, 600.0),
    ),
    ParamSpec(
        "autostart", True,
        "Configure and activate right after start. Set false when a lifecycle manager drives "
        "the node.",
        applies=STARTUP,
    ),
)

PARAMS_BY_NAME = {p.name: p for p in PARAMS}


#: A camera name: ROS name tokens (a letter first), optionally with namespaces (robot1/front).
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")


def _type_ok(spec: ParamSpec, value: Any) -> bool:
    t = spec.type_name
    if t == "string_array":
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if t == "bool":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "double":
        return isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool))
    return isinstance(value, str)


def validate_parameter(name: str, value: Any) -> str | None:
    """Return why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        return f"unknown parameter {name!r}; known: {', '.join(PARAMS_BY_NAME)}"
    if not _type_ok(spec, value):
        return f"{name} must be of type {spec.type_name}, got {value!r} ({type(value).__name__})"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}; got {value!r}"
    if spec.int_range is not None and not spec.int_range[0] <= value <= spec.int_range[1]:
        return f"{name} must be in [{spec.int_range[0]}, {spec.int_range[1]}]; got {value}"
    if spec.float_range is not None:
        if not math.isfinite(float(value)) or not spec.float_range[0] <= value <= spec.float_range[1]:
            return f"{name} must be in [{spec.float_range[0]}, {spec.float_range[1]}]; got {value}"
    if name == "cameras":
        bad = [v for v in value if not CAMERA_NAME.fullmatch(v)]
        if bad:
            return (f"cameras must be ROS names (letters, digits, _; a letter first; namespaces with /), "
                    f"got {bad}")
        if len(set(value)) != len(value):
            return f"cameras must be unique, got {list(value)}"
    if name == "providers":
        bad = [v for v in split_providers(value) if v not in PROVIDER_ALIASES]
        if bad:
            return f"providers must be among {', '.join(PROVIDER_ALIASES)}; got {bad}"
    return None


def split_providers(value: str) -> list[str]:
    """'cuda, CPU' -> ['cuda', 'cpu']; '' -> []."""
    return [v.strip().lower() for v in value.split(",") if v.strip()]


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'publish': {'overlay': True}} -> {'publish.overlay': True} (ROS parameter names)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_params_file(path: str | Path, node_name: str = "sam2_tracker") -> dict[str, Any]:
    """Read a ROS 2 parameter file and return the flat parameters for ``node_name``.

    Accepts the node's name, ``/node_name`` or the ``/**`` wildcard as the top key.
    Raises ValueError naming every invalid or unknown parameter.
    """
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of node names to ros__parameters")
    params: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ValueError(f"{path}: {key!r} has no ros__parameters mapping")
        params.update(flatten(section["ros__parameters"]))
    if not params:
        raise ValueError(f"{path}: no parameters for node {node_name!r}")
    errors = [e for e in (validate_parameter(n, v) for n, v in params.items()) if e]
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
    return params


def declare_parameters(node) -> None:
    """Declare every parameter of :data:`PARAMS` on ``node`` with a descriptor (description, range)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
    from rclpy.parameter import Parameter

    for spec in PARAMS:
        when = {
            CONFIGURE_TIME: "Takes effect at the next configure transition.",
            DYNAMIC: "May be changed at any time.",
            STARTUP: "Read once at start.",
        }[spec.applies]
        desc = ParameterDescriptor(
            description=spec.description,
            additional_constraints=(f"one of: {', '.join(spec.choices)}. " if spec.choices else "") + when,
            read_only=spec.applies == STARTUP,
        )
        if spec.int_range is not None:
            desc.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=1)]
        if spec.float_range is not None:
            desc.floating_point_range = [
                FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1], step=0.0)
            ]
        value = spec.default
        if spec.type_name == "string_array":
            # rclpy cannot type an empty list: declare the type, unset (read_parameter gives the default)
            desc.type = ParameterType.PARAMETER_STRING_ARRAY
            value = spec.default or Parameter.Type.STRING_ARRAY
        node.declare_parameter(spec.name, value, desc)


def read_parameter(node, name: str) -> Any:
    """The parameter's value; the default for a declared parameter that is not set (an empty array)."""
    from rclpy.exceptions import ParameterUninitializedException

    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return PARAMS_BY_NAME[name].default


def markdown_table() -> str:
    """The parameter table of docs/ROS.md, generated from :data:`PARAMS`."""
    rows = ["| name | type | default | when | description |", "| --- | --- | --- | --- | --- |"]
    for p in PARAMS:
        default = str(p.default).lower() if isinstance(p.default, bool) else repr(p.default)
        rows.append(f"| `{p.name}` | {p.type_name} | `{default}` | {p.applies} | {p.description} |")
    return "\n".join(rows)
