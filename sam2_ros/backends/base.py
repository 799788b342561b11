"""The protocol every backend implements: the four SAM 2 graphs on host arrays.

All arrays are numpy float32 (int64 / int32 / bool where named) in the graph layouts
documented in ``sam2_ros_export.graphs``. ``ImageFeatures`` and the ``pix_feat``
returned by ``attend_memory`` are whatever the backend keeps (host arrays on CPU, device buffers
on GPU backends); the tracker only passes them back to the same backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sam2_ros.manifest import Manifest


@dataclass
class ImageFeatures:
    """One frame's encoder outputs, kept by the backend in its own memory."""

    feat_s0: Any
    feat_s1: Any
    image_embed: Any


@dataclass
class DecoderOutput:
    low_res_masks: np.ndarray  # [B,1,4h,4w] chosen mask logits (-1024 where the object is absent)
    iou: np.ndarray  # [B,1]
    obj_ptr: np.ndarray  # [B,256]
    object_score_logits: np.ndarray  # [B,1]


@runtime_checkable
class Backend(Protocol):
    name: str
    manifest: Manifest

    def encode_image(self, image: np.ndarray) -> ImageFeatures:
        """image [1,3,S,S] normalised -> features of the frame."""

    def attend_memory(
        self,
        feats: ImageFeatures,
        mem_feats: np.ndarray,
        mem_tpos_row: np.ndarray,
        mem_valid: np.ndarray,
        obj_ptrs: np.ndarray,
        ptr_tpos: np.ndarray,
        ptr_valid: np.ndarray,
    ) -> np.ndarray:
        """-> pix_feat [B,256,h,w]: the frame embedding conditioned on each object's memory."""

    def decode(
        self,
        feats: ImageFeatures,
        pix_feat: np.ndarray,
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
        low_res_masks: np.ndarray,
        binarize: np.ndarray,
        object_score_logits: np.ndarray,
    ) -> np.ndarray:
        """-> maskmem [B,h*w,64]: memory features of each object's mask on the frame."""

    def image_embed_host(self, feats: ImageFeatures) -> np.ndarray:
        """The frame embedding [1,256,h,w] as a host array (first prompted frame of an object)."""

    def track_step(self, feats: ImageFeatures, attention_inputs: dict, multimask: bool) -> tuple[DecoderOutput, np.ndarray]:
        """One tracking step of ``n`` objects: attend -> decode (no prompt) -> encode memory.

        Returns the decoder outputs and maskmem [n,h*w,64]. GPU backends fuse it (one launch).
        """


class ComposedTrackStep:
    """``track_step`` from the four graph calls, for backends that do not fuse it."""

    def track_step(self, feats: ImageFeatures, attention_inputs: dict, multimask: bool) -> tuple[DecoderOutput, np.ndarray]:
        n = attention_inputs["mem_valid"].shape[0]
        lr = self.manifest.spec.low_res_size
        pix = self.attend_memory(feats, **attention_inputs)
        zeros = np.zeros(n, np.float32)
        out = self.decode(
            feats, pix, zeros, np.zeros((n, 1, 2), np.float32), np.full((n, 1), -1, np.int32),
            np.zeros((n, 1, lr, lr), np.float32), zeros, np.full(n, float(multimask), np.float32),
        )
        mem = self.encode_memory(feats, out.low_res_masks, zeros, out.object_score_logits)
        return out, mem
