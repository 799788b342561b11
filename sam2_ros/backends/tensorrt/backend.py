"""TensorRT backend: the four SAM 2 engines on one CUDA stream, image features kept on the GPU.

Layout
------
* One device buffer per **tensor name** across the four engines, allocated once at the
  largest shape of the engines' optimisation profiles. A name shared by two engines is one
  buffer, so ``image_embed`` / ``feat_s0`` / ``feat_s1`` (encoder outputs), ``pix_feat``
  (memory attention -> decoder) and ``low_res_masks`` / ``object_score_logits``
  (decoder -> memory encoder) never travel through the host.
* Tensors are bound by name (``IExecutionContext.set_tensor_address``) once, at start-up;
  every call only sets the input shapes that changed and enqueues ``execute_async_v3``.
* Host <-> device copies go through page-locked staging buffers (also allocated once). Large
  host inputs whose memory is owned by a long-lived array (the tracker's ``MemoryBank``) are
  page-locked in place with ``cudaHostRegister`` and copied by DMA straight from the bank,
  including the strided ``bank.mem_feats[:n, :m]`` views (``cudaMemcpy2DAsync``).
* :meth:`TensorRTBackend.attend_memory` returns a :class:`DeviceArray` (the frame embedding
  conditioned on memory stays on the GPU for the decoder); ``np.asarray`` copies it to the
  host if anyone needs it there.

CUDA graphs
-----------
Each protocol call (and the fused :meth:`TensorRTBackend.track_step`) is a fixed sequence of
copies and engine launches on one stream. With ``use_cuda_graph=True`` the sequence is
captured into a CUDA graph the second time it is seen with the same *key* and replayed from
the third time on. A key is everything a replay bakes in:

* the input shapes (objects ``n``, memory slots ``m``, pointer slots ``p``, points ``N``);
* the host source of every copy: a staging buffer (fixed address) or a registered host
  array (its address and row pitch);
* the device buffers (allocated once, so always the same).

Conditions for capture, all checked: shapes within the profile; no host synchronisation
inside the sequence (the stream is synchronised only after launching); the engine's
context ran eagerly with exactly these shapes right before the capture (TensorRT performs
shape-dependent set-up work on the first enqueue after ``set_input_shape``, which must not be
captured); TensorRT must not allocate during enqueue (engines with data-dependent shapes or
on-device control flow may; such a capture fails, the key is marked uncapturable and runs
eagerly from then on). The tracking step has static shapes while the set of objects and the
number of used conditioning slots are constant, which is the steady state of a stream; a new
object or a new conditioning frame changes ``n`` / ``m`` / ``p`` and costs one eager run, one
capture, then replays again. Graphs are kept in a small LRU cache.

Import of this module never needs TensorRT or CUDA; :class:`TensorRTBackend` imports
``tensorrt`` and ``cuda-python`` when constructed and raises :class:`EngineError` with the
reason when either is missing or the engines do not match the machine.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam2_ros.backends.base import DecoderOutput, ImageFeatures, ShapeLimits, decoder_feeds
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
    produced it); using a stale one raises :class:`EngineError`.
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

    def __array__(self, dtype=None, copy=None):
        host = self._owner._download(self)
        return host if dtype is None else host.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"DeviceArray({self.name}, shape={self.shape}, dtype={self.dtype})"


class _Engine:
    """One deserialised engine with its execution context and IO description."""

    def __init__(self, trt, runtime, path: Path, graph: str):
        self.graph = graph
        data = path.read_bytes()
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineError(f"TensorRT cannot deserialise {path} (built with another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"TensorRT cannot create an execution context for {path} (out of GPU memory?)")
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtype: dict[str, np.dtype] = {}
        self.min_shape: dict[str, tuple] = {}
        self.max_shape: dict[str, tuple] = {}
        self.dynamic: set[str] = set()
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtype[name] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
                shape = tuple(self.engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    mn, _, mx = self.engine.get_tensor_profile_shape(name, 0)
                    self.min_shape[name], self.max_shape[name] = tuple(mn), tuple(mx)
                    self.dynamic.add(name)
                else:
                    self.min_shape[name] = self.max_shape[name] = shape
            else:
                self.outputs.append(name)
        self._shapes: dict[str, tuple] = {}
        self._enqueued_shapes: tuple | None = None
        self.epoch = 0  # changes when the context is enqueued with new shapes (see TensorRTBackend._launch)
        self.set_shapes(self.max_shape)
        for name in self.outputs:
            self.max_shape[name] = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in self.max_shape[name]):
                raise EngineError(f"{graph}: output {name} has a data-dependent shape; not supported")

    def set_shapes(self, shapes: dict[str, tuple]) -> None:
        for name in self.dynamic:
            shape = tuple(int(d) for d in shapes[name])
            if self._shapes.get(name) != shape:
                if not self.context.set_input_shape(name, shape):
                    raise EngineError(f"{self.graph}: TensorRT rejected shape {shape} for input {name}")
                self._shapes[name] = shape

    @property
    def current_shapes(self) -> tuple:
        return tuple(sorted(self._shapes.items()))

    def note_enqueue(self) -> None:
        """Count enqueues with shapes other than the previous one's (TensorRT redoes shape set-up then)."""
        shapes = self.current_shapes
        if shapes != self._enqueued_shapes:
            self._enqueued_shapes = shapes
            self.epoch += 1

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(name))


