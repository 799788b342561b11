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
    corrections_as_conditioning: bool = True,
    max_cond_frames: int | None = None,
    **options,
):
    """The official ``SAM2VideoPredictor`` for ``model_name`` at ``image_size``.

    ``corrections_as_conditioning`` sets the official ``add_all_frames_to_correct_as_cond``:
    a correction click on a tracked frame makes that frame a conditioning frame, which is
    what our tracker does by default (docs/ARCHITECTURE.md, "Prompts and corrections").
    ``max_cond_frames`` sets ``max_cond_frames_in_attn`` (None: every prompted frame, the
    official default; K >= 2: the K closest, what our tracker's ``cond_slots=K`` keeps).
    ``options`` go to the official ``build_sam2_video_predictor`` (e.g. ``vos_optimized=True``).
    """
    from sam2.build_sam import build_sam2_video_predictor

    overrides = image_size_overrides(image_size)
    if corrections_as_conditioning:
        overrides.append("++model.add_all_frames_to_correct_as_cond=true")
    if max_cond_frames is not None:
        overrides.append(f"++model.max_cond_frames_in_attn={int(max_cond_frames)}")
    return build_sam2_video_predictor(
        official_model(model_name).config,
        ckpt_path=str(checkpoint) if checkpoint is not None else None,
        device=device,
        hydra_overrides_extra=overrides,
        **options,
    )
