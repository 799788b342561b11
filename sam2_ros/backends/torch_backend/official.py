"""Build the official video predictor from its hydra config: SAM 2 / 2.1 (Meta's ``sam2`` package,
no torchvision) or EdgeTAM (Meta's EdgeTAM ``sam2`` package, in its own environment).

Used by the torch backend (its weights and modules), the export toolchain and the reference runs.
Which package a model needs is in the model table (``OfficialModel.package``); the ``sam2`` package
importable here must be that one (:func:`check_package`). EdgeTAM's RepViT trunk asks timm for
pretrained ImageNet weights (a download) when it is built: :func:`offline_trunk` builds it randomly
initialised instead; the checkpoint then sets every weight.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

from sam2_ros.models import official_model


def image_size_overrides(image_size: int, model_name: str | None = None) -> list[str]:
    """Hydra overrides that set the model input size (a multiple of 64, at least 128), with the
    model's own size-dependent settings (``OfficialModel.size_overrides``)."""
    if image_size % 64 or image_size < 128:
        raise ValueError(f"image size must be a multiple of 64 and >= 128, got {image_size}")
    extra = official_model(model_name).size_overrides if model_name else ()
    return [f"++model.image_size={image_size}"] + [o.format(feat=image_size // 16) for o in extra]


def installed_package() -> str | None:
    """Which ``sam2`` package is importable: ``"edgetam"`` (it has the Perceiver resampler),
    ``"sam2"`` (Meta's SAM 2), or None."""
    if importlib.util.find_spec("sam2") is None:
        return None
    return "edgetam" if importlib.util.find_spec("sam2.modeling.perceiver") is not None else "sam2"


def check_package(model_name: str) -> None:
    """Raise ``RuntimeError`` unless the importable ``sam2`` package is the one that builds ``model_name``."""
    want, have = official_model(model_name).package, installed_package()
    if want != have:
        hint = ("EdgeTAM's code lives in .venv-edgetam (bash scripts/install_edgetam.sh): run this there"
                if want == "edgetam" else "install Meta's sam2 package (bash scripts/install.sh)")
        raise RuntimeError(f"{model_name} needs the {want!r} sam2 package, this Python has {have!r}; {hint}")


@contextlib.contextmanager
def offline_trunk():
    """While building: timm backbones randomly initialised (EdgeTAM's trunk would download
    ImageNet weights); a no-op for models without a timm trunk."""
    try:
        import sam2.modeling.backbones.timm as trunk
    except ImportError:  # Meta's SAM 2 package: no timm backbone
        yield
        return
    create = trunk.create_model

    def create_offline(*args, **kwargs):
        kwargs["pretrained"] = False
        return create(*args, **kwargs)

    trunk.create_model = create_offline
    try:
        yield
    finally:
        trunk.create_model = create


def build_model(model_name: str, image_size: int = 1024, device: str = "cpu"):
    """The official image+video model (``SAM2Base``) of ``model_name``, randomly initialised, offline."""
    from sam2.build_sam import build_sam2

    check_package(model_name)
    with offline_trunk():
        return build_sam2(official_model(model_name).config, ckpt_path=None, device=device,
                          hydra_overrides_extra=image_size_overrides(image_size, model_name))


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

    check_package(model_name)
    overrides = image_size_overrides(image_size, model_name)
    if corrections_as_conditioning:
        overrides.append("++model.add_all_frames_to_correct_as_cond=true")
    if max_cond_frames is not None:
        overrides.append(f"++model.max_cond_frames_in_attn={int(max_cond_frames)}")
    with offline_trunk():
        return build_sam2_video_predictor(
            official_model(model_name).config,
            ckpt_path=str(checkpoint) if checkpoint is not None else None,
            device=device,
            hydra_overrides_extra=overrides,
            **options,
        )
