"""Build official SAM 2 / 2.1 models from their hydra configs (official package, no torchvision)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch


#: The eight official configs, by the names users know, with the official checkpoint files.
MODEL_CONFIGS: dict[str, str] = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}

#: Where Meta publishes the official checkpoints (used by ``sam2-ros download``).
CHECKPOINT_URLS: dict[str, str] = {
    "sam2.1_hiera_tiny": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_small": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt",
    "sam2.1_hiera_base_plus": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_large": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt",
    "sam2_hiera_tiny": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt",
    "sam2_hiera_small": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt",
    "sam2_hiera_base_plus": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt",
    "sam2_hiera_large": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt",
}

log = logging.getLogger(__name__)


def config_for(model_name: str) -> str:
    """Return the official hydra config path of ``model_name`` or raise a clear error."""
    try:
        return MODEL_CONFIGS[model_name]
    except KeyError:
        raise ValueError(
            f"unknown model {model_name!r}; choose one of: {', '.join(MODEL_CONFIGS)}"
        ) from None


def image_size_overrides(image_size: int) -> list[str]:
    """Hydra overrides that set the model input size (a multiple of 64, at least 128)."""
    if image_size % 64 or image_size < 128:
        raise ValueError(f"image size must be a multiple of 64 and >= 128, got {image_size}")
    return [f"++model.image_size={image_size}"]


def build_video_predictor(
    model_name: str,
    checkpoint: str | Path | None,
    image_size: int = 1024,
    device: str = "cpu",
    refinement_as_conditioning: bool = True,
):
    """The official ``SAM2VideoPredictor`` for ``model_name`` at ``image_size``.

    ``refinement_as_conditioning`` sets the official ``add_all_frames_to_correct_as_cond``:
    a correction click on a tracked frame makes that frame a conditioning frame, which is
    what our streaming tracker does (DESIGN.md section 1, "Refinement").
    """
    from sam2.build_sam import build_sam2_video_predictor

    overrides = image_size_overrides(image_size)
    if refinement_as_conditioning:
        overrides.append("++model.add_all_frames_to_correct_as_cond=true")
    return build_sam2_video_predictor(
        config_for(model_name),
        ckpt_path=str(checkpoint) if checkpoint is not None else None,
        device=device,
        hydra_overrides_extra=overrides,
    )


def random_checkpoint(model_name: str, seed: int, out: str | Path) -> Path:
    """Write a randomly initialised model in the official checkpoint format (tests only)."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(config_for(model_name), ckpt_path=None, device="cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, out)
    return out
