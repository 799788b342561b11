"""TensorRT with its memory bank in torch tensors on the GPU (``device_memory="torch"``).

The only module of the TensorRT backend that imports torch; :class:`~.backend.TensorRTBackend`
imports it lazily when that mode is chosen, so the backend (and the node) still run without
PyTorch in ``"host"`` mode. TensorRT never sees torch: it gets device pointers
(``Tensor.data_ptr``) and the CUDA stream handle of torch's current stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sam2_ros.backends.torch_backend.storage import TorchStorage


class TensorRTTorchStorage(TorchStorage):
    """:class:`TorchStorage` that also takes the TensorRT backend's device arrays without a host trip."""

    def asarray(self, x: Any) -> torch.Tensor:
        tensor = getattr(x, "tensor", None)  # a DeviceArray: a view of the backend's device buffer
        if tensor is not None and not isinstance(x, torch.Tensor):
            return tensor
        return super().asarray(x)

    def to_host(self, x: Any) -> np.ndarray:
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            return np.asarray(x)  # a DeviceArray downloads itself
        return super().to_host(x)


def storage_for(device: int) -> TensorRTTorchStorage:
    if not torch.cuda.is_available() or device >= torch.cuda.device_count():
        raise RuntimeError(f"PyTorch sees no CUDA device {device}")
    return TensorRTTorchStorage(torch.device("cuda", device))


def imaging_for(device: int):
    """Frame resize and mask rendering on ``cuda:device`` (:class:`TorchImaging`): the uint8 frame
    goes up once and the engines read the model input in place; only what is read comes down."""
    from sam2_ros.backends.torch_backend.imaging import TorchImaging

    return TorchImaging(torch.device("cuda", device))


def concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The frames of several streams as one batch (the image encoder's input)."""
    return torch.cat(tensors)


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def on_device(t: torch.Tensor, device: int) -> torch.Tensor | None:
    """``t`` on ``cuda:device`` (moved if on another GPU), or None for a host tensor (read as numpy)."""
    if t.device.type != "cuda":
        return None
    return t if t.device.index == device else t.to(torch.device("cuda", device))


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def as_dtype(t: torch.Tensor, name: str) -> torch.Tensor:
    return t.to(getattr(torch, name))


def current_stream(device: int) -> int:
    """The handle of torch's current CUDA stream on ``device`` in the calling thread."""
    return int(torch.cuda.current_stream(torch.device("cuda", device)).cuda_stream)
