"""masks.npz written frame by frame (sam2_ros.io.masks_file): memory flat in the number of frames,
and the file is the one np.savez_compressed writes for the whole run."""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest

from sam2_ros.io.masks_file import MasksWriter

OBJECT_IDS = [2, 5, 9]


def _pool(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``n`` frames of random rectangle masks [n, objects, H, W] (some objects empty)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    out = np.zeros((n, len(OBJECT_IDS), h, w), bool)
    for f in range(n):
        for o in range(len(OBJECT_IDS)):
            if rng.random() < 0.2:
                continue
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            out[f, o, y : y + rng.integers(4, h // 2), x : x + rng.integers(4, w // 2)] = True
    return out


def _scores(f: int) -> np.ndarray:
    s = np.float32([f * 0.5, -f, 1.0 / (f + 1)])
    if f < 3:
        s[2] = np.nan  # object 9 appears at frame 3
    return s


def _npy_frames(path, name: str):
    """Stream the frames of ``name`` out of an npz without loading the whole array."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
        assert np.lib.format.read_magic(f) == (1, 0)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        assert not fortran
        yield shape, dtype
        frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        for _ in range(shape[0]):
            yield np.frombuffer(f.read(frame_bytes), dtype).reshape(shape[1:])
        assert f.read(1) == b""


def test_a_long_stream_keeps_memory_flat(tmp_path):
    frames, hw = 1500, (256, 384)
    pool = _pool(7, hw)
    data_bytes = frames * pool[0].nbytes
    assert data_bytes > 400e6
    path = tmp_path / "masks.npz"
    tracemalloc.start()
    try:
        with MasksWriter(path, OBJECT_IDS) as w:
            for f in range(frames):
                w.write(pool[f % len(pool)], _scores(f))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * data_bytes, f"peak {peak / 1e6:.1f} MB for {data_bytes / 1e6:.0f} MB of masks"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.npz"]  # part files gone
    masks = _npy_frames(path, "masks")
    shape, dtype = next(masks)
    assert shape == (frames, 3, *hw) and dtype == bool
    for f, m in enumerate(masks):
        if f % 97 == 0 or f == frames - 1:  # spot checks (comparing every frame costs seconds)
            np.testing.assert_array_equal(m, pool[f % len(pool)])
    with np.load(path) as z:
        np.testing.assert_array_equal(z["scores"], np.stack([_scores(f) for f in range(frames)]))
        assert z["object_ids"].tolist() == OBJECT_IDS


def test_the_file_equals_savez_compressed_of_the_whole_run(tmp_path):
    pool = _pool(20, (37, 53), seed=1)
    scores = np.stack([_scores(f) for f in range(len(pool))])
    with MasksWriter(tmp_path / "masks.npz", [9, 2, 5, 2]) as w:  # any order: columns are ascending ids
        for m, s in zip(pool, scores):
            w.write(m, s)
    np.savez_compressed(tmp_path / "ref.npz", masks=pool, scores=scores, object_ids=np.int64(OBJECT_IDS))
    with np.load(tmp_path / "masks.npz") as ours, np.load(tmp_path / "ref.npz") as ref:
        assert sorted(ours.files) == sorted(ref.files) == ["masks", "object_ids", "scores"]
        for k in ref.files:
            assert ours[k].dtype == ref[k].dtype and ours[k].shape == ref[k].shape, k
            np.testing.assert_array_equal(ours[k], ref[k])
    with zipfile.ZipFile(tmp_path / "masks.npz") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert zf.getinfo("masks.npy").file_size > 10 * zf.getinfo("masks.npy").compress_size


def test_a_failed_run_leaves_no_masks_file(tmp_path):
    path = tmp_path / "masks.npz"
    pool = _pool(3, (16, 16))
    with pytest.raises(RuntimeError, match="tracker failed"):
        with MasksWriter(path, OBJECT_IDS) as w:
            w.write(pool[0], _scores(0))
            raise RuntimeError("tracker failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"frame 1 is \(16, 17\) but the earlier frames are \(16, 16\)"):
        with MasksWriter(path, OBJECT_IDS) as w:
            w.write(pool[0], _scores(0))
            w.write(np.zeros((3, 16, 17), bool), _scores(1))
    with pytest.raises(ValueError, match=r"must be bool \[3, H, W\]"):
        with MasksWriter(path, OBJECT_IDS) as w:
            w.write(pool[0, :2], _scores(0))
    assert list(tmp_path.iterdir()) == []
