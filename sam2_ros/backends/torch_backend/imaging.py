"""Frame pre- and post-processing on the torch backend's device (:class:`TorchImaging`).

The camera frame goes up once as uint8 (from page-locked memory, without waiting for the device:
:class:`.storage.HostStaging`) and is resized on the device; the logits never leave it until a
caller reads an output, and then only that output comes down. Everything here runs on
any torch device. The resize (:meth:`TorchImaging.resize`, all of ``frame_tensor`` but the
upload) and :meth:`TorchImaging.fill_holes` never synchronise with the host once their tables
for a size are on the device: no ``.item()``, no data-dependent shapes, so a CUDA graph could
capture them.

* Resize: PIL's bicubic resize of an RGB uint8 image reproduced in integer arithmetic — the
  same fixed-point filter taps (22 fractional bits) PIL computes per (input size, output size),
  a horizontal then a vertical pass, each rounded and clamped to uint8 as PIL does. The result
  equals ``preprocess_frame`` bit for bit on the frames we measured (tests/test_device_imaging.py).
* Hole filling: OpenCV's 8-connected components replaced by min-label propagation (3x3 min
  pooling restricted to the background), which is exact for every component small enough to fill.
* Rendering: the official predictor's bilinear ``F.interpolate``; it differs from the host path's
  OpenCV resize on a few pixels where the upsampled logit is within float rounding of the threshold.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sam2_ros.backends.torch_backend.storage import HostStaging, concrete_device
from sam2_ros.preprocess import IMAGE_MEAN, IMAGE_STD

#: Fractional bits of PIL's fixed-point filter weights for 8-bit images (``PRECISION_BITS``).
_PIL_BITS = 22
#: Logit given to filled holes (SAM 2's ``fill_holes_in_mask_scores``).
_HOLE_LOGIT = 0.1


def _bicubic(x: float) -> float:
    """PIL's bicubic kernel (a = -0.5), same operation order as its C code."""
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def pil_bicubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's resampling taps from ``in_size`` to ``out_size`` samples (whole image, no box).

    Returns ``index`` [out, K] int64 (input sample of each tap) and ``weight`` [out, K] int32
    (fixed point, 22 fractional bits); unused taps have weight 0 and a valid index. Computed
    with Python floats (IEEE doubles) in PIL's operation order, so the integers are PIL's.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale  # bicubic support, widened when shrinking (antialiasing)
    ss = 1.0 / filterscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C does
        count = min(int(center + support + 0.5), in_size) - xmin
        w = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(count)]
        total = 0.0
        for v in w:  # summed in order, as PIL does
            total += v
        if total != 0.0:
            w = [v / total for v in w]
        fixed = [int(v * (1 << _PIL_BITS) + (-0.5 if v < 0 else 0.5)) for v in w]
        rows.append((xmin, fixed))
    k = max(len(f) for _, f in rows)
    index = np.zeros((out_size, k), np.int64)
    weight = np.zeros((out_size, k), np.int32)
    for xx, (xmin, fixed) in enumerate(rows):
        index[xx] = np.minimum(xmin + np.arange(k), in_size - 1)
        weight[xx, : len(fixed)] = fixed
    return index, weight


