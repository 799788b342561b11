"""TensorRT backend: the four SAM 2 engines on one CUDA stream, image features kept on the GPU.

Layout
------
* One device buffer per **tensor name** across the four engines, allocated once at the
  largest shape of the engines' optimisation profiles. A name shared by two engines is one
  buffer, so ``image_embed`` / ``feat_s0`` / ``feat_s1`` (encoder outputs), ``pix_feat``
  (memory attention -> decoder) and ``low_res_masks`` / ``object_score_logits``
  (decoder -> memory encoder) never travel through the host.
* Tensors are bound by name (``IExecutionContext.set_tensor_address``) once per execution
  context; every call enqueues ``execute_async_v3`` on the context serving its input shapes.
* :meth:`TensorRTBackend.attend_memory`, :meth:`~TensorRTBackend.encode_image` and
  :meth:`~TensorRTBackend.frame_embedding` return :class:`DeviceArray` values (they stay on
  the GPU; :meth:`~TensorRTBackend.decode` copies them device-to-device into its inputs);
  ``np.asarray`` copies one to the host if anyone needs it there.

Where the memory bank lives (``device_memory``)
-----------------------------------------------
* ``"torch"`` (``"auto"`` picks it when PyTorch is importable): the bank, the history and the
  per-object outputs live in ``torch.Tensor`` storage on ``cuda:<device>``
  (:mod:`.torch_interop`, the only module of this folder that imports torch, and only when
  this mode is chosen). The backend's device buffers are torch tensors too; TensorRT reads bank
  views by their device pointers (``data_ptr``; ``bank.mem_feats[:n, :m]`` is one pitched
  ``cudaMemcpy2DAsync`` device-to-device on the backend's stream), the encoder's outputs are
  copied into the history on the device, and outputs are returned as device tensors. Ordering
  between torch's stream and the backend's: before every launch the backend's stream waits on
  an event recorded on torch's current stream (bank writes land first); every call ends with a
  stream synchronisation (torch reads results only after). Per frame only the frame goes up and
  the results the tracker reports come down.
* ``"host"`` (``"auto"`` without PyTorch: the node runs without it): the bank is numpy in host
  memory. Host <-> device copies go through page-locked staging buffers (allocated once);
  large host inputs owned by a long-lived array (the ``MemoryBank``) are page-locked in place
  with ``cudaHostRegister`` and copied by DMA straight from the bank, including the strided
  ``bank.mem_feats[:n, :m]`` views (``cudaMemcpy2DAsync``). An owner referred to by nothing
  else (a dead bank) is unregistered at the next registration. Image features go to the host
  for the history (a download per frame).
* Future, for a robot without PyTorch: device storage on CuPy (``cupy-cuda13x``) arrays, fed
  to TensorRT the same way through ``__cuda_array_interface__`` pointers.

Execution contexts and CUDA graphs
----------------------------------
Each dynamic engine gets one execution context per input-shape set (up to
``MAX_CONTEXTS_PER_ENGINE``, least recently used reassigned; bookkeeping in
:class:`.bookkeeping.ShapeContexts`). All contexts of an engine share **one** scratch block:
they are created with ``ExecutionContextAllocationStrategy.USER_MANAGED`` (TensorRT >= 10.0)
and given the block with ``set_device_memory(ptr, size)`` (>= 10.1; ``device_memory = ptr``
before), sized by ``ICudaEngine.device_memory_size_v2`` (``device_memory_size`` before 10.1),
the largest need over the profile. Sharing is safe because the scratch memory holds only the
activations of one enqueue and every launch of this backend is on one stream, so launches are
serialised: no two contexts ever use the block at the same time. A context keeps its shapes
and tensor addresses, so the n = 1 prompt context and the n-object tracking context alternate
without redoing TensorRT's shape set-up, and a CUDA graph captured on one stays valid while
the other runs.

Each protocol call (and the fused :meth:`TensorRTBackend.track_step`) is a fixed sequence of
copies and engine launches on one stream. With ``use_cuda_graph=True`` the sequence is
captured into a CUDA graph the second time it is seen with the same *key* on the same context
generations and replayed from the third time on (:class:`.bookkeeping.GraphBook`). A key is
everything a replay bakes in: the input shapes (objects ``n``, memory slots ``m``, pointer
slots ``p``, points ``N``); the source of every copy (a staging buffer, a registered host array
or a device tensor, with its address and row pitch); the device buffers (allocated once).
Conditions for capture, all checked: shapes within the profile; no host synchronisation inside
the sequence (the stream is synchronised only after launching); each context ran eagerly with
its shapes before the capture (TensorRT's shape-dependent set-up on the first enqueue must not
be captured); TensorRT must not allocate during enqueue (engines with data-dependent shapes or
on-device control flow may; such a capture fails, and the key runs eagerly from then on). A
graph dies with the context it was captured on when that context is given other shapes (more
shape sets than contexts); a key whose graph died ``MAX_INVALIDATIONS`` times runs eagerly from
then on instead of recapturing on every alternation. Graphs are kept in a small LRU cache.

Threads and devices: the current CUDA device is per host thread, and the tracker may run in a
ROS worker thread other than the one that built the backend; every call that enqueues or copies
first makes ``device`` current in the calling thread (``cudaGetDevice``, then ``cudaSetDevice``
only when it differs).

Import of this module never needs TensorRT, CUDA or PyTorch; :class:`TensorRTBackend` imports
``tensorrt`` and ``cuda-python`` when constructed and raises :class:`EngineError` with the
reason when either is missing or the engines do not match the machine.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam2_ros.backends.base import (
    DecoderOutput, ImageFeatures, ShapeLimits, check_frame_batch, decoder_feeds, split_features,
)
from sam2_ros.backends.tensorrt.bookkeeping import ContextChoice, GraphBook, PinnedOwners, ShapeContexts
from sam2_ros.errors import EngineError
from sam2_ros.imaging import HOST_IMAGING
from sam2_ros.memory_bank import AttentionInputs
from sam2_ros.graph_io import GRAPH_NAMES, IMAGE_ENCODER, MASK_DECODER, MEMORY_ATTENTION, MEMORY_ENCODER
from sam2_ros.manifest import Manifest, file_sha256
from sam2_ros.storage import HOST

log = logging.getLogger(__name__)

#: Key of the engine entry in ``manifest.json``.
MANIFEST_KEY = "tensorrt"
#: What must match between the machine that built the engines and the one that runs them.
COMPATIBILITY_KEYS = (
    ("tensorrt_version", "TensorRT version"),
    ("gpu_name", "GPU"),
    ("compute_capability", "compute capability"),
)
#: Inputs whose host memory is long-lived (views of the tracker's ``MemoryBank``): page-locked
#: in place when at least ``REGISTER_MIN_BYTES``. Per-call temporaries (the frame) are staged:
#: registering memory costs far more than copying a few MB.
REGISTER_NAMES = frozenset({"mem_feats"})
REGISTER_MIN_BYTES = 1 << 20
MAX_REGISTERED = 8
MAX_GRAPHS = 32
#: Execution contexts per dynamic engine (one per input-shape set, least recently used reassigned).
MAX_CONTEXTS_PER_ENGINE = 8
#: A call sequence whose CUDA graph died this many times (its context was reassigned) runs eagerly.
MAX_INVALIDATIONS = 3
#: Where the memory bank and history live (see the module docstring).
DEVICE_MEMORY_CHOICES = ("auto", "torch", "host")


# ----------------------------------------------------------------------------- pure helpers
def check_engine_compatibility(manifest_entry: dict, runtime_info: dict) -> list[str]:
    """Reasons why engines described by ``manifest_entry`` cannot run here (empty: they can).

    ``runtime_info`` has the keys of :data:`COMPATIBILITY_KEYS` (see :func:`runtime_info`).
    A TensorRT engine is valid only for the TensorRT version that built it and the GPU model
    it was tuned on, so every field must match exactly.
    """
    if not isinstance(manifest_entry, dict):
        return [f"the manifest has no valid '{MANIFEST_KEY}' entry (got {type(manifest_entry).__name__})"]
    problems = []
    for key, label in COMPATIBILITY_KEYS:
        want, have = manifest_entry.get(key), runtime_info.get(key)
        if want is None:
            problems.append(f"the manifest does not record the {label} the engines were built with")
        elif have is None:
            problems.append(f"the {label} of this machine is unknown")
        elif str(want) != str(have):
            problems.append(f"engines were built for {label} {want!r}, this machine has {have!r}")
    return problems


def engine_file_problems(engine_dir: str | Path, manifest_entry: dict, check_hashes: bool = True) -> list[str]:
    """Missing or altered engine files of ``manifest_entry`` in ``engine_dir`` (empty: all fine)."""
    engine_dir = Path(engine_dir)
    engines = manifest_entry.get("engines") or {}
    problems = [f"the manifest lists no engine for {g}" for g in GRAPH_NAMES if g not in engines]
    for g, e in engines.items():
        path = engine_dir / e.get("file", f"{g}.engine")
        if not path.is_file():
            problems.append(f"engine file {path} is missing")
        elif check_hashes and e.get("sha256") and file_sha256(path) != e["sha256"]:
            problems.append(f"engine file {path} does not match the sha256 in the manifest")
    return problems


def strided_rows(arr: np.ndarray) -> tuple[int, int, int] | None:
    """``(rows, row_bytes, pitch)`` when ``arr`` is rows of contiguous bytes at a constant pitch.

    That is the layout of ``bank[:n, :m]`` views of a C-contiguous bank: one
    ``cudaMemcpy2DAsync`` copies it. ``None`` for other layouts.
    """
    if arr.ndim == 0 or arr.size == 0:
        return None
    if arr.flags.c_contiguous:
        return 1, arr.nbytes, arr.nbytes
    inner = arr[0] if arr.ndim > 1 else None
    if inner is None or not inner.flags.c_contiguous or arr.strides[0] < inner.nbytes:
        return None
    return arr.shape[0], inner.nbytes, arr.strides[0]


def root_array(arr: np.ndarray) -> np.ndarray:
    """The array that owns ``arr``'s memory (follows ``.base`` through views)."""
    base = arr
    while isinstance(base.base, np.ndarray):
        base = base.base
    return base


