"""The protocol every backend implements: the four SAM 2 graphs, their limits, and closing.

Graph inputs and outputs follow the layouts and names of :mod:`sam2_ros.graph_io`. Arrays the
tracker builds (prompts, flags, slot validity and temporal rows) are small host numpy arrays.
The memory bank's tensors live in the backend's :attr:`Backend.storage` (see
:mod:`sam2_ros.storage`), and the backend returns its outputs as buffers of that storage, so the
memory encoder's output is written into a bank slot without a host round trip on a GPU.
What a backend returns as a :data:`Tensor` (image features, the memory-conditioned
``pix_feat``) is opaque: a numpy array on CPU backends, a ``torch.Tensor``, an ONNX Runtime
``OrtValue`` or a TensorRT device buffer elsewhere. The tracker only hands it back to the same
backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sam2_ros.attention_packing import dense_groups, row_order
from sam2_ros.errors import EngineError
from sam2_ros.graph_io import (
    GRAPH_NAMES,
    IMAGE_ENCODER,
    MASK_DECODER,
    MEMORY_ATTENTION,
    MEMORY_ATTENTION_DENSE,
    MEMORY_ENCODER,
    OPTIONAL_GRAPHS,
)
from sam2_ros.imaging import HOST_IMAGING, Imaging
from sam2_ros.manifest import Manifest
from sam2_ros.memory_bank import AttentionInputs
from sam2_ros.storage import Buffer, Storage

#: A backend's own array type; only the backend that made it interprets it.
Tensor = Any


@dataclass
class ImageFeatures:
    """One frame's encoder outputs, kept by the backend in its own memory."""

    feat_s0: Tensor
    feat_s1: Tensor
    image_embed: Tensor


@dataclass
class DecoderOutput:
    """Mask-decoder outputs, buffers of the backend's storage."""

    low_res_masks: Buffer  # [B,1,4h,4w] chosen mask logits (-1024 where the object is absent)
    iou: Buffer  # [B,1]
    obj_ptr: Buffer  # [B,256]
    object_score_logits: Buffer  # [B,1]


@dataclass(frozen=True)
class ShapeLimits:
    """The largest shapes a backend accepts; ``None``: no limit (ONNX Runtime, PyTorch).

    Engines built for fixed maximum shapes (TensorRT optimisation profiles) report theirs, and
    the tracker refuses a configuration that would exceed them.
    """

    objects: int | None = None
    points: int | None = None
    #: frames the image encoder takes in one call (1: an export without a batch axis)
    frames: int | None = None
    mem_slots: int | None = None
    ptr_slots: int | None = None

    def exceeded(self, **need: int) -> list[str]:
        """``["objects 9 > 8", ...]`` for every needed size above its limit."""
        out = []
        for key, value in need.items():
            limit = getattr(self, key)
            if limit is not None and value > limit:
                out.append(f"{key} {value} > {limit}")
        return out


UNLIMITED = ShapeLimits()


