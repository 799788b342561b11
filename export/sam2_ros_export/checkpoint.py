"""Randomly initialised models in the official checkpoint format (tests and smoke runs only)."""

from __future__ import annotations

from pathlib import Path

import torch

from sam2_ros.models import official_model


def random_checkpoint(model_name: str, seed: int, out: str | Path) -> Path:
    """Write a randomly initialised ``model_name`` as ``{"model": state_dict}`` to ``out``."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(official_model(model_name).config, ckpt_path=None, device="cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, out)
    return out
