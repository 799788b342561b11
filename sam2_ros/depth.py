"""Each object's 3D position from a registered depth image: ROS-free (numpy only).

Inputs (REP 118): a depth image registered to the colour image, same resolution, either
``16UC1`` (millimetres, 0 = invalid) or ``32FC1`` (metres, NaN / inf / <= 0 = invalid), and the
colour camera's intrinsics (the 3x3 ``K`` of its CameraInfo). Pixel ``(u, v)`` (column, row) is
back-projected as in OpenCV and ROS: ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy``, in the
camera's optical frame (x right, y down, z forward), metres.

Per object (:func:`object_geometry`), over the mask pixels with valid depth:

* outlier rejection: a pixel is kept when its depth is within ``max(outlier_k * 1.4826 * MAD,
  min_band)`` of the median depth (MAD = median absolute deviation), which drops the background
  behind a mask's border and flying pixels at depth edges;
* ``position`` = the component-wise median of the kept pixels' 3D points (on a surface at one
  depth, the median depth back-projected at the median pixel);
* an axis-aligned 3D box from the ``box_percentile`` and ``100 - box_percentile`` percentiles of
  the kept points on each axis; ``spread`` = the robust standard deviation (1.4826 MAD) per axis;
* ``valid_pixels`` = mask pixels with valid depth (before rejection), ``inlier_pixels`` after.

:func:`object_point_cloud` gives the kept points of every object, subsampled, with their object id.

:class:`StampPairer` pairs processed colour frames with depth images by stamp (exact, or within a
tolerance), whichever arrives first, in bounded buffers; what can no longer be paired is counted.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from sam2_ros.errors import Sam2RosError
from sam2_ros.limits import check_pixels

DEPTH_ENCODINGS = ("16UC1", "32FC1")
#: 1.4826 * MAD estimates the standard deviation of normally distributed values.
MAD_TO_STD = 1.4826


class DepthError(Sam2RosError, ValueError):
    """A depth image or camera calibration that cannot be used; the message says why."""


def depth_to_metres(data, height: int, width: int, step: int, encoding: str, is_bigendian: bool = False) -> np.ndarray:
    """Raw depth image bytes -> [H, W] float32 metres, NaN where invalid (0 mm, NaN, inf, <= 0 m)."""
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)} (REP 118), got {encoding!r}")
    if height <= 0 or width <= 0:
        raise DepthError(f"depth image has zero size ({width}x{height})")
    too_big = check_pixels(width, height, "depth image")
    if too_big:
        raise DepthError(too_big)
    itemsize = 2 if encoding == "16UC1" else 4
    if step < width * itemsize:
        raise DepthError(f"depth step {step} is smaller than width x {itemsize} bytes ({width * itemsize})")
    buf = np.frombuffer(memoryview(data).cast("B"), np.uint8)
    if buf.size < step * height:
        raise DepthError(f"truncated depth data: {buf.size} bytes for {height} rows of {step} bytes")
    rows = buf[: step * height].reshape(height, step)[:, : width * itemsize]
    order = ">" if is_bigendian else "<"
    if encoding == "16UC1":
        mm = np.ascontiguousarray(rows).view(np.dtype(f"{order}u2")).astype(np.float32)
        out = mm * np.float32(0.001)
        out[mm == 0] = np.nan
    else:
        out = np.ascontiguousarray(rows).view(np.dtype(f"{order}f4")).astype(np.float32)
        out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour camera and the image size they belong to."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k, width: int, height: int) -> Intrinsics:
        """From a row-major 3x3 ``K`` (CameraInfo.k); refuses zero, negative or non-finite focal lengths."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise DepthError(f"K must have 9 values, got {len(k)}")
        fx, fy, cx, cy = k[0], k[4], k[2], k[5]
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
            raise DepthError(f"camera_info has missing or invalid intrinsics (fx={fx}, fy={fy}, cx={cx}, cy={cy}): "
                             "fx and fy must be > 0")
        if width <= 0 or height <= 0:
            raise DepthError(f"camera_info has zero size ({width}x{height})")
        return cls(fx, fy, cx, cy, int(width), int(height))

    def check_image(self, width: int, height: int, what: str) -> None:
        """Refuse an image whose size is not the calibration's."""
        if (width, height) != (self.width, self.height):
            raise DepthError(f"camera_info is {self.width}x{self.height} but the {what} is {width}x{height}")


