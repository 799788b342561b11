"""Frame and prompt preprocessing, identical to the official SAM 2 video predictor.

The official predictor resizes each RGB frame to ``S x S`` with PIL's default (bicubic)
filter, **without keeping the aspect ratio**, scales to [0, 1] and normalises with the
ImageNet mean/std. Prompt coordinates are scaled per axis (S/W, S/H).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def preprocess_frame(frame_rgb: np.ndarray, image_size: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> normalised float32 [1, 3, S, S], C-contiguous."""
    img = Image.fromarray(frame_rgb, mode="RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
    # float32 throughout, channels-first and contiguous before the arithmetic: three passes over a
    # contiguous [3, S, S] array. A float32 division is correctly rounded, so v / 255 equals the
    # float64 quotient rounded to float32: the result is bit-identical to the float64 formula.
    x = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1), dtype=np.float32)
    x /= np.float32(255.0)
    x -= IMAGE_MEAN
    x /= IMAGE_STD
    return x[None]


def scale_points(points: np.ndarray, frame_hw: tuple[int, int], image_size: int) -> np.ndarray:
    """Pixel (x, y) in the camera frame -> model-input pixels, as the official predictor does."""
    h, w = frame_hw
    pts = np.asarray(points, np.float32) / np.array([w, h], np.float32)
    return (pts * np.float32(image_size)).astype(np.float32)


def _resize_float(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float32 image to ``size x size`` with antialiasing when shrinking
    (PIL's filter, which ``torch.nn.functional.interpolate(antialias=True)`` reproduces)."""
    img = Image.fromarray(np.ascontiguousarray(x, np.float32), mode="F")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), np.float32)


def mask_to_model_input(mask: np.ndarray, image_size: int) -> np.ndarray:
    """Camera-resolution bool mask -> binary float32 ``S x S`` mask (the official ``add_new_mask``)."""
    m = mask.astype(np.float32)
    if m.shape != (image_size, image_size):
        m = (_resize_float(m, image_size) >= 0.5).astype(np.float32)
    return m


def mask_prompt_logits(mask_s: np.ndarray, low_res_size: int) -> np.ndarray:
    """A binary ``S x S`` mask used directly as output: logits +-10, downsampled to low-res."""
    return _resize_float(mask_s * 20.0 - 10.0, low_res_size)


def downsample_mask(mask_s: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """SAM 2's ``mask_downsample`` (4x4 conv, stride 4, one channel) on an ``S x S`` mask."""
    s = mask_s.shape[0] // 4
    blocks = mask_s.reshape(s, 4, s, 4)
    return (np.einsum("iajb,ab->ij", blocks, weight) + bias[0]).astype(np.float32)
