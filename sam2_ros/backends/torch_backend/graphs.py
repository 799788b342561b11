"""Export-friendly PyTorch modules, one per ONNX graph, built on the official SAM 2 / EdgeTAM modules.

Each wrapper reuses the official sub-modules and weights and reproduces what
``SAM2Base`` computes for one streamed frame (docs/ARCHITECTURE.md, sections 2 and 6), with three changes
that make the graphs exportable and batchable over objects:

* RoPE uses real cos/sin on channel pairs instead of complex numbers;
* memory attention reads a fixed-shape memory bank with validity masks (masked keys,
  never zero padding) and takes per-slot temporal-encoding rows and pointer offsets;
* Python flags (multi-mask, binarise, "no memory") become input tensors, so one graph
  serves tracking frames and prompted frames.

The modules read the model's shape facts from the model itself (:func:`memory_layout`): a memory
frame is the memory encoder's feature map (SAM 2) or, when the model has a ``spatial_perceiver``
(EdgeTAM), its latents, which the memory-encoder graph computes (:class:`PerceiverExport`, batched
over objects, where the official resampler only runs one object at a time); the keys' RoPE covers
the part of each memory frame, and the grid, that the model's cross-attention rotates.
:func:`model_flags` writes these facts into the manifest, so the runtime never asks which model it runs.

The same modules back the PyTorch backend, so ONNX and PyTorch run identical maths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NO_OBJ_SCORE = -1024.0


def _sine_pe_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``sam2.modeling.sam2_utils.get_1d_sine_pe`` (same operations, export-safe)."""
    pe_dim = dim // 2
    dim_t = torch.arange(pe_dim, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * (dim_t // 2) / pe_dim)
    pos_embed = pos.unsqueeze(-1) / dim_t
    return torch.cat([pos_embed.sin(), pos_embed.cos()], dim=-1)


def rope_angles(head_dim: int, end_x: int, end_y: int, theta: float) -> torch.Tensor:
    """Angles of ``sam2.modeling.position_encoding.compute_axial_cis``: [end_x*end_y, head_dim/2]."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: (head_dim // 4)].float() / head_dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = (t % end_x).float()
    t_y = torch.div(t, end_x, rounding_mode="floor").float()
    return torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of ``x`` [..., T, D] by angles with cos/sin [T, D/2]."""
    shape = x.shape
    pairs = x.reshape(*shape[:-1], shape[-1] // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.reshape(shape)


class RoPEAttentionExport(nn.Module):
    """``RoPEAttention`` / ``RoPEAttentionv2`` with real-valued RoPE and an optional key-validity mask.

    Queries are rotated on the ``feat_hw`` grid. Keys: in self-attention (``mem_tokens`` None) like
    the queries; in cross-attention to memory, each memory frame of ``mem_tokens`` tokens has its
    last ``key_grid[0] * key_grid[1]`` tokens rotated on the integer ``key_grid`` (its first tokens,
    and the object-pointer tokens after the frames, are not rotated).
    """

    def __init__(self, attn: nn.Module, feat_hw: tuple[int, int], mem_tokens: int | None = None,
                 key_grid: tuple[int, int] | None = None):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj,
        )
        self.num_heads = attn.num_heads
        head_dim = attn.internal_dim // attn.num_heads
        theta = attn.compute_cis.keywords["theta"]
        h, w = feat_hw
        angles = rope_angles(head_dim, w, h, theta)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        kh, kw = key_grid or feat_hw
        k_angles = angles if (kh, kw) == (h, w) else rope_angles(head_dim, kw, kh, theta)
        self.register_buffer("k_cos", k_angles.cos(), persistent=False)
        self.register_buffer("k_sin", k_angles.sin(), persistent=False)
        self.mem_tokens = mem_tokens or h * w
        if self.mem_tokens < kh * kw:
            raise ValueError(f"a memory frame of {self.mem_tokens} tokens cannot hold a {kh}x{kw} RoPE grid")

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _rope_keys(self, k: torch.Tensor, num_frames) -> torch.Tensor:
        """Rotate the RoPE part of each of the first ``num_frames`` memory frames of ``k`` [B,nh,N,d]."""
        b, nh, _, d = k.shape
        t, r = self.mem_tokens, self.k_cos.shape[0]
        n_sp = num_frames * t
        frames = k[:, :, :n_sp].reshape(b, nh, -1, t, d)  # [B, nh, M, T, d]
        if r == t:
            frames = apply_rope(frames, self.k_cos, self.k_sin)
        else:
            frames = torch.cat([frames[:, :, :, : t - r], apply_rope(frames[:, :, :, t - r :], self.k_cos, self.k_sin)],
                               dim=3)
        return torch.cat([frames.reshape(b, nh, n_sp, d), k[:, :, n_sp:]], dim=2)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_rope_k_repeats: int = 1,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        q = apply_rope(q, self.cos, self.sin)
        if q.shape[0] != k.shape[0]:  # queries shared by every object (the first layer's)
            q = q.expand(k.shape[0], -1, -1, -1)
        k = self._rope_keys(k, num_rope_k_repeats)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, nh, t, ch = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, nh * ch))


