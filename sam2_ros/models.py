"""The official models: one table of name -> hydra config, checkpoint URL and the code that builds it.

SAM 2 / 2.1 come from Meta's ``sam2`` package; EdgeTAM (facebookresearch/EdgeTAM, a SAM 2 with a
RepViT trunk, a Perceiver resampler after the memory encoder and 2 memory-attention layers) from
Meta's EdgeTAM code, whose package is also called ``sam2``: it lives in an environment of its own
(``scripts/install_edgetam.sh``), and the export and the checkpoint maker run there.
What the runtime needs to know about a model's shapes (tokens per memory frame, the RoPE layout of
the memory keys, ...) is not here but in the manifest the export writes (``ModelSpec``), read from
the built model itself. Torch-free: the CLI, the downloader and the export toolchain read this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OfficialModel:
    """One official model: its hydra config inside its package and its checkpoint.

    ``package``: whose ``sam2`` package builds it: ``"sam2"`` (Meta's SAM 2) or ``"edgetam"``
    (Meta's EdgeTAM, another ``sam2`` package, in its own environment).
    ``size_overrides``: hydra overrides that follow the image size besides ``image_size``, with
    ``{feat}`` the feature-map side (image size / 16); EdgeTAM's cross-attention has its query
    RoPE grid in the config (64x64 at 1024 px).
    """

    name: str
    config: str
    checkpoint_url: str
    package: str = "sam2"
    size_overrides: tuple[str, ...] = ()

    @property
    def checkpoint_file(self) -> str:
        return self.checkpoint_url.rsplit("/", 1)[1]


_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2"

_EDGETAM_URL = "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt"

#: The official models, by the names users know (the official checkpoint file names).
MODELS: dict[str, OfficialModel] = {
    m.name: m
    for m in (
        OfficialModel("sam2.1_hiera_tiny", "configs/sam2.1/sam2.1_hiera_t.yaml", f"{_BASE_URL}/092824/sam2.1_hiera_tiny.pt"),
        OfficialModel("sam2.1_hiera_small", "configs/sam2.1/sam2.1_hiera_s.yaml", f"{_BASE_URL}/092824/sam2.1_hiera_small.pt"),
        OfficialModel("sam2.1_hiera_base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml", f"{_BASE_URL}/092824/sam2.1_hiera_base_plus.pt"),
        OfficialModel("sam2.1_hiera_large", "configs/sam2.1/sam2.1_hiera_l.yaml", f"{_BASE_URL}/092824/sam2.1_hiera_large.pt"),
        OfficialModel("sam2_hiera_tiny", "configs/sam2/sam2_hiera_t.yaml", f"{_BASE_URL}/072824/sam2_hiera_tiny.pt"),
        OfficialModel("sam2_hiera_small", "configs/sam2/sam2_hiera_s.yaml", f"{_BASE_URL}/072824/sam2_hiera_small.pt"),
        OfficialModel("sam2_hiera_base_plus", "configs/sam2/sam2_hiera_b+.yaml", f"{_BASE_URL}/072824/sam2_hiera_base_plus.pt"),
        OfficialModel("sam2_hiera_large", "configs/sam2/sam2_hiera_l.yaml", f"{_BASE_URL}/072824/sam2_hiera_large.pt"),
        OfficialModel("edgetam", "configs/edgetam.yaml", _EDGETAM_URL, package="edgetam",
                      size_overrides=("++model.memory_attention.layer.cross_attention.q_sizes=[{feat},{feat}]",)),
    )
}

#: The model the CLI uses when none is named.
DEFAULT_MODEL = "sam2.1_hiera_tiny"


def official_model(name: str) -> OfficialModel:
    """The table entry of ``name``; ``ValueError`` naming the choices if it is unknown."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
