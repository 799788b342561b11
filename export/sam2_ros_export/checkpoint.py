"""Randomly initialised models in the official checkpoint format (tests and smoke runs only).

The file is ``{"model": state_dict, "sam2_ros": {"random_weights": True, "seed": N}}``: the official
loader reads ``"model"`` only, and the export reads the marker so its manifest says the truth.
Random weights give near-trivial masks (objects never vanish): :func:`perturb_checkpoint` biases
the object-score head and the mask hypernetworks so that absent objects and small masks occur.
"""

from __future__ import annotations

from pathlib import Path

import torch


#: The key of our marker in a checkpoint file (the official format has only "model").
MARKER_KEY = "sam2_ros"


def random_checkpoint(model_name: str, seed: int, out: str | Path, score_shift: float = 0.0,
                      mask_shift: float = 0.0) -> Path:
    """Write a randomly initialised ``model_name`` in the official format, marked as random, to ``out``
    (with the biases of :func:`perturb_state` when a shift is given). Needs the model's package
    (``OfficialModel.package``)."""
    from sam2_ros.backends.torch_backend.official import build_model

    torch.manual_seed(seed)
    model = build_model(model_name, device="cpu")
    state = model.state_dict()
    perturb_state(state, score_shift, mask_shift)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    marker = {"random_weights": True, "seed": seed, "score_shift": score_shift, "mask_shift": mask_shift}
    torch.save({"model": state, MARKER_KEY: marker}, out)
    return out


def perturb_state(state: dict, score_shift: float, mask_shift: float) -> dict:
    """Add ``score_shift`` to the object-score head's output bias (negative: objects absent more often)
    and ``mask_shift`` to the mask hypernetworks' output biases (negative: smaller masks), in place.
    The same keys in SAM 2, SAM 2.1 and EdgeTAM (their mask decoders are the same)."""
    if score_shift:
        state["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += score_shift
    if mask_shift:
        for i in range(4):
            state[f"sam_mask_decoder.output_hypernetworks_mlps.{i}.layers.2.bias"] += mask_shift
    return state


def perturb_checkpoint(src: str | Path, dst: str | Path, score_shift: float, mask_shift: float) -> Path:
    """A copy of checkpoint ``src`` with :func:`perturb_state` applied, written to ``dst``."""
    ck = torch.load(src, map_location="cpu", weights_only=True)
    perturb_state(ck["model"], score_shift, mask_shift)
    torch.save(ck, dst)
    return Path(dst)


def is_random_checkpoint(path: str | Path) -> bool:
    """True for a checkpoint written by :func:`random_checkpoint` (memory-mapped: cheap on large files)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return bool(isinstance(ckpt, dict) and ckpt.get(MARKER_KEY, {}).get("random_weights"))
