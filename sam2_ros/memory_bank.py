"""MemoryBank: every object's SAM 2 memory in buffers allocated once.

Layout per object row (``max_objects`` rows):

* spatial memories ``mem_feats [rows, R + K, HW, mem_dim]``: ``R = num_maskmem - 1`` recent
  slots used as a ring (slot = frame % R), then ``K`` conditioning slots (prompted frames);
* object pointers ``obj_ptrs [rows, Rp + K, hidden]``: ``Rp = max_obj_ptrs - 1`` recent slots
  (ring, slot = frame % Rp), then the same ``K`` conditioning slots;
* the frame index held by each slot (-1: empty).

Writing a frame is a slot write; reading returns views of the buffers plus per-slot validity,
temporal-encoding rows and pointer offsets computed into preallocated scratch arrays. Nothing
grows with the length of the stream.

Conditioning slots keep the latest ``K`` prompted frames (optionally the first prompted frame
plus the latest ``K - 1``). An evicted conditioning frame that is still among the recent frames
goes to its recent slot: exactly what the official predictor does with
``max_cond_frames_in_attn = K`` (it attends to the ``K`` temporally closest conditioning frames
and treats an unselected one among the last frames as a recent memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), kept as float32 in place."""
    u = x.view(np.uint32)
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    u &= np.uint32(0xFFFF0000)
    return x


@dataclass
class AttentionInputs:
    """Inputs of the memory-attention graph for a contiguous range of object rows."""

    mem_feats: np.ndarray  # [n, M, HW, mem_dim] view
    mem_tpos_row: np.ndarray  # [n, M] int64
    mem_valid: np.ndarray  # [n, M] bool
    obj_ptrs: np.ndarray  # [n, P, hidden] view
    ptr_tpos: np.ndarray  # [n, P] float32
    ptr_valid: np.ndarray  # [n, P] bool

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)


