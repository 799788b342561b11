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

from sam2_ros.backends.base import UNLIMITED, ComposedTrackStep, DecoderOutput, ImageFeatures, PackedAttention, ShapeLimits
from sam2_ros.errors import EngineError
from sam2_ros.imaging import HOST_IMAGING
from sam2_ros.manifest import Manifest


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
    """

    name = "torch"
    limits: ShapeLimits = UNLIMITED

    def __init__(self, manifest: Manifest, checkpoint: str | Path | None = None, device: str = "auto",
                 precision: str = "fp32", imaging: str = "auto"):
        try:
            import torch

            from sam2_ros.backends.torch_backend.graphs import graph_modules
            from sam2_ros.backends.torch_backend.imaging import TorchImaging
            from sam2_ros.backends.torch_backend.official import build_video_predictor
            from sam2_ros.backends.torch_backend.storage import TorchStorage
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
        if precision not in PRECISIONS:
            raise EngineError(f"torch backend: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise EngineError("torch backend: fp16 needs a CUDA device; use bf16 on the CPU")
        self.precision = precision
        self._amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.storage = TorchStorage(self.device)
        if imaging not in IMAGING:
            raise EngineError(f"torch backend: imaging must be one of {', '.join(IMAGING)}, got {imaging!r}")
        if imaging == "auto":
            imaging = "device" if self.device.type == "cuda" else "host"
        self.imaging = TorchImaging(self.device) if imaging == "device" else HOST_IMAGING
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

    def _call(self, module, *args):
        torch = self.torch
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self._amp, enabled=self._amp is not None):
            out = module(*(self.storage.asarray(a) for a in args))
        if self._amp is None:
            return out
        as_fp32 = lambda t: t.float() if t.is_floating_point() else t  # noqa: E731
        return as_fp32(out) if isinstance(out, torch.Tensor) else tuple(as_fp32(t) for t in out)

    def encode_image(self, image: np.ndarray) -> ImageFeatures:
        return ImageFeatures(*self._call(self.image_encoder, image))

    def frame_embedding(self, feats: ImageFeatures):
        return feats.image_embed

    def _attend_masked(self, feats, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid):
        return self._call(self.memory_attention, feats.image_embed, mem_feats, mem_tpos_row, mem_valid, obj_ptrs,
                          ptr_tpos, ptr_valid)

    def _attend_dense(self, feats, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos):
        return self._call(self.memory_attention_dense, feats.image_embed, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos)

    def _concat(self, parts):
        return self.torch.cat(parts)

    def _take_rows(self, x, order: np.ndarray):
        return x[self.storage.asarray(order)]

    def decode(self, feats, pix_feat, no_mem, point_coords, point_labels, mask_input, has_mask, multimask) -> DecoderOutput:
        out = self._call(
            self.mask_decoder, pix_feat, feats.feat_s0, feats.feat_s1, no_mem, point_coords, point_labels,
            mask_input, has_mask, multimask,
        )
        return DecoderOutput(*out)

    def encode_memory(self, feats, low_res_masks, binarize, object_score_logits):
        return self._call(self.memory_encoder, feats.image_embed, low_res_masks, binarize, object_score_logits)

    def close(self) -> None:
        """Drop the modules (and their GPU memory with the caching allocator's next release)."""
        self.image_encoder = self.memory_attention = self.mask_decoder = self.memory_encoder = None
        self.memory_attention_dense = None


def _cast_matmul_weights(module, dtype) -> None:
    """Store the weights of linear and convolution layers in ``dtype`` once: autocast would
    cast them on every call. Same results (autocast runs these layers in ``dtype`` anyway);
    normalisations and every other parameter stay float32."""
    import torch

    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.to(dtype)