class TorchImaging:
    """:class:`~sam2_ros.imaging.Imaging` on a torch device (CPU or CUDA).

    Per (input size, output size) filter taps and per low-res shape hole-filling buffers are
    cached on the device, so after the first frame of a size only the uint8 frame goes up.
    """

    on_device = True
    #: The frame input equals the host path's bit for bit (measured), but the masks come from
    #: ``F.interpolate`` rather than OpenCV and differ on rare near-threshold pixels.
    exact = False

    def __init__(self, device: torch.device | str, staging: HostStaging | None = None):
        self.device = concrete_device(device, torch.cuda.current_device)
        self.staging = staging if staging is not None else HostStaging(self.device)
        self._taps: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._norm_lut: tuple[torch.Tensor, torch.Tensor] | None = None
        self._holes: dict[tuple[int, int], _HoleBuffers] = {}

    # ------------------------------------------------------------------ frame
    def frame_tensor(self, frame_rgb: np.ndarray, image_size: int) -> torch.Tensor:
        """RGB uint8 [H, W, 3] -> normalised float32 [1, 3, S, S] on the device (PIL bicubic resize)."""
        if frame_rgb.dtype != np.uint8 or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 [H, W, 3] frame, got {frame_rgb.dtype} {frame_rgb.shape}")
        frame = self.staging.upload([frame_rgb])[0]
        levels = self.resize(frame, image_size)
        # level -> normalised float through a [3 x 256] table made with preprocess_frame's arithmetic
        lut, base = self._normalisation_table()
        return lut.take(levels.permute(2, 0, 1).long() + base)[None]

    def resize(self, frame: torch.Tensor, size: int) -> torch.Tensor:
        """uint8 [H, W, 3] device frame -> uint8 [size, size, 3]: PIL's ``resize((size, size), BICUBIC)``."""
        x = self._resample(frame.to(torch.int32), 1, size)  # horizontal pass first, as PIL
        return self._resample(x, 0, size).to(torch.uint8)

    def _resample(self, x: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
        """One PIL pass along ``dim`` of int32 [H, W, 3] levels 0..255 -> int32 levels, rounded and
        clamped as PIL does. Exact integer arithmetic: PIL's own int32 sums cannot overflow."""
        in_size = x.shape[dim]
        if in_size == out_size:  # PIL skips the pass
            return x
        index, weight = self._taps_for(in_size, out_size)  # [K, out] each
        shape = [1, 1, 1]
        shape[dim] = out_size
        acc = x.index_select(dim, index[0]) * weight[0].view(shape)
        for k in range(1, index.shape[0]):
            acc += x.index_select(dim, index[k]) * weight[k].view(shape)
        acc += 1 << (_PIL_BITS - 1)
        return acc.bitwise_right_shift_(_PIL_BITS).clamp_(0, 255)

    def _taps_for(self, in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """PIL's taps as [K, out] device tensors, made once per (input size, output size)."""
        key = (in_size, out_size)
        if key not in self._taps:
            index, weight = pil_bicubic_taps(in_size, out_size)
            self._taps[key] = (torch.from_numpy(np.ascontiguousarray(index.T)).to(self.device),
                               torch.from_numpy(np.ascontiguousarray(weight.T)).to(self.device))
        return self._taps[key]

    def _normalisation_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[3 * 256] float32 normalised values of every level per channel, and each channel's
        offset into it ([3, 1, 1] int64)."""
        if self._norm_lut is None:
            levels = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)  # as preprocess_frame
            table = (levels[None, :, None] - IMAGE_MEAN) / IMAGE_STD  # float32 [3, 256, 1]
            self._norm_lut = (torch.from_numpy(np.ascontiguousarray(table.reshape(-1))).to(self.device),
                              (torch.arange(3, device=self.device) * 256).view(3, 1, 1))
        return self._norm_lut

    # ------------------------------------------------------------ hole filling
    def fill_holes(self, low_res: torch.Tensor, max_area: int) -> None:
        """Set background components (logit <= 0, 8-connected) of at most ``max_area`` pixels of
        [n, h, w] logits to 0.1, in place: exactly ``sam2_ros.postprocess.fill_holes``.

        Each background pixel starts with its own label (flat index + 1) and takes the minimum
        label of its 3x3 background neighbourhood ``max_area - 1`` times: a component of at most
        ``max_area`` pixels has a diameter below that, so it ends with a single label. A label
        whose pixels have no background neighbour with another label is a whole component
        ("closed"); its area is counted by a scatter into a buffer indexed by label.
        """
        if max_area <= 0 or low_res.numel() == 0:
            return
        n, h, w = low_res.shape
        hw = h * w
        if hw + 1 >= 1 << 24:
            raise ValueError(f"fill_holes: {h}x{w} logits exceed float32 labels")
        buf = self._hole_buffers(h, w, n)
        bg = (low_res <= 0)[:, None]  # [n, 1, h, w]
        fg_label = float(hw + 1)  # above every label: neutral for the minimum
        lab = torch.where(bg, buf.labels, fg_label)
        for _ in range(min(max_area, hw) - 1):
            lab = torch.where(bg, -F.max_pool2d(-lab, 3, 1, 1), fg_label)
        lowest = -F.max_pool2d(-lab, 3, 1, 1)
        highest = F.max_pool2d(torch.where(bg, lab, 0.0), 3, 1, 1)
        open_px = bg & ((lowest != lab) | (highest != lab))
        key = torch.where(bg, lab.long() + buf.offsets[:n], 0).view(-1)  # foreground -> bucket 0
        size = n * hw + 1
        area, opened = buf.area[:size], buf.opened[:size]
        area.zero_().scatter_add_(0, key, bg.view(-1).to(torch.int32))
        opened.zero_().scatter_add_(0, key, open_px.view(-1).to(torch.int32))
        hole = bg & (opened[key] == 0).view_as(bg) & (area[key] <= max_area).view_as(bg)
        low_res.masked_fill_(hole[:, 0], _HOLE_LOGIT)

    def _hole_buffers(self, h: int, w: int, n: int) -> _HoleBuffers:
        buf = self._holes.get((h, w))
        if buf is None or buf.rows < n:
            buf = _HoleBuffers(h, w, max(n, 2 * buf.rows if buf else n), self.device)
            self._holes[(h, w)] = buf
        return buf

    # --------------------------------------------------------------- outputs
    def render(self, low_res: torch.Tensor, frame_hw: tuple[int, int], threshold: float) -> TorchRendering:
        """The outputs of [n, h, w] logits; a device copy of them is taken now (the bank's buffer
        may be overwritten before the outputs are read), the masks are built on first request."""
        return TorchRendering(low_res.detach().clone(), frame_hw, threshold)


class _HoleBuffers:
    """Per low-res shape: initial labels, per-row label offsets and the per-label counters for
    up to ``rows`` rows, allocated once (grown when more rows come)."""

    def __init__(self, h: int, w: int, rows: int, device: torch.device):
        hw = h * w
        self.rows = rows
        self.labels = torch.arange(1, hw + 1, dtype=torch.float32, device=device).view(1, 1, h, w)
        self.offsets = (torch.arange(rows, dtype=torch.int64, device=device) * hw).view(rows, 1, 1, 1)
        self.area = torch.zeros(rows * hw + 1, dtype=torch.int32, device=device)
        self.opened = torch.zeros(rows * hw + 1, dtype=torch.int32, device=device)


class TorchRendering:
    """:class:`~sam2_ros.imaging.Rendering` on the device: the camera-resolution masks are
    computed once, on first request, and kept on the device; every output is computed there
    and only it is downloaded."""

    def __init__(self, low_res: torch.Tensor, frame_hw: tuple[int, int], threshold: float):
        self._low_res = low_res
        self._frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
        self._threshold = float(threshold)
        self._masks: torch.Tensor | None = None

    def device_masks(self) -> torch.Tensor:
        """[n, H, W] bool masks on the device (the official predictor's bilinear upsampling)."""
        if self._masks is None:
            n = self._low_res.shape[0]
            if n == 0:
                self._masks = torch.zeros((0, *self._frame_hw), dtype=torch.bool, device=self._low_res.device)
            else:
                up = F.interpolate(self._low_res[:, None].float(), size=self._frame_hw, mode="bilinear",
                                   align_corners=False)
                self._masks = up[:, 0] > self._threshold
        return self._masks

    def masks(self) -> np.ndarray:
        return _download(self.device_masks())

    def boxes(self) -> np.ndarray:
        m = self.device_masks()
        n, h, w = m.shape
        if n == 0:
            return np.zeros((0, 4), np.float32)
        rows, cols = m.any(dim=2), m.any(dim=1)  # [n, H], [n, W]
        ys = torch.arange(h, device=m.device, dtype=torch.float32)
        xs = torch.arange(w, device=m.device, dtype=torch.float32)
        boxes = torch.stack([
            torch.where(cols, xs, float(w)).amin(dim=1), torch.where(rows, ys, float(h)).amin(dim=1),
            torch.where(cols, xs, -1.0).amax(dim=1) + 1, torch.where(rows, ys, -1.0).amax(dim=1) + 1,
        ], dim=1)
        return _download(boxes.masked_fill_(~rows.any(dim=1, keepdim=True), math.nan))

    def areas(self) -> np.ndarray:
        return _download(self.device_masks().sum(dim=(1, 2), dtype=torch.int64))

    def label_image(self, order: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Painted on the device in ``order`` (as ``paint_labels``); only the [H, W] image comes down."""
        m = self.device_masks()
        dtype = np.dtype(dtype)
        if m.shape[0] > np.iinfo(dtype).max:
            raise OverflowError(f"{m.shape[0]} objects do not fit {dtype} labels")
        labels = torch.zeros(m.shape[1:], dtype=torch.int32, device=m.device)  # (few ops take uint16)
        for i in np.asarray(order).tolist():
            labels.masked_fill_(m[i], i + 1)
        return _download(labels.to(_TORCH_DTYPES[dtype]))


_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16,
                 np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64}


def _download(x: torch.Tensor) -> np.ndarray:
    """The one device -> host crossing of this module (``Tensor.numpy``, which tests count)."""
    return x.detach().cpu().numpy()
