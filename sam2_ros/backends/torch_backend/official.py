"""Build the official SAM 2 / 2.1 video predictor from its hydra config (official package, no torchvision).

Used by the torch backend (its weights and modules), the export toolchain and the reference runs.
"""

from __future__ import annotations

from pathlib import Path

from sam2_ros.models import official_model


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
    **options,
):
    """The official ``SAM2VideoPredictor`` for ``model_name`` at ``image_size``.

    ``refinement_as_conditioning`` sets the official ``add_all_frames_to_correct_as_cond``:
    a correction click on a tracked frame makes that frame a conditioning frame, which is
    what our streaming tracker does (docs/ARCHITECTURE.md, "Prompts and refinements").
    ``options`` go to the official ``build_sam2_video_predictor`` (e.g. ``vos_optimized=True``).
    """
    from sam2.build_sam import build_sam2_video_predictor

    overrides = image_size_overrides(image_size)
    if refinement_as_conditioning:
        overrides.append("++model.add_all_frames_to_correct_as_cond=true")
    return build_sam2_video_predictor(
        official_model(model_name).config,
        ckpt_path=str(checkpoint) if checkpoint is not None else None,
        device=device,
        hydra_overrides_extra=overrides,
        **options,
    )