def pitched_layout(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> tuple[int, int, int] | None:
    """``(rows, row_bytes, pitch)`` of a tensor given its shape and strides **in elements**.

    The device twin of :func:`strided_rows` (torch strides count elements): contiguous ->
    one row; rows of contiguous elements at a constant pitch (``bank[:n, :m]`` of a
    contiguous bank) -> a pitched 2-D copy; anything else -> ``None``.
    """
    shape, strides = tuple(int(s) for s in shape), tuple(int(s) for s in strides)
    if not shape or 0 in shape:
        return None

    def contiguous(sh, st):
        expect = 1
        for d, s in zip(reversed(sh), reversed(st)):
            if d != 1 and s != expect:
                return False
            expect *= d
        return True

    n = int(np.prod(shape, dtype=np.int64))
    if contiguous(shape, strides):
        return 1, n * itemsize, n * itemsize
    inner = int(np.prod(shape[1:], dtype=np.int64))
    if not contiguous(shape[1:], strides[1:]) or strides[0] < inner:
        return None
    return shape[0], inner * itemsize, strides[0] * itemsize


def resolve_device_memory(choice: str, torch_importable: bool) -> str:
    """``"torch"`` or ``"host"``: where the bank lives for a ``device_memory`` option."""
    if choice not in DEVICE_MEMORY_CHOICES:
        raise EngineError(f"device_memory must be one of {', '.join(DEVICE_MEMORY_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return "torch" if torch_importable else "host"
    if choice == "torch" and not torch_importable:
        raise EngineError("device_memory='torch' needs PyTorch with CUDA; use 'host' (or 'auto') without it")
    return choice


def _torch_importable() -> bool:
    return importlib.util.find_spec("torch") is not None


# ------------------------------------------------------------------------ CUDA / TensorRT
def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise EngineError(
            f"the tensorrt backend needs the TensorRT Python package ({e}); install it on a machine with an "
            "NVIDIA GPU (pip install -r requirements-tensorrt.txt, or JetPack on Jetson) or use another backend"
        ) from e
    return trt


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise EngineError(
                f"the tensorrt backend needs cuda-python for device memory and streams ({e}); "
                "pip install -r requirements-tensorrt.txt"
            ) from e
    return cudart


class _Cuda:
    """Thin checked wrapper over the CUDA runtime calls this backend uses."""

    def __init__(self):
        self.rt = _import_cudart()
        self.ok = self.rt.cudaError_t.cudaSuccess

    def __call__(self, result, what: str):
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.ok:
            try:
                msg = self.rt.cudaGetErrorString(err)[1].decode()
            except Exception:  # noqa: BLE001 - best effort message
                msg = str(err)
            raise EngineError(f"CUDA {what} failed: {msg}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def device_count(self) -> int:
        try:
            return int(self(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))
        except EngineError:
            return 0

    def use_device(self, device: int) -> None:
        """Make ``device`` current in the calling thread (the current device is per host thread)."""
        if int(self(self.rt.cudaGetDevice(), "cudaGetDevice")) != device:
            self(self.rt.cudaSetDevice(device), f"cudaSetDevice({device})")


def runtime_info(device: int = 0) -> dict[str, Any]:
    """TensorRT version, GPU name and compute capability of ``device`` on this machine."""
    trt = _import_tensorrt()
    cuda = _Cuda()
    if cuda.device_count() <= device:
        raise EngineError(f"no CUDA device {device} on this machine (devices: {cuda.device_count()})")
    props = cuda(cuda.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = name.split(b"\0", 1)[0].decode()
    return {
        "tensorrt_version": trt.__version__,
        "gpu_name": str(name).strip(),
        "compute_capability": f"{props.major}.{props.minor}",
        "gpu_memory_mb": int(props.totalGlobalMem) // (1 << 20),
    }


@dataclass
class _HostStage:
    ptr: int
    nbytes: int
    array: np.ndarray  # uint8 view of the page-locked memory


class DeviceArray:
    """A tensor the backend keeps on the GPU. ``np.asarray(x)`` copies it to the host.

    Valid until the backend writes its buffer again (the next call of the graph that
    produced it); using a stale one raises :class:`EngineError`. With torch device memory,
    :attr:`tensor` is a ``torch.Tensor`` view of it (what the torch storage copies from).
    """

    def __init__(self, owner: "TensorRTBackend", name: str, shape: tuple[int, ...], dtype: np.dtype):
        self._owner = owner
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._generation = owner._generation[name]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def fresh(self) -> bool:
        return self._owner._generation.get(self.name) == self._generation and not self._owner.closed

    def check(self, owner: "TensorRTBackend") -> None:
        if owner is not self._owner:
            raise EngineError(f"{self.name} lives on another TensorRT backend's GPU memory")
        if not self.fresh:
            raise EngineError(
                f"{self.name} was overwritten on the GPU: the TensorRT backend keeps only the latest "
                "frame's features and the latest output of each graph"
            )

    @property
    def tensor(self):
        """The ``torch.Tensor`` view of this array (torch device memory only)."""
        self.check(self._owner)
        return self._owner._tensor_view(self.name, self.shape)

    def __array__(self, dtype=None, copy=None):
        host = self._owner._download(self)
        return host if dtype is None else host.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"DeviceArray({self.name}, shape={self.shape}, dtype={self.dtype})"


def _scratch_bytes(engine) -> int:
    """Scratch (activation) memory one context of ``engine`` needs at most over its profile."""
    size = getattr(engine, "device_memory_size_v2", None)  # TensorRT >= 10.1
    if size is None:
        size = engine.device_memory_size
    return int(size)


class _Engine:
    """One deserialised engine, its IO description and its execution contexts (one per shape set).

    With ``ExecutionContextAllocationStrategy`` (TensorRT >= 10.0) every context is created
    ``USER_MANAGED`` and given the engine's one scratch block (see the module docstring);
    without it, a single context serves every shape set (graphs then die on alternation and the
    thrash guard makes such keys eager).
    """

    def __init__(self, trt, runtime, path: Path, graph: str, cuda: _Cuda, max_contexts: int = MAX_CONTEXTS_PER_ENGINE):
        self.graph = graph
        self._trt, self._cuda = trt, cuda
        self.scratch, self.scratch_bytes = 0, 0
        self.contexts: list = []
        data = path.read_bytes()
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineError(f"TensorRT cannot deserialise {path} (built with another TensorRT version or GPU?)")
        self.user_managed = hasattr(trt, "ExecutionContextAllocationStrategy")
        if self.user_managed:
            self.scratch_bytes = _scratch_bytes(self.engine)
            self.scratch = cuda(cuda.rt.cudaMalloc(max(self.scratch_bytes, 1)), f"cudaMalloc({graph} scratch)")
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtype: dict[str, np.dtype] = {}
        self.min_shape: dict[str, tuple] = {}
        self.max_shape: dict[str, tuple] = {}
        self.dynamic: list[str] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtype[name] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
                shape = tuple(self.engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    mn, _, mx = self.engine.get_tensor_profile_shape(name, 0)
                    self.min_shape[name], self.max_shape[name] = tuple(mn), tuple(mx)
                    self.dynamic.append(name)
                else:
                    self.min_shape[name] = self.max_shape[name] = shape
            else:
                self.outputs.append(name)
        self.slots = ShapeContexts(graph, max_contexts if (self.dynamic and self.user_managed) else 1)
        self.addresses: dict[str, int] = {}
        probe = self._new_context()  # becomes slot 0's context
        self._set_shapes(probe, self.max_shape)
        for name in self.outputs:
            self.max_shape[name] = tuple(probe.get_tensor_shape(name))
            if any(d < 0 for d in self.max_shape[name]):
                raise EngineError(f"{graph}: output {name} has a data-dependent shape; not supported")

    def _new_context(self):
        trt = self._trt
        if self.user_managed:
            ctx = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if ctx is not None:
                if hasattr(ctx, "set_device_memory"):  # TensorRT >= 10.1
                    ctx.set_device_memory(self.scratch, self.scratch_bytes)
                else:
                    ctx.device_memory = self.scratch
        else:
            ctx = self.engine.create_execution_context()
        if ctx is None:
            raise EngineError(f"TensorRT cannot create an execution context for {self.graph} (out of GPU memory?)")
        self.contexts.append(ctx)
        for name, ptr in self.addresses.items():
            self._bind(ctx, name, ptr)
        return ctx

    def _bind(self, ctx, name: str, ptr: int) -> None:
        if not ctx.set_tensor_address(name, ptr):
            raise EngineError(f"{self.graph}: TensorRT rejected the address of {name}")

    def bind(self, addresses: dict[str, int]) -> None:
        """Bind every IO tensor of every context (present and future) to its device buffer."""
        self.addresses = {n: addresses[n] for n in self.inputs + self.outputs}
        for ctx in self.contexts:
            for name, ptr in self.addresses.items():
                self._bind(ctx, name, ptr)

    def _set_shapes(self, ctx, shapes: dict[str, tuple]) -> None:
        for name in self.dynamic:
            shape = tuple(int(d) for d in shapes[name])
            if not ctx.set_input_shape(name, shape):
                raise EngineError(f"{self.graph}: TensorRT rejected shape {shape} for input {name}")
        if self.user_managed and hasattr(ctx, "update_device_memory_size_for_shapes"):  # TensorRT >= 10.1
            need = int(ctx.update_device_memory_size_for_shapes())
            if need > self.scratch_bytes:
                raise EngineError(f"{self.graph}: the context needs {need} bytes of scratch memory, "
                                  f"more than the engine's {self.scratch_bytes}")

    def select(self, shapes: dict[str, tuple]) -> ContextChoice:
        """The context slot serving ``shapes`` (its input shapes are set when it is (re)assigned)."""
        choice = self.slots.lookup(tuple((n, tuple(int(d) for d in shapes[n])) for n in self.dynamic))
        while choice.slot >= len(self.contexts):
            self._new_context()
        if choice.assigned:
            self._set_shapes(self.contexts[choice.slot], shapes)
        return choice

    def output_shape(self, slot: int, name: str) -> tuple[int, ...]:
        return tuple(self.contexts[slot].get_tensor_shape(name))

    def release(self) -> None:
        """Contexts and engine go before the scratch block they use."""
        self.contexts = []
        self.engine = None
        if self.scratch:
            self._cuda.rt.cudaFree(self.scratch)
            self.scratch = 0


class TensorRTBackend:
    """SAM 2 on TensorRT engines built by ``sam2_ros.backends.tensorrt.build.build_engines``.

    One thread at a time calls it (any thread: each call makes ``device`` current there).
    Every call returns after the GPU finished it (host results are ready); device results
    (:class:`DeviceArray`) stay valid until the graph that produced them runs again.

    Args:
        manifest: the engine directory's manifest (``load_manifest(engine_dir)``).
        engine_dir: where the engines are (default: the manifest's directory).
        device: CUDA device index.
        use_cuda_graph: capture repeated call sequences into CUDA graphs (see module doc).
        pin_host_memory: page-lock large long-lived host arrays (the memory bank) in place
            (host device memory only).
        verify_engine_hashes: check each engine file against the manifest's sha256.
        device_memory: where the memory bank and history live: ``"torch"`` (torch tensors on
            ``cuda:<device>``, no per-frame bank or feature traffic; frames are resized and masks
            rendered on the GPU by :class:`TorchImaging`), ``"host"`` (numpy, copied per call;
            PIL/OpenCV on the host), ``"auto"`` (default: torch when PyTorch is importable).
    """

    name = "tensorrt"
    #: Host storage by default; an instance with ``device_memory="torch"`` replaces it with torch
    #: tensors on its GPU (see the module docstring).
    storage = HOST
    #: pre- and post-processing on the host; ``device_memory="torch"`` replaces it with the GPU path
    imaging = HOST_IMAGING

    def __init__(
        self,
        manifest: Manifest,
        engine_dir: str | Path | None = None,
        device: int = 0,
        use_cuda_graph: bool = True,
        pin_host_memory: bool = True,
        verify_engine_hashes: bool = True,
        device_memory: str = "auto",
    ):
        self.closed = True
        self.manifest = manifest
        entry = manifest.data.get(MANIFEST_KEY)
        engine_dir = Path(engine_dir) if engine_dir is not None else manifest.path.parent
        if entry is None:
            raise EngineError(
                f"{manifest.path} has no '{MANIFEST_KEY}' entry: {engine_dir} holds no TensorRT engines "
                "(run `sam2-ros build` on the GPU that will run them)"
            )
        memory_mode = resolve_device_memory(device_memory, _torch_importable())
        trt = _import_tensorrt()
        self._cuda = cuda = _Cuda()
        self.runtime_info = runtime_info(device)
        problems = check_engine_compatibility(entry, self.runtime_info)
        problems += engine_file_problems(engine_dir, entry, check_hashes=verify_engine_hashes)
        if problems:
            raise EngineError(
                f"the TensorRT engines in {engine_dir} cannot be used here: " + "; ".join(problems)
                + ". Rebuild them on this machine with `sam2-ros build`."
            )
        self.trt = trt
        self.device = device
        self.device_memory = memory_mode
        self.use_cuda_graph = use_cuda_graph
        self.pin_host_memory = pin_host_memory
        self.entry = entry
        rt = cuda.rt
        cuda(rt.cudaSetDevice(device), "cudaSetDevice")
        self._stream = cuda(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreate")
        self._stream_handle = int(self._stream)
        self._device_buffers: dict[str, int] = {}
        self._host_stage: dict[str, _HostStage] = {}
        self._pinned = PinnedOwners(self._pin, self._unpin, MAX_REGISTERED)
        self._graphs = GraphBook(MAX_GRAPHS, MAX_INVALIDATIONS)
        self._generation: dict[str, int] = {}
        self._shape_of: dict[str, tuple] = {}  # latest shape written to each device buffer
        self._constants: dict[tuple, np.ndarray] = {}
        self._torch = None  # the torch interop module in torch device-memory mode
        self._tensors: dict = {}  # name -> flat torch tensor backing the device buffer (torch mode)
        self._keep: list = []  # temporaries read by enqueued copies, until the next synchronisation
        self._torch_event = None
        self.closed = False
        try:
            if memory_mode == "torch":
                import sam2_ros.backends.tensorrt.torch_interop as torch_interop  # imports torch: this mode only

                self._torch = torch_interop
                try:
                    self.storage = torch_interop.storage_for(device)
                    # pre/post-processing on the GPU too: the frame goes up as uint8, the resized
                    # input is read by the image encoder in place (``_device_source``), masks are
                    # rendered from the bank's device logits
                    self.imaging = torch_interop.imaging_for(device)
                except RuntimeError as e:
                    raise EngineError(f"device_memory='torch': {e}; use device_memory='host'") from e
                self._torch_event = cuda(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming), "cudaEventCreate")
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engines: dict[str, _Engine] = {}
            for g in GRAPH_NAMES:
                path = engine_dir / entry["engines"][g].get("file", f"{g}.engine")
                self.engines[g] = _Engine(trt, self._runtime, path, g, cuda)
            self._check_io()
            self._allocate()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up
    def _check_io(self) -> None:
        graphs = self.manifest.data["graphs"]
        for g, eng in self.engines.items():
            for kind, names in (("inputs", eng.inputs), ("outputs", eng.outputs)):
                expected = set(graphs[g][kind])
                if set(names) != expected:
                    raise EngineError(f"{g} engine {kind} {sorted(names)} do not match the manifest {sorted(expected)}")

    def _allocate(self) -> None:
        """One device buffer per tensor name (largest use), one staging buffer per host-facing name."""
        cuda, rt = self._cuda, self._cuda.rt
        nbytes: dict[str, int] = {}
        dtypes: dict[str, np.dtype] = {}
        for eng in self.engines.values():
            for name in eng.inputs + eng.outputs:
                n = int(np.prod(eng.max_shape[name], dtype=np.int64)) * eng.dtype[name].itemsize
                nbytes[name] = max(nbytes.get(name, 0), n)
                if dtypes.setdefault(name, eng.dtype[name]) != eng.dtype[name]:
                    raise EngineError(f"tensor {name} has different dtypes in different engines")
        self._dtype = dtypes
        for name, n in nbytes.items():
            if self._torch is not None:  # torch's allocator on our device: torch reads and writes them in place
                t = self.storage.zeros((max(n // dtypes[name].itemsize, 1),), dtypes[name].name)
                self._tensors[name] = t
                self._device_buffers[name] = int(t.data_ptr())
            else:
                self._device_buffers[name] = cuda(rt.cudaMalloc(max(n, 1)), f"cudaMalloc({name}, {n} bytes)")
            self._generation[name] = 0
            # every tensor may cross the host boundary (inputs from the tracker, outputs to it)
            ptr = cuda(rt.cudaHostAlloc(max(n, 1), rt.cudaHostAllocDefault), f"cudaHostAlloc({name})")
            view = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (max(n, 1),))
            self._host_stage[name] = _HostStage(ptr, n, view)
        for eng in self.engines.values():
            eng.bind(self._device_buffers)

    @property
    def cuda_stream(self) -> int:
        """The ``cudaStream_t`` handle every copy and engine launch of this backend is enqueued on
        (to time them with CUDA events, or to order other work after them)."""
        return self._stream_handle

    @property
    def limits(self) -> ShapeLimits:
        """Largest objects / memory slots / pointer slots / points the engines accept."""
        ma, dec = self.engines["memory_attention"], self.engines["mask_decoder"]
        return ShapeLimits(
            objects=ma.max_shape["mem_feats"][0],
            mem_slots=ma.max_shape["mem_feats"][1],
            ptr_slots=ma.max_shape["obj_ptrs"][1],
            points=dec.max_shape["point_coords"][1],
            frames=self.engines["image_encoder"].max_shape["image"][0],  # sam2-ros build --max-streams
        )

    @property
    def io_bytes(self) -> int:
        """Device memory of this backend's IO buffers (the same again is page-locked on the host)."""
        return sum(st.nbytes for st in self._host_stage.values())

    @property
    def scratch_bytes(self) -> int:
        """Device scratch memory of the engines' contexts (one block per engine, shared by its contexts)."""
        return sum(e.scratch_bytes for e in self.engines.values())

    # ------------------------------------------------------------ host <-> device
    def _tensor_view(self, name: str, shape: tuple) -> Any:
        if self._torch is None:
            raise EngineError("torch views of TensorRT buffers need device_memory='torch'")
        n = int(np.prod(shape, dtype=np.int64))
        return self._tensors[name][:n].view(tuple(shape))

    def _stage(self, name: str, arr: np.ndarray) -> np.ndarray:
        """A typed view of ``name``'s page-locked staging buffer filled with ``arr``."""
        st = self._host_stage[name]
        if arr.nbytes > st.nbytes:
            raise EngineError(f"{name}: {arr.nbytes} bytes exceed the {st.nbytes} bytes allocated at the largest profile shape")
        view = st.array[: arr.nbytes].view(arr.dtype).reshape(arr.shape)
        np.copyto(view, arr, casting="no")
        return view

    def _pin(self, ptr: int, nbytes: int) -> bool:
        rt = self._cuda.rt
        err = rt.cudaHostRegister(ptr, nbytes, rt.cudaHostRegisterDefault)[0]
        if err != self._cuda.ok:
            log.warning("cudaHostRegister of a %d-byte host array failed (%s); staging it instead", nbytes, err)
            return False
        return True

    def _unpin(self, ptr: int) -> None:
        self._sync()
        self._destroy(self._graphs.drop())  # graphs may read from this address
        self._cuda.rt.cudaHostUnregister(ptr)

    def _registered_source(self, name: str, arr: np.ndarray) -> tuple[int, int, int, int] | None:
        """``(ptr, rows, row_bytes, pitch)`` if ``arr`` can be copied by DMA from page-locked memory.

        The array that owns ``arr``'s memory is registered once and kept alive (so its address
        cannot be reused) until more than ``MAX_REGISTERED`` owners were seen or nothing else
        refers to it (see :class:`.bookkeeping.PinnedOwners`).
        """
        if not self.pin_host_memory or name not in REGISTER_NAMES or arr.nbytes < REGISTER_MIN_BYTES:
            return None
        layout = strided_rows(arr)
        if layout is None:
            return None
        root = root_array(arr)
        if not root.flags.c_contiguous or not self._pinned.register(root):
            return None
        rows, row_bytes, pitch = layout
        return arr.ctypes.data, rows, row_bytes, pitch

    def _upload(self, name: str, value, expected_dtype: np.dtype) -> tuple[tuple, Any, tuple]:
        """Prepare the copy of one input: ``(shape, copy op or None, graph-key part)``.

        Host data is written to the staging buffer now; the op enqueues the transfer.
        """
        rt = self._cuda.rt
        dst = self._device_buffers[name]
        if isinstance(value, DeviceArray):
            value.check(self)
            if value.dtype != expected_dtype:
                raise EngineError(f"{name}: expected {expected_dtype}, got a device tensor of {value.dtype}")
            if value.name == name:
                return value.shape, None, ("device", name)
            src = self._device_buffers[value.name]
            n = value.nbytes
            op = lambda: self._cuda(  # noqa: E731
                rt.cudaMemcpyAsync(dst, src, n, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream), f"copy {value.name}->{name}"
            )
            self._generation[name] += 1
            return value.shape, op, ("d2d", value.name)
        if self._torch is not None and self._torch.is_tensor(value):
            value = self._torch.on_device(value, self.device)
            if value is not None:
                return self._device_source(name, value, expected_dtype)
        arr = np.asarray(value)
        if arr.dtype != expected_dtype:
            if np.can_cast(arr.dtype, expected_dtype, casting="same_kind") or arr.dtype == np.bool_:
                arr = arr.astype(expected_dtype)
            else:
                raise EngineError(f"{name}: expected dtype {expected_dtype}, got {arr.dtype}")
        self._generation[name] += 1
        src = self._registered_source(name, arr)
        if src is not None:
            ptr, rows, row_bytes, pitch = src
            op = lambda: self._cuda(  # noqa: E731
                rt.cudaMemcpy2DAsync(dst, row_bytes, ptr, pitch, row_bytes, rows,
                                     rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream),
                f"upload {name}",
            )
            return arr.shape, op, ("host", ptr, pitch, rows, row_bytes)
        staged = self._stage(name, arr)
        n, src_ptr = staged.nbytes, staged.ctypes.data
        op = lambda: self._cuda(  # noqa: E731
            rt.cudaMemcpyAsync(dst, src_ptr, n, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), f"upload {name}"
        )
        return arr.shape, op, ("stage", n)

    def _device_source(self, name: str, t, expected_dtype: np.dtype) -> tuple[tuple, Any, tuple]:
        """A torch tensor on our GPU (a bank view, history features): read in place, device to device."""
        rt, tm = self._cuda.rt, self._torch
        if tm.dtype_name(t) != expected_dtype.name:
            t = tm.as_dtype(t, expected_dtype.name)
        layout = pitched_layout(tuple(t.shape), tuple(t.stride()), t.element_size())
        if layout is None:
            t = t.contiguous()
            layout = pitched_layout(tuple(t.shape), tuple(t.stride()), t.element_size())
        shape, dst, src = tuple(int(d) for d in t.shape), self._device_buffers[name], int(t.data_ptr())
        if layout is None:  # an empty tensor: nothing to copy
            return shape, None, ("empty",)
        rows, row_bytes, pitch = layout
        if rows * row_bytes > self._host_stage[name].nbytes:
            raise EngineError(f"{name}: {rows * row_bytes} bytes exceed the buffer allocated at the largest profile shape")
        self._generation[name] += 1
        if src == dst and rows == 1:  # already our buffer (a view of it)
            return shape, None, ("device", name)
        self._keep.append(t)  # a temporary (cast / contiguous copy) must outlive the enqueued copy
        op = lambda: self._cuda(  # noqa: E731
            rt.cudaMemcpy2DAsync(dst, row_bytes, src, pitch, row_bytes, rows,
                                 rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream),
            f"copy into {name}",
        )
        return shape, op, ("dev", src, pitch, rows, row_bytes)

    def _download_op(self, name: str, shape: tuple):
        rt = self._cuda.rt
        n = int(np.prod(shape, dtype=np.int64)) * self._dtype[name].itemsize
        src, dst = self._device_buffers[name], self._host_stage[name].ptr
        return lambda: self._cuda(
            rt.cudaMemcpyAsync(dst, src, n, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream), f"download {name}"
        )

    def _host_copy(self, name: str, shape: tuple) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64)) * self._dtype[name].itemsize
        return self._host_stage[name].array[:n].view(self._dtype[name]).reshape(shape).copy()

    def _download(self, arr: DeviceArray) -> np.ndarray:
        arr.check(self)
        self._cuda.use_device(self.device)
        self._download_op(arr.name, arr.shape)()
        self._sync()
        return self._host_copy(arr.name, arr.shape)

    def _sync(self) -> None:
        self._cuda(self._cuda.rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        self._keep.clear()

    def _after_torch(self) -> None:
        """Order this stream after the work torch enqueued so far (bank and history writes)."""
        if self._torch is None:
            return
        rt, cuda = self._cuda.rt, self._cuda
        cuda(rt.cudaEventRecord(self._torch_event, self._torch.current_stream(self.device)), "cudaEventRecord")
        cuda(rt.cudaStreamWaitEvent(self._stream, self._torch_event, 0), "cudaStreamWaitEvent")

    # ----------------------------------------------------------------- running
    def _enqueue_op(self, graph: str, slot: int):
        eng = self.engines[graph]
        ctx = eng.contexts[slot]

        def op():
            if not ctx.execute_async_v3(self._stream_handle):
                raise EngineError(f"TensorRT failed to enqueue the {graph} engine (see the TensorRT log)")

        return op

    def _check_shape(self, graph: str, name: str, shape: tuple) -> None:
        eng = self.engines[graph]
        lo, hi = eng.min_shape[name], eng.max_shape[name]
        if len(shape) != len(hi) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise EngineError(
                f"{graph}: input {name} has shape {tuple(shape)}; the engine accepts {tuple(lo)} .. {tuple(hi)}. "
                "Rebuild the engines with larger limits (sam2-ros build --max-objects / --max-points / --cond-slots)"
            )

    def _prepare(self, graph: str, feeds: dict, produced: dict[str, tuple]) -> tuple[list, tuple, tuple]:
        """Copies of ``graph``'s inputs + its launch; returns (ops, key part, context dep).

        ``produced`` maps tensor names written earlier in the same sequence to their output
        shape: a :class:`Chained` feed reads that buffer in place.
        """
        eng = self.engines[graph]
        ops, key, shapes = [], [graph], {}
        for name in eng.inputs:
            if name not in feeds:
                raise EngineError(f"{graph}: input {name} was not given")
            value = feeds[name]
            if isinstance(value, Chained):
                if value.name != name or name not in produced:
                    raise EngineError(f"{graph}: {name} is not produced earlier in this sequence")
                shape, op, src_key = produced[name], None, ("chained",)
            else:
                shape, op, src_key = self._upload(name, value, eng.dtype[name])
            self._check_shape(graph, name, shape)
            shapes[name] = shape
            if op is not None:
                ops.append(op)
            key.append((name, tuple(shape), src_key))
        choice = eng.select(shapes)
        if choice.assigned and choice.generation > 0:  # the slot had other shapes: its graphs are dead
            self._destroy(self._graphs.drop_dependents((graph, choice.slot, choice.generation - 1)))
        ops.append(self._enqueue_op(graph, choice.slot))
        for name in eng.outputs:
            self._generation[name] += 1
            produced[name] = eng.output_shape(choice.slot, name)
        return ops, tuple(key), eng.slots.dep(choice.slot)

    def _launch(self, key: tuple, deps: tuple, ops: list) -> None:
        """Run ``ops`` on the stream: eagerly, or through a CUDA graph captured for ``key`` on
        the context generations ``deps`` (see :class:`.bookkeeping.GraphBook`)."""
        rt, cuda = self._cuda.rt, self._cuda
        if not self.use_cuda_graph:
            for op in ops:
                op()
            return
        action, dead = self._graphs.decide(key, deps)
        self._destroy(dead)
        if action == GraphBook.REPLAY:
            cuda(rt.cudaGraphLaunch(self._graphs.handle(key)[1], self._stream), "cudaGraphLaunch")
            return
        # eager run; the first one is also the enqueue with these shapes that TensorRT needs before a capture
        for op in ops:
            op()
        if action != GraphBook.CAPTURE:
            return
        self._sync()
        graph = None
        try:
            cuda(rt.cudaStreamBeginCapture(self._stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                 "cudaStreamBeginCapture")
            try:
                for op in ops:
                    op()
            finally:
                graph = cuda(rt.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
            exe = cuda(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except EngineError as e:
            log.warning("CUDA graph capture of %s failed (%s); it runs eagerly from now on", key[0][0], e)
            self._graphs.failed(key)
            if graph is not None:
                rt.cudaGraphDestroy(graph)
            return
        self._destroy(self._graphs.captured(key, deps, (graph, exe)))

    def _destroy(self, handles: list) -> None:
        for graph, exe in handles:
            self._cuda.rt.cudaGraphExecDestroy(exe)
            self._cuda.rt.cudaGraphDestroy(graph)

    def _run(self, steps: list[tuple[str, dict]], outputs: list[str]) -> dict[str, Any]:
        """Run graphs in order on one stream, then return ``outputs`` (host arrays; device
        tensors with torch device memory)."""
        if self.closed:
            raise EngineError("the TensorRT backend was closed")
        self._cuda.use_device(self.device)  # before any copy or enqueue, in whichever thread calls
        ops, key, deps, produced = [], [], [], {}
        for graph, feeds in steps:
            o, k, d = self._prepare(graph, feeds, produced)
            ops += o
            key.append(k)
            deps.append(d)
        for name in outputs:
            if name not in produced:
                raise EngineError(f"{name} is not an output of {[g for g, _ in steps]}")
        self._shape_of.update(produced)
        if self._torch is None:
            ops += [self._download_op(name, produced[name]) for name in outputs]
        self._after_torch()
        self._launch(tuple(key), tuple(deps), ops)
        self._sync()
        if self._torch is not None:  # device copies, on torch's stream after our synchronisation
            return {name: self._tensor_view(name, produced[name]).clone() for name in outputs}
        return {name: self._host_copy(name, produced[name]) for name in outputs}

    def _device_array(self, name: str) -> DeviceArray:
        return DeviceArray(self, name, self._shape_of[name], self._dtype[name])

    # ---------------------------------------------------------------- protocol
    def encode_image(self, image: np.ndarray) -> ImageFeatures:
        """Features as :class:`DeviceArray` values (with torch device memory the history copies
        them device-to-device through :attr:`DeviceArray.tensor`)."""
        self._run([("image_encoder", IMAGE_ENCODER.feeds(image))], outputs=[])
        return ImageFeatures(*(self._device_array(n) for n in IMAGE_ENCODER.outputs))

    def encode_images(self, images) -> list[ImageFeatures]:
        """Several frames in one call of an engine built with ``--max-streams`` > 1: each frame's
        features as fresh tensors (torch device memory) or host arrays, not :class:`DeviceArray`
        values (the encoder's buffers hold the whole batch and are rewritten by the next frame)."""
        if len(images) == 1:
            return [self.encode_image(images[0])]
        check_frame_batch(len(images), self.limits)
        if self._torch is not None and any(self._torch.is_tensor(i) for i in images):
            batch = self._torch.concat([self.storage.asarray(i) for i in images])
        else:
            batch = np.concatenate([np.asarray(i) for i in images])
        out = self._run([("image_encoder", IMAGE_ENCODER.feeds(batch))], outputs=list(IMAGE_ENCODER.outputs))
        return split_features(ImageFeatures(*(out[n] for n in IMAGE_ENCODER.outputs)), len(images))

    def frame_embedding(self, feats: ImageFeatures):
        """``feats.image_embed`` as it is (a :class:`DeviceArray` of the current frame, or a
        history buffer): :meth:`decode` copies it into ``pix_feat`` on the device."""
        return feats.image_embed

    def attend_memory(self, feats, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid) -> DeviceArray:
        """-> pix_feat [B,256,h,w] as a :class:`DeviceArray`: it stays on the GPU for :meth:`decode`."""
        self._run(
            [("memory_attention", MEMORY_ATTENTION.feeds(
                feats.image_embed, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid))],
            outputs=[],
        )
        return self._device_array("pix_feat")

    def decode(self, feats, pix_feat, no_mem, point_coords, point_labels, mask_input, has_mask, multimask) -> DecoderOutput:
        out = self._run(
            [("mask_decoder", decoder_feeds(feats, pix_feat, no_mem, point_coords, point_labels, mask_input, has_mask, multimask))],
            outputs=list(MASK_DECODER.outputs),
        )
        return DecoderOutput(*(out[n] for n in MASK_DECODER.outputs))

    def encode_memory(self, feats, low_res_masks, binarize, object_score_logits):
        return self._run(
            [("memory_encoder", MEMORY_ENCODER.feeds(feats.image_embed, low_res_masks, binarize, object_score_logits))],
            outputs=list(MEMORY_ENCODER.outputs),
        )["maskmem"]

    # ------------------------------------------------------- fused tracking step
    def track_step(self, feats: ImageFeatures, attention_inputs: AttentionInputs, multimask: bool) -> tuple[DecoderOutput, Any]:
        """Memory attention + decoder without prompt + memory encoder for ``n`` tracked objects, in one launch.

        Computes what ``attend_memory`` -> ``decode(no_mem=0, no points (label -1), no mask input,
        multimask)`` -> ``encode_memory(binarize=0)`` on the decoder's outputs compute (the
        tracker's per-frame step), but the intermediate tensors never leave the GPU and the
        whole sequence is one CUDA graph while ``n`` and the slot counts stay the same.
        ``attention_inputs``: the six memory-attention inputs from the memory bank.
        Returns the decoder outputs and ``maskmem`` [n, HW, 64].
        """
        n = int(attention_inputs.mem_valid.shape[0])
        lr = self.engines["mask_decoder"].max_shape["mask_input"][1:]
        zeros = self._constant(np.float32, (n,), 0.0)
        dec = decoder_feeds(
            feats, Chained("pix_feat"), zeros,
            self._constant(np.float32, (n, 1, 2), 0.0), self._constant(np.int32, (n, 1), -1),
            self._constant(np.float32, (n, *lr), 0.0), zeros,
            self._constant(np.float32, (n,), 1.0 if multimask else 0.0),
        )
        steps = [
            ("memory_attention", {"image_embed": feats.image_embed, **attention_inputs.as_dict()}),
            ("mask_decoder", dec),
            ("memory_encoder", MEMORY_ENCODER.feeds(
                feats.image_embed, Chained("low_res_masks"), zeros, Chained("object_score_logits"))),
        ]
        out = self._run(steps, [*MASK_DECODER.outputs, "maskmem"])
        return DecoderOutput(*(out[k] for k in MASK_DECODER.outputs)), out["maskmem"]

    def _constant(self, dtype, shape: tuple, value) -> np.ndarray:
        key = (np.dtype(dtype).str, tuple(shape), value)
        if key not in self._constants:
            self._constants[key] = np.full(shape, value, dtype)
        return self._constants[key]

    def warm_up(self, max_objects: int, cond_slots: int = 1) -> None:
        """A no-op: engines are built and tuned ahead of time, and CUDA graphs are captured on the
        second sighting of a key (see :meth:`sam2_ros.backends.base.Backend.warm_up`)."""

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Free graphs, contexts, engines, device and page-locked memory and the stream. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        rt = self._cuda.rt
        try:
            self._cuda.use_device(self.device)
        except EngineError:
            pass
        rt.cudaStreamSynchronize(self._stream)
        self._destroy(self._graphs.drop())
        for eng in getattr(self, "engines", {}).values():  # contexts and engines go before their memory
            eng.release()
        self.engines = {}
        for ptr in self._pinned.clear():
            rt.cudaHostUnregister(ptr)
        if self._torch is None:
            for ptr in self._device_buffers.values():
                rt.cudaFree(ptr)
        self._tensors.clear()  # torch's allocator takes them back
        for st in self._host_stage.values():
            rt.cudaFreeHost(st.ptr)
        self._device_buffers.clear()
        self._host_stage.clear()
        self._keep.clear()
        if self._torch_event is not None:
            rt.cudaEventDestroy(self._torch_event)
            self._torch_event = None
        rt.cudaStreamDestroy(self._stream)

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


@dataclass(frozen=True)
class Chained:
    """A feed that is the output of the same name of an earlier graph in the same launch."""

    name: str
