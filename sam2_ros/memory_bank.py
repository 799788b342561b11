"""MemoryBank: every object's SAM 2 memory and current-frame state, in buffers allocated once.

Layout per object row (``max_objects`` rows; live objects are rows ``0..n-1``):

* spatial memories ``mem_feats [rows, R + K, HW, mem_dim]``: ``R = num_maskmem - 1`` recent
  slots used as a ring (slot = frame % R), then ``K`` conditioning slots (prompted frames);
* object pointers ``obj_ptrs [rows, Rp + K, hidden]``: ``Rp = max_obj_ptrs - 1`` recent slots
  (ring, slot = frame % Rp), then the same ``K`` conditioning slots;
* the current frame's outputs of each row: low-res logits, object score, pointer, and the
  tracked memory staged until the frame is no longer current;
* the frame index held by each slot (-1: empty) and per-row flags (small host arrays).

The tensors live in the backend's :class:`~sam2_ros.storage.Storage` (host numpy for ONNX
Runtime on CPU, torch tensors on the torch backend's device): the memory encoder's output is
written into its slot there and the attention reads views of it, so a GPU backend's per-frame
step moves no memory through the host. Host mirrors of the low-res logits and scores serve the
results (masks, boxes) and hole filling.

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

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sam2_ros.postprocess import fill_holes
from sam2_ros.storage import HOST, Buffer, Storage


@dataclass
class AttentionInputs:
    """Inputs of the memory-attention graph for a contiguous range of object rows."""

    mem_feats: Buffer  # [n, M, HW, mem_dim] view of the bank (in the backend's storage)
    mem_tpos_row: np.ndarray  # [n, M] int64
    mem_valid: np.ndarray  # [n, M] bool
    obj_ptrs: Buffer  # [n, P, hidden] view of the bank
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
        low_res_size: int | None = None,
        storage: Storage = HOST,
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
        self.storage = storage
        m = self.recent + cond_slots
        p = self.ptr_recent + cond_slots
        lr = low_res_size or 4 * math.isqrt(feat_hw)  # logits at S/4, features at S/16
        self.mem_feats = storage.zeros((max_objects, m, feat_hw, mem_dim))
        self.mem_frame = np.full((max_objects, m), -1, np.int64)
        self.obj_ptrs = storage.zeros((max_objects, p, hidden_dim))
        self.ptr_frame = np.full((max_objects, p), -1, np.int64)
        # the current frame of each row (in storage) and its host mirrors
        self.low_res = storage.zeros((max_objects, 1, lr, lr))
        self.score = storage.zeros((max_objects, 1))
        self.ptr = storage.zeros((max_objects, hidden_dim))
        self.staged_mem = storage.zeros((max_objects, feat_hw, mem_dim))
        self.low_res_host = self.low_res if storage.on_host else np.zeros((max_objects, 1, lr, lr), np.float32)
        self.score_host = self.score if storage.on_host else np.zeros((max_objects, 1), np.float32)
        self.iou_host = np.zeros((max_objects, 1), np.float32)
        self.tracked = np.zeros(max_objects, bool)  # output on this frame came from tracking
        self.staged = np.zeros(max_objects, bool)  # tracked memory waiting for the next frame
        self.pending = np.zeros(max_objects, bool)  # prompted on this frame: memory not encoded yet
        self.pending_cond = np.zeros(max_objects, bool)  # ... and it goes to a conditioning slot
        self._binarize = {v: np.full(max_objects, float(v), np.float32) for v in (0, 1)}
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
        for buf in (self.mem_feats, self.obj_ptrs, self.low_res, self.score, self.ptr, self.staged_mem):
            buf[row] = 0.0
        if not self.storage.on_host:
            self.low_res_host[row] = 0.0
            self.score_host[row] = 0.0
        self.iou_host[row] = 0.0
        for flags in (self.tracked, self.staged, self.pending, self.pending_cond):
            flags[row] = False

    def move(self, src: int, dst: int) -> None:
        """Copy row ``src`` into row ``dst`` and clear ``src`` (keeps live rows contiguous)."""
        if src == dst:
            return
        bufs = [self.mem_feats, self.mem_frame, self.obj_ptrs, self.ptr_frame, self.low_res, self.score,
                self.ptr, self.staged_mem, self.iou_host, self.tracked, self.staged, self.pending, self.pending_cond]
        if not self.storage.on_host:
            bufs += [self.low_res_host, self.score_host]
        for buf in bufs:
            buf[dst] = buf[src]
        self.clear(src)

    def _store(self, dst: Buffer, feats: Buffer) -> None:
        dst[...] = self.storage.rounded_bfloat16(feats) if self.store_bfloat16 else feats

    # ------------------------------------------------------- current frame
    def new_frame(self) -> None:
        """A new frame is current: no row has an output on it yet."""
        self.tracked[:] = False

    def set_tracked(self, n: int, low_res: Buffer, score: Buffer, iou: Buffer, ptr: Buffer, mem: Buffer) -> None:
        """Outputs of tracking rows ``0..n-1`` on the current frame; their memory is staged."""
        self.low_res[:n] = low_res
        self.score[:n] = score
        self.ptr[:n] = ptr
        self.staged_mem[:n] = mem
        self.iou_host[:n] = self.storage.to_host(iou)
        self._mirror(slice(0, n))
        self.staged[:n] = True
        self.tracked[:n] = True

    def set_prompted(self, row: int, low_res: Buffer, score: Buffer, iou: Buffer, ptr: Buffer, as_cond: bool) -> None:
        """Output of a prompt on row ``row``; its memory is encoded at :meth:`commit`."""
        st = self.storage
        self.low_res[row] = st.asarray(low_res)
        self.score[row] = st.asarray(score)
        self.ptr[row] = st.asarray(ptr)
        self.iou_host[row] = st.to_host(iou)  # only the results read it
        self._mirror(slice(row, row + 1))
        self.pending[row] = True
        self.pending_cond[row] = as_cond

    def _mirror(self, rows: slice) -> None:
        if not self.storage.on_host:
            self.low_res_host[rows] = self.storage.to_host(self.low_res[rows])
            self.score_host[rows] = self.storage.to_host(self.score[rows])

    def fill_holes(self, rows: slice, max_area: int) -> None:
        """Fill small background holes of the rows' current logits (SAM 2's post-processing)."""
        if max_area <= 0:
            return
        if self.storage.on_host:
            fill_holes(self.low_res_host[rows, 0], max_area)
            return
        before = self.low_res_host[rows, 0].copy()
        after = fill_holes(self.low_res_host[rows, 0], max_area)
        for i in np.flatnonzero((before != after).any(axis=(1, 2))):  # upload only what changed
            row = rows.start + int(i)
            self.low_res[row] = self.storage.asarray(self.low_res_host[row])

    def commit(self, frame: int, n: int, encode_memory: Callable[..., Buffer], binarize_prompted: bool) -> None:
        """Move frame ``frame``'s memories of rows ``0..n-1`` into the bank before the next frame.

        Staged tracked memories go to their recent slot. Rows prompted on the frame have their
        mask encoded now (after the last prompt), ``encode_memory(low_res, binarize, score)``,
        into a conditioning slot, or into the recent slot for a correction kept out of the
        conditioning frames.
        """
        staged = np.flatnonzero(self.staged[:n] & ~self.pending[:n])
        if staged.size:
            self.write_frame(staged, frame, self.staged_mem[staged], self.ptr[staged])
        self.staged[:] = False
        rows = np.flatnonzero(self.pending[:n])
        if rows.size:
            mem = encode_memory(self.low_res[rows], self._binarize[int(binarize_prompted)][: rows.size], self.score[rows])
            cond = self.pending_cond[rows]
            for i in np.flatnonzero(cond):
                self.write_conditioning(int(rows[i]), frame, mem[i], self.ptr[rows[i]])
            if not cond.all():
                self.write_frame(rows[~cond], frame, mem[~cond], self.ptr[rows[~cond]])
        self.pending[:] = False
        self.pending_cond[:] = False

    # ----------------------------------------------------------------- memory
    def write_frame(self, rows: slice | np.ndarray, frame: int, feats: Buffer, ptrs: Buffer) -> None:
        """Store tracked-frame memories of ``rows`` (slice or index array) in their recent ring slots.

        Frame t evicts frame t - R: write frame t only once frame t is no longer current
        (a refinement on frame t still attends to frames t-R .. t-1).
        """
        s, sp = frame % self.recent, frame % self.ptr_recent
        if self.store_bfloat16:
            feats = self.storage.rounded_bfloat16(feats)
        self.mem_feats[rows, s] = feats
        self.mem_frame[rows, s] = frame
        self.obj_ptrs[rows, sp] = ptrs
        self.ptr_frame[rows, sp] = frame

    def write_conditioning(self, row: int, frame: int, feats: Buffer, ptr: Buffer) -> None:
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
        """Bytes of every buffer the bank owns (storage and host)."""
        bufs = {id(b): b for b in (
            self.mem_feats, self.mem_frame, self.obj_ptrs, self.ptr_frame, self.low_res, self.score, self.ptr,
            self.staged_mem, self.low_res_host, self.score_host, self.iou_host, self._tpos_row, self._mem_valid,
            self._ptr_tpos, self._ptr_valid,
        )}
        return sum(int(b.nbytes) for b in bufs.values())