@runtime_checkable
class Backend(Protocol):
    """Runs the four graphs of one export. Construct through :func:`sam2_ros.backends.load_backend`."""

    name: str
    manifest: Manifest
    #: Where the memory bank lives and what the backend returns (host numpy, a torch device, ...).
    storage: Storage
    #: Frame pre- and post-processing (:mod:`sam2_ros.imaging`): on the host, or on the backend's device.
    imaging: Imaging

    @property
    def limits(self) -> ShapeLimits:
        """The largest shapes the backend accepts."""

    def encode_image(self, image: np.ndarray) -> ImageFeatures:
        """image [B,3,S,S] normalised -> features of the B frames (B <= ``limits.frames``)."""

    def encode_images(self, images: Sequence[Tensor]) -> list[ImageFeatures]:
        """Several frames (each ``imaging.frame_tensor``'s [1,3,S,S]) in one encoder call
        (``len(images) <= limits.frames``) -> each frame's features [1, ...], in order. They stay
        valid as long as ``encode_image``'s (a GPU backend may reuse its buffers at its next call)."""

    def attend_memory(
        self,
        feats: ImageFeatures,
        mem_feats: Buffer,
        mem_tpos_row: np.ndarray,
        mem_valid: np.ndarray,
        obj_ptrs: Buffer,
        ptr_tpos: np.ndarray,
        ptr_valid: np.ndarray,
    ) -> Tensor:
        """-> pix_feat [B,256,h,w]: the frame embedding conditioned on each object's memory."""

    def decode(
        self,
        feats: ImageFeatures,
        pix_feat: Tensor,
        no_mem: np.ndarray,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: np.ndarray,
        has_mask: np.ndarray,
        multimask: np.ndarray,
    ) -> DecoderOutput:
        """Prompt encoder + mask decoder for a batch of objects sharing one point count."""

    def encode_memory(
        self,
        feats: ImageFeatures,
        low_res_masks: Buffer,
        binarize: np.ndarray,
        object_score_logits: Buffer,
    ) -> Buffer:
        """-> maskmem [B,h*w,64]: memory features of each object's mask on the frame."""

    def frame_embedding(self, feats: ImageFeatures) -> Tensor:
        """The frame embedding [1,256,h,w] as ``decode``'s ``pix_feat`` (an object's first prompted frame)."""

    def track_step(
        self, feats: ImageFeatures, attention_inputs: AttentionInputs, multimask: bool
    ) -> tuple[DecoderOutput, Buffer]:
        """One tracking step of ``n`` objects: attend -> decode (no prompt) -> encode memory.

        Returns the decoder outputs and maskmem [n,h*w,64]. GPU backends fuse it (one launch).
        """

    def warm_up(self, max_objects: int, cond_slots: int = 1) -> None:
        """Run the graphs once on a dummy frame before the first real one, with the steady-state
        shapes of ``1 .. max_objects`` tracked objects (full recent rings, ``1 .. cond_slots``
        conditioning slots), so that one-time costs (kernel selection, compilation, CUDA-graph
        capture) are paid at configuration. Changes no tracker's state. A no-op where nothing is
        gained (:class:`OnnxGraphCalls`; TensorRT builds its engines and graphs on its own)."""

    def close(self) -> None:
        """Free what the backend holds (sessions, engines, device memory). Safe to call twice."""


def split_features(feats: ImageFeatures, count: int) -> list[ImageFeatures]:
    """The per-frame features ``[1, ...]`` (views) of ``count`` frames encoded in one call."""
    if count == 1:
        return [feats]
    fields = (feats.feat_s0, feats.feat_s1, feats.image_embed)
    return [ImageFeatures(*(t[i : i + 1] for t in fields)) for i in range(count)]


def check_frame_batch(count: int, limits: ShapeLimits) -> None:
    """Refuse an encoder batch above the backend's ``limits.frames`` (:class:`EngineError`)."""
    over = limits.exceeded(frames=count)
    if count < 1 or over:
        raise EngineError(f"the image encoder takes 1 to {limits.frames or 'any number of'} frames per call, "
                          f"got {count}" + (" (an export without a batch axis: re-export for batches)"
                                            if limits.frames == 1 else ""))


def decoder_feeds(feats: ImageFeatures, *inputs) -> dict:
    """The mask decoder's feeds by name: the frame's ``feat_s0``/``feat_s1`` and the other inputs in order."""
    pix_feat, *rest = inputs
    return MASK_DECODER.feeds(pix_feat, feats.feat_s0, feats.feat_s1, *rest)


class PackedAttention:
    """``attend_memory`` that packs each object's valid slots and runs the unmasked graph.

    For backends with a dense memory-attention graph (``has_dense_attention``); they implement
    ``_attend_dense(feats, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos)`` and
    ``_attend_masked(feats, <the seven attention inputs>)``, and override ``_concat`` /
    ``_take_rows`` when their outputs are not numpy arrays. The result equals the masked graph's
    (attention is invariant to the order of its keys; see :mod:`sam2_ros.attention_packing`).
    """

    has_dense_attention: bool = True

    def attend_memory(self, feats, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid):
        groups = dense_groups(mem_valid, ptr_valid) if self.has_dense_attention else None
        if groups is None:
            return self._attend_masked(feats, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid)
        if groups[0].whole:
            return self._attend_dense(feats, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos)
        parts = []
        for g in groups:
            r = g.rows[:, None]
            parts.append(self._attend_dense(
                feats, mem_feats[r, g.mem_slots], mem_tpos_row[r, g.mem_slots],
                obj_ptrs[r, g.ptr_slots], ptr_tpos[r, g.ptr_slots],
            ))
        out = parts[0] if len(parts) == 1 else self._concat(parts)
        order = row_order(groups)
        return out if order is None else self._take_rows(out, order)

    def _concat(self, parts: list) -> Tensor:
        return np.concatenate(parts)

    def _take_rows(self, x: Tensor, order: np.ndarray) -> Tensor:
        return x[order]


