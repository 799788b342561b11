"""Frame pre- and post-processing where the backend's data lives.

A backend exposes one :class:`Imaging` (``Backend.imaging``). The tracker hands it the camera
frame (``frame_tensor``), the current logits to clean up (``fill_holes``) and the logits to turn
into camera-resolution outputs (``render``). :class:`HostImaging` does all of it on the CPU with
the official predictor's exact arithmetic (PIL bicubic resize, OpenCV hole filling and
upsampling); a GPU backend supplies its own, so the uint8 frame is uploaded once and only the
outputs a caller reads come back (``sam2_ros.backends.torch_backend.imaging.TorchImaging``).

A :class:`Rendering` computes nothing until asked: the node publishing only the label image
never builds per-object masks on the host.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from sam2_ros.postprocess import boxes_from_masks, fill_holes, masks_from_logits
from sam2_ros.preprocess import preprocess_frame
from sam2_ros.storage import Buffer


@runtime_checkable
class Rendering(Protocol):
    """Camera-resolution outputs of ``n`` objects' logits, computed on first request."""

    def masks(self) -> np.ndarray:
        """[n, H, W] bool masks (logit > threshold)."""

    def boxes(self) -> np.ndarray:
        """[n, 4] float32 x0, y0, x1, y1 (exclusive ends), NaN where a mask is empty."""

    def areas(self) -> np.ndarray:
        """[n] int64 mask pixel counts."""

    def label_image(self, order: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """[H, W] ``dtype``: pixel = 1 + index of the object, 0 = background; objects are painted
        in ``order`` (a permutation of ``range(n)``), so a later one wins where masks overlap."""


@runtime_checkable
class Imaging(Protocol):
    """Pre- and post-processing of one backend."""

    #: True: works on the backend's storage buffers (the bank's ``low_res``); False: on host arrays.
    on_device: bool
    #: True: the official predictor's arithmetic exactly (the PIL resize); False: a device
    #: approximation whose difference is measured (docs/ARCHITECTURE.md).
    exact: bool

    def frame_tensor(self, frame_rgb: np.ndarray, image_size: int):
        """RGB uint8 [H, W, 3] -> the normalised [1, 3, S, S] input ``encode_image`` takes."""

    def fill_holes(self, low_res: Buffer, max_area: int) -> None:
        """Fill background holes of at most ``max_area`` pixels of [n, h, w] logits in place
        (logit 0.1, as the official predictor on GPU). ``low_res`` is a storage buffer when
        ``on_device``, a host array otherwise."""

    def render(self, low_res: Buffer, frame_hw: tuple[int, int], threshold: float) -> Rendering:
        """The outputs of [n, h, w] logits (a storage buffer when ``on_device``, else host)."""


class HostRendering:
    """:class:`Rendering` with numpy and OpenCV; masks are built once, on first use."""

    def __init__(self, low_res: np.ndarray | None, frame_hw: tuple[int, int], threshold: float):
        self._low_res, self._frame_hw, self._threshold = low_res, frame_hw, threshold
        self._masks: np.ndarray | None = None

    @classmethod
    def of_masks(cls, masks: np.ndarray) -> "HostRendering":
        """The rendering of masks already at the camera resolution."""
        r = cls(None, tuple(masks.shape[1:3]), 0.0)
        r._masks = np.asarray(masks, bool)
        return r

    def masks(self) -> np.ndarray:
        if self._masks is None:
            self._masks = masks_from_logits(self._low_res, self._frame_hw, self._threshold)
        return self._masks

    def boxes(self) -> np.ndarray:
        return boxes_from_masks(self.masks())

    def areas(self) -> np.ndarray:
        return self.masks().sum(axis=(1, 2), dtype=np.int64)

    def label_image(self, order: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return paint_labels(self.masks(), order, dtype)


def paint_labels(masks: np.ndarray, order: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Paint ``masks`` [n, H, W] in ``order``: pixel = 1 + object index, 0 = background."""
    labels = np.zeros(masks.shape[1:], dtype)
    for i in order:
        labels[masks[i]] = i + 1
    return labels


class HostImaging:
    """The official predictor's pre- and post-processing on the CPU (every CPU backend)."""

    on_device = False
    exact = True

    def frame_tensor(self, frame_rgb: np.ndarray, image_size: int) -> np.ndarray:
        return preprocess_frame(frame_rgb, image_size)

    def fill_holes(self, low_res: np.ndarray, max_area: int) -> None:
        fill_holes(low_res, max_area)

    def render(self, low_res: np.ndarray, frame_hw: tuple[int, int], threshold: float) -> HostRendering:
        return HostRendering(np.asarray(low_res), frame_hw, threshold)


HOST_IMAGING = HostImaging()
