"""Host frame preprocessing: float32 and contiguous, and bit-identical to the float64 formula
the parity tests were established with (the official predictor's loader divides by 255.0)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam2_ros.preprocess import IMAGE_MEAN, IMAGE_STD, preprocess_frame


def _float64_formula(frame: np.ndarray, size: int) -> np.ndarray:
    """The previous implementation: a float64 quotient cast to float32, then a transposed view."""
    img = Image.fromarray(frame, mode="RGB").resize((size, size), Image.Resampling.BICUBIC)
    x = (np.asarray(img) / 255.0).astype(np.float32).transpose(2, 0, 1)
    x -= IMAGE_MEAN
    x /= IMAGE_STD
    return x[None]


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_preprocess_is_float32_contiguous_and_equal_to_the_float64_formula(bedroom_frames, size):
    every_level = np.tile(np.arange(256, dtype=np.uint8), (3, 1)).T.reshape(16, 16, 3)  # all 256 values
    for frame in (bedroom_frames[0], bedroom_frames[7], every_level):
        ours = preprocess_frame(frame, size)
        assert ours.dtype == np.float32 and ours.shape == (1, 3, size, size)
        assert ours.flags.c_contiguous
        ref = _float64_formula(frame, size)
        assert np.abs(ours - ref).max() <= 1e-6
        assert np.array_equal(ours, ref)  # a float32 division is correctly rounded: no difference at all