@dataclass(frozen=True)
class DepthSettings:
    outlier_k: float = 3.0  # kept: |z - median| <= max(outlier_k * 1.4826 * MAD, min_band)
    min_band: float = 0.02  # metres
    box_percentile: float = 5.0  # the 3D box spans [p, 100 - p] percentiles per axis
    min_valid_pixels: int = 10  # fewer valid depth pixels in the mask: no 3D for the object


@dataclass(frozen=True)
class ObjectGeometry:
    """An object's place in the camera's optical frame (metres)."""

    position: tuple[float, float, float]
    box_center: tuple[float, float, float]
    box_size: tuple[float, float, float]
    spread: tuple[float, float, float]  # robust standard deviation of the kept points per axis
    valid_pixels: int
    inlier_pixels: int


def object_points(depth_m: np.ndarray, mask: np.ndarray, k: Intrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points [n, 3] float64 metres, u [n], v [n]) of the mask pixels with valid depth."""
    if depth_m.shape != mask.shape:
        raise DepthError(f"depth is {depth_m.shape[1]}x{depth_m.shape[0]} but the mask is {mask.shape[1]}x{mask.shape[0]}")
    v, u = np.nonzero(mask & np.isfinite(depth_m))
    z = depth_m[v, u].astype(np.float64)
    pts = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=1)
    return pts, u, v


def robust_inliers(z: np.ndarray, settings: DepthSettings) -> np.ndarray:
    """Bool [n]: depths within the outlier band around their median (see the module docstring)."""
    med = np.median(z)
    mad = np.median(np.abs(z - med))
    band = max(settings.outlier_k * MAD_TO_STD * mad, settings.min_band)
    return np.abs(z - med) <= band


def object_geometry(depth_m: np.ndarray, mask: np.ndarray, k: Intrinsics,
                    settings: DepthSettings = DepthSettings()) -> ObjectGeometry | None:
    """The object's robust 3D position and box, or None with fewer than ``min_valid_pixels`` valid pixels."""
    pts, _, _ = object_points(depth_m, mask, k)
    valid = len(pts)
    if valid < max(1, settings.min_valid_pixels):
        return None
    pts = pts[robust_inliers(pts[:, 2], settings)]
    p = settings.box_percentile
    lo, hi = np.percentile(pts, [p, 100 - p], axis=0)
    med = np.median(pts, axis=0)
    spread = MAD_TO_STD * np.median(np.abs(pts - med), axis=0)
    as3 = lambda a: tuple(float(x) for x in a)  # noqa: E731
    return ObjectGeometry(as3(med), as3((lo + hi) / 2), as3(hi - lo), as3(spread), valid, len(pts))


def objects_3d(result, labels: dict[int, str], depth_m: np.ndarray, k: Intrinsics,
               settings: DepthSettings = DepthSettings()) -> tuple[list, int]:
    """(``[(object id, label, score, ObjectGeometry)]`` of the visible objects of a FrameResult with
    enough valid depth, the number of visible objects without), score = the predicted IoU in [0, 1].
    Raises DepthError when the image, the depth and the calibration disagree in size. One
    definition for the node and the output bag of ``track --bag``."""
    h, w = result.frame_hw
    k.check_image(w, h, "colour image")
    k.check_image(depth_m.shape[1], depth_m.shape[0], "depth image")
    out, without = [], 0
    for i, oid in enumerate(result.object_ids):
        if not result.scores[i] > 0:
            continue
        g = object_geometry(depth_m, result.masks[i], k, settings)
        if g is None:
            without += 1
            continue
        out.append((int(oid), labels.get(oid, ""), float(np.clip(result.ious[i], 0.0, 1.0)), g))
    return out, without


