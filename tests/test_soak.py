"""The short soak: benchmarks/soak.py's schedule for a few hundred frames on a 128 px export.

The node runs in its own process; objects are added, refined, prompted on past frames, removed
and reset, with bursts (drops) and repeated stamps (rejections). Every target of the full soak is
checked except latency (timing belongs to the benchmark on a quiet machine): every call succeeds,
every result holds the ids the schedule expects, the counters add up at every sample, memory,
descriptors and threads stay flat after warm-up, no error in the log, exit 0 on SIGINT.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

pytest.importorskip("rclpy")

from conftest import REPO  # noqa: E402

_spec = importlib.util.spec_from_file_location("soak", REPO / "benchmarks" / "soak.py")
soak = sys.modules["soak"] = importlib.util.module_from_spec(_spec)  # dataclasses look their module up
_spec.loader.exec_module(soak)


def test_short_soak(tiny_export_128, shared_data, tmp_path):
    cfg = soak.SoakConfig(frames=160, warmup=40, sample_every=40, action_every=6, burst_every=50,
                          reset_every=100, clip_frames=15)
    res = soak.run_soak(tiny_export_128, cfg, tmp_path / "node.log")
    fails = soak.check(res, latency=False)
    print(soak.report(res, fails))
    assert not fails, "\n".join(fails)
    assert [s.frame for s in res.samples] == list(range(40, 161, 40))
    assert {"add", "refine", "past", "remove", "reset", "burst"} <= set(res.actions), res.actions
    end = res.samples[-1].counters
    # one repeated stamp per burst, each rejected as a duplicate; bursts drop frames
    assert end["frames_rejected"] == end["frames_duplicate_stamp"] == res.actions["burst"]
    assert end["frames_dropped"] > 0 and end["frames_processed"] >= 160