class ComposedTrackStep:
    """``track_step`` from the four graph calls, for backends that do not fuse it."""

    def track_step(
        self, feats: ImageFeatures, attention_inputs: AttentionInputs, multimask: bool
    ) -> tuple[DecoderOutput, Buffer]:
        n = attention_inputs.mem_valid.shape[0]
        lr = self.manifest.spec.low_res_size
        pix = self.attend_memory(feats, **attention_inputs.as_dict())
        zeros = self._constant(np.float32, (n,), 0.0)
        out = self.decode(
            feats, pix, zeros, self._constant(np.float32, (n, 1, 2), 0.0), self._constant(np.int32, (n, 1), -1),
            self._constant(np.float32, (n, 1, lr, lr), 0.0), zeros, self._constant(np.float32, (n,), float(multimask)),
        )
        mem = self.encode_memory(feats, out.low_res_masks, zeros, out.object_score_logits)
        return out, mem

    def _constant(self, dtype, shape: tuple[int, ...], value: float) -> Buffer:
        """A constant input in the backend's storage, made once per (dtype, shape, value)."""
        cache = self.__dict__.setdefault("_track_constants", {})
        key = (np.dtype(dtype).str, shape, value)
        if key not in cache:
            cache[key] = self.storage.asarray(np.full(shape, value, dtype))
        return cache[key]


class OnnxGraphCalls(PackedAttention, ComposedTrackStep):
    """The protocol's graph calls for backends that run the exported ONNX graphs by name.

    Subclasses implement ``_run(graph, feeds, keep_on_device=()) -> outputs`` in
    :mod:`sam2_ros.graph_io` order (``keep_on_device``: outputs a GPU runtime may keep as its own
    device values; others ignore it). Pre- and post-processing run on the host (the exact path;
    an ONNX Runtime GPU session still takes host inputs).
    """

    imaging: Imaging = HOST_IMAGING
    #: no limit but the image encoder's batch: set by subclasses to :meth:`export_limits`
    limits: ShapeLimits = UNLIMITED

    @staticmethod
    def export_limits(manifest: Manifest) -> ShapeLimits:
        """No limit but the image encoder's batch (1 for an export without a ``frames`` axis)."""
        return ShapeLimits(frames=manifest.image_batch)

    @staticmethod
    def graph_files(manifest: Manifest) -> list[tuple[str, Path]]:
        """(name, path) of the four graphs and of the optional ones the export has; a missing
        file is an :class:`~sam2_ros.errors.EngineError`."""
        optional = [g for g in OPTIONAL_GRAPHS if g in manifest.data.get("graphs", {})]
        out = []
        for g in (*GRAPH_NAMES, *optional):
            path = manifest.graph_path(g)
            if not path.is_file():
                raise EngineError(f"{path} is missing from the engine directory")
            out.append((g, path))
        return out

    def warm_up(self, max_objects: int, cond_slots: int = 1) -> None:
        """Nothing to warm up: sessions are ready once opened (see :meth:`Backend.warm_up`)."""

    def encode_image(self, image: np.ndarray) -> ImageFeatures:
        check_frame_batch(len(image), self.limits)
        return ImageFeatures(*self._run("image_encoder", IMAGE_ENCODER.feeds(image), keep_on_device=IMAGE_ENCODER.outputs))

    def encode_images(self, images: Sequence[np.ndarray]) -> list[ImageFeatures]:
        if len(images) == 1:
            return [self.encode_image(images[0])]
        check_frame_batch(len(images), self.limits)
        # host outputs: a GPU runtime's device value (OrtValue) cannot be cut into frames
        feats = ImageFeatures(*self._run("image_encoder", IMAGE_ENCODER.feeds(np.concatenate(images))))
        return split_features(feats, len(images))

    def frame_embedding(self, feats: ImageFeatures):
        return feats.image_embed

    def _attend_masked(self, feats, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid):
        return self._run(
            "memory_attention",
            MEMORY_ATTENTION.feeds(feats.image_embed, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid),
        )[0]

    def _attend_dense(self, feats, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos):
        return self._run(
            "memory_attention_dense",
            MEMORY_ATTENTION_DENSE.feeds(feats.image_embed, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos),
        )[0]

    def decode(self, feats, pix_feat, no_mem, point_coords, point_labels, mask_input, has_mask, multimask) -> DecoderOutput:
        out = self._run(
            "mask_decoder",
            decoder_feeds(feats, pix_feat, no_mem, point_coords, point_labels, mask_input, has_mask, multimask),
        )
        return DecoderOutput(*out)

    def encode_memory(self, feats, low_res_masks, binarize, object_score_logits):
        return self._run(
            "memory_encoder", MEMORY_ENCODER.feeds(feats.image_embed, low_res_masks, binarize, object_score_logits),
        )[0]
