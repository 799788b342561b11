"""History: what the tracker computed on its last ``H`` frames, so that a prompt may name a past frame.

An operator's click refers to the image the operator saw, which may be several frames old when
it reaches the tracker. SAM 2 can apply it exactly where it was given: a prompted frame only needs
that frame's image features and the object's memory of the frames before it, and tracking forward
from it only needs each later frame's features and the memory written on the way. This store keeps
exactly that, in buffers allocated once (``H = history_frames``, ``R = num_maskmem - 1`` recent
memory frames, ``Rp = max_obj_ptrs - 1`` recent pointers):

* per frame (slot ``frame % H``): the frame's image features, the encoder outputs as the backend
  returned them, copied into buffers of the backend's storage that are allocated on the first frame
  from their shapes (a device-to-device copy on the torch backend, a host copy on ONNX Runtime CPU);
* per object row, for each of the last ``H + R`` frames (slot ``frame % (H + R)``): the memory
  features written for the frame (exactly what went into the recent ring or a conditioning slot);
  for each of the last ``H + Rp`` frames the object pointer. A prompt on frame ``f`` needs the
  memories of ``f - R .. f - 1`` and the pointers of ``f - Rp .. f - 1``, which reach ``R`` (``Rp``)
  frames further back than the oldest frame a prompt may name;
* per object row, for each of the last ``H`` frames (host arrays): the output low-res logits (after
  hole filling, as reported), object score and predicted IoU: the mask input of a refinement on a
  past frame, and the results on past frames (:meth:`~sam2_ros.tracker.Tracker.result_at`).

The frame held by every slot is recorded in small host int64 arrays (-1: empty); a slot whose frame
index does not match is never read. The memory attention never reads this store: it reads the
bank's recent ring and conditioning slots as before, so its cost does not grow with ``H``.

Memory (sam2.1 tiny/small/base/large alike): image features 16 MiB per frame at 1024 px
(4 MiB at 512, 1 MiB at 256), plus per object and frame 1 MiB of memory features and 256 KiB of
logits at 1024 px (a quarter at 512). ``H = 30`` at 1024 px: 480 MiB + 38 MiB per object.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sam2_ros.storage import Buffer, Storage


def feature_bytes(image_size: int, frames: int) -> int:
    """Bytes of ``frames`` frames of SAM 2 image features at ``image_size`` (float32:
    32 ch at S/4, 64 ch at S/8, 256 ch at S/16)."""
    s = image_size
    return frames * 4 * (32 * (s // 4) ** 2 + 64 * (s // 8) ** 2 + 256 * (s // 16) ** 2)


def _committed(buf: Buffer) -> Buffer:
    """``buf`` with every page written: host zeros are only reserved until first written, so the
    process's memory would grow over the first ``H`` frames; commit it at allocation instead."""
    buf[...] = 0
    return buf


class History:
    """The last ``frames`` processed frames: image features and every object row's outputs."""

    def __init__(
        self,
        frames: int,
        max_objects: int,
        feat_hw: int,
        mem_dim: int,
        hidden_dim: int,
        recent: int,
        ptr_recent: int,
        low_res_size: int,
        storage: Storage,
    ):
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"history frames must be an int >= 1, got {frames!r}")
        self.frames = frames
        self.mem_slots = frames + recent
        self.ptr_slots = frames + ptr_recent
        self.storage = storage
        lr = low_res_size
        # per object row (memory features and pointers in storage; outputs on the host)
        self.mem = _committed(storage.zeros((max_objects, self.mem_slots, feat_hw, mem_dim)))
        self.mem_frame = np.full((max_objects, self.mem_slots), -1, np.int64)
        self.ptr = _committed(storage.zeros((max_objects, self.ptr_slots, hidden_dim)))
        self.ptr_frame = np.full((max_objects, self.ptr_slots), -1, np.int64)
        self.low_res = _committed(np.zeros((max_objects, frames, 1, lr, lr), np.float32))
        self.score = np.zeros((max_objects, frames, 1), np.float32)
        self.iou = np.zeros((max_objects, frames, 1), np.float32)
        self.out_frame = np.full((max_objects, frames), -1, np.int64)
        # per frame: image features, allocated on the first frame (their shapes come from the backend)
        self.features: tuple[Buffer, ...] | None = None
        self.feature_frame = np.full(frames, -1, np.int64)

    # ----------------------------------------------------------- features
    def keep_features(self, frame: int, fields: Sequence) -> None:
        """Copy frame ``frame``'s image features (each ``[1, ...]``) into slot ``frame % H``."""
        st = self.storage
        values = [st.asarray(x) for x in fields]
        if self.features is None:
            self.features = tuple(_committed(st.zeros((self.frames, *tuple(v.shape)[1:]))) for v in values)
        s = frame % self.frames
        for buf, v in zip(self.features, values):
            if tuple(v.shape)[1:] != tuple(buf.shape)[1:]:
                raise ValueError(f"image features changed shape: {tuple(v.shape)} vs {tuple(buf.shape)}")
            buf[s : s + 1] = v
        self.feature_frame[s] = frame

    def has_features(self, frame: int) -> bool:
        return frame >= 0 and int(self.feature_frame[frame % self.frames]) == frame

    def frame_features(self, frame: int) -> tuple[Buffer, ...]:
        """Views ``[1, ...]`` of frame ``frame``'s image features (it must be in the history)."""
        if not self.has_features(frame):
            raise KeyError(f"frame {frame} is not in the history")
        s = frame % self.frames
        return tuple(buf[s : s + 1] for buf in self.features)

    def forget_frames(self) -> None:
        """Forget every frame (a reset); the buffers stay allocated."""
        self.feature_frame[:] = -1

    # ---------------------------------------------------------------- rows
    def has_output(self, row: int, frame: int) -> bool:
        return frame >= 0 and int(self.out_frame[row, frame % self.frames]) == frame

    def clear(self, row: int) -> None:
        """Forget row ``row``'s frames (data without a matching frame index is never read)."""
        for frames in (self.mem_frame, self.ptr_frame, self.out_frame):
            frames[row] = -1

    def move(self, src: int, dst: int) -> None:
        for buf in (self.mem, self.mem_frame, self.ptr, self.ptr_frame, self.low_res, self.score, self.iou,
                    self.out_frame):
            buf[dst] = buf[src]
        self.clear(src)

    def buffers(self) -> list:
        """Every buffer (for byte counts and tests that check nothing is reallocated)."""
        out = [self.mem, self.mem_frame, self.ptr, self.ptr_frame, self.low_res, self.score, self.iou,
               self.out_frame, self.feature_frame]
        return out + list(self.features or ())

    @property
    def nbytes(self) -> int:
        return sum(int(b.nbytes) for b in self.buffers())