class TensorRTBackend:
    """SAM 2 on TensorRT engines built by ``sam2_ros.backends.tensorrt.build.build_engines``.

    Not thread-safe: one thread calls it (the tracker's). Every call returns after the GPU
    finished it (host results are ready); device results (:class:`DeviceArray`) stay valid
    until the graph that produced them runs again.

    Args:
        manifest: the engine directory's manifest (``load_manifest(engine_dir)``).
        engine_dir: where the engines are (default: the manifest's directory).
        device: CUDA device index.
        use_cuda_graph: capture repeated call sequences into CUDA graphs (see module doc).
        pin_host_memory: page-lock large long-lived host arrays (the memory bank) in place.
        verify_engine_hashes: check each engine file against the manifest's sha256.
    """

    name = "tensorrt"
    #: The bank stays in (page-locked, registered) host memory for now; its slices are copied to
    #: the device per call. Device-resident bank storage for TensorRT is future work (needs a GPU).
    storage = HOST
    #: pre- and post-processing on the host: the engines take host inputs and the bank is on the host
    imaging = HOST_IMAGING

    def __init__(
        self,
        manifest: Manifest,
        engine_dir: str | Path | None = None,
        device: int = 0,
        use_cuda_graph: bool = True,
        pin_host_memory: bool = True,
        verify_engine_hashes: bool = True,
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
        self.use_cuda_graph = use_cuda_graph
        self.pin_host_memory = pin_host_memory
        self.entry = entry
        rt = cuda.rt
        cuda(rt.cudaSetDevice(device), "cudaSetDevice")
        self._stream = cuda(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreate")
        self._stream_handle = int(self._stream)
        self._device_buffers: dict[str, int] = {}
        self._host_stage: dict[str, _HostStage] = {}
        self._registered: OrderedDict[int, np.ndarray] = OrderedDict()
        self._register_failed: set[int] = set()
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        self._seen: OrderedDict[tuple, None] = OrderedDict()  # keys run once (capture on the next run)
        self._uncapturable: set[tuple] = set()
        self._generation: dict[str, int] = {}
        self._constants: dict[tuple, np.ndarray] = {}
        self.closed = False
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engines: dict[str, _Engine] = {}
            for g in GRAPH_NAMES:
                path = engine_dir / entry["engines"][g].get("file", f"{g}.engine")
                self.engines[g] = _Engine(trt, self._runtime, path, g)
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
            self._device_buffers[name] = cuda(rt.cudaMalloc(max(n, 1)), f"cudaMalloc({name}, {n} bytes)")
            self._generation[name] = 0
            # every tensor may cross the host boundary (inputs from the tracker, outputs to it)
            ptr = cuda(rt.cudaHostAlloc(max(n, 1), rt.cudaHostAllocDefault), f"cudaHostAlloc({name})")
            view = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (max(n, 1),))
            self._host_stage[name] = _HostStage(ptr, n, view)
        for eng in self.engines.values():
            for name in eng.inputs + eng.outputs:
                if not eng.context.set_tensor_address(name, self._device_buffers[name]):
                    raise EngineError(f"{eng.graph}: TensorRT rejected the address of {name}")

    @property
    def limits(self) -> ShapeLimits:
        """Largest objects / memory slots / pointer slots / points the engines accept."""
        ma, dec = self.engines["memory_attention"], self.engines["mask_decoder"]
        return ShapeLimits(
            objects=ma.max_shape["mem_feats"][0],
            mem_slots=ma.max_shape["mem_feats"][1],
            ptr_slots=ma.max_shape["obj_ptrs"][1],
            points=dec.max_shape["point_coords"][1],
        )

    @property
    def io_bytes(self) -> int:
        """Device memory of this backend's IO buffers (the same again is page-locked on the host)."""
        return sum(st.nbytes for st in self._host_stage.values())

    # ------------------------------------------------------------ host <-> device
    def _stage(self, name: str, arr: np.ndarray) -> np.ndarray:
        """A typed view of ``name``'s page-locked staging buffer filled with ``arr``."""
        st = self._host_stage[name]
        if arr.nbytes > st.nbytes:
            raise EngineError(f"{name}: {arr.nbytes} bytes exceed the {st.nbytes} bytes allocated at the largest profile shape")
        view = st.array[: arr.nbytes].view(arr.dtype).reshape(arr.shape)
        np.copyto(view, arr, casting="no")
        return view

    def _registered_source(self, name: str, arr: np.ndarray) -> tuple[int, int, int, int] | None:
        """``(ptr, rows, row_bytes, pitch)`` if ``arr`` can be copied by DMA from page-locked memory.

        The array that owns ``arr``'s memory is registered once and kept alive (so its address
        cannot be reused) until more than ``MAX_REGISTERED`` owners were seen.
        """
        if not self.pin_host_memory or name not in REGISTER_NAMES or arr.nbytes < REGISTER_MIN_BYTES:
            return None
        layout = strided_rows(arr)
        if layout is None:
            return None
        root = root_array(arr)
        key = root.ctypes.data
        if key not in self._registered:
            if key in self._register_failed or not root.flags.c_contiguous:
                return None
            rt = self._cuda.rt
            err = rt.cudaHostRegister(key, root.nbytes, rt.cudaHostRegisterDefault)[0]
            if err != self._cuda.ok:
                log.warning("cudaHostRegister of a %d-byte host array failed (%s); staging it instead", root.nbytes, err)
                self._register_failed.add(key)
                return None
            self._registered[key] = root  # keeps the memory alive while registered
            while len(self._registered) > MAX_REGISTERED:
                self._unregister(next(iter(self._registered)))
        self._registered.move_to_end(key)
        rows, row_bytes, pitch = layout
        return arr.ctypes.data, rows, row_bytes, pitch

    def _unregister(self, key: int) -> None:
        self._sync()
        self._drop_graphs()  # graphs may read from this address
        self._cuda.rt.cudaHostUnregister(key)
        self._registered.pop(key, None)

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
        self._download_op(arr.name, arr.shape)()
        self._sync()
        return self._host_copy(arr.name, arr.shape)

    def _sync(self) -> None:
        self._cuda(self._cuda.rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")


    # ----------------------------------------------------------------- running
    def _enqueue_op(self, graph: str):
        eng = self.engines[graph]

        def op():
            if not eng.context.execute_async_v3(self._stream_handle):
                raise EngineError(f"TensorRT failed to enqueue the {graph} engine (see the TensorRT log)")
            eng.note_enqueue()

        return op

    def _check_shape(self, graph: str, name: str, shape: tuple) -> None:
        eng = self.engines[graph]
        lo, hi = eng.min_shape[name], eng.max_shape[name]
        if len(shape) != len(hi) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise EngineError(
                f"{graph}: input {name} has shape {tuple(shape)}; the engine accepts {tuple(lo)} .. {tuple(hi)}. "
                "Rebuild the engines with larger limits (sam2-ros build --max-objects / --max-points / --cond-slots)"
            )

    def _prepare(self, graph: str, feeds: dict, produced: dict[str, _Engine]) -> tuple[list, tuple]:
        """Copies of ``graph``'s inputs + its launch; returns (ops, key part).

        ``produced`` maps tensor names written earlier in the same sequence to their engine:
        a :class:`Chained` feed reads that buffer in place.
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
                shape, op, src_key = produced[name].output_shape(name), None, ("chained",)
            else:
                shape, op, src_key = self._upload(name, value, eng.dtype[name])
            self._check_shape(graph, name, shape)
            shapes[name] = shape
            if op is not None:
                ops.append(op)
            key.append((name, tuple(shape), src_key))
        eng.set_shapes(shapes)
        ops.append(self._enqueue_op(graph))
        for name in eng.outputs:
            self._generation[name] += 1
            produced[name] = eng
        return ops, tuple(key)

    def _launch(self, key: tuple, ops: list) -> None:
        """Run ``ops`` on the stream: eagerly, or through a CUDA graph captured for ``key``.

        A graph is replayed only while every engine in it is still in the shape state of the
        capture: an eager enqueue of the same context with other shapes in between (a prompt
        for one object between tracking frames) may redo TensorRT's shape-dependent set-up
        that the graph relies on, so such a graph is dropped and captured again.
        """
        rt, cuda = self._cuda.rt, self._cuda
        if not self.use_cuda_graph or key in self._uncapturable:
            for op in ops:
                op()
            return
        engines = [self.engines[k[0]] for k in key]
        if key in self._graphs:
            graph, exe, epochs = self._graphs[key]
            if epochs == tuple(e.epoch for e in engines):
                self._graphs.move_to_end(key)
                cuda(rt.cudaGraphLaunch(exe, self._stream), "cudaGraphLaunch")
                return
            self._destroy_graph(key)
        # eager run; it is also the enqueue with exactly these shapes that TensorRT needs before a capture
        for op in ops:
            op()
        if key not in self._seen:
            self._seen[key] = None
            while len(self._seen) > 4 * MAX_GRAPHS:
                self._seen.popitem(last=False)
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
            self._uncapturable.add(key)
            if graph is not None:
                rt.cudaGraphDestroy(graph)
            return
        self._graphs[key] = (graph, exe, tuple(e.epoch for e in engines))
        while len(self._graphs) > MAX_GRAPHS:
            self._destroy_graph(next(iter(self._graphs)))

    def _destroy_graph(self, key: tuple) -> None:
        graph, exe, _ = self._graphs.pop(key)
        self._cuda.rt.cudaGraphExecDestroy(exe)
        self._cuda.rt.cudaGraphDestroy(graph)

    def _drop_graphs(self) -> None:
        for key in list(self._graphs):
            self._destroy_graph(key)

    def _run(self, steps: list[tuple[str, dict]], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run graphs in order on one stream, then copy ``outputs`` to the host."""
        if self.closed:
            raise EngineError("the TensorRT backend was closed")
        ops, key, produced = [], [], {}
        for graph, feeds in steps:
            o, k = self._prepare(graph, feeds, produced)
            ops += o
            key.append(k)
        for name in outputs:
            if name not in produced:
                raise EngineError(f"{name} is not an output of {[g for g, _ in steps]}")
        shapes = {name: produced[name].output_shape(name) for name in outputs}
        ops += [self._download_op(name, shapes[name]) for name in outputs]
        self._launch(tuple(key), ops)
        self._sync()
        return {name: self._host_copy(name, shapes[name]) for name in outputs}

    def _device_array(self, graph: str, name: str) -> DeviceArray:
        return DeviceArray(self, name, self.engines[graph].output_shape(name), self._dtype[name])

    # ---------------------------------------------------------------- protocol
    def encode_image(self, image: np.ndarray) -> ImageFeatures:
        self._run([("image_encoder", IMAGE_ENCODER.feeds(image))], outputs=[])
        return ImageFeatures(*(self._device_array("image_encoder", n) for n in IMAGE_ENCODER.outputs))

    def frame_embedding(self, feats: ImageFeatures) -> np.ndarray:
        return np.asarray(feats.image_embed)

    def attend_memory(self, feats, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid) -> DeviceArray:
        """-> pix_feat [B,256,h,w] as a :class:`DeviceArray`: it stays on the GPU for :meth:`decode`."""
        self._run(
            [("memory_attention", MEMORY_ATTENTION.feeds(
                feats.image_embed, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid))],
            outputs=[],
        )
        return self._device_array("memory_attention", "pix_feat")

    def decode(self, feats, pix_feat, no_mem, point_coords, point_labels, mask_input, has_mask, multimask) -> DecoderOutput:
        out = self._run(
            [("mask_decoder", decoder_feeds(feats, pix_feat, no_mem, point_coords, point_labels, mask_input, has_mask, multimask))],
            outputs=list(MASK_DECODER.outputs),
        )
        return DecoderOutput(*(out[n] for n in MASK_DECODER.outputs))

    def encode_memory(self, feats, low_res_masks, binarize, object_score_logits) -> np.ndarray:
        return self._run(
            [("memory_encoder", MEMORY_ENCODER.feeds(feats.image_embed, low_res_masks, binarize, object_score_logits))],
            outputs=list(MEMORY_ENCODER.outputs),
        )["maskmem"]

    # ------------------------------------------------------- fused tracking step
    def track_step(self, feats: ImageFeatures, attention_inputs: AttentionInputs, multimask: bool) -> tuple[DecoderOutput, np.ndarray]:
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
        """Free graphs, engines, device and page-locked memory and the stream. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        rt = self._cuda.rt
        rt.cudaStreamSynchronize(self._stream)
        for key in list(self._graphs):
            self._destroy_graph(key)
        self.engines = {}  # contexts and engines go before the memory they were bound to
        for key in list(self._registered):
            rt.cudaHostUnregister(key)
        self._registered.clear()
        for ptr in self._device_buffers.values():
            rt.cudaFree(ptr)
        for st in self._host_stage.values():
            rt.cudaFreeHost(st.ptr)
        self._device_buffers.clear()
        self._host_stage.clear()
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
