"""Pre- and post-processing on the torch backend's device (``TorchImaging``) against the exact host
path (PIL resize, OpenCV hole filling and upsampling): the resize and the hole filling match
exactly, the device masks differ from OpenCV's on a measured handful of near-threshold pixels,
and only the uint8 frame goes up and only what is read comes down."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from sam2_ros.backends import BACKEND_INFO, load_backend  # noqa: E402
from sam2_ros.backends.torch_backend.imaging import TorchImaging, TorchRendering, pil_bicubic_taps  # noqa: E402
from sam2_ros.errors import EngineError  # noqa: E402
from sam2_ros.imaging import HOST_IMAGING, HostRendering, Imaging, Rendering, paint_labels  # noqa: E402
from sam2_ros.io.video import read_frames  # noqa: E402
from sam2_ros.postprocess import boxes_from_masks, fill_holes  # noqa: E402
from sam2_ros.preprocess import IMAGE_STD, preprocess_frame  # noqa: E402
from sam2_ros.tracker import Tracker  # noqa: E402

from test_device_resident import HostTraffic  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"))]
VIDEOS = ("bedroom", "02_cups", "03_blocks", "08_driving")
#: Mask pixels where the device's bilinear upsampling (F.interpolate) and OpenCV's disagree on
#: real logits: measured 0.7e-6 .. 1.3e-6 at 540x960 .. 1080x1920 (random-weight logits lie
#: within +-0.3, so many pixels sit near the threshold); the bound leaves ~8x margin.
MASK_DIFF_BOUND = 1e-5


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def imaging(device) -> TorchImaging:
    return TorchImaging(device)


@pytest.fixture(scope="module")
def video_frames(shared_data) -> dict[str, list[np.ndarray]]:
    """Two frames (0 and 19) of each test video: 960x540 and 1280x720."""
    out = {}
    for v in VIDEOS:
        frames = read_frames(shared_data / "videos" / f"{v}.mp4", 20)
        out[v] = [frames[0], frames[-1]]
    return out


@pytest.fixture(scope="module")
def device_backend(tiny_export_256, tiny_checkpoint):
    return load_backend(tiny_export_256, "torch", checkpoint=str(tiny_checkpoint), device="cpu", imaging="device")


@pytest.fixture(scope="module")
def real_logits(device_backend, bedroom_frames) -> np.ndarray:
    """[frames, 3, 64, 64] unfilled low-res logits of three objects tracked on bedroom frames."""
    tracker = Tracker(device_backend, max_objects=3, fill_hole_area=0)
    tracker.step(bedroom_frames[0])
    tracker.add_prompt(1, points=[[300, 200]], labels=[1])
    tracker.add_prompt(2, box=[600, 250, 800, 450])
    tracker.add_prompt(3, points=[[100, 400], [150, 420]], labels=[1, 0])
    return np.stack([tracker.step(f).low_res_logits.copy() for f in bedroom_frames[1:6]])


def pil_resize(frame: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(frame, "RGB").resize((size, size), Image.Resampling.BICUBIC))


def host(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ------------------------------------------------------------------ resize
def test_imaging_implements_the_protocol(imaging):
    assert isinstance(imaging, Imaging) and imaging.on_device and not imaging.exact
    r = imaging.render(torch.zeros(1, 4, 4, device=imaging.device), (8, 8), 0.0)
    assert isinstance(r, TorchRendering) and isinstance(r, Rendering)


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_resize_reproduces_pil_on_video_frames(imaging, video_frames, size):
    """Measured: 0 differing uint8 values on frames of all four videos at 256, 512 and 1024 (the
    integer taps are PIL's own); the bound only leaves room for another PIL build's rounding."""
    differing = total = worst = 0
    for frames in video_frames.values():
        for f in frames:
            ours = host(imaging.resize(torch.from_numpy(f).to(imaging.device), size))
            d = np.abs(ours.astype(np.int16) - pil_resize(f, size))
            differing += int(np.count_nonzero(d))
            total += d.size
            worst = max(worst, int(d.max()))
    assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
    assert worst <= 1 and differing / total <= 1e-4, (worst, differing / total)


def test_frame_tensor_equals_preprocess_frame(imaging, video_frames):
    level = float(1 / 255 / IMAGE_STD.min()) + 1e-6  # one uint8 level after normalisation
    for size in (256, 1024):
        for frames in video_frames.values():
            f = frames[1]
            ours, ref = imaging.frame_tensor(f, size), preprocess_frame(f, size)
            assert ours.shape == (1, 3, size, size) and ours.dtype == torch.float32
            assert ours.device.type == torch.device(imaging.device).type
            d = np.abs(host(ours) - ref)
            assert d.max() <= level and np.count_nonzero(d) / d.size <= 1e-4


def test_resize_edge_cases_reproduce_pil(imaging):
    """Clamping (noise and a 0/255 checkerboard overshoot the bicubic lobes), enlarging, an axis
    left alone (PIL skips that pass), a strong shrink (many taps) and odd sizes."""
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    checker = np.where((np.indices((48, 80)).sum(0) % 2)[..., None], 255, 0).astype(np.uint8).repeat(3, 2)
    cases = [(noise, 64), (noise, 20), (checker, 33), (checker, 80), (noise[:, :37], 37),
             (rng.integers(0, 256, (300, 256, 3), dtype=np.uint8), 256),
             (rng.integers(0, 256, (40, 2000, 3), dtype=np.uint8), 64), (noise[:1, :1], 5)]
    for frame, size in cases:
        ours = host(imaging.resize(torch.from_numpy(np.ascontiguousarray(frame)).to(imaging.device), size))
        assert np.array_equal(ours, pil_resize(np.ascontiguousarray(frame), size)), (frame.shape, size)


def test_pil_taps_are_normalised_fixed_point():
    for n_in, n_out in ((960, 256), (540, 1024), (1280, 512), (7, 7)):
        index, weight = pil_bicubic_taps(n_in, n_out)
        assert index.min() >= 0 and index.max() < n_in
        assert np.abs(weight.astype(np.int64).sum(1) - (1 << 22)).max() <= weight.shape[1]


def test_frame_tensor_rejects_non_rgb_uint8(imaging):
    with pytest.raises(ValueError, match="RGB uint8"):
        imaging.frame_tensor(np.zeros((8, 8, 3), np.float32), 16)
    with pytest.raises(ValueError, match="RGB uint8"):
        imaging.frame_tensor(np.zeros((8, 8), np.uint8), 16)


# ------------------------------------------------------------ hole filling
def assert_fills_like_opencv(imaging: TorchImaging, logits: np.ndarray, max_area: int) -> int:
    """Fill ``logits`` [n, h, w] on the device and with OpenCV; bit-equal; returns pixels filled."""
    ref = fill_holes(logits.copy(), max_area)
    ours = torch.from_numpy(logits.copy()).to(imaging.device)
    imaging.fill_holes(ours, max_area)
    assert np.array_equal(host(ours), ref), (logits.shape, max_area)
    return int(np.count_nonzero(ref != logits))


@pytest.mark.parametrize("max_area", [1, 8, 20])
def test_fill_holes_equals_opencv_on_random_masks(imaging, max_area):
    rng = np.random.default_rng(max_area)
    filled = 0
    for _ in range(25):
        n, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 48)), int(rng.integers(1, 48))
        logits = rng.standard_normal((n, h, w)).astype(np.float32) + np.float32(rng.uniform(-1, 1))
        logits[rng.random((n, h, w)) < 0.05] = 0.0  # logit 0 is background
        filled += assert_fills_like_opencv(imaging, logits, max_area)
    # blobs of many shapes and sizes: smoothed noise thresholded
    base = rng.standard_normal((4, 96, 96)).astype(np.float32)
    smooth = sum(np.roll(base, (dy, dx), (1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    for level in (-1.5, 0.0, 1.5):
        filled += assert_fills_like_opencv(imaging, smooth + np.float32(level), max_area)
    assert filled > 0


def _adversarial(max_area: int) -> list[tuple[str, np.ndarray, bool | None]]:
    """(name, [h, w] logits with background = -1, whether OpenCV fills the pattern) cases."""
    a = max_area
    h, w = 24, max(3 * a + 6, 24)
    cases = []

    def canvas():
        return np.ones((h, w), np.float32)

    m = canvas()
    m[5, 2:2 + a + 1] = -1  # a straight line one pixel longer than max_area
    cases.append(("line a+1", m, False))
    m = canvas()
    m[5, 2:2 + a] = -1
    cases.append(("line a", m, True))
    m = canvas()
    for i in range(a + 1):  # diagonal chain: 8-connected only through corners
        m[1 + i % (h - 2), 1 + i] = -1
    cases.append(("diagonal a+1", m, False))
    m = canvas()
    for i in range(a):
        m[1 + i % (h - 2), 1 + i] = -1
    cases.append(("diagonal a", m, True))
    m = canvas()
    m[2:5, 2:5] = -1  # two blobs touching at one corner: one 8-connected component
    m[5:7, 5:7] = -1
    cases.append(("corner-touching blobs (13 px)", m, a >= 13))
    m = canvas()  # a spiral corridor: long, narrow, its minimum label far from its end
    y0, x0, y1, x1 = 1, 1, h - 2, min(w - 2, 22)
    while y0 <= y1 and x0 <= x1:
        m[y0, x0:x1 + 1] = -1
        m[y0:y1 + 1, x1] = -1
        m[y1, x0:x1 + 1] = -1
        m[y0 + 2:y1 + 1, x0] = -1
        y0, x0, y1, x1 = y0 + 2, x0 + 2, y1 - 2, x1 - 2
    cases.append(("spiral", m, None))
    m = canvas()
    m[0, 0] = m[-1, -1] = m[0, -1] = -1  # holes on the border and in corners
    m[-1, 3:3 + min(a, 5)] = -1
    m[4:6, 0] = -1
    cases.append(("border holes", m, True))
    for size in (a, a + 1):  # compact blobs of exactly max_area and max_area + 1 pixels
        m = canvas()
        cols = int(np.ceil(np.sqrt(size)))
        for i in range(size):
            m[3 + i // cols, 3 + i % cols] = -1
        cases.append((f"blob of {size} px", m, size <= a))
    cases.append(("all background", -np.ones((h, w), np.float32), h * w <= a))
    cases.append(("all foreground", canvas(), None))
    m = -canvas()
    m[1:-1, 1:-1] = 1  # a ring of background around a foreground square: one big component
    m[5:8, 5:8] = -1  # plus a 9-pixel hole inside
    cases.append(("ring with inner hole", m, None))
    return cases


@pytest.mark.parametrize("max_area", [1, 8, 20])
def test_fill_holes_equals_opencv_on_adversarial_masks(imaging, max_area):
    cases = _adversarial(max_area)
    for name, m, fills in cases:
        filled = assert_fills_like_opencv(imaging, m[None], max_area)
        if fills is not None:
            assert (filled > 0) == fills, name
    # all cases at once: n > 1 rows, labels of different rows never mix
    stacked = np.stack([m for _, m, _ in cases])
    assert_fills_like_opencv(imaging, stacked, max_area)


def test_fill_holes_equals_opencv_on_real_logits(imaging, real_logits):
    """Tracker logits (unfilled), also thresholded at shifted levels for more component shapes."""
    filled = 0
    for lr in real_logits:
        for max_area in (1, 8, 20):
            for shift in (-0.1, 0.0, 0.05):
                filled += assert_fills_like_opencv(imaging, lr - np.float32(shift), max_area)
    assert filled > 0


def test_fill_holes_with_no_area_or_no_rows_changes_nothing(imaging):
    x = torch.full((2, 8, 8), -1.0, device=imaging.device)
    for area in (0, -3):
        imaging.fill_holes(x, area)
        assert bool((x == -1).all())
    imaging.fill_holes(torch.zeros((0, 8, 8), device=imaging.device), 8)


def test_fill_holes_writes_through_a_view(imaging):
    """The tracker passes ``bank.low_res[rows, 0]``: a view, filled in place."""
    bank = torch.ones((3, 1, 10, 10), device=imaging.device)
    bank[1, 0, 4, 4] = -2.0
    imaging.fill_holes(bank[0:2, 0], 8)
    assert float(bank[1, 0, 4, 4]) == pytest.approx(0.1)


# --------------------------------------------------------------- rendering
def _identity_logits(masks: np.ndarray) -> np.ndarray:
    """Logits whose upsampling to their own size is exact (both paths): +-1 where ``masks``."""
    return np.where(masks, 1.0, -1.0).astype(np.float32)


def _mask_sets() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    h, w = 23, 31
    one = np.zeros((1, h, w), bool)
    one[3:9, 4:20] = True
    several = rng.random((5, h, w)) < 0.3  # overlapping everywhere
    several[2] = False  # an empty mask
    several[4] = False
    several[4, h - 1, w - 1] = True  # a single pixel at the far corner
    many = np.zeros((300, h, w), bool)  # more objects than uint8 labels
    for i in range(300):
        many[i].flat[(i * 7) % (h * w)] = True
    return [np.zeros((0, h, w), bool), one, several, np.zeros((2, h, w), bool), many]


def test_rendering_outputs_equal_host_functions_on_identical_masks(imaging):
    rng = np.random.default_rng(11)
    for masks in _mask_sets():
        n, h, w = masks.shape
        lr = _identity_logits(masks)
        r = imaging.render(torch.from_numpy(lr).to(imaging.device), (h, w), 0.0)
        hr = HostRendering(lr, (h, w), 0.0)
        assert np.array_equal(r.masks(), masks) and np.array_equal(hr.masks(), masks)
        boxes = r.boxes()
        assert boxes.dtype == np.float32 and boxes.shape == (n, 4)
        np.testing.assert_array_equal(boxes, boxes_from_masks(masks))
        areas = r.areas()
        assert areas.dtype == np.int64 and np.array_equal(areas, masks.sum(axis=(1, 2)))
        for order in (np.arange(n), rng.permutation(n)):
            dtypes = (np.uint16,) if n >= 255 else (np.uint8, np.uint16)
            for dtype in dtypes:
                ours = r.label_image(order, dtype)
                assert ours.dtype == dtype and ours.shape == (h, w)
                assert np.array_equal(ours, paint_labels(masks, order, dtype))
                assert np.array_equal(ours, hr.label_image(order, dtype))
    assert ours.max() > 255  # the uint16 case did need 16 bits


def test_render_reads_the_logits_of_the_moment_it_was_asked(imaging):
    """The bank's buffer is overwritten by the next frame; a rendering keeps the logits it was given."""
    lr = torch.ones((1, 4, 4), device=imaging.device)
    r = imaging.render(lr, (8, 8), 0.0)
    lr.fill_(-1.0)
    assert r.masks().all() and r.areas()[0] == 64


def test_rendering_masks_vs_opencv_on_real_logits(imaging, real_logits):
    for hw in ((540, 960), (720, 1280)):
        differing = total = 0
        for lr in real_logits:
            ours = imaging.render(torch.from_numpy(lr).to(imaging.device), hw, 0.0).masks()
            ref = HostRendering(lr, hw, 0.0).masks()
            assert ours.shape == ref.shape and ours.dtype == bool
            assert 0.05 < ref.mean() < 0.95  # non-trivial masks, or this compares nothing
            differing += int(np.count_nonzero(ours != ref))
            total += ref.size
        assert differing / total <= MASK_DIFF_BOUND, (hw, differing / total)


# ------------------------------------------------------------ host traffic
def test_only_the_frame_goes_up_and_only_what_is_read_comes_down(imaging, video_frames, real_logits, monkeypatch):
    frame = video_frames["08_driving"][0]
    h, w = frame.shape[:2]
    imaging.frame_tensor(frame, 256)  # first call of this size: its filter taps go up
    traffic = HostTraffic(monkeypatch)
    # the counter sees a crossing if one happens
    torch.from_numpy(np.zeros(3, np.uint8))
    assert traffic.log == [("up", (3,), 3)]
    traffic.log.clear()

    x = imaging.frame_tensor(frame, 256)
    assert traffic.log == [("up", (h, w, 3), h * w * 3)]
    traffic.log.clear()

    lr = torch.from_numpy(real_logits[0].copy()).to(imaging.device)  # (counted: test set-up)
    traffic.log.clear()
    imaging.fill_holes(lr, 8)
    r = imaging.render(lr, (h, w), 0.0)
    assert traffic.log == [] and x.shape == (1, 3, 256, 256)

    for dtype in (np.uint8, np.uint16):
        traffic.log.clear()
        labels = r.label_image(np.arange(lr.shape[0]), dtype)
        downs = [e for e in traffic.log if e[0] == "down"]
        item = np.dtype(dtype).itemsize
        assert ("down", (h, w), h * w * item) in downs and labels.shape == (h, w)
        assert sum(b for _, _, b in traffic.log) <= h * w * item + 256, traffic.log
    traffic.log.clear()
    r.boxes()
    r.areas()
    assert sum(b for _, _, b in traffic.log) <= 256, traffic.log  # [n, 4] float32 and [n] int64


# ------------------------------------------------------- the backend option
def test_torch_backend_imaging_option(tiny_export_256, tiny_checkpoint, device_backend):
    assert "imaging" in BACKEND_INFO["torch"].options
    assert isinstance(device_backend.imaging, TorchImaging)
    assert device_backend.imaging.device == device_backend.device
    opts = {"checkpoint": str(tiny_checkpoint), "device": "cpu"}
    assert load_backend(tiny_export_256, "torch", imaging="host", **opts).imaging is HOST_IMAGING
    auto = load_backend(tiny_export_256, "torch", **opts).imaging
    assert auto is HOST_IMAGING  # the exact path stays the CPU default
    with pytest.raises(EngineError, match="imaging must be one of auto, device, host, got 'gpu'"):
        load_backend(tiny_export_256, "torch", imaging="gpu", **opts)
    if HAS_CUDA:
        cuda = load_backend(tiny_export_256, "torch", checkpoint=str(tiny_checkpoint), device="cuda")
        assert isinstance(cuda.imaging, TorchImaging)


# ----------------------------------------------- CUDA: no syncs, capturable
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_resize_and_fill_holes_never_synchronise_and_are_graph_capturable(video_frames, real_logits):
    im = TorchImaging("cuda")
    frame = torch.from_numpy(video_frames["bedroom"][0]).cuda()
    logits = torch.from_numpy(real_logits[0].copy()).cuda()
    im.resize(frame, 512), im.fill_holes(logits.clone(), 8)  # caches made (taps, buffers)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        im.resize(frame, 512)
        im.fill_holes(logits.clone(), 8)
    finally:
        torch.cuda.set_sync_debug_mode("default")

    static = logits.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as CUDA graph capture wants
        im.fill_holes(static.clone(), 8)
        im.resize(frame, 512)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        im.fill_holes(static, 8)
        resized = im.resize(frame, 512)
    for lr in real_logits:
        static.copy_(torch.from_numpy(lr.copy()).cuda())
        graph.replay()
        torch.cuda.synchronize()
        assert np.array_equal(host(static), fill_holes(lr.copy(), 8))
    assert np.array_equal(host(resized), pil_resize(video_frames["bedroom"][0], 512))
