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
step moves no memory through the host. Host mirrors of the low-res logits, scores and IoUs serve
the results (masks, boxes) and hole filling; on a device storage they are downloaded when first
read after a write (one wait for the device per frame, when the results are read, instead of
one per write).

Writing a frame is a slot write; reading returns views of the buffers plus per-slot validity,
temporal-encoding rows and pointer offsets computed into preallocated scratch arrays. Nothing
grows with the length of the stream.

A separate :class:`~sam2_ros.history.History` (``bank.history``) keeps the last
``history_frames`` frames: their image features and each row's memory, pointer and outputs, so
that a prompt may name a past frame (:meth:`rewind` restores a row's ring as it was then). The
attention never reads it.

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

from sam2_ros.history import History
from sam2_ros.imaging import HOST_IMAGING, Imaging
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

    def first(self, n: int) -> "AttentionInputs":
        """The inputs of the first ``n`` rows (views)."""
        return AttentionInputs(**{name: v[:n] for name, v in self.__dict__.items()})


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
        history_frames: int = 30,
        imaging: Imaging = HOST_IMAGING,
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
        self.imaging = imaging  # fills the current logits' holes (on the device for a device imaging)
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
        self.iou = storage.zeros((max_objects, 1))
        self._low_res_host = self.low_res if storage.on_host else np.zeros((max_objects, 1, lr, lr), np.float32)
        self._score_host = self.score if storage.on_host else np.zeros((max_objects, 1), np.float32)
        self._iou_host = self.iou if storage.on_host else np.zeros((max_objects, 1), np.float32)
        self._stale = np.zeros(max_objects, bool)  # rows whose host mirrors are behind the storage
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
        # prompts per row: first and latest prompted frame (-1: none)
        self.first_prompt = np.full(max_objects, -1, np.int64)
        self.last_prompt = np.full(max_objects, -1, np.int64)
        # the conditioning frame the latest conditioning write of each row evicted, to undo that
        # write when the same frame is prompted again later (a prompt that arrives late)
        self._evicted_mem = storage.zeros((max_objects, feat_hw, mem_dim))
        self._evicted_ptr = storage.zeros((max_objects, hidden_dim))
        self._evicted_frame = np.full(max_objects, -1, np.int64)  # frame that was evicted
        self._evicted_by = np.full(max_objects, -1, np.int64)  # frame whose write evicted it
        self.history = History(history_frames, max_objects, feat_hw, mem_dim, hidden_dim, self.recent,
                               self.ptr_recent, lr, storage)

    # ----------------------------------------------------------------- writes
    def clear(self, row: int) -> None:
        """Forget everything of object row ``row``."""
        self.mem_frame[row] = -1
        self.ptr_frame[row] = -1
        for buf in (self.mem_feats, self.obj_ptrs, self.low_res, self.score, self.iou, self.ptr, self.staged_mem):
            buf[row] = 0.0
        if not self.storage.on_host:
            self._low_res_host[row] = 0.0
            self._score_host[row] = 0.0
            self._iou_host[row] = 0.0
            self._stale[row] = False
        for flags in (self.tracked, self.staged, self.pending, self.pending_cond):
            flags[row] = False
        for frames in (self.first_prompt, self.last_prompt, self._evicted_frame, self._evicted_by):
            frames[row] = -1
        self.history.clear(row)

    def move(self, src: int, dst: int) -> None:
        """Copy row ``src`` into row ``dst`` and clear ``src`` (keeps live rows contiguous)."""
        if src == dst:
            return
        bufs = [self.mem_feats, self.mem_frame, self.obj_ptrs, self.ptr_frame, self.low_res, self.score,
                self.ptr, self.staged_mem, self.iou, self.tracked, self.staged, self.pending, self.pending_cond,
                self.first_prompt, self.last_prompt, self._evicted_mem, self._evicted_ptr, self._evicted_frame,
                self._evicted_by]
        if not self.storage.on_host:
            bufs += [self._low_res_host, self._score_host, self._iou_host, self._stale]
        for buf in bufs:
            buf[dst] = buf[src]
        self.history.move(src, dst)
        self.clear(src)

    def _store(self, dst: Buffer, feats: Buffer) -> None:
        dst[...] = self.storage.rounded_bfloat16(feats) if self.store_bfloat16 else feats

    # ------------------------------------------------------- current frame
    def new_frame(self) -> None:
        """A new frame is current: no row has an output on it yet."""
        self.tracked[:] = False

    def set_tracked(self, n: int, low_res: Buffer, score: Buffer, iou: Buffer, ptr: Buffer, mem: Buffer,
                    start: int = 0) -> None:
        """Outputs of tracking rows ``start..n-1`` on the current frame; their memory is staged."""
        rows = slice(start, n)
        self.low_res[rows] = low_res
        self.score[rows] = score
        self.ptr[rows] = ptr
        self.staged_mem[rows] = mem
        self.iou[rows] = self.storage.to_host(iou) if self.storage.on_host else iou
        self._written(rows)
        self.staged[rows] = True
        self.tracked[rows] = True

    def set_prompted(self, row: int, low_res: Buffer, score: Buffer, iou: Buffer, ptr: Buffer, as_cond: bool) -> None:
        """Output of a prompt on row ``row``; its memory is encoded at :meth:`commit`."""
        st = self.storage
        self.low_res[row] = st.asarray(low_res)
        self.score[row] = st.asarray(score)
        self.ptr[row] = st.asarray(ptr)
        self.iou[row] = st.asarray(iou)
        self._written(slice(row, row + 1))
        self.pending[row] = True
        self.pending_cond[row] = as_cond

    def finish_outputs(self, rows: slice, max_area: int) -> None:
        """After :meth:`set_tracked` / :meth:`set_prompted`: fill small background holes of the
        rows' logits (SAM 2's post-processing, after the memory) and refresh their host mirrors.

        With a device imaging the holes are filled where the logits are and the mirror is
        downloaded once; otherwise on the host mirror, uploading only the rows that changed.
        """
        imaging = self.imaging
        if imaging.on_device and not self.storage.on_host:
            if max_area > 0:
                imaging.fill_holes(self.low_res[rows, 0], max_area)
            self._mirror(rows)
            return
        self._mirror(rows)
        if max_area <= 0:
            return
        if self.storage.on_host:
            imaging.fill_holes(self.low_res_host[rows, 0], max_area)
            return
        before = self.low_res_host[rows, 0].copy()
        imaging.fill_holes(self.low_res_host[rows, 0], max_area)
        for i in np.flatnonzero((before != self.low_res_host[rows, 0]).any(axis=(1, 2))):  # upload only what changed
            row = rows.start + int(i)
            self.low_res[row] = self.storage.asarray(self.low_res_host[row])

    def _mirror(self, rows: slice) -> None:
        self._written(rows)

    def _written(self, rows: slice) -> None:
        """The storage's current outputs of ``rows`` changed: their host mirrors are refreshed when next read."""
        if not self.storage.on_host:
            self._stale[rows] = True

    def _refresh(self) -> None:
        """Download the stale rows' outputs (one range, one copy per buffer) into the host mirrors."""
        if not self._stale.any():
            return
        rows = np.flatnonzero(self._stale)
        sl = slice(int(rows[0]), int(rows[-1]) + 1)  # rows between are up to date: same values
        st = self.storage
        self._low_res_host[sl] = st.to_host(self.low_res[sl])
        self._score_host[sl] = st.to_host(self.score[sl])
        self._iou_host[sl] = st.to_host(self.iou[sl])
        self._stale[:] = False

    @property
    def low_res_host(self) -> np.ndarray:
        """[rows, 1, h, w] host copy of the current low-res logits (downloaded on first read after a write)."""
        self._refresh()
        return self._low_res_host

    @property
    def score_host(self) -> np.ndarray:
        """[rows, 1] host copy of the current object scores."""
        self._refresh()
        return self._score_host

    @property
    def iou_host(self) -> np.ndarray:
        """[rows, 1] host copy of the current predicted IoUs."""
        self._refresh()
        return self._iou_host

    def commit(self, frame: int, n: int, encode_memory: Callable[..., Buffer] | None, binarize_prompted: bool,
               start: int = 0) -> None:
        """Move frame ``frame``'s memories of rows ``start..n-1`` into the bank before the next frame.

        Staged tracked memories go to their recent slot. Rows prompted on the frame have their
        mask encoded now (after the last prompt), ``encode_memory(low_res, binarize, score)``,
        into a conditioning slot, or into the recent slot for a correction kept out of the
        conditioning frames. The frame's memories, pointers and outputs go to the history too.
        """
        sl = slice(start, n)
        has_output = start + np.flatnonzero(self.staged[sl] | self.pending[sl])
        staged = start + np.flatnonzero(self.staged[sl] & ~self.pending[sl])
        if staged.size:
            self.write_frame(staged, frame, self.staged_mem[staged], self.ptr[staged])
        self.staged[sl] = False
        rows = start + np.flatnonzero(self.pending[sl])
        if rows.size:
            mem = encode_memory(self.low_res[rows], self._binarize[int(binarize_prompted)][: rows.size], self.score[rows])
            cond = self.pending_cond[rows]
            for i in np.flatnonzero(cond):
                self.write_conditioning(int(rows[i]), frame, mem[i], self.ptr[rows[i]])
            if not cond.all():
                self.write_frame(rows[~cond], frame, mem[~cond], self.ptr[rows[~cond]])
        self.pending[sl] = False
        self.pending_cond[sl] = False
        if has_output.size:
            self._record(has_output, frame)

    def _record(self, rows: np.ndarray, frame: int) -> None:
        """Copy frame ``frame``'s memory, pointer and outputs of ``rows`` into the history."""
        h, r, rp = self.history, self.recent, self.ptr_recent
        s, sp = frame % r, frame % rp
        hm, hp, hl = frame % h.mem_slots, frame % h.ptr_slots, frame % h.frames
        in_ring = self.mem_frame[rows, s] == frame
        if in_ring.any():
            ring = _index(rows[in_ring])
            h.mem[ring, hm] = self.mem_feats[ring, s]
            h.ptr[ring, hp] = self.obj_ptrs[ring, sp]
        for row in rows[~in_ring]:  # conditioning frames
            k = int(np.flatnonzero(self.mem_frame[row, r:] == frame)[0])
            h.mem[row, hm] = self.mem_feats[row, r + k]
            h.ptr[row, hp] = self.obj_ptrs[row, rp + k]
        h.mem_frame[rows, hm] = frame
        h.ptr_frame[rows, hp] = frame
        h.low_res[rows, hl] = self.low_res_host[rows]
        h.score[rows, hl] = self.score_host[rows]
        h.iou[rows, hl] = self.iou_host[rows]
        h.out_frame[rows, hl] = frame

    def rewind(self, row: int, frame: int) -> None:
        """Give row ``row`` the memory it had when ``frame`` was current, before ``frame``'s own
        memory was written: conditioning frames before ``frame`` (a conditioning write of ``frame``
        itself is undone, bringing back the frame it evicted), the recent ring of frames
        ``frame - R .. frame - 1`` and pointers of ``frame - Rp .. frame - 1`` from the history.

        Valid when ``row`` has no prompt after ``frame`` (its conditioning frames are then those
        it had at ``frame``) and the history reaches back to ``frame - Rp``.
        """
        h, r, rp = self.history, self.recent, self.ptr_recent
        for k in np.flatnonzero(self.mem_frame[row, r:] == frame):
            if self._evicted_by[row] == frame:  # undo the eviction this frame's write made
                self.mem_feats[row, r + k] = self._evicted_mem[row]
                self.obj_ptrs[row, rp + k] = self._evicted_ptr[row]
                self.mem_frame[row, r + k] = self.ptr_frame[row, rp + k] = self._evicted_frame[row]
                self._evicted_frame[row] = self._evicted_by[row] = -1
            else:
                self.mem_frame[row, r + k] = self.ptr_frame[row, rp + k] = -1
        cond = set(int(c) for c in self.mem_frame[row, r:] if c >= 0)
        for ring, frames, feats, span, hbuf, hframes, hslots in (
            (r, self.mem_frame, self.mem_feats, r, h.mem, h.mem_frame, h.mem_slots),
            (rp, self.ptr_frame, self.obj_ptrs, rp, h.ptr, h.ptr_frame, h.ptr_slots),
        ):
            for g in range(frame - span, frame):
                s = g % ring
                if g >= 0 and g not in cond and hframes[row, g % hslots] == g:
                    feats[row, s] = hbuf[row, g % hslots]
                    frames[row, s] = g
                else:
                    frames[row, s] = -1

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
            self._evicted_mem[row] = self.mem_feats[row, r + k]
            self._evicted_ptr[row] = self.obj_ptrs[row, rp + k]
            self._evicted_frame[row], self._evicted_by[row] = evicted, frame
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
            self.staged_mem, self.iou, self._low_res_host, self._score_host, self._iou_host, self._tpos_row,
            self._mem_valid,
            self._ptr_tpos, self._ptr_valid, self.first_prompt, self.last_prompt, self._evicted_mem,
            self._evicted_ptr, self._evicted_frame, self._evicted_by,
        )}
        return sum(int(b.nbytes) for b in bufs.values()) + self.history.nbytes


def _index(rows: np.ndarray) -> slice | np.ndarray:
    """``rows`` (ascending row indices) as a slice when contiguous: a view, no gather."""
    if rows.size and int(rows[-1]) - int(rows[0]) + 1 == rows.size:
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows
