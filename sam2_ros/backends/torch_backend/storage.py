"""Memory-bank storage in torch tensors on the torch backend's device (CPU or CUDA), and the
one way host arrays reach that device.

Every CUDA call of the backend names its device: "the current device" is per host thread (a
ROS callback thread starts on device 0), so nothing here relies on it. :func:`concrete_device`
fixes ``"cuda"`` to an index once, :func:`device_scope` makes the backend's device current around
the calls that would otherwise use the thread's (streams, events, graph capture).

Host arrays go up through :class:`HostStaging`: the arrays of one call are packed into one
page-locked buffer and copied by one non-blocking copy on the device's current stream. A copy
from pageable memory would block the host until the stream is idle; from page-locked memory it
is queued behind the work already there. On the CPU the arrays are used as they are (a single
array, zero copy) or packed into a fresh buffer (several).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import numpy as np
import torch

#: numpy -> torch element types of the arrays staged (what the graphs take).
_TORCH_DTYPES = {np.dtype(np.bool_): torch.bool, np.dtype(np.uint8): torch.uint8, np.dtype(np.int32): torch.int32,
                 np.dtype(np.int64): torch.int64, np.dtype(np.float16): torch.float16,
                 np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
#: Byte alignment of each array packed into a staging buffer (every element type above divides it).
ALIGN = 8


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch element type of a numpy one (the types :class:`HostStaging` packs)."""
    try:
        return _TORCH_DTYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"no staging for numpy dtype {np.dtype(dtype)}") from None


def concrete_device(device: torch.device | str, current_index: Callable[[], int]) -> torch.device:
    """``device`` with its index fixed: ``"cuda"`` means the current device of the constructing
    thread (``current_index()``, e.g. ``torch.cuda.current_device``), which another thread would
    read differently. Other devices are returned as they are; ``current_index`` is not called."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(current_index()))
    return device


def device_scope(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that makes ``device`` the current CUDA device of this thread (restored on exit);
    a no-op for other devices. Built without touching CUDA (``torch.cuda.device`` reads its index
    only on entry), so which device a call would use is checked on any machine."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    if device.index is None:
        raise ValueError(f"{device} has no index: fix it with concrete_device first")
    return torch.cuda.device(device.index)


def packed_layout(arrays: Sequence[np.ndarray]) -> tuple[list[int], int]:
    """Byte offsets of ``arrays`` packed side by side (each aligned to :data:`ALIGN`) and the total."""
    offsets, nbytes = [], 0
    for a in arrays:
        offsets.append(nbytes)
        nbytes += -(-a.nbytes // ALIGN) * ALIGN
    return offsets, nbytes


class PinnedBuffer:
    """A page-locked host buffer reused across copies, and the event of the last copy from it."""

    def __init__(self, device: torch.device, nbytes: int):
        self.device = device
        self.tensor = torch.empty(max(nbytes, ALIGN), dtype=torch.uint8, pin_memory=True)
        self.host = self.tensor.numpy()  # writes through to the page-locked memory
        self.done = torch.cuda.Event()  # recorded after each copy from the buffer
        self.recorded = False

    @property
    def nbytes(self) -> int:
        return self.host.nbytes

    def acquire(self) -> None:
        """Wait until the last copy from the buffer has left it (normally long done)."""
        if self.recorded:
            self.done.synchronize()

    def release(self) -> None:
        """Mark the copies just queued: on the stream they were issued on, the device's current one."""
        self.done.record(torch.cuda.current_stream(self.device))
        self.recorded = True


