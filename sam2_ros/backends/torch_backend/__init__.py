"""PyTorch backend: the official SAM 2 modules, wrapped one module per graph, eager.

The reference for the other backends and the GPU path we can measure. Needs torch and the
official ``sam2`` package; the weights come from the checkpoint recorded in the manifest (or
given). Device-resident: the memory bank lives in :class:`.storage.TorchStorage` tensors on
``device`` and every graph output stays there; only prompts, slot bookkeeping, the input image
and the results the tracker reports cross to the host.
This folder is the only place of the runtime that imports torch: :mod:`.graphs` (the four
graphs as PyTorch modules, which the ONNX export also traces), :mod:`.official` (building
the official model), :mod:`.storage` and :mod:`.imaging` (frame resize and mask outputs on the device).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam2_ros.backends.base import (
    UNLIMITED, ComposedTrackStep, DecoderOutput, ImageFeatures, PackedAttention, ShapeLimits, split_features,
)
from sam2_ros.errors import EngineError
from sam2_ros.imaging import HOST_IMAGING
from sam2_ros.manifest import Manifest
from sam2_ros.memory_bank import AttentionInputs


#: The graph modules of the backend (attribute names).
GRAPH_MODULES = ("image_encoder", "memory_attention", "memory_attention_dense", "mask_decoder", "memory_encoder")
#: ``torch.compile`` modes (CPU, CUDA): on CUDA, autotuned kernels without inductor's own CUDA graphs,
#: which would fight ours (:mod:`.cuda_graphs` captures the whole tracking step). ``dynamic=None``:
#: the first shape compiles static, a second one recompiles with dynamic sizes (objects, slots).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
#: Precisions of the torch backend: fp32, or autocast to bf16 / fp16 (PyTorch keeps softmax,
#: normalisations and reductions in fp32 under autocast). Outputs and the bank stay float32.
PRECISIONS = ("fp32", "bf16", "fp16")
#: Where the torch backend pre- and post-processes frames: on its device, on the host (exact), or
#: "auto" (device on CUDA, host on the CPU, where the exact path costs no transfer).
IMAGING = ("auto", "device", "host")


class TorchBackend(PackedAttention, ComposedTrackStep):
    """The four graphs as PyTorch modules on ``device``.

    Args:
        manifest: the export's manifest (model, image size, checkpoint path and hash).
        checkpoint: the official checkpoint (default: the one the manifest names).
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``; ``"auto"`` (default): CUDA when available.
        precision: ``fp32`` (default, the parity reference), ``bf16`` (CPU with bf16 matrix units,
            or GPU) or ``fp16`` (GPU only), by autocast.
        imaging: where frames are resized and masks post-processed (:mod:`sam2_ros.imaging`):
            ``"device"`` (:class:`.imaging.TorchImaging`: the uint8 frame goes up once, outputs
            come down only when read), ``"host"`` (the exact PIL / OpenCV path on the CPU), or
            ``"auto"`` (default): the device on CUDA, the host on the CPU.
        cuda_graph: replay the tracking step from CUDA graphs (:mod:`.cuda_graphs`): ``"auto"``
            (default: on a CUDA device), ``True``, ``False``, or ``"emulate"`` (the replay
            plumbing without CUDA, for tests on the CPU).
        compile: ``torch.compile`` the graph modules: ``True`` in the mode of :data:`COMPILE_MODES`
            for the device, or a mode name (``"default"`` compiles fastest). The first calls compile
            (minutes), so pair it with :meth:`warm_up`.
    """

    name = "torch"
    limits: ShapeLimits = UNLIMITED

    def __init__(self, manifest: Manifest, checkpoint: str | Path | None = None, device: str = "auto",
                 precision: str = "fp32", imaging: str = "auto", cuda_graph: str | bool = "auto",
                 compile: bool | str = False):
        try:
            import torch

            from sam2_ros.backends.torch_backend.graphs import graph_modules
            from sam2_ros.backends.torch_backend.imaging import TorchImaging
            from sam2_ros.backends.torch_backend.official import build_video_predictor
            from sam2_ros.backends.torch_backend.storage import TorchStorage, concrete_device
            from sam2_ros.manifest import file_sha256
        except ImportError as e:
            raise EngineError(f"the torch backend needs torch and the official sam2 package: {e}") from e
        self.manifest = manifest
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except RuntimeError as e:
            raise EngineError(f"torch backend: bad device {device!r}: {e}") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(f"torch backend: device {device!r} asked for, but PyTorch sees no CUDA GPU")
        # "cuda" is the constructing thread's current device: fixed now, as the worker thread that
        # runs the tracker may have another current device
        self.device = concrete_device(self.device, torch.cuda.current_device)
        if precision not in PRECISIONS:
            raise EngineError(f"torch backend: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise EngineError("torch backend: fp16 needs a CUDA device; use bf16 on the CPU")
        self.precision = precision
        self._amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.storage = TorchStorage(self.device)
        #: host arrays reach the device through it: one (page-locked, non-blocking) copy per call
        self.staging = self.storage.staging
        if imaging not in IMAGING:
            raise EngineError(f"torch backend: imaging must be one of {', '.join(IMAGING)}, got {imaging!r}")
        if imaging == "auto":
            imaging = "device" if self.device.type == "cuda" else "host"
        self.imaging = TorchImaging(self.device, self.staging) if imaging == "device" else HOST_IMAGING
        ckpt = checkpoint or manifest.data.get("checkpoint")
        if not ckpt or not Path(ckpt).is_file():
            raise EngineError(
                f"the torch backend needs the model checkpoint; {ckpt!r} is not a file (pass checkpoint=...)"
            )
        want = manifest.data.get("checkpoint_sha256")
        if want and checkpoint is None and file_sha256(ckpt) != want:
            raise EngineError(f"checkpoint {ckpt} does not match the manifest's sha256")
        spec = manifest.spec
        sam = build_video_predictor(spec.model, ckpt, image_size=spec.image_size, device=str(self.device))
        # the wrappers' own buffers (RoPE, position encodings) are made on the CPU: move them too
        graphs = {name: m.to(self.device) for name, m in graph_modules(sam, spec.image_size).items()}
        self.image_encoder, self.memory_attention = graphs["image_encoder"], graphs["memory_attention"]
        self.memory_attention_dense = graphs["memory_attention_dense"]
        if self._amp is not None:
            for module in graphs.values():
                _cast_matmul_weights(module, self._amp)
        self.mask_decoder, self.memory_encoder = graphs["mask_decoder"], graphs["memory_encoder"]
        #: recent memory and pointer slots: a tracking step with a ring not full takes the masked path
        self.rings = (spec.num_maskmem - 1, spec.max_obj_ptrs_in_encoder - 1)
        self._fast_path(cuda_graph, compile)

    def _fast_path(self, cuda_graph: str | bool, compile: bool | str) -> None:
        """Inference-only modules, optionally compiled; the tracking step's graph cache."""
        from sam2_ros.backends.torch_backend.cuda_graphs import (
            CudaGraphCapturer, EmulatedCapturer, EncoderGraphs, TrackStepGraphs, graph_mode,
        )

        try:
            mode = graph_mode(cuda_graph, self.device)
        except ValueError as e:
            raise EngineError(f"torch backend: {e}") from None
        compile_mode = _compile_mode(compile, self.device, mode == "cuda")
        for name in GRAPH_MODULES:
            # no parameter requires grad: autocast then caches no weight casts (none may outlive a graph capture)
            getattr(self, name).requires_grad_(False)
        self.compiled = compile_mode is not None
        # compiled code guards on whether a tensor is an inference tensor: no_grad when compiled,
        # so that every tensor (the bank's, the graphs' outputs) is of one kind and nothing recompiles
        self.inference = self.torch.no_grad if self.compiled else self.torch.inference_mode
        if self.compiled:
            for name in GRAPH_MODULES:
                setattr(self, name, self.torch.compile(getattr(self, name), mode=compile_mode, dynamic=None))
        self.cuda_graph = mode
        # one capturer (side stream, memory pool) for both caches: their replays never overlap
        capturer = None if mode is None else CudaGraphCapturer(self.device) if mode == "cuda" else EmulatedCapturer()
        self.track_graphs = None if mode is None else TrackStepGraphs(self, capturer)
        self.encoder_graphs = None if mode is None else EncoderGraphs(self, capturer)

    def _call(self, module, *args):
        """``module(*args)`` on the device, in the backend's precision; the call's host arrays go up
        in one copy (:class:`.storage.HostStaging`)."""
        torch = self.torch
        with self.inference(), self._device_scope(), torch.autocast(self.device.type, dtype=self._amp,
                                                                      enabled=self._amp is not None):
            host = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
            if host:
                args = list(args)
                for i, t in zip(host, self.staging.upload([args[i] for i in host])):
                    args[i] = t
            args = [self.storage.asarray(a) for a in args]
            if self.compiled:  # compiled code guards on strides, of size-1 dims too (numpy's x[None]: 0)
                args = [_plain_strides(a) for a in args]
            out = module(*args)
        if self._amp is None:
            return out
        as_fp32 = lambda t: t.float() if t.is_floating_point() else t  # noqa: E731
        return as_fp32(out) if isinstance(out, torch.Tensor) else tuple(as_fp32(t) for t in out)

    def _device_scope(self):
        from sam2_ros.backends.torch_backend.storage import device_scope

        return device_scope(self.device)

    def encode_image(self, image) -> ImageFeatures:
        """Features of normalised frames [B, 3, S, S] (host array or device tensor); replayed from
        a CUDA graph per input shape when ``cuda_graph`` is on (fresh output tensors either way)."""
        if self.encoder_graphs is not None:
            return self.encoder_graphs.encode(image)
        return ImageFeatures(*self._call(self.image_encoder, image))

    def encode_images(self, images) -> list[ImageFeatures]:
        """Several frames ([1, 3, S, S] each, host arrays or device tensors) in one encoder call
        (a CUDA graph per batch size when ``cuda_graph`` is on) -> each frame's features."""
        if len(images) == 1:
            return [self.encode_image(images[0])]
        if all(isinstance(i, np.ndarray) for i in images):
            batch = np.concatenate(images)  # one upload
        else:
            with self.inference():
                batch = self.torch.cat([self.storage.asarray(i) for i in images])
        return split_features(self.encode_image(batch), len(images))

    def frame_embedding(self, feats: ImageFeatures):
        return feats.image_embed

    def _attend_masked(self, feats, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid):
        return self._call(self.memory_attention, feats.image_embed, mem_feats, mem_tpos_row, mem_valid, obj_ptrs,
                          ptr_tpos, ptr_valid)

    def _attend_dense(self, feats, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos):
        return self._call(self.memory_attention_dense, feats.image_embed, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos)

    def attend_memory(self, feats, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid):
        """``PackedAttention.attend_memory`` with the call's host arrays (temporal rows, validity,
        packing indices) uploaded in one copy and every gather indexed on the device."""
        from sam2_ros.backends.torch_backend.cuda_graphs import attend, plan_attention

        plan = plan_attention(AttentionInputs(mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid),
                              dense=self.has_dense_attention)
        with self.inference():
            h = self.staging.upload_named(plan.values)
        return attend(self, plan, feats.image_embed, self.storage.asarray(mem_feats), self.storage.asarray(obj_ptrs), h)

    def decode(self, feats, pix_feat, no_mem, point_coords, point_labels, mask_input, has_mask, multimask) -> DecoderOutput:
        out = self._call(
            self.mask_decoder, pix_feat, feats.feat_s0, feats.feat_s1, no_mem, point_coords, point_labels,
            mask_input, has_mask, multimask,
        )
        return DecoderOutput(*out)

    def encode_memory(self, feats, low_res_masks, binarize, object_score_logits):
        return self._call(self.memory_encoder, feats.image_embed, low_res_masks, binarize, object_score_logits)

    def track_step(self, feats: ImageFeatures, attention_inputs: AttentionInputs, multimask: bool):
        """The tracking step of ``n`` objects, replayed from a CUDA graph when ``cuda_graph`` is on.
        Rows whose recent rings are filling take the masked attention (one key while they fill,
        :mod:`.cuda_graphs`), with or without graphs, so both compute the same.

        With graphs, the outputs are the graph's static tensors: valid until the next ``track_step``.
        """
        from sam2_ros.backends.torch_backend.cuda_graphs import plan_step, track_step_outputs

        if self.track_graphs is not None:
            return self.track_graphs.track_step(feats, attention_inputs, multimask)
        # what a replay computes (rows with filling rings on the masked path), one upload of host arrays
        plan = plan_step(feats, attention_inputs, multimask, self.has_dense_attention, self.rings)
        with self.inference():
            h = self.staging.upload_named(plan.values)
        outs = track_step_outputs(self, plan, feats, attention_inputs.mem_feats, attention_inputs.obj_ptrs, h)
        return DecoderOutput(*outs[:4]), outs[4]

    def warm_up(self, max_objects: int, cond_slots: int = 1) -> None:
        """Run every graph once before the first real frame, so that cuDNN / cuBLAS algorithm
        selection, ``torch.compile`` compilations and CUDA-graph captures happen now.

        On a dummy frame at the export's image size: the image encoder, a first prompt (decoder,
        memory encoder of the mask), a refinement's masked attention, and the tracking step of
        ``n = max_objects .. 1`` objects in the steady state (full recent rings, ``k`` conditioning
        slots for ``k = 1 .. cond_slots``). With CUDA graphs the encoder and every step run twice, so
        that they are captured and the tracker's first frames replay, and the step of objects whose
        rings are filling (the masked key of each ``n`` and ``k``) is captured too. With ``compile``
        also a box prompt and the tracking step of objects on the frame after their prompt: the
        shapes after which nothing recompiles. Works on its own scratch buffers: no tracker's state
        changes (trackers already using this backend may go on). Cost: ``max_objects x cond_slots``
        tracking steps (four times with graphs; compiling takes minutes).
        """
        from sam2_ros.backends.torch_backend.cuda_graphs import MAX_GRAPHS

        spec = self.manifest.spec
        if max_objects < 1 or cond_slots < 1:
            raise ValueError(f"warm_up needs max_objects >= 1 and cond_slots >= 1, got {max_objects}, {cond_slots}")
        st, lr = self.storage, spec.low_res_size
        runs = 1
        if self.track_graphs is not None:
            runs = 2  # first sighting eager, second captures
            self.track_graphs.max_graphs = max(self.track_graphs.max_graphs,
                                               2 * max_objects * cond_slots + MAX_GRAPHS // 2)
        # what only compiled code needs (it specialises on sizes 1 and on sam2's position-encoding cache,
        # filled by the first call) is skipped otherwise: on a CPU without compile warm-up gains little
        for _ in range(max(1 + self.compiled, runs)):
            feats = self.encode_image(np.zeros((1, 3, spec.image_size, spec.image_size), np.float32))
        one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
        for points in (1, 2)[: 1 + self.compiled]:  # a click, a box: then any number of points
            out = self.decode(feats, self.frame_embedding(feats), one,
                              np.full((1, points, 2), spec.image_size / 2, np.float32), np.ones((1, points), np.int32),
                              np.zeros((1, 1, lr, lr), np.float32), zero, one)
            self.encode_memory(feats, out.low_res_masks, one, out.object_score_logits)
        recent, ptr_recent = spec.num_maskmem - 1, spec.max_obj_ptrs_in_encoder - 1
        hw = spec.mem_tokens
        multimask = spec.use_multimask(is_init=False, num_points=0)  # what a tracked frame uses
        for k in range(1, cond_slots + 1):
            m, p = recent + k, ptr_recent + k
            inputs = _steady_state_inputs(
                st.zeros((max_objects, m, hw, spec.mem_dim)), st.zeros((max_objects, p, spec.hidden_dim)),
                recent, ptr_recent, spec.num_maskmem,
            )
            if k == 1:
                # a refinement of an object with no valid memory slot runs the masked graph
                self._attend_masked(feats, inputs.mem_feats[:1], inputs.mem_tpos_row[:1], inputs.mem_valid[:1],
                                    inputs.obj_ptrs[:1], inputs.ptr_tpos[:1], inputs.ptr_valid[:1])
            # objects on the frame after their first prompt: only the conditioning slot valid, the
            # masked path while their rings fill (one key per n and k: captured with graphs; compiled
            # code specialises sizes 1, so compiled without graphs runs it once)
            young_runs = runs if self.track_graphs is not None else int(self.compiled and k == 1)
            for n in range(max_objects, 0, -1) if young_runs else ():
                young = inputs.first(n)
                young.mem_valid = np.broadcast_to(np.arange(m) >= recent, (n, m))
                young.ptr_valid = np.broadcast_to(np.arange(p) >= ptr_recent, (n, p))
                for _ in range(young_runs):
                    self.track_step(feats, young, multimask)
            for n in range(max_objects, 0, -1):  # largest first: static buffers are allocated once
                rows = inputs.first(n)
                for _ in range(runs):
                    self.track_step(feats, rows, multimask)
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Drop the modules and graphs (and their GPU memory with the caching allocator's next release)."""
        graphs = [g for g in (getattr(self, "track_graphs", None), getattr(self, "encoder_graphs", None)) if g is not None]
        if graphs and self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)  # no replay in flight when its graph goes
        for g in graphs:
            g.clear()
        self.track_graphs = self.encoder_graphs = None
        self.image_encoder = self.memory_attention = self.mask_decoder = self.memory_encoder = None
        self.memory_attention_dense = None


def _steady_state_inputs(mem_feats, obj_ptrs, recent: int, ptr_recent: int, num_maskmem: int) -> AttentionInputs:
    """Attention inputs of rows whose recent rings are full and whose conditioning slots are all
    used (every slot valid): frame ``t`` attends to ``t-1 .. t-recent``, pointers ``t-1 .. t-ptr_recent``."""
    rows, m = mem_feats.shape[:2]
    p = obj_ptrs.shape[1]
    tpos = np.full((rows, m), num_maskmem - 1, np.int64)
    tpos[:, :recent] = np.arange(recent)[::-1]
    ptr_tpos = np.zeros((rows, p), np.float32)
    ptr_tpos[:, :ptr_recent] = np.arange(ptr_recent, 0, -1) / ptr_recent
    ptr_tpos[:, ptr_recent:] = (ptr_recent + 1) / ptr_recent  # conditioning frames further back
    return AttentionInputs(mem_feats, tpos, np.ones((rows, m), bool), obj_ptrs, ptr_tpos, np.ones((rows, p), bool))


def _compile_mode(option: bool | str, device, our_graphs: bool) -> str | None:
    """The ``torch.compile`` mode for the backend option ``compile`` (None: not compiled)."""
    import torch

    if isinstance(option, str):
        option = {"true": True, "on": True, "false": False, "off": False, "": False}.get(option.strip().lower(), option)
    if option is False or option is None:
        return None
    if option is True:
        return COMPILE_MODES[device.type == "cuda"]
    modes = set(torch._inductor.list_mode_options()) | {"default"}
    if option not in modes:
        raise EngineError(f"torch backend: compile must be a bool or one of {', '.join(sorted(modes))}; got {option!r}")
    if our_graphs and option in ("reduce-overhead", "max-autotune"):
        raise EngineError(f"torch backend: compile={option!r} captures CUDA graphs of its own, which cannot run "
                          "inside the tracking step's graphs; use 'max-autotune-no-cudagraphs' or cuda_graph=False")
    return option


def _plain_strides(t):
    """``t`` with row-major strides when it is contiguous (a view: size-1 dims may have any stride)."""
    if t.dim() == 0 or not t.is_contiguous():
        return t
    strides, step = [], 1
    for d in reversed(t.shape):
        strides.append(step)
        step *= max(d, 1)
    strides = tuple(reversed(strides))
    return t if t.stride() == strides else t.as_strided(t.shape, strides)


def _cast_matmul_weights(module, dtype) -> None:
    """Store the weights of linear and convolution layers in ``dtype`` once: autocast would
    cast them on every call. Same results (autocast runs these layers in ``dtype`` anyway);
    normalisations and every other parameter stay float32."""
    import torch

    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.to(dtype)
