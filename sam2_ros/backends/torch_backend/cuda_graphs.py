"""CUDA-graph replay of the torch backend's image encoder and tracking step (memory attention ->
decoder -> memory encoder).

A tracking step of ``n`` objects launches a few hundred small kernels and the image encoder
several hundred more; on a GPU the host's launch overhead, not the GPU, then bounds the frame
rate. :class:`TrackStepGraphs` and :class:`EncoderGraphs` capture a call once per *key* into a
CUDA graph and replay it, as the TensorRT backend does with its engines: the first sighting of a
key runs eagerly, the second runs once more on a side stream (PyTorch's documented warm-up before
a capture: lazy cuBLAS / cuDNN set-up, autotuning, ``torch.compile`` compilations must not
happen inside a capture) and captures, later ones replay. Graphs live in a small LRU cache
(:class:`GraphCache`); a key whose capture fails is logged once and runs eagerly from then on.

What a replay bakes in, and how each input reaches it
------------------------------------------------------
A CUDA graph replays fixed kernels on fixed addresses. Everything a call may change is therefore
copied, before the replay and outside the graph, into *static* tensors the graph reads:

* the frame (the image encoder's input, keyed by its shape): a device-to-device copy, or one
  page-locked upload for a host frame;
* the frame's image features (new tensors every frame, or the history's copy of a past frame):
  device-to-device copies;
* the memory bank's handed-out views ``mem_feats [n, M, HW, 64]`` / ``obj_ptrs [n, P, 256]``:
  device-to-device copies into static mirrors. The graph does not read the bank in place, so a
  graph does not depend on whose bank it serves: graphs captured by ``TorchBackend.warm_up`` on
  scratch buffers serve the tracker's bank, a second tracker on the same backend, or a row range
  of the catch-up of a late prompt. The copy is what the step reads anyway (at 1024 px 1 MiB per
  object and slot, tens of microseconds on a current GPU, against milliseconds of attention);
* the small host arrays (temporal rows, pointer offsets, validity for the masked path, and the
  packing indices of the dense path: each group's rows and valid slots, the row order) are packed
  into one page-locked host buffer and uploaded by one non-blocking copy (:class:`HostUpload`).

So the key holds only what fixes the kernels and shapes: ``n``, ``M``, ``P``, the attention path
(masked with its slot counts; dense over the bank as it is; dense over packed groups with each
group's row count and valid-slot counts, and whether rows need reordering), ``multimask``, and the
features' shapes. The packing indices are static *inputs*, not part of the key: in steady state
the positions of an object's holes (a conditioning slot not used by every object) stay the same
in count, and a replay gathers exactly the slots the eager path gathers.

Rows whose recent rings are still filling (the ~15 frames after an object's first prompt, or
after a prompt on a tracked object, while its conditioning frame is in the recent window) would
change the packed key on every frame, each key a first sighting run eagerly and never replayed.
While any row's rings are not full the step therefore takes the masked path, whose key
``(n, M, P)`` stays the same until the rings are full: one capture, then replays. The first
sighting of a key runs the same computation as its replay (and so does the backend's
``track_step`` without graphs), so eager and replayed frames agree bit for bit.

Outputs are static tensors written by the graph's last kernels. The tracking step's are valid
until the next ``track_step`` (the static buffers are shared by all keys of a size): the memory
bank copies them into its slots at once (``MemoryBank.set_tracked``). The image encoder's are
copied into fresh tensors per call, so the tracker and the history may keep a frame's features.

Capture conditions, all met by the steps: no host synchronisation inside them (indices are device
tensors, constants are made before the capture, no ``.item()``), no host-to-device copy inside them,
no new output visible outside (the graph copies into preallocated statics; its intermediates come
from one private memory pool shared by every graph of the backend, safe because replays never
overlap and nothing of a graph's pool outlives its replay), no RNG (inference, dropout off),
autocast without its weight cache (parameters do not require grad, so autocast caches nothing).
The capture calls ``CUDAGraph.capture_begin(pool=...)`` / ``capture_end()`` on the side stream
itself: ``torch.cuda.graph`` would also synchronise the device and empty the allocator's caches
(device and page-locked) at every capture, which a key first seen mid-stream would pay.

Devices: everything names the backend's device (:func:`.storage.device_scope`): the side stream,
the capture, the replay and the upload events run under it, and an upload's "done" event is
recorded on the stream the copy was queued on, the device's current stream, not the calling
thread's current device's.

Testing without a GPU: the capture/replay mechanism is behind :class:`Capturer`. On the CPU,
``cuda_graph="emulate"`` uses :class:`EmulatedCapturer`, whose "capture" keeps the step's closure
and whose "replay" runs it again. The closure reads nothing but the static tensors (and the
modules' weights), so a static input that is not refreshed gives a stale, wrong result exactly as a
real replay would, and the plumbing above is tested on the CPU (``tests/test_torch_fast_path.py``).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch

from sam2_ros.attention_packing import dense_groups, row_order
from sam2_ros.backends.base import DecoderOutput, ImageFeatures
from sam2_ros.backends.torch_backend.storage import ALIGN, PinnedBuffer, device_scope, torch_dtype
from sam2_ros.memory_bank import AttentionInputs

log = logging.getLogger(__name__)

#: Graphs kept per backend and kind (least recently used dropped first); ``warm_up`` raises it to hold its keys.
MAX_GRAPHS = 16
#: Values of ``TorchBackend(cuda_graph=...)``.
CUDA_GRAPH_OPTIONS = ("auto", True, False, "emulate")


def graph_mode(option: str | bool, device: torch.device) -> str | None:
    """The capture mode for the backend option ``cuda_graph``: ``"cuda"``, ``"emulate"`` or None (eager).

    ``"auto"``: CUDA graphs on a CUDA device, eager elsewhere; ``True`` needs a CUDA device;
    ``"emulate"`` (any device) replays by re-running the captured closure (tests without a GPU).
    Strings ``"true"``/``"on"``/``"false"``/``"off"`` (parameters, flags) mean the booleans.
    """
    if isinstance(option, str):
        option = {"true": True, "on": True, "false": False, "off": False}.get(option.strip().lower(), option.strip().lower())
    if option == "auto":
        return "cuda" if device.type == "cuda" else None
    if option is True or option is False:
        if option and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device, got {device} (use 'emulate' to test the replay on the CPU)")
        return "cuda" if option else None
    if option == "emulate":
        return "emulate"
    raise ValueError(f"cuda_graph must be one of 'auto', True, False, 'emulate'; got {option!r}")


# ----------------------------------------------------------------------------- capture / replay
class Capturer(Protocol):
    """How a step is warmed up, captured and replayed."""

    name: str

    def warm_up(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` eagerly the way a capture needs it before; returns its result."""

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Record ``fn``; returns a callable that replays it (reading the same tensors)."""


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    return []


class CudaGraphCapturer:
    """``torch.cuda.CUDAGraph`` capture on a side stream of ``device``; every graph shares one memory pool.

    Each method makes ``device`` current for its duration (the calling thread's current device
    may be another) and leaves the thread's current device and streams as it found them.
    """

    name = "cuda"

    def __init__(self, device: torch.device):
        self.device = device
        with device_scope(device):
            self.stream = torch.cuda.Stream(device)
            self.pool = torch.cuda.graph_pool_handle()

    def warm_up(self, fn):
        with device_scope(self.device):
            main = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(main)  # the static inputs were written on the main stream
            with torch.cuda.stream(self.stream):
                out = fn()
            main.wait_stream(self.stream)
            for t in _tensors(out):  # read on the main stream: not reused on the side stream before that
                t.record_stream(main)
        return out

    def capture(self, fn):
        graph = torch.cuda.CUDAGraph()
        with device_scope(self.device):
            main = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(main)
            # the capture stream is the warm-up's (lazily created library handles are per stream);
            # "thread_local": another thread of the process (a ROS callback) may use CUDA meanwhile.
            # No synchronize / empty_cache (torch.cuda.graph's): the pool is private, the statics are
            # written on the main stream, which the side stream waits for.
            with torch.cuda.stream(self.stream):
                graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
                try:
                    fn()
                except BaseException:
                    try:  # end the (invalidated) capture, so that the stream leaves capture mode
                        graph.capture_end()
                    except Exception:  # noqa: BLE001 - the capture's own error is the one to report
                        pass
                    raise
                graph.capture_end()
            main.wait_stream(self.stream)
        device = self.device

        def replay() -> None:
            with device_scope(device):  # launched on the device's current stream
                graph.replay()

        replay.graph = graph  # kept alive with the replay
        return replay


class EmulatedCapturer:
    """CPU stand-in: the "graph" is the closure itself, and a replay runs it again.

    The closure reads only static tensors, so the emulation fails (stale data) wherever a real
    replay would: a static input not refreshed before the replay, an output read after the next one.
    """

    name = "emulate"

    def warm_up(self, fn):
        return fn()

    def capture(self, fn):
        return fn


# ----------------------------------------------------------------------------- static tensors
class StaticBuffers:
    """Static tensors shared by every captured step of a cache, one growable buffer per name.

    Steps of different sizes take views of the same buffer (their replays never overlap and each
    refreshes its view first); a step keeps its view, so a buffer that had to grow stays alive for
    the steps captured on it.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._flat: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        flat = self._flat.get((name, dtype))
        if flat is None or flat.numel() < numel:
            size = max(numel, 2 * flat.numel()) if flat is not None else numel
            flat = self._flat[(name, dtype)] = torch.zeros(size, dtype=dtype, device=self.device)
        return flat[:numel].view(shape)