class HostStaging:
    """Small host arrays of one call to the device in one copy (page-locked and non-blocking on CUDA).

    A ring of ``slots`` reusable page-locked buffers for small calls and of ``large_slots`` for
    frame-sized ones (``large_bytes`` and more); a buffer is written again only after the copy
    queued from it ``slots`` calls ago has left it. Each call gets fresh device tensors (the
    caching allocator's), so a result may be kept.
    """

    def __init__(self, device: torch.device | str, slots: int = 8, large_slots: int = 2, large_bytes: int = 1 << 20):
        self.device = concrete_device(device, torch.cuda.current_device)
        self.cuda = self.device.type == "cuda"
        self._rings: dict[bool, list[PinnedBuffer | None]] = {False: [None] * slots, True: [None] * large_slots}
        self._next = {False: 0, True: 0}
        self._large_bytes = large_bytes
        #: Copies made (tests and logs count them): one per :meth:`upload` call.
        self.uploads = 0

    def upload(self, arrays: Sequence[Any]) -> list[torch.Tensor]:
        """``arrays`` (numpy, or anything ``np.asarray`` takes) as tensors on the device, by one copy."""
        arrays = [np.ascontiguousarray(a) for a in arrays]
        if not arrays:
            return []
        self.uploads += 1
        if not self.cuda:
            return self._upload_cpu(arrays)
        offsets, nbytes = packed_layout(arrays)
        with device_scope(self.device):
            buf = self._buffer(nbytes)
            buf.acquire()
            if len(arrays) == 1:  # the array's own shape crosses (one frame, one index)
                a = arrays[0]
                src = buf.host[: a.nbytes].view(a.dtype).reshape(a.shape)
                np.copyto(src, a)
                dst = torch.empty(a.shape, dtype=torch_dtype(a.dtype), device=self.device)
                dst.copy_(torch.from_numpy(src), non_blocking=True)
                buf.release()
                return [dst]
            for a, off in zip(arrays, offsets):
                np.copyto(buf.host[off : off + a.nbytes].view(a.dtype).reshape(a.shape), a)
            flat = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
            flat.copy_(torch.from_numpy(buf.host[:nbytes]), non_blocking=True)
            buf.release()
        return _views(flat, arrays, offsets)

    def upload_named(self, values: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """:meth:`upload` of named arrays."""
        return dict(zip(values, self.upload(list(values.values()))))

    def _upload_cpu(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        if len(arrays) == 1:  # used in place, as torch.from_numpy does
            return [torch.from_numpy(arrays[0])]
        offsets, nbytes = packed_layout(arrays)
        host = np.empty(nbytes, np.uint8)  # fresh: a tensor of an earlier call may still be in use
        for a, off in zip(arrays, offsets):
            np.copyto(host[off : off + a.nbytes].view(a.dtype).reshape(a.shape), a)
        return _views(torch.from_numpy(host), arrays, offsets)

    def _buffer(self, nbytes: int) -> PinnedBuffer:
        large = nbytes >= self._large_bytes
        ring, i = self._rings[large], self._next[large]
        self._next[large] = (i + 1) % len(ring)
        buf = ring[i]
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.acquire()  # its last copy must end before the memory goes back to the allocator
            size = max(nbytes, 2 * buf.nbytes if buf is not None else 0, 64 << 10 if not large else 0)
            buf = ring[i] = PinnedBuffer(self.device, size)
        return buf


def _views(flat: torch.Tensor, arrays: list[np.ndarray], offsets: list[int]) -> list[torch.Tensor]:
    """Typed views of the packed byte tensor ``flat``."""
    return [flat[off : off + a.nbytes].view(torch_dtype(a.dtype)).view(a.shape) for a, off in zip(arrays, offsets)]


class TorchStorage:
    """Buffers are float32 ``torch.Tensor`` on ``device``; ``to_host``/``asarray`` are the only
    transfers (``Tensor.numpy`` and ``torch.from_numpy``, through :class:`HostStaging`), which tests count."""

    def __init__(self, device: torch.device | str, staging: HostStaging | None = None):
        self.device = concrete_device(device, torch.cuda.current_device)
        self.on_host = False
        self.staging = staging if staging is not None else HostStaging(self.device)

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> torch.Tensor:
        return torch.zeros(shape, dtype=getattr(torch, dtype), device=self.device)

    def asarray(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(self.device)
        return self.staging.upload([x])[0]

    def to_host(self, x: torch.Tensor) -> np.ndarray:
        if isinstance(x, np.ndarray):
            return x
        return x.detach().to("cpu", torch.float32).numpy()

    def rounded_bfloat16(self, x: torch.Tensor) -> torch.Tensor:
        return self.asarray(x).to(torch.bfloat16).to(torch.float32)