#: Fields of the object point cloud: x, y, z (float32, metres, optical frame), object_id (uint32).
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("object_id", "<u4")])


def object_point_cloud(result, depth_m: np.ndarray, k: Intrinsics, settings: DepthSettings = DepthSettings(),
                       stride: int = 4) -> np.ndarray:
    """The kept 3D points (after outlier rejection) of every present object, on the pixels whose
    row and column are multiples of ``stride``: a structured [n] array of :data:`POINT_DTYPE`."""
    grid = np.zeros(depth_m.shape, bool)
    grid[::stride, ::stride] = True
    parts = []
    for i, oid in enumerate(result.object_ids):
        if not result.scores[i] > 0:
            continue
        pts, u, v = object_points(depth_m, result.masks[i], k)
        if len(pts) < max(1, settings.min_valid_pixels):
            continue
        keep = robust_inliers(pts[:, 2], settings) & grid[v, u]
        part = np.zeros(int(keep.sum()), POINT_DTYPE)
        for axis, name in enumerate("xyz"):
            part[name] = pts[keep, axis]
        part["object_id"] = oid
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros(0, POINT_DTYPE)


C = TypeVar("C")
D = TypeVar("D")


class StampPairer(Generic[C, D]):
    """Pairs colour items with depth items by stamp, whichever arrives first; thread-safe.

    A colour item pairs with the waiting depth item of the closest stamp within
    ``tolerance_ns`` (0 = exact), and the other way round. Streams arrive in stamp order, so an
    item older than the newest item of the other stream minus the tolerance can no longer be
    paired: it is dropped and counted (``depth_unmatched``, ``colour_without_depth``), as are
    items pushed out of the bounded buffers.
    """

    def __init__(self, tolerance_ns: int, capacity: int = 16):
        self.tolerance_ns = int(tolerance_ns)
        self.capacity = capacity
        self._lock = threading.Lock()
        self._depth: OrderedDict[int, D] = OrderedDict()
        self._colour: OrderedDict[int, C] = OrderedDict()
        self._newest_depth: int | None = None
        self._newest_colour: int | None = None
        self.counts = {"depth_unmatched": 0, "colour_without_depth": 0}

    def _take(self, waiting: OrderedDict, stamp: int) -> Any | None:
        best = min(waiting, key=lambda s: abs(s - stamp), default=None)
        if best is None or abs(best - stamp) > self.tolerance_ns:
            return None
        return waiting.pop(best)

    def _prune(self, waiting: OrderedDict, newest_other: int | None, key: str) -> None:
        while waiting and (len(waiting) > self.capacity or (
                newest_other is not None and next(iter(waiting)) < newest_other - self.tolerance_ns)):
            waiting.popitem(last=False)
            self.counts[key] += 1

    def add_colour(self, stamp: int, item: C) -> D | None:
        """The depth item for this colour frame, or None (the colour item waits for its depth)."""
        with self._lock:
            self._newest_colour = stamp if self._newest_colour is None else max(self._newest_colour, stamp)
            depth = self._take(self._depth, stamp)
            if depth is None:
                self._colour[stamp] = item
                self._colour.move_to_end(stamp)
            self._prune(self._depth, self._newest_colour, "depth_unmatched")
            self._prune(self._colour, self._newest_depth, "colour_without_depth")
            return depth

    def add_depth(self, stamp: int, item: D) -> C | None:
        """The colour item waiting for this depth image, or None (the depth waits for its frame)."""
        with self._lock:
            self._newest_depth = stamp if self._newest_depth is None else max(self._newest_depth, stamp)
            colour = self._take(self._colour, stamp)
            if colour is None:
                self._depth[stamp] = item
                self._depth.move_to_end(stamp)
            self._prune(self._colour, self._newest_depth, "colour_without_depth")
            self._prune(self._depth, self._newest_colour, "depth_unmatched")
            return colour

    def clear(self) -> None:
        with self._lock:
            self._depth.clear()
            self._colour.clear()
            self._newest_depth = self._newest_colour = None
