"""Where a backend keeps tensors: the memory bank allocates its buffers through this.

A backend exposes one :class:`Storage`; the memory bank (and the tracker's per-object current
outputs inside it) live there for the whole run, so a GPU backend's per-frame step reads and
writes device memory only. Buffers support numpy-style slicing and item assignment (numpy
arrays and ``torch.Tensor`` both do); everything else goes through these methods, the only
places where data crosses between host and device.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

#: A buffer of a storage: ``np.ndarray`` on the host, ``torch.Tensor`` on a torch device.
Buffer = Any


@runtime_checkable
class Storage(Protocol):
    """Allocation and host transfer for one device."""

    #: True when buffers are host numpy arrays (``to_host`` returns views, nothing is copied).
    on_host: bool

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Buffer:
        """A zero-filled buffer, allocated once by its owner."""

    def asarray(self, x: Any) -> Buffer:
        """``x`` as this storage's buffer type (host arrays are uploaded; own buffers pass through)."""

    def to_host(self, x: Buffer) -> np.ndarray:
        """A host copy of ``x`` (a view for host storage)."""

    def rounded_bfloat16(self, x: Buffer) -> Buffer:
        """A float32 copy of ``x`` rounded to the nearest bfloat16 (how the official predictor stores memory)."""


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), kept as float32 in place."""
    u = x.view(np.uint32)
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    u &= np.uint32(0xFFFF0000)
    return x


class HostStorage:
    """numpy arrays in host memory (ONNX Runtime on CPU, and backends that copy per call)."""

    on_host = True

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
        return np.zeros(shape, np.dtype(dtype))

    def asarray(self, x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray) and callable(getattr(x, "numpy", None)):
            x = x.numpy()  # a device value (an ONNX Runtime OrtValue on a GPU provider): copied to the host
        return np.asarray(x)

    def to_host(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def rounded_bfloat16(self, x: np.ndarray) -> np.ndarray:
        return round_to_bfloat16(np.array(x, np.float32, copy=True))


HOST = HostStorage()
