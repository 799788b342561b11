"""``masks.npz`` of ``sam2-ros track``, written frame by frame with memory flat in the clip's length.

The file is what ``np.savez_compressed`` would write for the whole run: ``masks`` [F, O, H, W]
bool, ``scores`` [F, O] float32 (NaN before an object's first prompt) and ``object_ids`` [O]
int64 (the columns, ascending). Frames are appended as raw bytes to part files beside the output;
:meth:`MasksWriter.close` streams them into the zip (deflate, zip64) behind each ``.npy`` header,
so neither side ever holds more than one frame and one copy buffer. Until ``close`` succeeds no
``masks.npz`` exists: a failed run leaves none, half-written or stale.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from sam2_ros.io.atomic import AtomicOutput

#: Bytes copied from a part file into the zip at a time.
COPY_CHUNK = 4 << 20


class MasksWriter(AtomicOutput):
    """Writes ``masks.npz`` one frame at a time; use as a context manager (closes, or aborts on error)."""

    def __init__(self, path: str | Path, object_ids: Sequence[int]):
        """``object_ids``: the objects of the run (the columns, ascending; duplicates are one)."""
        self.path = Path(path)
        self.object_ids = np.asarray(sorted(set(object_ids)), np.int64)
        self.frames = 0
        self.frame_hw: tuple[int, int] | None = None
        self._parts = {name: self.path.with_name(f"{self.path.name}.{name}.part") for name in ("masks", "scores")}
        self._files = {name: open(p, "wb") for name, p in self._parts.items()}

    def write(self, masks: np.ndarray, scores: np.ndarray) -> None:
        """Append one frame: ``masks`` [O, H, W] bool and ``scores`` [O] float32, columns as ``object_ids``."""
        n = len(self.object_ids)
        masks = np.asarray(masks)
        if masks.dtype != bool or masks.ndim != 3 or masks.shape[0] != n:
            raise ValueError(f"masks of a frame must be bool [{n}, H, W], got {masks.dtype} {masks.shape}")
        if self.frame_hw is None:
            self.frame_hw = masks.shape[1:]
        elif masks.shape[1:] != self.frame_hw:
            raise ValueError(f"frame {self.frames} is {masks.shape[1:]} but the earlier frames are {self.frame_hw}")
        scores = np.asarray(scores, np.float32)
        if scores.shape != (n,):
            raise ValueError(f"scores of a frame must be [{n}], got {scores.shape}")
        self._files["masks"].write(np.ascontiguousarray(masks).data)
        self._files["scores"].write(scores.data)
        self.frames += 1

    def close(self) -> Path:
        """Write ``masks.npz`` from the part files, delete them; return the path."""
        for f in self._files.values():
            f.close()
        shape_hw = self.frame_hw or (0, 0)
        n = len(self.object_ids)
        tmp = self.path.with_name(f"{self.path.name}.tmp")
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                self._member(zf, "masks", np.dtype(bool), (self.frames, n, *shape_hw), self._parts["masks"])
                self._member(zf, "scores", np.dtype(np.float32), (self.frames, n), self._parts["scores"])
                with zf.open("object_ids.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, self.object_ids, allow_pickle=False)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            self._remove_parts()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; no ``masks.npz`` is created (an older one is left as it was)."""
        for f in self._files.values():
            f.close()
        self._remove_parts()

    @staticmethod
    def _member(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], part: Path) -> None:
        """One ``.npy`` member: the header for ``shape``, then the part file's bytes (C order)."""
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        with zf.open(f"{name}.npy", "w", force_zip64=True) as dst, open(part, "rb") as src:
            np.lib.format.write_array_header_1_0(dst, header)
            shutil.copyfileobj(src, dst, COPY_CHUNK)

    def _remove_parts(self) -> None:
        for p in self._parts.values():
            p.unlink(missing_ok=True)
