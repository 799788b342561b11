"""CUDA-graph replay of the torch backend's tracking step (memory attention -> decoder -> memory encoder).

A tracking step of ``n`` objects launches a few hundred small kernels; on a GPU the host's launch
overhead, not the GPU, then bounds the frame rate. :class:`TrackStepGraphs` captures the whole
step once per *key* into a CUDA graph and replays it, as the TensorRT backend does with its engines:
the first sighting of a key runs eagerly, the second runs once more on a side stream (PyTorch's
documented warm-up before a capture: lazy cuBLAS / cuDNN set-up, autotuning, ``torch.compile``
compilations must not happen inside a capture) and captures, later ones replay. Graphs live in a
small LRU cache; a key whose capture fails is logged once and runs eagerly from then on.

What a replay bakes in, and how each input reaches it
------------------------------------------------------
A CUDA graph replays fixed kernels on fixed addresses. Everything a call may change is therefore
copied, before the replay and outside the graph, into *static* tensors the graph reads:

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
  into one page-locked host buffer and uploaded by one ``torch.from_numpy(...)`` copy.

So the key holds only what fixes the kernels and shapes: ``n``, ``M``, ``P``, the attention path
(masked with its slot counts; dense over the bank as it is; dense over packed groups with each
group's row count and valid-slot counts, and whether rows need reordering), ``multimask``, and the
features' shapes. The packing indices are static *inputs*, not part of the key: in steady state
the positions of an object's holes (a recent conditioning frame's ring slot) rotate while their
counts stay the same, and a replay gathers exactly the slots the eager path gathers.

Outputs are static tensors written by the graph's last kernels. They are valid until the next
``track_step`` (the static buffers are shared by all keys of a size): the memory bank copies them
into its slots at once (``MemoryBank.set_tracked``).

Capture conditions, all met by the step: no host synchronisation inside it (indices are device
tensors, constants are made before the capture, no ``.item()``), no host-to-device copy inside it,
no new output visible outside (the graph copies into preallocated statics; its intermediates come
from one private memory pool shared by every graph of the backend, safe because replays never
overlap and nothing of a graph's pool outlives its replay), no RNG (inference, dropout off),
autocast without its weight cache (parameters do not require grad, so autocast caches nothing).

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
from sam2_ros.backends.base import ComposedTrackStep, DecoderOutput, ImageFeatures
from sam2_ros.memory_bank import AttentionInputs

log = logging.getLogger(__name__)

#: Graphs kept per backend (least recently used dropped first); ``warm_up`` raises it to hold its keys.
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


class CudaGraphCapturer:
    """``torch.cuda.CUDAGraph`` capture on a side stream; every graph shares one memory pool."""

    name = "cuda"

    def __init__(self, device: torch.device):
        self.device = device
        with torch.cuda.device(device):
            self.stream = torch.cuda.Stream(device)
            self.pool = torch.cuda.graph_pool_handle()

    def warm_up(self, fn):
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)  # the static inputs were written on the main stream
        with torch.cuda.stream(self.stream):
            out = fn()
        main.wait_stream(self.stream)
        return out

    def capture(self, fn):
        graph = torch.cuda.CUDAGraph()
        main = torch.cuda.current_stream(self.device)
        try:
            # the capture stream is the warm-up's (lazily created library handles are per stream);
            # "thread_local": another thread of the process (a ROS callback) may use CUDA meanwhile
            with torch.cuda.device(self.device), torch.cuda.graph(
                graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"
            ):
                fn()
        finally:
            # a failing capture_end leaves torch.cuda.graph's stream context entered
            torch.cuda.set_stream(main)
        return graph.replay


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
    """Static tensors shared by every captured step of a backend, one growable buffer per name.

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


_TORCH_DTYPES = {np.dtype(np.bool_): torch.bool, np.dtype(np.int64): torch.int64, np.dtype(np.int32): torch.int32,
                 np.dtype(np.float32): torch.float32}