class MemoryBank:
    """Preallocated memory of up to ``max_objects`` tracked objects."""

    def __init__(
        self,
        max_objects: int,
        cond_slots: int,
        feat_hw: int,
        mem_dim: int = 64,
        hidden_dim: int = 256,
        num_maskmem: int = 7,
        max_obj_ptrs: int = 16,
        signed_ptr_offsets: bool = True,
        store_bfloat16: bool = True,
        keep_first_cond_frame: bool = False,
    ):
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        if cond_slots < 1:
            raise ValueError(f"cond_slots must be >= 1, got {cond_slots}")
        if keep_first_cond_frame and cond_slots < 2:
            raise ValueError("keep_first_cond_frame needs cond_slots >= 2 (the first frame plus the latest)")
        self.max_objects = max_objects
        self.cond_slots = cond_slots
        self.recent = num_maskmem - 1
        self.ptr_recent = max_obj_ptrs - 1
        self.num_maskmem = num_maskmem
        self.signed_ptr_offsets = signed_ptr_offsets
        self.store_bfloat16 = store_bfloat16
        self.keep_first_cond_frame = keep_first_cond_frame
        m = self.recent + cond_slots
        p = self.ptr_recent + cond_slots
        self.mem_feats = np.zeros((max_objects, m, feat_hw, mem_dim), np.float32)
        self.mem_frame = np.full((max_objects, m), -1, np.int64)
        self.obj_ptrs = np.zeros((max_objects, p, hidden_dim), np.float32)
        self.ptr_frame = np.full((max_objects, p), -1, np.int64)
        # scratch for attention inputs (never reallocated)
        self._tpos_row = np.zeros((max_objects, m), np.int64)
        self._mem_valid = np.zeros((max_objects, m), bool)
        self._ptr_tpos = np.zeros((max_objects, p), np.float32)
        self._ptr_valid = np.zeros((max_objects, p), bool)

    # ----------------------------------------------------------------- writes
    def clear(self, row: int) -> None:
        """Forget everything of object row ``row``."""
        self.mem_frame[row] = -1
        self.ptr_frame[row] = -1
        self.mem_feats[row] = 0.0
        self.obj_ptrs[row] = 0.0

    def move(self, src: int, dst: int) -> None:
        """Copy row ``src`` into row ``dst`` and clear ``src`` (keeps live rows contiguous)."""
        if src == dst:
            return
        for buf in (self.mem_feats, self.mem_frame, self.obj_ptrs, self.ptr_frame):
            buf[dst] = buf[src]
        self.clear(src)

    def _store(self, dst: np.ndarray, feats: np.ndarray) -> None:
        dst[...] = feats
        if self.store_bfloat16:
            round_to_bfloat16(dst)

    def write_frame(self, rows: slice | np.ndarray, frame: int, feats: np.ndarray, ptrs: np.ndarray) -> None:
        """Store tracked-frame memories of ``rows`` (slice or index array) in their recent ring slots.

        Frame t evicts frame t - R: write frame t only once frame t is no longer current
        (a refinement on frame t still attends to frames t-R .. t-1).
        """
        s, sp = frame % self.recent, frame % self.ptr_recent
        if self.store_bfloat16:
            feats = round_to_bfloat16(np.array(feats, np.float32, copy=True))
        self.mem_feats[rows, s] = feats
        self.mem_frame[rows, s] = frame
        self.obj_ptrs[rows, sp] = ptrs
        self.ptr_frame[rows, sp] = frame

    def write_conditioning(self, row: int, frame: int, feats: np.ndarray, ptr: np.ndarray) -> None:
        """Store a prompted frame's memory as a conditioning frame of ``row``.

        Reuses the slot of the same frame, else an empty slot, else evicts the oldest
        conditioning frame (the second oldest with ``keep_first_cond_frame``); the evicted
        frame moves to its recent slot (used while it is among the recent frames). A frame
        that is conditioning is removed from the recent slots.
        """
        k = self._cond_slot_for(row, frame)
        r, rp = self.recent, self.ptr_recent
        evicted = int(self.mem_frame[row, r + k])
        if 0 <= evicted != frame:
            self._demote(row, k, evicted)
        self._store(self.mem_feats[row, r + k], feats)
        self.mem_frame[row, r + k] = frame
        self.obj_ptrs[row, rp + k] = ptr
        self.ptr_frame[row, rp + k] = frame
        recent = self.mem_frame[row, :r]
        recent[recent == frame] = -1
        recent_p = self.ptr_frame[row, :rp]
        recent_p[recent_p == frame] = -1

    def _cond_slot_for(self, row: int, frame: int) -> int:
        frames = self.mem_frame[row, self.recent :]
        same = np.flatnonzero(frames == frame)
        if same.size:
            return int(same[0])
        empty = np.flatnonzero(frames < 0)
        if empty.size:
            return int(empty[0])
        order = np.argsort(frames, kind="stable")
        return int(order[1] if self.keep_first_cond_frame else order[0])

    def _demote(self, row: int, k: int, frame: int) -> None:
        """Copy conditioning slot ``k`` (holding ``frame``) to ``frame``'s recent ring slots,
        unless a later frame already holds them (then ``frame`` is too old to be recent)."""
        s, sp = frame % self.recent, frame % self.ptr_recent
        if self.mem_frame[row, s] < frame:
            self.mem_feats[row, s] = self.mem_feats[row, self.recent + k]
            self.mem_frame[row, s] = frame
        if self.ptr_frame[row, sp] < frame:
            self.obj_ptrs[row, sp] = self.obj_ptrs[row, self.ptr_recent + k]
            self.ptr_frame[row, sp] = frame

    # ------------------------------------------------------------------ reads
    def conditioning_frames(self, row: int) -> list[int]:
        f = self.mem_frame[row, self.recent :]
        return sorted(int(x) for x in f[f >= 0])

    def attention_inputs(self, start: int, stop: int, frame: int, ptr_span: int) -> AttentionInputs:
        """Memory-attention inputs of rows ``start:stop`` for tracking ``frame``.

        ``ptr_span`` is the largest pointer distance (15 for a stream; SAM 2 uses
        ``min(num_frames, 16) - 1`` for a clip); offsets are divided by it.
        """
        n = stop - start
        # spatial: recent slot valid for frame distance 1..R (row d-1); conditioning: any past frame
        mf = self.mem_frame[start:stop]
        dist = frame - mf
        tpos, valid = self._tpos_row[:n], self._mem_valid[:n]
        r = self.recent
        valid[:, :r] = (mf[:, :r] >= 0) & (dist[:, :r] >= 1) & (dist[:, :r] <= r)
        tpos[:, :r] = np.clip(dist[:, :r] - 1, 0, self.num_maskmem - 1)
        valid[:, r:] = (mf[:, r:] >= 0) & (dist[:, r:] >= 0)
        tpos[:, r:] = self.num_maskmem - 1
        # pointers: recent for distance 1..ptr_span, conditioning for any past frame
        pf = self.ptr_frame[start:stop]
        pdist = frame - pf
        ptpos, pvalid = self._ptr_tpos[:n], self._ptr_valid[:n]
        rp = self.ptr_recent
        pvalid[:, :rp] = (pf[:, :rp] >= 0) & (pdist[:, :rp] >= 1) & (pdist[:, :rp] <= min(ptr_span, rp))
        pvalid[:, rp:] = (pf[:, rp:] >= 0) & (pdist[:, rp:] >= 0)
        offs = pdist if self.signed_ptr_offsets else np.abs(pdist)
        np.divide(offs, max(ptr_span, 1), out=ptpos, casting="unsafe")
        # hand out only the slots in use: recent ring + conditioning slots up to the last used
        used_cond = np.flatnonzero((mf[:, r:] >= 0).any(axis=0))
        k = int(used_cond[-1]) + 1 if used_cond.size else 1
        m, p = r + k, rp + k
        return AttentionInputs(
            mem_feats=self.mem_feats[start:stop, :m],
            mem_tpos_row=tpos[:, :m],
            mem_valid=valid[:, :m],
            obj_ptrs=self.obj_ptrs[start:stop, :p],
            ptr_tpos=ptpos[:, :p],
            ptr_valid=pvalid[:, :p],
        )

    @property
    def nbytes(self) -> int:
        return sum(
            b.nbytes
            for b in (self.mem_feats, self.mem_frame, self.obj_ptrs, self.ptr_frame,
                      self._tpos_row, self._mem_valid, self._ptr_tpos, self._ptr_valid)
        )
