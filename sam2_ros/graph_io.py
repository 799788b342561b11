"""The contract between the exported graphs and every backend: names, order and dynamic axes.

One table, read by the ONNX export (names and dynamic axes of the graphs it writes), every
backend (feeds built by name), the TensorRT builder (optimisation profiles per dynamic axis)
and the manifest check. Torch-free.

Dynamic axes (everything else is fixed by the model and the image size):

* ``frames``: the frames encoded in one call (the image encoder's batch: one frame of each of
  several streams, :class:`sam2_ros.multi_tracker.MultiTracker`); exports from before it have a
  fixed batch of 1 and are run one frame at a time;
* ``objects``: the objects handled in one call (batch);
* ``points``: prompt points of each object (box corners count as two points);
* ``mem_slots`` / ``ptr_slots``: memory-bank slots handed to memory attention.

``memory_attention`` takes per-slot validity masks (any mix of empty and used slots, one call
for every object). ``memory_attention_dense`` is the same graph without masks: every slot it is
given is attended. Backends that have it pack each object's valid slots and call it, so the
attention runs unmasked (ONNX Runtime's and PyTorch's fused kernels, no masking passes); it is
optional (older exports and the TensorRT engines use the masked graph only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

@dataclass(frozen=True)
class GraphIO:
    """Input and output names of one graph, in call order, and their dynamic axes."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)

    def feeds(self, *values) -> dict:
        """Positional values in ``inputs`` order -> ``{input name: value}``."""
        if len(values) != len(self.inputs):
            raise TypeError(f"{self.name} takes {len(self.inputs)} inputs {self.inputs}, got {len(values)}")
        return dict(zip(self.inputs, values))


_OBJ = {0: "objects"}
_FRAMES = {0: "frames"}

IMAGE_ENCODER = GraphIO(
    "image_encoder",
    inputs=("image",),
    outputs=("feat_s0", "feat_s1", "image_embed"),
    dynamic_axes={"image": _FRAMES, "feat_s0": _FRAMES, "feat_s1": _FRAMES, "image_embed": _FRAMES},
)
MEMORY_ATTENTION = GraphIO(
    "memory_attention",
    inputs=("image_embed", "mem_feats", "mem_tpos_row", "mem_valid", "obj_ptrs", "ptr_tpos", "ptr_valid"),
    outputs=("pix_feat",),
    dynamic_axes={
        "mem_feats": {0: "objects", 1: "mem_slots"},
        "mem_tpos_row": {0: "objects", 1: "mem_slots"},
        "mem_valid": {0: "objects", 1: "mem_slots"},
        "obj_ptrs": {0: "objects", 1: "ptr_slots"},
        "ptr_tpos": {0: "objects", 1: "ptr_slots"},
        "ptr_valid": {0: "objects", 1: "ptr_slots"},
        "pix_feat": _OBJ,
    },
)
MEMORY_ATTENTION_DENSE = GraphIO(
    "memory_attention_dense",
    inputs=("image_embed", "mem_feats", "mem_tpos_row", "obj_ptrs", "ptr_tpos"),
    outputs=("pix_feat",),
    dynamic_axes={k: v for k, v in MEMORY_ATTENTION.dynamic_axes.items() if not k.endswith("_valid")},
)
MASK_DECODER = GraphIO(
    "mask_decoder",
    inputs=("pix_feat", "feat_s0", "feat_s1", "no_mem", "point_coords", "point_labels", "mask_input",
            "has_mask", "multimask"),
    outputs=("low_res_masks", "iou", "obj_ptr", "object_score_logits"),
    dynamic_axes={
        "pix_feat": _OBJ, "no_mem": _OBJ, "mask_input": _OBJ, "has_mask": _OBJ, "multimask": _OBJ,
        "point_coords": {0: "objects", 1: "points"}, "point_labels": {0: "objects", 1: "points"},
        "low_res_masks": _OBJ, "iou": _OBJ, "obj_ptr": _OBJ, "object_score_logits": _OBJ,
    },
)
MEMORY_ENCODER = GraphIO(
    "memory_encoder",
    inputs=("image_embed", "low_res_masks", "binarize", "object_score_logits"),
    outputs=("maskmem",),
    dynamic_axes={"low_res_masks": _OBJ, "binarize": _OBJ, "object_score_logits": _OBJ, "maskmem": _OBJ},
)

#: Every graph by name, in the order of one frame's data flow.
GRAPHS: dict[str, GraphIO] = {g.name: g for g in (IMAGE_ENCODER, MEMORY_ATTENTION, MASK_DECODER, MEMORY_ENCODER)}
GRAPH_NAMES: tuple[str, ...] = tuple(GRAPHS)
#: Graphs an export also writes that a backend may use when present.
OPTIONAL_GRAPHS: dict[str, GraphIO] = {MEMORY_ATTENTION_DENSE.name: MEMORY_ATTENTION_DENSE}
#: Everything an export writes, by name.
EXPORTED_GRAPHS: dict[str, GraphIO] = {**GRAPHS, **OPTIONAL_GRAPHS}