class HostUpload:
    """Small host arrays of a call, packed into one (page-locked on CUDA) buffer and uploaded by one copy.

    ``views`` are the device tensors the graph reads, at fixed addresses; :meth:`upload` writes
    the call's values into the host buffer and copies it into the device buffer (asynchronously
    from page-locked memory; the next upload waits for the previous one before reusing the host
    buffer).
    """

    _ALIGN = 8

    def __init__(self, layout: list[tuple[str, tuple[int, ...], np.dtype]], device: torch.device):
        offsets, nbytes = [], 0
        for _, shape, dtype in layout:
            offsets.append(nbytes)
            nbytes += -(-math.prod(shape) * np.dtype(dtype).itemsize // self._ALIGN) * self._ALIGN
        self.cuda = device.type == "cuda"
        if self.cuda:  # the tensor owns the page-locked memory; the numpy view writes into it
            self._pinned = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
            self.host = self._pinned.numpy()
        else:
            self.host = np.zeros(max(nbytes, 1), np.uint8)
        self.device_bytes = torch.zeros(max(nbytes, 1), dtype=torch.uint8, device=device)
        self.host_views: dict[str, np.ndarray] = {}
        self.views: dict[str, torch.Tensor] = {}
        for (name, shape, dtype), off in zip(layout, offsets):
            dtype = np.dtype(dtype)
            size = math.prod(shape) * dtype.itemsize
            self.host_views[name] = self.host[off : off + size].view(dtype).reshape(shape)
            self.views[name] = self.device_bytes[off : off + size].view(_TORCH_DTYPES[dtype]).view(shape)
        self._done = torch.cuda.Event() if self.cuda else None  # recorded after each upload

    def upload(self, values: dict[str, np.ndarray]) -> None:
        if self.cuda:
            self._done.synchronize()  # the previous upload has left the host buffer (a no-op before the first)
        for name, value in values.items():
            np.copyto(self.host_views[name], value)
        self.device_bytes.copy_(torch.from_numpy(self.host), non_blocking=self.cuda)
        if self.cuda:
            self._done.record()


# ----------------------------------------------------------------------------- the tracking step
def _fields(feats: ImageFeatures) -> tuple:
    return feats.feat_s0, feats.feat_s1, feats.image_embed


@dataclass
class StepPlan:
    """One call of ``track_step``: its key and the host arrays its replay reads."""

    key: tuple
    path: str  # "masked" | "whole" (dense over the bank as it is) | "packed" (dense per group)
    n: int
    multimask: bool
    groups: int  # packed groups
    reorder: bool  # the packed groups' rows are not in row order
    values: dict[str, np.ndarray]  # host arrays by name, in upload layout order

    @property
    def layout(self) -> list[tuple[str, tuple[int, ...], np.dtype]]:
        return [(k, v.shape, v.dtype) for k, v in self.values.items()]


def plan_step(feats: ImageFeatures, ai: AttentionInputs, multimask: bool, dense: bool = True) -> StepPlan:
    """The key of a tracking-step call and its host inputs: what :class:`PackedAttention` would run."""
    n, m = ai.mem_valid.shape
    p = ai.ptr_valid.shape[1]
    values = {"mem_tpos_row": np.asarray(ai.mem_tpos_row, np.int64), "ptr_tpos": np.asarray(ai.ptr_tpos, np.float32)}
    groups = dense_groups(ai.mem_valid, ai.ptr_valid) if dense else None
    shapes: tuple = ()
    reorder = False
    if groups is None:
        path = "masked"
        values["mem_valid"] = np.asarray(ai.mem_valid, bool)
        values["ptr_valid"] = np.asarray(ai.ptr_valid, bool)
    elif groups[0].whole:
        path = "whole"
    else:
        path = "packed"
        for i, g in enumerate(groups):
            values[f"rows{i}"] = g.rows.astype(np.int64)
            values[f"mem_slots{i}"] = g.mem_slots.astype(np.int64)
            values[f"ptr_slots{i}"] = g.ptr_slots.astype(np.int64)
        order = row_order(groups)
        reorder = order is not None
        if reorder:
            values["order"] = order.astype(np.int64)
        shapes = tuple((g.rows.size, g.mem_slots.shape[1], g.ptr_slots.shape[1]) for g in groups)
    feat_shapes = tuple((tuple(t.shape), str(t.dtype)) for t in _fields(feats))
    bank = (tuple(ai.mem_feats.shape), tuple(ai.obj_ptrs.shape), str(ai.mem_feats.dtype))
    key = (path, n, m, p, shapes, reorder, bool(multimask), feat_shapes, bank)
    return StepPlan(key, path, n, bool(multimask), len(shapes), reorder, values)


class CapturedTrackStep:
    """One key's tracking step as a function of static tensors: :meth:`load` the call's inputs
    into them, then :attr:`replay`; :attr:`outputs` hold the results until the next step."""

    def __init__(self, backend, plan: StepPlan, statics: StaticBuffers, feats: ImageFeatures, ai: AttentionInputs):
        self.backend, self.plan = backend, plan
        self.feats = ImageFeatures(*(statics.get(f"feats{i}", tuple(t.shape), t.dtype) for i, t in enumerate(_fields(feats))))
        self.mem_feats = statics.get("mem_feats", tuple(ai.mem_feats.shape), ai.mem_feats.dtype)
        self.obj_ptrs = statics.get("obj_ptrs", tuple(ai.obj_ptrs.shape), ai.obj_ptrs.dtype)
        self.host = HostUpload(plan.layout, backend.device)
        n, lr = plan.n, backend.manifest.spec.low_res_size
        # the eager path's constants (the same tensors), made now: a capture must not upload
        c = backend._constant
        self.zeros = c(np.float32, (n,), 0.0)
        self.no_points = c(np.float32, (n, 1, 2), 0.0)
        self.no_labels = c(np.int32, (n, 1), -1)
        self.no_mask = c(np.float32, (n, 1, lr, lr), 0.0)
        self.multimask = c(np.float32, (n,), float(plan.multimask))
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
        """The step on the static tensors only: what ``ComposedTrackStep.track_step`` computes."""
        b, plan, h = self.backend, self.plan, self.host.views
        embed = self.feats.image_embed
        with self.backend.inference():
            if plan.path == "masked":
                pix = b._call(b.memory_attention, embed, self.mem_feats, h["mem_tpos_row"], h["mem_valid"],
                              self.obj_ptrs, h["ptr_tpos"], h["ptr_valid"])
            elif plan.path == "whole":
                pix = b._call(b.memory_attention_dense, embed, self.mem_feats, h["mem_tpos_row"], self.obj_ptrs,
                              h["ptr_tpos"])
            else:
                parts = []
                for i in range(plan.groups):
                    r, ms, ps = h[f"rows{i}"][:, None], h[f"mem_slots{i}"], h[f"ptr_slots{i}"]
                    parts.append(b._call(b.memory_attention_dense, embed, self.mem_feats[r, ms],
                                         h["mem_tpos_row"][r, ms], self.obj_ptrs[r, ps], h["ptr_tpos"][r, ps]))
                pix = parts[0] if len(parts) == 1 else torch.cat(parts)
                if plan.reorder:
                    pix = pix[h["order"]]
            out = b._call(b.mask_decoder, pix, self.feats.feat_s0, self.feats.feat_s1, self.zeros, self.no_points,
                          self.no_labels, self.no_mask, self.zeros, self.multimask)
            mem = b._call(b.memory_encoder, embed, out[0], self.zeros, out[3])
        return (*out, mem)

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
        self.replay = capturer.capture(self._body)
        del outs  # the warm-up's own tensors: kept until the capture synchronised the device
        return self.outputs


class TrackStepGraphs:
    """``track_step`` through captured graphs, one per key (see the module docstring).

    Counters (tests, logs): ``eager_runs`` (first sightings and uncapturable keys), ``captures``,
    ``replays``, ``failed`` (keys whose capture failed); ``last_event`` is the last call's
    ``"eager"``, ``"capture"`` or ``"replay"``.
    """

    def __init__(self, backend, capturer: Capturer, max_graphs: int = MAX_GRAPHS):
        self.backend = backend
        self.capturer = capturer
        self.max_graphs = max_graphs
        self.statics = StaticBuffers(backend.device)
        self._graphs: OrderedDict[tuple, CapturedTrackStep] = OrderedDict()
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        self.failed: set[tuple] = set()
        self.eager_runs = self.captures = self.replays = 0
        self.last_event: str | None = None

    @property
    def keys(self) -> list[tuple]:
        """Keys with a captured graph, least recently used first."""
        return list(self._graphs)

    def track_step(self, feats: ImageFeatures, ai: AttentionInputs, multimask: bool) -> tuple[DecoderOutput, torch.Tensor]:
        plan = plan_step(feats, ai, multimask, dense=self.backend.has_dense_attention)
        key = plan.key
        step = self._graphs.get(key)
        if step is not None:
            self._graphs.move_to_end(key)
            step.load(feats, ai, plan)
            step.replay()
            self.replays += 1
            return self._result(step.outputs, "replay")
        if key in self.failed or key not in self._seen:
            if key not in self.failed:
                self._seen[key] = None
                while len(self._seen) > 4 * self.max_graphs:
                    self._seen.popitem(last=False)
            self.eager_runs += 1
            self.last_event = "eager"
            return ComposedTrackStep.track_step(self.backend, feats, ai, multimask)
        step = CapturedTrackStep(self.backend, plan, self.statics, feats, ai)
        try:
            outputs = step.capture(self.capturer, feats, ai)
        except Exception as e:  # noqa: BLE001 - any capture failure means: run this key eagerly
            self.failed.add(key)
            log.warning("%s graph capture of the tracking step failed for key %s (%s: %s); it runs eagerly from now on",
                        self.capturer.name, key[:7], type(e).__name__, e)
            self.eager_runs += 1
            self.last_event = "eager"
            return ComposedTrackStep.track_step(self.backend, feats, ai, multimask)
        self._seen.pop(key, None)
        self._graphs[key] = step
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        self.captures += 1
        return self._result(outputs, "capture")

    def _result(self, outputs: tuple[torch.Tensor, ...], event: str) -> tuple[DecoderOutput, torch.Tensor]:
        self.last_event = event
        return DecoderOutput(*outputs[:4]), outputs[4]

    def clear(self) -> None:
        """Drop every graph and static buffer."""
        self._graphs.clear()
        self._seen.clear()
        self.statics = StaticBuffers(self.backend.device)
