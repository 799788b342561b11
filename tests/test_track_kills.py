"""``sam2-ros track`` (video and --bag) killed while it writes: SIGKILL leaves no output presented
as complete (only staging files: *.part, *.partial*), SIGTERM stops with status 143 and leaves
nothing of the run at all, stats.json (the completion mark) exists only after a whole run, and
a rerun into the same --out succeeds. Real subprocesses on a 128 px export; each kill lands
after a given number of frames, read from the masks staging file (no sleeps)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
from conftest import REPO
from test_bag import TOPIC, frames, prompts_file, write_bag  # noqa: F401 (fixture)

SAMPLES = REPO / "samples"
STAGING = ("masks.npz.masks.part", "masks.npz.scores.part", "masks.npz.tmp", "overlay.partial.mp4", "bag.partial",
           "stats.json.tmp")


def start(*args, log):
    return subprocess.Popen([sys.executable, "-m", "sam2_ros.cli", "track", *map(str, args)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO)


def kill_after(proc, out, frame_bytes: int, frames: int, sig: int, log) -> int:
    """Send ``sig`` once ``frames`` frames are in the masks staging file; the exit status."""
    part = out / "masks.npz.masks.part"
    deadline = time.monotonic() + 300
    while not (part.is_file() and part.stat().st_size >= frames * frame_bytes):
        assert proc.poll() is None, f"track ended before frame {frames}:\n{log.read_text()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)  # polling a file, not timing
    proc.send_signal(sig)
    return proc.wait(60)


def run(args, out, log, check=True):
    with open(log, "w") as f:
        code = start(*args, "--out", out, log=f).wait(300)
    assert code == 0 or not check, log.read_text()
    return code


def names(out) -> set[str]:
    return {p.name for p in out.iterdir()}


def test_a_killed_video_track_leaves_no_output_claimed_complete(tiny_export_128, tmp_path):
    out, log = tmp_path / "out", tmp_path / "track.log"
    args = ["--engines", tiny_export_128, "--video", SAMPLES / "bedroom_short.mp4", "--prompts",
            SAMPLES / "bedroom_prompts.json", "--max-frames", 24]
    frame_bytes = 3 * 540 * 960  # 3 objects' bool masks
    # SIGKILL after 3 frames: staging files only
    with open(log, "w") as f:
        assert kill_after(start(*args, "--out", out, log=f), out, frame_bytes, 3, signal.SIGKILL, log) == -9
    assert not names(out) & {"masks.npz", "overlay.mp4", "stats.json"}, names(out)
    assert names(out) <= set(STAGING)
    # a rerun into the same --out: complete outputs, no staging left
    run(args, out, log)
    assert names(out) == {"masks.npz", "overlay.mp4", "stats.json"}
    stats = json.loads((out / "stats.json").read_text())
    with np.load(out / "masks.npz") as z:
        assert z["masks"].shape == (24, 3, 540, 960) and stats["frames"] == 24
        first = z["masks"].copy()
    overlay = (out / "overlay.mp4").read_bytes()
    # SIGTERM after 5 frames of another run: status 143, nothing of that run, the earlier outputs
    # intact but no longer marked complete (stats.json removed when the run began)
    with open(log, "w") as f:
        code = kill_after(start(*args, "--out", out, log=f), out, frame_bytes, 5, signal.SIGTERM, log)
    assert code == 143, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
    assert names(out) == {"masks.npz", "overlay.mp4"}
    with np.load(out / "masks.npz") as z:
        np.testing.assert_array_equal(z["masks"], first)
    assert (out / "overlay.mp4").read_bytes() == overlay


def test_a_killed_bag_track_leaves_no_bag_presented_as_complete(frames, tiny_export_128, tmp_path):  # noqa: F811
    bag_in = tmp_path / "in"
    write_bag(bag_in, frames * 8)  # 40 images of 320 x 180
    out, log = tmp_path / "out", tmp_path / "track.log"
    args = ["--engines", tiny_export_128, "--bag", bag_in, "--topic", TOPIC, "--prompts",
            prompts_file(tmp_path / "prompts.json"), "--overlay-topic"]
    frame_bytes = 3 * 180 * 320
    with open(log, "w") as f:
        code = kill_after(start(*args, "--out", out, log=f), out, frame_bytes, 3, signal.SIGTERM, log)
    assert code == 143, log.read_text()
    assert names(out) == set(), names(out)  # SIGTERM: not even staging files
    with open(log, "w") as f:
        assert kill_after(start(*args, "--out", out, log=f), out, frame_bytes, 4, signal.SIGKILL, log) == -9
    assert "bag" not in names(out) and names(out) <= set(STAGING), names(out)
    run(args, out, log)
    assert names(out) == {"bag", "masks.npz", "stats.json"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["frames"] == 40 and stats["output_bag"] == str(out / "bag")
    from rosbags.highlevel import AnyReader

    with AnyReader([out / "bag"]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts[stats["output_topics"]["objects"]] == 40 and counts[stats["output_topics"]["overlay"]] == 40


def test_sigterm_while_the_engines_load_leaves_nothing(tiny_export_128, tmp_path):
    """Stopped once the output folder exists (before the first frame): status 143, an empty folder."""
    out, log = tmp_path / "out", tmp_path / "track.log"
    with open(log, "w") as f:
        proc = start("--engines", tiny_export_128, "--video", SAMPLES / "bedroom_short.mp4", "--prompts",
                     SAMPLES / "bedroom_prompts.json", "--out", out, log=f)
        deadline = time.monotonic() + 120
        while not out.is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 143 and names(out) == set(), (code, names(out), log.read_text())