def memory_layout(sam: nn.Module, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """A memory frame's layout, read from the model: its position encoding [T, mem_dim] (T tokens
    per frame) and the integer grid on which memory attention rotates its last tokens by RoPE.

    SAM 2: the memory encoder's sine encoding of the feature map, RoPE on the query grid.
    EdgeTAM: the Perceiver resampler's (zeros for the global latents, a sine encoding of the 2-D
    latents' grid), RoPE on the grid of the cross-attention's key frequencies (``freqs_cis_k``).
    """
    h = w = image_size // sam.backbone_stride
    with torch.no_grad():
        pos = sam.memory_encoder.position_encoding(torch.zeros(1, sam.mem_dim, h, w))
        perceiver = getattr(sam, "spatial_perceiver", None)
        if perceiver is not None:  # one object: the official resampler runs it
            _, pos = perceiver(torch.zeros(1, sam.mem_dim, h, w), pos)
        else:
            pos = pos.flatten(2).transpose(1, 2)
    grid = (h, w)
    for layer in sam.memory_attention.layers:
        freqs_k = getattr(layer.cross_attn_image, "freqs_cis_k", None)
        if freqs_k is not None:
            side = math.isqrt(freqs_k.shape[0])
            if side * side != freqs_k.shape[0]:
                raise ValueError(f"non-square key RoPE grid of {freqs_k.shape[0]} positions")
            grid = (side, side)
    return pos[0].float(), grid


class PerceiverExport(nn.Module):
    """EdgeTAM's ``PerceiverResampler`` on the memory encoder's output, batched over objects.

    The official module's 2-D path ``.view``s an expanded tensor and fails with two or more objects
    (facebookresearch/EdgeTAM issue 15); this one uses the same layers and weights with reshapes
    that batch. Input [B, C, H, W]; output [B, num_latents + num_latents_2d, C]: the global latents
    (attending to every token, the sine position added to keys and values), then one latent per
    window of the (sqrt(num_latents_2d))^2 grid, attending to that window's tokens.
    """

    def __init__(self, perceiver: nn.Module, pos: torch.Tensor):
        super().__init__()
        self.layers = perceiver.layers
        self.norm = perceiver.norm
        self.latents = perceiver.latents if perceiver.num_latents > 0 else None
        self.latents_2d = perceiver.latents_2d if perceiver.num_latents_2d > 0 else None
        self.num_window = math.isqrt(max(perceiver.num_latents_2d, 0))
        # sizes as Python ints (constants in the exported graph, which then knows every size but the batch)
        self.dim, self.side = pos.shape[1], pos.shape[-1]
        self.tokens = max(perceiver.num_latents, 0) + max(perceiver.num_latents_2d, 0)
        self.register_buffer("pos", pos.flatten(2).transpose(1, 2), persistent=False)  # [1, HW, C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, n = self.dim, self.num_window
        b = x.shape[0]
        out = []
        if self.latents is not None:
            tokens = x.flatten(2).transpose(1, 2)
            pos = self.pos.expand(b, -1, -1)
            lat = self.latents.unsqueeze(0).expand(b, -1, -1)
            for layer in self.layers:
                lat = layer(lat, tokens, pos)
            out.append(self.norm(lat))
        if self.latents_2d is not None:
            ws = self.side // n
            windows = (x.permute(0, 2, 3, 1).reshape(-1, n, ws, n, ws, c).permute(0, 1, 3, 2, 4, 5)
                       .reshape(-1, ws * ws, c))
            lat = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(-1, 1, c)
            for layer in self.layers:
                lat = layer(lat, windows)
            out.append(self.norm(lat.reshape(-1, n * n, c)))
        return torch.cat(out, dim=1).reshape(b, self.tokens, c)


class ImageEncoderGraph(nn.Module):
    """image [1,3,S,S] (normalised) -> feat_s0 [1,32,S/4,S/4], feat_s1 [1,64,S/8,S/8], image_embed [1,256,S/16,S/16]."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam

    def forward(self, image: torch.Tensor):
        out = self.sam.forward_image(image)
        fpn = out["backbone_fpn"]
        return fpn[0], fpn[1], fpn[2]


class MemoryAttentionGraph(nn.Module):
    """Condition the frame embedding on each object's memory bank.

    Inputs: image_embed [1,256,h,w]; mem_feats [B,M,T,64] (T tokens per memory frame); mem_tpos_row [B,M] int64
    (row of ``maskmem_tpos_enc``); mem_valid [B,M] bool; obj_ptrs [B,P,256];
    ptr_tpos [B,P] float (offset already divided by the pointer span); ptr_valid [B,P] bool.
    Output: pix_feat [B,256,h,w].
    """

    def __init__(self, sam: nn.Module, image_size: int):
        super().__init__()
        ma = sam.memory_attention
        self.h = self.w = image_size // sam.backbone_stride
        self.hidden_dim = sam.hidden_dim
        self.mem_dim = sam.mem_dim
        self.layers = ma.layers
        self.norm = ma.norm
        self.pos_enc_at_input = ma.pos_enc_at_input
        mem_pos, key_grid = memory_layout(sam, image_size)
        self.mem_tokens = mem_pos.shape[0]
        self.self_attn = nn.ModuleList(
            RoPEAttentionExport(layer.self_attn, (self.h, self.w)) for layer in ma.layers
        )
        self.cross_attn = nn.ModuleList(
            RoPEAttentionExport(layer.cross_attn_image, (self.h, self.w), self.mem_tokens, key_grid)
            for layer in ma.layers
        )
        self.maskmem_tpos_enc = sam.maskmem_tpos_enc  # [num_maskmem,1,1,mem_dim]
        self.add_tpos_enc_to_obj_ptrs = sam.add_tpos_enc_to_obj_ptrs
        self.proj_tpos_enc_in_obj_ptrs = sam.proj_tpos_enc_in_obj_ptrs
        self.obj_ptr_tpos_proj = sam.obj_ptr_tpos_proj
        with torch.no_grad():
            curr_pos = sam.image_encoder.neck.position_encoding(
                torch.zeros(1, self.hidden_dim, self.h, self.w)
            )
        self.register_buffer("curr_pos", curr_pos.flatten(2).transpose(1, 2), persistent=False)
        self.register_buffer("mem_pos", mem_pos.unsqueeze(0), persistent=False)  # [1, T, mem_dim]

    def forward(self, image_embed, mem_feats, mem_tpos_row, mem_valid, obj_ptrs, ptr_tpos, ptr_valid):
        b, m, t, c_mem = mem_feats.shape
        p = obj_ptrs.shape[1]
        split = self.hidden_dim // self.mem_dim
        # the frame's tokens are the same for every object until the first cross-attention: the
        # first layer's self-attention (and its cross-attention queries) run once, at batch 1
        curr = image_embed.flatten(2).transpose(1, 2)
        # spatial memories: features + sine PE + temporal row
        tpos = self.maskmem_tpos_enc.reshape(-1, self.mem_dim)[mem_tpos_row]  # [B,M,64]
        mem_pos = (self.mem_pos.unsqueeze(0) + tpos.unsqueeze(2)).reshape(b, m * t, c_mem)
        memory = mem_feats.reshape(b, m * t, c_mem)
        # object pointers, each split into `split` tokens of mem_dim
        if self.add_tpos_enc_to_obj_ptrs:
            tpos_dim = self.hidden_dim if self.proj_tpos_enc_in_obj_ptrs else self.mem_dim
            ptr_pos = self.obj_ptr_tpos_proj(_sine_pe_1d(ptr_tpos, tpos_dim))
        else:
            # SAM 2.0: no temporal encoding; keep the input in the graph so every model has one signature
            ptr_pos = obj_ptrs.new_zeros(b, p, self.mem_dim) + 0.0 * ptr_tpos.unsqueeze(-1)
        ptr_tokens = obj_ptrs.reshape(b, p * split, self.mem_dim)
        ptr_pos = ptr_pos.unsqueeze(2).expand(b, p, split, self.mem_dim).reshape(b, p * split, self.mem_dim)
        memory = torch.cat([memory, ptr_tokens], dim=1)
        memory_pos = torch.cat([mem_pos, ptr_pos], dim=1)
        if mem_valid is None:  # every slot valid: unmasked attention (the fused / flash kernels)
            key_valid = None
        else:
            key_valid = torch.cat(
                [
                    mem_valid.unsqueeze(2).expand(b, m, t).reshape(b, m * t),
                    ptr_valid.unsqueeze(2).expand(b, p, split).reshape(b, p * split),
                ],
                dim=1,
            )

        out = curr
        if self.pos_enc_at_input:
            out = out + 0.1 * self.curr_pos
        for layer, sa, ca in zip(self.layers, self.self_attn, self.cross_attn):
            tgt2 = layer.norm1(out)
            q = k = tgt2 + self.curr_pos if layer.pos_enc_at_attn else tgt2
            out = out + sa(q, k, tgt2)
            tgt2 = layer.norm2(out)
            out = out + ca(
                tgt2 + self.curr_pos if layer.pos_enc_at_cross_attn_queries else tgt2,
                memory + memory_pos if layer.pos_enc_at_cross_attn_keys else memory,
                memory,
                num_rope_k_repeats=m,
                key_valid=key_valid,
            )
            tgt2 = layer.norm3(out)
            out = out + layer.linear2(layer.activation(layer.linear1(tgt2)))
        out = self.norm(out)
        return out.transpose(1, 2).reshape(b, self.hidden_dim, self.h, self.w)


class DenseMemoryAttentionGraph(MemoryAttentionGraph):
    """:class:`MemoryAttentionGraph` over slots that are all valid: no masks, so the attention
    runs on the fused (flash) kernels. The caller packs each object's valid slots."""

    def forward(self, image_embed, mem_feats, mem_tpos_row, obj_ptrs, ptr_tpos):
        return super().forward(image_embed, mem_feats, mem_tpos_row, None, obj_ptrs, ptr_tpos, None)


def embed_points(pe: nn.Module, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``PromptEncoder._embed_points(coords, labels, pad=True)`` with ``torch.where`` (as Meta's SAM 2
    1.1 writes it): EdgeTAM's older copy assigns through boolean indices, which the ONNX export
    turns into broadcasts that fail at run time. Same values."""
    coords = coords + 0.5  # centre of the pixel
    coords = torch.cat([coords, torch.zeros_like(coords[:, :1])], dim=1)  # the padding point
    labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
    emb = pe.pe_layer.forward_with_coords(coords, pe.input_image_size)
    labels = labels.unsqueeze(-1)
    emb = torch.where(labels == -1, torch.zeros_like(emb) + pe.not_a_point_embed.weight, emb)
    for k, table in enumerate(pe.point_embeddings):
        emb = torch.where(labels == k, emb + table.weight, emb)
    return emb


class MaskDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder + mask/pointer selection for a batch of objects.

    Inputs: pix_feat [B,256,h,w]; feat_s0 [1,32,4h,4w]; feat_s1 [1,64,2h,2w];
    no_mem [B] float (1 adds ``no_mem_embed``: an object's first prompted frame);
    point_coords [B,N,2] float (model-input pixels); point_labels [B,N] int32
    (1 pos, 0 neg, 2/3 box corners, -1 "no point"); mask_input [B,1,4h,4w] float logits;
    has_mask [B] float; multimask [B] float (1: best of the 3 multi-mask outputs).
    Outputs: low_res_masks [B,1,4h,4w], iou [B,1], obj_ptr [B,256], object_score_logits [B,1].
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.pe = sam.sam_prompt_encoder
        self.dec = sam.sam_mask_decoder
        self.obj_ptr_proj = sam.obj_ptr_proj
        self.no_mem_embed = sam.no_mem_embed  # [1,1,256]
        self.pred_obj_scores = sam.pred_obj_scores
        self.soft_no_obj_ptr = sam.soft_no_obj_ptr
        self.fixed_no_obj_ptr = sam.fixed_no_obj_ptr
        self.no_obj_ptr = getattr(sam, "no_obj_ptr", None)
        self.use_multimask_token_for_obj_ptr = self.dec.use_multimask_token_for_obj_ptr
        self.dynamic_stability = bool(self.dec.dynamic_multimask_via_stability)
        self.stability_delta = float(self.dec.dynamic_multimask_stability_delta)
        self.stability_thresh = float(self.dec.dynamic_multimask_stability_thresh)
        with torch.no_grad():
            self.register_buffer("image_pe", self.pe.get_dense_pe(), persistent=False)

    def forward(self, pix_feat, feat_s0, feat_s1, no_mem, point_coords, point_labels, mask_input, has_mask, multimask):
        b = pix_feat.shape[0]
        pix = pix_feat + no_mem.reshape(b, 1, 1, 1) * self.no_mem_embed.reshape(1, -1, 1, 1)
        sparse = embed_points(self.pe, point_coords, point_labels)
        dense_mask = self.pe.mask_downscaling(mask_input)
        dense_none = self.pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(dense_mask)
        dense = torch.where(has_mask.reshape(b, 1, 1, 1) > 0.5, dense_mask, dense_none)
        masks, ious, tokens, score = self.dec.predict_masks(
            image_embeddings=pix,
            image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[feat_s0.expand(b, -1, -1, -1), feat_s1.expand(b, -1, -1, -1)],
        )
        if self.pred_obj_scores:
            appearing = score > 0  # [B,1]
            masks = torch.where(appearing[:, :, None, None], masks, torch.full_like(masks, NO_OBJ_SCORE))
        # best of the 3 multi-mask outputs by predicted IoU
        best_multi = torch.argmax(ious[:, 1:], dim=-1) + 1  # [B]
        use_multi = multimask > 0.5
        if self.dynamic_stability:
            flat = masks[:, 0].flatten(1)
            area_i = (flat > self.stability_delta).sum(-1).float()
            area_u = (flat > -self.stability_delta).sum(-1).float()
            stability = torch.where(area_u > 0, area_i / area_u, torch.ones_like(area_u))
            single_idx = torch.where(stability >= self.stability_thresh, torch.zeros_like(best_multi), best_multi)
        else:
            single_idx = torch.zeros_like(best_multi)
        idx = torch.where(use_multi, best_multi, single_idx)
        sel = F.one_hot(idx, masks.shape[1]).to(masks.dtype)  # [B,4]
        low_res = (masks * sel[:, :, None, None]).sum(1, keepdim=True)
        iou = (ious * sel).sum(1, keepdim=True)
        if self.use_multimask_token_for_obj_ptr:
            tok_idx = torch.where(use_multi, best_multi, torch.zeros_like(best_multi))
        else:
            tok_idx = torch.zeros_like(best_multi)
        tok_sel = F.one_hot(tok_idx, tokens.shape[1]).to(tokens.dtype)
        token = (tokens * tok_sel[:, :, None]).sum(1)
        obj_ptr = self.obj_ptr_proj(token)
        if self.pred_obj_scores:
            lam = score.sigmoid() if self.soft_no_obj_ptr else appearing.float()
            if self.fixed_no_obj_ptr:
                obj_ptr = lam * obj_ptr
            obj_ptr = obj_ptr + (1 - lam) * self.no_obj_ptr
        return low_res, iou, obj_ptr, score


class MemoryEncoderGraph(nn.Module):
    """Encode an object's chosen mask on a frame into a spatial memory.

    Inputs: image_embed [1,256,h,w]; low_res_masks [B,1,4h,4w]; binarize [B] float
    (1 on prompted frames); object_score_logits [B,1].
    Output: maskmem [B,T,64] (memory features, token-major as the bank stores them): the
    h*w feature map (SAM 2), or the Perceiver resampler's T latents (EdgeTAM).
    """

    def __init__(self, sam: nn.Module, image_size: int):
        super().__init__()
        self.enc = sam.memory_encoder
        self.image_size = image_size
        perceiver = getattr(sam, "spatial_perceiver", None)
        self.perceiver = None
        if perceiver is not None:
            h = image_size // sam.backbone_stride
            with torch.no_grad():
                pos = sam.memory_encoder.position_encoding(torch.zeros(1, sam.mem_dim, h, h))
            self.perceiver = PerceiverExport(perceiver, pos)
        self.scale = float(sam.sigmoid_scale_for_mem_enc)
        self.bias = float(sam.sigmoid_bias_for_mem_enc)
        self.no_obj_embed_spatial = sam.no_obj_embed_spatial  # [1,64] or None

    def forward(self, image_embed, low_res_masks, binarize, object_score_logits):
        b = low_res_masks.shape[0]
        high = F.interpolate(low_res_masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        mask = torch.where(binarize.reshape(b, 1, 1, 1) > 0.5, (high > 0).float(), torch.sigmoid(high))
        if self.scale != 1.0:
            mask = mask * self.scale
        if self.bias != 0.0:
            mask = mask + self.bias
        pix = image_embed.expand(b, -1, -1, -1)
        feats = self.enc(pix, mask, skip_mask_sigmoid=True)["vision_features"]
        if self.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logits > 0).float()  # [B,1]
            feats = feats + absent[:, :, None, None] * self.no_obj_embed_spatial[:, :, None, None]
        else:  # SAM 2.0: no "absent" embedding; keep the input so every model has one signature
            feats = feats + 0.0 * object_score_logits[:, :, None, None]
        if self.perceiver is not None:
            return self.perceiver(feats)
        return feats.flatten(2).transpose(1, 2)


def graph_modules(sam: nn.Module, image_size: int) -> dict[str, nn.Module]:
    """The graphs of ``sam`` as modules in eval mode, keyed by their ``sam2_ros.graph_io`` names
    (the four graphs and the optional dense memory attention)."""
    return {
        "image_encoder": ImageEncoderGraph(sam).eval(),
        "memory_attention": MemoryAttentionGraph(sam, image_size).eval(),
        "memory_attention_dense": DenseMemoryAttentionGraph(sam, image_size).eval(),
        "mask_decoder": MaskDecoderGraph(sam).eval(),
        "memory_encoder": MemoryEncoderGraph(sam, image_size).eval(),
    }


def model_constants(sam: nn.Module) -> dict[str, "torch.Tensor"]:
    """Small tensors the host needs for mask prompts (no graph needed for them)."""
    out = {
        "mask_downsample_weight": sam.mask_downsample.weight.detach().reshape(4, 4),
        "mask_downsample_bias": sam.mask_downsample.bias.detach().reshape(1),
    }
    if getattr(sam, "no_obj_ptr", None) is not None:
        out["no_obj_ptr"] = sam.no_obj_ptr.detach().reshape(-1)
    return {k: v.float().cpu() for k, v in out.items()}


def model_flags(sam: nn.Module, image_size: int) -> dict:
    """Host-side tracking settings of the model (they are Python flags in the official code) and
    the memory layout (:func:`memory_layout`): the manifest's ``flags``, read into ``ModelSpec``."""
    mem_pos, key_grid = memory_layout(sam, image_size)
    return {
        "image_size": image_size,
        "backbone_stride": sam.backbone_stride,
        "feat_size": image_size // sam.backbone_stride,
        "hidden_dim": sam.hidden_dim,
        "mem_dim": sam.mem_dim,
        "num_maskmem": sam.num_maskmem,
        "max_obj_ptrs_in_encoder": sam.max_obj_ptrs_in_encoder,
        "use_signed_tpos_enc_to_obj_ptrs": bool(sam.use_signed_tpos_enc_to_obj_ptrs),
        "only_obj_ptrs_in_the_past_for_eval": bool(sam.only_obj_ptrs_in_the_past_for_eval),
        "multimask_output_in_sam": bool(sam.multimask_output_in_sam),
        "multimask_output_for_tracking": bool(sam.multimask_output_for_tracking),
        "multimask_min_pt_num": int(sam.multimask_min_pt_num),
        "multimask_max_pt_num": int(sam.multimask_max_pt_num),
        "binarize_mask_from_pts_for_mem_enc": bool(sam.binarize_mask_from_pts_for_mem_enc),
        "use_mask_input_as_output_without_sam": bool(sam.use_mask_input_as_output_without_sam),
        "fixed_no_obj_ptr": bool(sam.fixed_no_obj_ptr),
        "pred_obj_scores": bool(sam.pred_obj_scores),
        "directly_add_no_mem_embed": bool(sam.directly_add_no_mem_embed),
        "mem_tokens": int(mem_pos.shape[0]),
        "mem_rope_grid": list(key_grid),
        "memory_attention_layers": len(sam.memory_attention.layers),
        "add_tpos_enc_to_obj_ptrs": bool(sam.add_tpos_enc_to_obj_ptrs),
        "no_obj_embed_spatial": sam.no_obj_embed_spatial is not None,
    }
