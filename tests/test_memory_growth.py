"""Memory does not grow with the stream: bank buffers and host memory after frame 20 == after frame 200."""

import gc
import resource
import tracemalloc

import numpy as np

from sam2_ros.backends import load_backend
from sam2_ros.tracker import Tracker
from sam2_ros.io.video import iter_frames


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_memory_flat_over_200_frames(tiny_export_256, shared_data):
    tr = Tracker(load_backend(tiny_export_256), max_objects=4, cond_slots=2)
    bank = tr.bank
    buffers = {k: (v.ctypes.data, v.nbytes) for k, v in vars(bank).items() if isinstance(v, np.ndarray)}
    frames = iter_frames(shared_data / "videos" / "bedroom.mp4", 200)
    snap20 = rss20 = None
    tracemalloc.start()
    for i, frame in enumerate(frames):
        small = np.ascontiguousarray(frame[::4, ::4])  # cheap: 240x135 camera frames
        tr.step(small)
        if i == 0:
            tr.add_prompt(1, points=[[60, 50]], labels=[1])
            tr.add_prompt(2, box=[150, 60, 200, 110])
        if i in (50, 120):  # refinements: conditioning slots fill and are recycled
            tr.add_prompt(1, points=[[70, 60]], labels=[1])
        if i == 19:
            gc.collect()
            snap20, rss20 = tracemalloc.take_snapshot(), rss_bytes()
    assert i == 199
    gc.collect()
    snap200, rss200 = tracemalloc.take_snapshot(), rss_bytes()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in snap200.compare_to(snap20, "filename"))
    assert grown < 256 * 1024, f"Python heap grew by {grown} bytes between frame 20 and 200"
    assert rss200 - rss20 < 8 * 1024 * 1024, f"RSS grew by {(rss200 - rss20) / 2**20:.1f} MiB"
    assert buffers == {k: (v.ctypes.data, v.nbytes) for k, v in vars(bank).items() if isinstance(v, np.ndarray)}
    assert bank.conditioning_frames(0) == [50, 120]
