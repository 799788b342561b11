"""The official SAM 2 / 2.1 models: one table of name -> hydra config and checkpoint URL.

Torch-free: the CLI, the downloader and the export toolchain all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OfficialModel:
    """One official model: its hydra config inside the ``sam2`` package and its checkpoint."""

    name: str
    config: str
    checkpoint_url: str

    @property
    def checkpoint_file(self) -> str:
        return self.checkpoint_url.rsplit("/", 1)[1]


_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2"

#: The eight official models, by the names users know (the official checkpoint file names).
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
