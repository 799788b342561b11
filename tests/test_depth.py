"""3D positions from a registered depth image (sam2_ros.depth): decoding, intrinsics, robust
statistics and stamp pairing, on synthetic scenes whose answer is known geometrically."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_ros.depth import (
    DepthError, DepthSettings, Intrinsics, StampPairer, depth_to_metres, object_geometry, object_points,
)

K = Intrinsics(fx=200.0, fy=210.0, cx=80.0, cy=60.0, width=160, height=120)


def to_16uc1(metres: np.ndarray) -> bytes:
    mm = np.where(np.isfinite(metres), np.round(metres * 1000), 0).astype("<u2")
    return mm.tobytes()


def test_16uc1_millimetres_and_zero_invalid():
    m = np.full((3, 4), 1.5, np.float32)
    m[1, 2] = np.nan
    out = depth_to_metres(to_16uc1(m), 3, 4, 8, "16UC1")
    assert out.dtype == np.float32 and out.shape == (3, 4)
    assert np.isnan(out[1, 2]) and np.isnan(out).sum() == 1
    np.testing.assert_allclose(out[np.isfinite(out)], 1.5, atol=1e-6)


def test_32fc1_metres_with_padding_big_endian_and_invalid_values():
    m = np.array([[2.0, np.nan, np.inf], [-1.0, 0.0, 0.25]], np.float32)
    rows = np.zeros((2, 16), np.uint8)  # 12 bytes of data + 4 of padding per row
    rows[:, :12] = m.astype(">f4").view(np.uint8).reshape(2, 12)
    out = depth_to_metres(rows.tobytes(), 2, 3, 16, "32FC1", is_bigendian=True)
    np.testing.assert_array_equal(np.isfinite(out), [[True, False, False], [False, False, True]])
    assert out[0, 0] == 2.0 and out[1, 2] == 0.25


@pytest.mark.parametrize("args, fragment", [
    ((b"\0" * 24, 3, 4, 8, "mono8"), "depth encoding must be one of 16UC1, 32FC1"),
    ((b"\0" * 24, 3, 4, 8, "rgb8"), "depth encoding"),
    ((b"\0" * 10, 3, 4, 8, "16UC1"), "truncated depth data"),
    ((b"", 0, 0, 0, "32FC1"), "zero size"),
    ((b"\0" * 24, 3, 4, 4, "16UC1"), "step 4 is smaller"),
])
def test_bad_depth_images_are_refused_with_the_reason(args, fragment):
    with pytest.raises(DepthError, match=fragment):
        depth_to_metres(*args)


@pytest.mark.parametrize("k, size", [
    ([0.0] * 9, (160, 120)),
    ([200, 0, 80, 0, -5, 60, 0, 0, 1], (160, 120)),
    ([float("nan"), 0, 80, 0, 200, 60, 0, 0, 1], (160, 120)),
    ([200, 0, 80, 0, 200, 60, 0, 0, 1], (0, 0)),
    ([200, 0, 80], (160, 120)),
])
def test_missing_or_zero_intrinsics_are_refused(k, size):
    with pytest.raises(DepthError):
        Intrinsics.from_k(k, *size)


def test_camera_info_size_must_match_the_image():
    k = Intrinsics.from_k([200, 0, 80, 0, 210, 60, 0, 0, 1], 160, 120)
    assert k == K
    k.check_image(160, 120, "image")
    with pytest.raises(DepthError, match="camera_info is 160x120 but the depth image is 320x240"):
        k.check_image(320, 240, "depth image")


def plane_with_region(z_plane=2.0, z_region=1.0):
    depth = np.full((K.height, K.width), z_plane, np.float32)
    depth[40:80, 50:110] = z_region
    return depth


def test_a_plane_gives_its_distance_and_the_back_projection_of_the_mask():
    depth = plane_with_region()
    mask = np.zeros(depth.shape, bool)
    mask[5:25, 10:30] = True  # on the plane only
    g = object_geometry(depth, mask, K)
    assert g.valid_pixels == g.inlier_pixels == 400
    assert g.position[2] == pytest.approx(2.0, abs=1e-6)
    # the median pixel is (19.5, 14.5): the position is its back-projection at 2 m
    assert g.position[0] == pytest.approx((19.5 - K.cx) * 2.0 / K.fx, abs=1e-9)
    assert g.position[1] == pytest.approx((14.5 - K.cy) * 2.0 / K.fy, abs=1e-9)
    assert g.box_size[2] == pytest.approx(0.0, abs=1e-9)
    assert g.spread[2] == pytest.approx(0.0, abs=1e-9)


def test_the_background_behind_a_mask_border_and_invalid_pixels_are_rejected():
    depth = plane_with_region()
    depth[50:55, 60:65] = np.nan  # invalid pixels inside the region
    mask = np.zeros(depth.shape, bool)
    mask[36:84, 46:114] = True  # the region (1 m) plus a 4-pixel ring of the plane (2 m) behind it
    region = 40 * 60 - 25
    g = object_geometry(depth, mask, K)
    assert g.valid_pixels == mask.sum() - 25 and g.inlier_pixels == region
    assert g.position[2] == pytest.approx(1.0, abs=1e-6)
    assert g.box_center[2] == pytest.approx(1.0, abs=1e-6)
    # the box spans the region's 5th..95th percentile columns, at 1 m
    xs = (np.arange(50, 110) - K.cx) * 1.0 / K.fx
    assert g.box_size[0] == pytest.approx(np.percentile(np.repeat(xs, 40), 95) - np.percentile(np.repeat(xs, 40), 5), rel=0.05)


def test_too_few_valid_pixels_give_no_geometry():
    depth = np.full((K.height, K.width), np.nan, np.float32)
    mask = np.ones(depth.shape, bool)
    assert object_geometry(depth, mask, K) is None  # all invalid
    depth[0, :5] = 1.0
    assert object_geometry(depth, mask, K, DepthSettings(min_valid_pixels=10)) is None
    assert object_geometry(depth, mask, K, DepthSettings(min_valid_pixels=5)).valid_pixels == 5


def test_mask_and_depth_of_different_sizes_are_refused():
    with pytest.raises(DepthError, match="depth is 160x120 but the mask is 10x10"):
        object_points(plane_with_region(), np.ones((10, 10), bool), K)


@pytest.mark.parametrize("seed", range(40))
def test_outliers_below_half_the_mask_never_move_the_position_off_the_surface(seed):
    """A noisy surface at z with up to 45 % of the mask on a far background: the position stays on
    the surface (within 3 noise sigmas and the rejection floor). Random cases, seeded."""
    rng = np.random.default_rng(seed)
    z, noise, frac = rng.uniform(0.2, 10.0), rng.uniform(0.0, 0.005), rng.uniform(0.05, 0.45)
    depth = (z + rng.normal(0, noise, (K.height, K.width))).astype(np.float32)
    mask = np.zeros(depth.shape, bool)
    mask[20:100, 20:140] = True
    far = mask & (rng.random(depth.shape) < frac)
    depth[far] = z + 3.0
    g = object_geometry(depth, mask, K)
    assert abs(g.position[2] - z) <= 3 * noise + 1e-4
    assert g.inlier_pixels <= mask.sum() - far.sum() + 0  # every background pixel rejected
    assert g.valid_pixels == mask.sum()


def test_stamp_pairing_exact_tolerance_and_what_cannot_pair():
    p = StampPairer[str, str](tolerance_ns=0)
    assert p.add_depth(100, "d100") is None  # depth first: waits
    assert p.add_colour(100, "c100") == "d100"  # exact match
    assert p.add_colour(200, "c200") is None  # colour first: waits
    assert p.add_depth(200, "d200") == "c200"
    assert p.add_depth(250, "d250") is None  # a frame the tracker never processed (dropped)
    assert p.add_colour(300, "c300") is None
    assert p.counts["depth_unmatched"] == 1  # 250 < newest colour 300: can never pair
    assert p.add_depth(400, "d400") is None
    assert p.counts["colour_without_depth"] == 1  # 300 < newest depth 400
    q = StampPairer[str, str](tolerance_ns=10)
    assert q.add_depth(100, "d100") is None and q.add_depth(108, "d108") is None
    assert q.add_colour(105, "c105") == "d108"  # the closer one pairs
    r = StampPairer[str, str](tolerance_ns=10)
    r.add_depth(100, "d100")
    assert r.add_colour(111, "c111") is None  # 11 ns apart: outside the tolerance
    full = StampPairer[str, str](tolerance_ns=0, capacity=2)
    for s in (1, 2, 3):
        full.add_depth(s, str(s))
    assert full.counts["depth_unmatched"] == 1


def test_object_point_cloud_keeps_the_inliers_on_a_grid_with_their_ids():
    from sam2_ros.depth import POINT_DTYPE, object_point_cloud
    from sam2_ros.tracker import FrameResult

    depth = plane_with_region()
    masks = np.zeros((3, K.height, K.width), bool)
    masks[0, 36:84, 46:114] = True  # the region and a ring of the plane behind it
    masks[1, 0:10, 0:10] = True
    masks[2] = True  # not visible
    r = FrameResult(0, [4, 9, 11], masks=masks, scores=np.float32([1, 1, -1]))
    pts = object_point_cloud(r, depth, K, stride=4)
    assert pts.dtype == POINT_DTYPE
    ids = pts["object_id"]
    assert set(ids) == {4, 9}
    assert np.all(pts["z"][ids == 4] == np.float32(1.0))  # the ring at 2 m was rejected
    assert (ids == 9).sum() == 9  # rows and columns 0, 4, 8
    np.testing.assert_allclose(pts["x"][ids == 9][:3], (np.array([0, 4, 8]) - K.cx) * 2.0 / K.fx, rtol=1e-6)
    assert len(object_point_cloud(r, depth, K, stride=1)) == 40 * 60 + 100