class HostUpload:
    """Small host arrays of a call, packed into one (page-locked on CUDA) buffer and uploaded by one copy.

    ``views`` are the device tensors the graph reads, at fixed addresses; :meth:`upload` writes
    the call's values into the host buffer and copies it into the device buffer (asynchronously
    from page-locked memory, on ``device``'s current stream, whatever the calling thread's current
    device; the next upload waits for the previous one before reusing the host buffer).
    """

    def __init__(self, layout: list[tuple[str, tuple[int, ...], np.dtype]], device: torch.device):
        offsets, nbytes = [], 0
        for _, shape, dtype in layout:
            offsets.append(nbytes)
            nbytes += -(-math.prod(shape) * np.dtype(dtype).itemsize // ALIGN) * ALIGN
        nbytes = max(nbytes, ALIGN)
        self.device = device
        self.cuda = device.type == "cuda"
        self._pinned = PinnedBuffer(device, nbytes) if self.cuda else None
        self.host = self._pinned.host[:nbytes] if self.cuda else np.zeros(nbytes, np.uint8)
        self.device_bytes = torch.zeros(nbytes, dtype=torch.uint8, device=device)
        self.host_views: dict[str, np.ndarray] = {}
        self.views: dict[str, torch.Tensor] = {}
        for (name, shape, dtype), off in zip(layout, offsets):
            dtype = np.dtype(dtype)
            size = math.prod(shape) * dtype.itemsize
            self.host_views[name] = self.host[off : off + size].view(dtype).reshape(shape)
            self.views[name] = self.device_bytes[off : off + size].view(torch_dtype(dtype)).view(shape)

    def upload(self, values: dict[str, np.ndarray]) -> None:
        with device_scope(self.device):
            if self.cuda:
                self._pinned.acquire()  # the previous upload has left the host buffer
            for name, value in values.items():
                np.copyto(self.host_views[name], value)
            self.device_bytes.copy_(torch.from_numpy(self.host), non_blocking=self.cuda)
            if self.cuda:
                self._pinned.release()  # recorded on the device's current stream: the copy's


# ----------------------------------------------------------------------------- plans
def _fields(feats: ImageFeatures) -> tuple:
    return feats.feat_s0, feats.feat_s1, feats.image_embed


def rings_filling(mem_valid: np.ndarray, ptr_valid: np.ndarray, rings: tuple[int, int]) -> bool:
    """Whether a row's recent memory ring (the first ``rings[0]`` slots) or pointer ring (the first
    ``rings[1]``) has an empty slot: an object in its first frames, or a conditioning frame in the
    recent window. Their packed key would change from frame to frame."""
    r, rp = rings
    return not (np.asarray(mem_valid)[:, :r].all() and np.asarray(ptr_valid)[:, :rp].all())


@dataclass
class AttentionPlan:
    """How one memory-attention call runs and the host arrays it reads."""

    path: str  # "masked" | "whole" (dense over the bank as it is) | "packed" (dense per group)
    shapes: tuple  # packed: (rows, valid memory slots, valid pointer slots) per group
    reorder: bool  # the packed groups' rows are not in row order
    values: dict[str, np.ndarray]  # host arrays by name, in upload layout order

    @property
    def groups(self) -> int:
        return len(self.shapes)


def plan_attention(ai: AttentionInputs, dense: bool = True, rings: tuple[int, int] | None = None) -> AttentionPlan:
    """The path of a memory-attention call (as ``PackedAttention.attend_memory`` chooses it) and its
    host arrays. ``rings``: (recent memory slots, recent pointer slots): rows whose rings are
    filling take the masked path (a key that does not change while they fill); None: pack them."""
    values = {"mem_tpos_row": np.asarray(ai.mem_tpos_row, np.int64), "ptr_tpos": np.asarray(ai.ptr_tpos, np.float32)}
    young = rings is not None and rings_filling(ai.mem_valid, ai.ptr_valid, rings)
    groups = dense_groups(ai.mem_valid, ai.ptr_valid) if dense and not young else None
    if groups is None:
        values["mem_valid"] = np.asarray(ai.mem_valid, bool)
        values["ptr_valid"] = np.asarray(ai.ptr_valid, bool)
        return AttentionPlan("masked", (), False, values)
    if groups[0].whole:
        return AttentionPlan("whole", (), False, values)
    for i, g in enumerate(groups):
        values[f"rows{i}"] = g.rows.astype(np.int64)
        values[f"mem_slots{i}"] = g.mem_slots.astype(np.int64)
        values[f"ptr_slots{i}"] = g.ptr_slots.astype(np.int64)
    order = row_order(groups)
    if order is not None:
        values["order"] = order.astype(np.int64)
    shapes = tuple((g.rows.size, g.mem_slots.shape[1], g.ptr_slots.shape[1]) for g in groups)
    return AttentionPlan("packed", shapes, order is not None, values)


@dataclass
class StepPlan:
    """One call of ``track_step``: its key and the host arrays its replay reads."""

    key: tuple
    attention: AttentionPlan
    n: int
    multimask: bool

    @property
    def path(self) -> str:
        return self.attention.path

    @property
    def values(self) -> dict[str, np.ndarray]:
        return self.attention.values

    @property
    def layout(self) -> list[tuple[str, tuple[int, ...], np.dtype]]:
        return [(k, v.shape, v.dtype) for k, v in self.values.items()]


def plan_step(feats: ImageFeatures, ai: AttentionInputs, multimask: bool, dense: bool = True,
              rings: tuple[int, int] | None = None) -> StepPlan:
    """The key of a tracking-step call and its host inputs (see :func:`plan_attention`)."""
    n, m = ai.mem_valid.shape
    p = ai.ptr_valid.shape[1]
    att = plan_attention(ai, dense, rings)
    feat_shapes = tuple((tuple(t.shape), str(t.dtype)) for t in _fields(feats))
    bank = (tuple(ai.mem_feats.shape), tuple(ai.obj_ptrs.shape), str(ai.mem_feats.dtype))
    key = (att.path, n, m, p, att.shapes, att.reorder, bool(multimask), feat_shapes, bank)
    return StepPlan(key, att, n, bool(multimask))


# ----------------------------------------------------------------------------- the computations
def attend(backend, plan: AttentionPlan, embed: torch.Tensor, mem_feats: torch.Tensor, obj_ptrs: torch.Tensor,
           h: dict[str, torch.Tensor]) -> torch.Tensor:
    """Memory attention as ``plan`` says, ``h`` the plan's host arrays as device tensors: what
    ``PackedAttention.attend_memory`` computes, with every index a device tensor (no upload)."""
    b = backend
    with b.inference():
        if plan.path == "masked":
            return b._call(b.memory_attention, embed, mem_feats, h["mem_tpos_row"], h["mem_valid"], obj_ptrs,
                           h["ptr_tpos"], h["ptr_valid"])
        if plan.path == "whole":
            return b._call(b.memory_attention_dense, embed, mem_feats, h["mem_tpos_row"], obj_ptrs, h["ptr_tpos"])
        parts = []
        for i in range(plan.groups):
            r, ms, ps = h[f"rows{i}"][:, None], h[f"mem_slots{i}"], h[f"ptr_slots{i}"]
            parts.append(b._call(b.memory_attention_dense, embed, mem_feats[r, ms], h["mem_tpos_row"][r, ms],
                                 obj_ptrs[r, ps], h["ptr_tpos"][r, ps]))
        pix = parts[0] if len(parts) == 1 else torch.cat(parts)
        return pix[h["order"]] if plan.reorder else pix


def step_constants(backend, n: int, multimask: bool) -> tuple[torch.Tensor, ...]:
    """The tracking step's constant decoder inputs (the eager path's tensors, made once per shape):
    zeros [n], no point [n,1,2], label -1 [n,1], no mask [n,1,lr,lr], multimask flag [n]."""
    c, lr = backend._constant, backend.manifest.spec.low_res_size
    return (c(np.float32, (n,), 0.0), c(np.float32, (n, 1, 2), 0.0), c(np.int32, (n, 1), -1),
            c(np.float32, (n, 1, lr, lr), 0.0), c(np.float32, (n,), float(multimask)))


def track_step_outputs(backend, plan: StepPlan, feats: ImageFeatures, mem_feats: torch.Tensor,
                       obj_ptrs: torch.Tensor, h: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The tracking step (attention -> decoder -> memory encoder): low_res, iou, obj_ptr, score, maskmem."""
    b = backend
    zeros, no_points, no_labels, no_mask, multimask = step_constants(b, plan.n, plan.multimask)
    pix = attend(b, plan.attention, feats.image_embed, mem_feats, obj_ptrs, h)
    out = b._call(b.mask_decoder, pix, feats.feat_s0, feats.feat_s1, zeros, no_points, no_labels, no_mask, zeros,
                  multimask)
    mem = b._call(b.memory_encoder, feats.image_embed, out[0], zeros, out[3])
    return (*out, mem)


# ----------------------------------------------------------------------------- the cache
class GraphCache:
    """Captured calls by key: a key's first sighting runs eagerly, the second captures, later ones replay.

    Counters (tests, logs): ``eager_runs`` (first sightings and uncapturable keys), ``captures``,
    ``replays``, ``failed`` (keys whose capture failed); ``last_event`` is the last call's
    ``"eager"``, ``"capture"`` or ``"replay"``.
    """

    what = "call"

    def __init__(self, capturer: Capturer, max_graphs: int = MAX_GRAPHS):
        self.capturer = capturer
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, Any] = OrderedDict()
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        self.failed: set[tuple] = set()
        self.eager_runs = self.captures = self.replays = 0
        self.last_event: str | None = None

    @property
    def keys(self) -> list[tuple]:
        """Keys with a captured graph, least recently used first."""
        return list(self._graphs)

    def _run(self, key: tuple, eager: Callable[[], tuple], capture: Callable[[], tuple[Any, tuple]],
             load: Callable[[Any], None]) -> tuple:
        """The outputs of a call with ``key``: ``eager()``'s, or those of the step that ``capture()``
        returns (with its outputs), replayed after ``load(step)``."""
        step = self._graphs.get(key)
        if step is not None:
            self._graphs.move_to_end(key)
            load(step)
            step.replay()
            self.replays += 1
            self.last_event = "replay"
            return step.outputs
        if key not in self.failed and key in self._seen:
            try:
                step, outputs = capture()
            except Exception as e:  # noqa: BLE001 - any capture failure means: run this key eagerly
                self.failed.add(key)
                log.warning("%s graph capture of the %s failed for key %s (%s: %s); it runs eagerly from now on",
                            self.capturer.name, self.what, key[:7], type(e).__name__, e)
            else:
                self._seen.pop(key, None)
                self._graphs[key] = step
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
                self.captures += 1
                self.last_event = "capture"
                return outputs
        elif key not in self.failed:
            self._seen[key] = None
            while len(self._seen) > 4 * self.max_graphs:
                self._seen.popitem(last=False)
        self.eager_runs += 1
        self.last_event = "eager"
        return eager()

    def _clear(self) -> None:
        self._graphs.clear()
        self._seen.clear()


# ----------------------------------------------------------------------------- the tracking step
class CapturedTrackStep:
    """One key's tracking step as a function of static tensors: :meth:`load` the call's inputs
    into them, then :attr:`replay`; :attr:`outputs` hold the results until the next step."""

    def __init__(self, backend, plan: StepPlan, statics: StaticBuffers, feats: ImageFeatures, ai: AttentionInputs):
        self.backend, self.plan = backend, plan
        self.feats = ImageFeatures(*(statics.get(f"feats{i}", tuple(t.shape), t.dtype) for i, t in enumerate(_fields(feats))))
        self.mem_feats = statics.get("mem_feats", tuple(ai.mem_feats.shape), ai.mem_feats.dtype)
        self.obj_ptrs = statics.get("obj_ptrs", tuple(ai.obj_ptrs.shape), ai.obj_ptrs.dtype)
        self.host = HostUpload(plan.layout, backend.device)
        step_constants(backend, plan.n, plan.multimask)  # made now: a capture must not upload
        self._statics = statics
        self.outputs: tuple[torch.Tensor, ...] | None = None
        self.replay: Callable[[], None] | None = None

    def load(self, feats: ImageFeatures, ai: AttentionInputs, plan: StepPlan) -> None:
        """Copy this call's inputs into the static tensors (outside the graph)."""
        with self.backend.inference():
            for dst, src in zip(_fields(self.feats), _fields(feats)):
                dst.copy_(src)
            self.mem_feats.copy_(ai.mem_feats)
            self.obj_ptrs.copy_(ai.obj_ptrs)
        self.host.upload(plan.values)

    def compute(self) -> tuple[torch.Tensor, ...]:
        """The step on the static tensors only: what the eager run computes."""
        return track_step_outputs(self.backend, self.plan, self.feats, self.mem_feats, self.obj_ptrs, self.host.views)

    def _body(self) -> None:
        """What the graph holds: the step, then a copy into the static outputs."""
        outs = self.compute()
        with self.backend.inference():
            for dst, src in zip(self.outputs, outs):
                dst.copy_(src)

    def capture(self, capturer: Capturer, feats: ImageFeatures, ai: AttentionInputs) -> tuple[torch.Tensor, ...]:
        """Warm up on this call's inputs, allocate the static outputs, capture. Returns the
        warm-up's results (in the static outputs: a capture computes nothing)."""
        self.load(feats, ai, self.plan)
        outs = capturer.warm_up(self.compute)
        self.outputs = tuple(
            self._statics.get(f"out{i}", tuple(t.shape), t.dtype) for i, t in enumerate(outs)
        )
        with self.backend.inference():
            for dst, src in zip(self.outputs, outs):
                dst.copy_(src)
        del outs  # the warm-up's own tensors: their memory is free once the copies above ran
        self.replay = capturer.capture(self._body)
        return self.outputs


class TrackStepGraphs(GraphCache):
    """``track_step`` through captured graphs, one per key (see the module docstring)."""

    what = "tracking step"

    def __init__(self, backend, capturer: Capturer, max_graphs: int = MAX_GRAPHS):
        super().__init__(capturer, max_graphs)
        self.backend = backend
        self.statics = StaticBuffers(backend.device)

    def track_step(self, feats: ImageFeatures, ai: AttentionInputs, multimask: bool) -> tuple[DecoderOutput, torch.Tensor]:
        b = self.backend
        plan = plan_step(feats, ai, multimask, dense=b.has_dense_attention, rings=b.rings)

        def eager():  # the plan's computation (one upload of its host arrays), as the replay's
            with b.inference():
                h = b.staging.upload_named(plan.values)
            return track_step_outputs(b, plan, feats, ai.mem_feats, ai.obj_ptrs, h)

        def capture():
            step = CapturedTrackStep(b, plan, self.statics, feats, ai)
            return step, step.capture(self.capturer, feats, ai)

        outputs = self._run(plan.key, eager, capture, lambda step: step.load(feats, ai, plan))
        return DecoderOutput(*outputs[:4]), outputs[4]

    def clear(self) -> None:
        """Drop every graph and static buffer."""
        self._clear()
        self.statics = StaticBuffers(self.backend.device)


# ----------------------------------------------------------------------------- the image encoder
class CapturedEncoder:
    """The image encoder for one input shape as a function of a static input."""

    def __init__(self, backend, statics: StaticBuffers, image: torch.Tensor):
        self.backend = backend
        self.image = statics.get("image", tuple(image.shape), image.dtype)
        self._statics = statics
        self.outputs: tuple[torch.Tensor, ...] | None = None
        self.replay: Callable[[], None] | None = None

    def load(self, image: torch.Tensor) -> None:
        """Copy this call's frame into the static input (outside the graph)."""
        with self.backend.inference():
            self.image.copy_(image)

    def compute(self) -> tuple[torch.Tensor, ...]:
        b = self.backend
        return tuple(b._call(b.image_encoder, self.image))

    def _body(self) -> None:
        outs = self.compute()
        with self.backend.inference():
            for dst, src in zip(self.outputs, outs):
                dst.copy_(src)

    def capture(self, capturer: Capturer, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Warm up on ``image``, allocate the static outputs, capture; returns the warm-up's results."""
        self.load(image)
        outs = capturer.warm_up(self.compute)
        self.outputs = tuple(self._statics.get(f"out{i}", tuple(t.shape), t.dtype) for i, t in enumerate(outs))
        with self.backend.inference():
            for dst, src in zip(self.outputs, outs):
                dst.copy_(src)
        del outs
        self.replay = capturer.capture(self._body)
        return self.outputs


class EncoderGraphs(GraphCache):
    """``encode_image`` through captured graphs, one per input shape and type. The features are
    copied out of the static outputs into fresh tensors: the caller may keep them."""

    what = "image encoder"

    def __init__(self, backend, capturer: Capturer, max_graphs: int = 8):
        super().__init__(capturer, max_graphs)
        self.backend = backend
        self.statics = StaticBuffers(backend.device)

    def encode(self, image: np.ndarray | torch.Tensor) -> ImageFeatures:
        b = self.backend
        if not isinstance(image, torch.Tensor):
            image = b.staging.upload([image])[0]  # one page-locked, non-blocking copy on CUDA
        image = image.to(b.device)
        key = (tuple(image.shape), image.dtype)

        def capture():
            step = CapturedEncoder(b, self.statics, image)
            return step, step.capture(self.capturer, image)

        outputs = self._run(key, lambda: tuple(b._call(b.image_encoder, image)), capture, lambda s: s.load(image))
        if self.last_event != "eager":
            with b.inference():
                outputs = tuple(t.clone() for t in outputs)
        return ImageFeatures(*outputs)

    def clear(self) -> None:
        """Drop every graph and static buffer."""
        self._clear()
        self.statics = StaticBuffers(self.backend.device)
