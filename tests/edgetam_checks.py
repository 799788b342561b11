"""Checks that need Meta's EdgeTAM package: run by tests/test_edgetam.py under EdgeTAM's Python.

``python tests/edgetam_checks.py CHECKPOINT EXPORT_DIR FRAMES_NPY`` prints one JSON line of
measured differences; the test asserts on them. Each number compares our modules with the
official ones (same weights), so a wrong rewrite shows as a large difference:

* ``perceiver``: our batched Perceiver (3 objects at once) vs the official resampler run per object,
  and whether the official one fails when batched (EdgeTAM issue 15);
* ``memory_attention``: our memory-attention graph (2 objects, 3 memory frames, pointers) vs the
  official ``MemoryAttention`` called as ``SAM2Base`` calls it (``RoPEAttentionv2`` key layout);
* ``memory_encoder``: our memory-encoder graph vs ``SAM2Base._encode_new_memory`` per object;
* ``torch_backend``: the torch backend (CPU) vs ONNX Runtime on the same export, tracking 2 objects.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch


def main(checkpoint: str, export_dir: str, frames_path: str) -> dict:
    from sam2_ros.backends import load_backend
    from sam2_ros.backends.torch_backend.graphs import MemoryAttentionGraph, MemoryEncoderGraph, memory_layout
    from sam2_ros.backends.torch_backend.official import build_video_predictor
    from sam2_ros.io.prompts_file import Prompt
    from sam2_ros.io.runner import run_tracker
    from sam2_ros.manifest import load_manifest
    from sam2_ros.tracker import Tracker

    spec = load_manifest(export_dir).spec
    size = spec.image_size
    sam = build_video_predictor("edgetam", checkpoint, image_size=size).eval()
    h = size // 16
    g = torch.Generator().manual_seed(0)
    out: dict = {}
    with torch.inference_mode():
        # Perceiver: ours batched vs the official one per object
        feats = torch.randn(3, sam.mem_dim, h, h, generator=g)
        pos = sam.memory_encoder.position_encoding(torch.zeros(1, sam.mem_dim, h, h))
        enc = MemoryEncoderGraph(sam, size).eval()
        ours = enc.perceiver(feats)
        ref = torch.cat([sam.spatial_perceiver(feats[i : i + 1], pos)[0] for i in range(3)])
        out["perceiver"] = {"max_diff": float((ours - ref).abs().max()), "tokens": ours.shape[1]}
        try:
            sam.spatial_perceiver(feats, pos.expand(3, -1, -1, -1))
            out["perceiver"]["official_batched_fails"] = False
        except RuntimeError:
            out["perceiver"]["official_batched_fails"] = True

        # memory encoder: ours (batched) vs _encode_new_memory per object
        embed = torch.randn(1, sam.hidden_dim, h, h, generator=g)
        low_res = torch.randn(2, 1, 4 * h, 4 * h, generator=g) * 5
        score = torch.tensor([[0.5], [-0.5]])
        ours = enc(embed, low_res, torch.tensor([1.0, 0.0]), score)
        diffs = []
        for i, binarize in enumerate((True, False)):
            high = torch.nn.functional.interpolate(low_res[i : i + 1], size=(size, size), mode="bilinear",
                                                   align_corners=False)
            feats_i, pos_i = sam._encode_new_memory([embed.flatten(2).permute(2, 0, 1)], [(h, h)], high,
                                                     score[i : i + 1], binarize)
            diffs.append(float((ours[i] - feats_i[0]).abs().max()))
            mem_pos, _ = memory_layout(sam, size)
            out.setdefault("memory_pos_diff", float((pos_i[0][0] - mem_pos).abs().max()))
        out["memory_encoder"] = {"max_diff": max(diffs)}

        # memory attention: ours vs the official module, as SAM2Base._prepare_memory_conditioned_features calls it
        b, m, p = 2, 3, 5
        t = spec.mem_tokens
        mem = torch.randn(b, m, t, sam.mem_dim, generator=g)
        ptrs = torch.randn(b, p, sam.hidden_dim, generator=g)
        rows = torch.tensor([[sam.num_maskmem - 1, 0, 2]] * b)  # a conditioning frame, t-1, t-3
        att = MemoryAttentionGraph(sam, size).eval()
        ours = att(embed, mem, rows, torch.ones(b, m, dtype=torch.bool), ptrs, torch.zeros(b, p),
                   torch.ones(b, p, dtype=torch.bool))
        mem_pos, _ = memory_layout(sam, size)
        split = sam.hidden_dim // sam.mem_dim
        memory = torch.cat([mem.reshape(b, m * t, -1).transpose(0, 1),
                            ptrs.reshape(b, p, split, sam.mem_dim).permute(1, 2, 0, 3).reshape(p * split, b, -1)])
        tpos = sam.maskmem_tpos_enc.reshape(sam.num_maskmem, -1)[rows[0]]  # [m, 64]
        memory_pos = torch.cat([(mem_pos[None] + tpos[:, None]).reshape(m * t, 1, -1).expand(-1, b, -1),
                                torch.zeros(p * split, b, sam.mem_dim)])
        curr = embed.flatten(2).permute(2, 0, 1).expand(-1, b, -1)
        curr_pos = sam.image_encoder.neck.position_encoding(embed).flatten(2).permute(2, 0, 1).expand(-1, b, -1)
        ref = sam.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=memory, memory_pos=memory_pos,
                                   num_obj_ptr_tokens=p * split, num_spatial_mem=m)
        ref = ref.permute(1, 2, 0).reshape(b, sam.hidden_dim, h, h)
        out["memory_attention"] = {"max_diff": float((ours - ref).abs().max()), "scale": float(ref.abs().max())}

    # the torch backend vs ONNX Runtime on the same export
    frames = list(np.load(frames_path))
    prompts = [Prompt(0, 1, np.asarray([[300, 200]], np.float32), np.array([1], np.int32)),
               Prompt(1, 2, None, None, np.array([600, 250, 800, 450], np.float32))]
    runs = {}
    for name, opts in (("torch", {"device": "cpu", "checkpoint": checkpoint}), ("onnxruntime", {})):
        tracker = Tracker(load_backend(export_dir, name, **opts), max_objects=2, num_frames=len(frames))
        runs[name] = run_tracker(tracker, frames, prompts, keep_low_res=True)
        out.setdefault("bank_tokens", int(tracker.bank.mem_feats.shape[2]))
    a, r = runs["torch"], runs["onnxruntime"]
    valid = ~np.isnan(r.scores)
    out["torch_backend"] = {
        "max_logit_diff": float(np.nanmax(np.abs(a.low_res - r.low_res))),
        "same_signs": bool(((a.scores > 0) == (r.scores > 0))[valid].all()),
        "frames": len(frames),
    }
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
