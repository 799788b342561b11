"""Randomly initialised models in the official checkpoint format (tests and smoke runs only).

The file is ``{"model": state_dict, "sam2_ros": {"random_weights": True, "seed": N}}``: the official
loader reads ``"model"`` only, and the export reads the marker so its manifest says the truth.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sam2_ros.models import official_model


#: The key of our marker in a checkpoint file (the official format has only "model").
MARKER_KEY = "sam2_ros"


def random_checkpoint(model_name: str, seed: int, out: str | Path) -> Path:
    """Write a randomly initialised ``model_name`` in the official format, marked as random, to ``out``."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(official_model(model_name).config, ckpt_path=None, device="cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), MARKER_KEY: {"random_weights": True, "seed": seed}}, out)
    return out


def is_random_checkpoint(path: str | Path) -> bool:
    """True for a checkpoint written by :func:`random_checkpoint` (memory-mapped: cheap on large files)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return bool(isinstance(ckpt, dict) and ckpt.get(MARKER_KEY, {}).get("random_weights"))
