"""Memory-bank storage in torch tensors on the torch backend's device (CPU or CUDA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class TorchStorage:
    """Buffers are float32 ``torch.Tensor`` on ``device``; ``to_host``/``asarray`` are the only
    transfers (``Tensor.numpy`` and ``torch.from_numpy``), which tests count."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.on_host = False

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> torch.Tensor:
        return torch.zeros(shape, dtype=getattr(torch, dtype), device=self.device)

    def asarray(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(self.device)
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def to_host(self, x: torch.Tensor) -> np.ndarray:
        if isinstance(x, np.ndarray):
            return x
        return x.detach().to("cpu", torch.float32).numpy()

    def rounded_bfloat16(self, x: torch.Tensor) -> torch.Tensor:
        return self.asarray(x).to(torch.bfloat16).to(torch.float32)
