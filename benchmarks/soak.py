"""Soak: the node in its own process for --frames processed frames of real video, with objects
added, refined, prompted on past frames, removed and reset on a schedule.

    python benchmarks/soak.py [--frames 10000] [--engines DIR] [--max-objects 3] [--threads 2]

The node (`python -m sam2_ros.ros.node`, reliable input QoS) gets frames of the four shared clips,
looped, resized to 320x180, stamped 1/30 s apart. The client publishes a frame and waits for its
result (lockstep: every frame is processed, so the run has exactly --frames tracked frames), except
every --burst-every frames, where it publishes a burst of 5 frames and a repeated stamp without
waiting (drops and a rejection, so every counter moves; input_qos.depth 10 so that DDS delivers
the whole burst and the node's own counters account for it). Between frames a seeded schedule keeps
1..max_objects objects alive: add (a click), refine (a box), prompt on a frame 5 frames back,
remove, and a reset every --reset-every frames. Every result must hold exactly the ids the
schedule expects, and every service call must succeed.

Every --sample-every frames: the node's resident memory (VmRSS), open descriptors and threads
(/proc), its /diagnostics counters, and the p50/p99 of the client's round trip (publish -> result)
over the frames since the last sample. Checks (``check``): memory after --warmup frames flat within
32 MiB, descriptors and threads no higher at the end than after warm-up, p99 of the last 10 % of
frames within 1.2x of the first 10 % after warm-up, received = processed + dropped + rejected +
waiting + in flight at every sample, no traceback or error in the node's log (but the rejections
of the repeated stamps), exit 0 on SIGINT.

Writes benchmarks/soak.{md,json,png}. Without --engines it exports a random-weights
sam2.1_hiera_tiny at 256 first, once (kept in $TMPDIR/sam2_ros_bench; needs torch and sam2). Run it on an otherwise idle machine: the
latency check compares the start of the run with its end. tests/test_soak.py runs a short version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # ros_support: the ROS client and node process of the tests
os.environ.setdefault("SAM2_ROS_TEST_DOMAIN_ID", str(200 + os.getpid() % 30))
CLIPS = ("02_cups.mp4", "03_blocks.mp4", "08_driving.mp4", "bedroom.mp4")
VIDEOS = Path(os.environ.get("SAM2_ROS_SHARED_DATA", REPO.parent / "shared" / "data")) / "videos"
WH = (320, 180)
S = 1_000_000_000
FRAME_NS = S // 30
#: The one error the schedule causes on purpose: the repeated stamp of every burst.
EXPECTED = re.compile(r"rejected: duplicate stamp")
#: Limits of the checks (the issue's targets).
RSS_FLAT_MIB = 32.0
P99_RATIO = 1.2


@dataclass
class SoakConfig:
    frames: int = 10_000
    warmup: int = 1000  # frames before the memory / descriptor / thread baseline
    sample_every: int = 100
    max_objects: int = 3
    action_every: int = 20  # frames between two scheduled prompts
    burst_every: int = 500
    reset_every: int = 2500
    past_frames: int = 5  # how far back "prompt on a past frame" goes (< history_frames)
    clip_frames: int = 60  # frames of each clip in the loop
    threads: int = 2  # the node's intra_op_threads (fixed: comparable runs)
    seed: int = 0


@dataclass
class Sample:
    frame: int  # processed frames so far
    t_s: float
    rss_mib: float
    fds: int
    threads: int
    counters: dict[str, int]
    step_mean_ms: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    objects: int


@dataclass
class SoakResult:
    config: dict
    engines: str
    samples: list[Sample] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)  # round trip of every lockstep frame
    actions: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # failed calls, wrong ids, a dead node
    exit_code: int | None = None
    log_problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    command: str = ""


def proc_figures(pid: int) -> tuple[float, int, int]:
    """(VmRSS MiB, open descriptors, threads) of a process."""
    rss = next(int(line.split()[1]) / 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def loop_frames(cfg: SoakConfig) -> list[np.ndarray]:
    import cv2

    from sam2_ros.io.video import iter_frames

    return [cv2.resize(f, WH, interpolation=cv2.INTER_AREA)
            for clip in CLIPS for f in iter_frames(VIDEOS / clip, cfg.clip_frames)]


class Schedule:
    """The seeded prompt schedule and the object ids it expects the node to track."""

    def __init__(self, cfg: SoakConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.alive: list[int] = []
        self.next_id = 1  # the node's ids: 1, 2, ... ; back to 1 after a reset
        self.counts: dict[str, int] = {}

    def point(self):
        from geometry_msgs.msg import Point32

        return Point32(x=float(self.rng.uniform(20, WH[0] - 20)), y=float(self.rng.uniform(20, WH[1] - 20)))

    def box(self) -> list[float]:
        x0, y0 = self.rng.uniform(0, WH[0] * 0.6), self.rng.uniform(0, WH[1] * 0.6)
        return [x0, y0, x0 + self.rng.uniform(30, WH[0] * 0.4), y0 + self.rng.uniform(30, WH[1] * 0.4)]

    def actions(self, k: int, past_ok: bool = True) -> list[str]:
        """What to do before publishing lockstep frame ``k`` (k > 0); ``past_ok``: enough frames since
        the start or the last reset for a prompt on a past frame."""
        if not self.alive:
            return ["add"]
        if k % self.cfg.reset_every == 0:
            return ["reset"]  # a reset starts over at frame 0: the next frame comes before a prompt
        if k % self.cfg.action_every:
            return []
        choices = ["refine", "past" if past_ok else "refine"]
        if len(self.alive) < self.cfg.max_objects:
            choices += ["add", "add"]
        if len(self.alive) > 1:
            choices += ["remove"]
        return [self.rng.choice(choices)]

    def request(self, action: str, past_stamp: int):
        """(service type, service name, request) for an action; updates the expected ids."""
        from sam2_ros_interfaces.srv import AddPrompt, RemoveObject, Reset

        self.counts[action] = self.counts.get(action, 0) + 1
        if action == "add":
            self.alive.append(self.next_id)
            self.next_id += 1
            return AddPrompt, "add_prompt", AddPrompt.Request(object_id=-1, points=[self.point()], labels=[1],
                                                              label=f"soak {self.next_id - 1}")
        if action == "refine":
            return AddPrompt, "add_prompt", AddPrompt.Request(object_id=self.rng.choice(self.alive), box=self.box())
        if action == "past":
            req = AddPrompt.Request(object_id=self.rng.choice(self.alive), points=[self.point(), self.point()],
                                    labels=[1, 0])
            req.stamp.sec, req.stamp.nanosec = divmod(past_stamp, S)
            return AddPrompt, "add_prompt", req
        if action == "remove":
            oid = self.rng.choice(self.alive)
            self.alive.remove(oid)
            return RemoveObject, "remove_object", RemoveObject.Request(object_id=oid)
        if action == "reset":
            self.alive, self.next_id = [], 1
            return Reset, "reset", Reset.Request()
        raise ValueError(action)


def run_soak(engines: Path, cfg: SoakConfig, log_path: Path, progress: bool = False) -> SoakResult:
    """Run the node under the schedule; returns every sample (see the module docstring)."""
    from ros_support import Client, NodeProcess, image_msg

    frames = loop_frames(cfg)
    res = SoakResult(config=asdict(cfg), engines=str(engines))
    node = NodeProcess(log_path, {"engine_dir": engines, "input_qos.reliability": "reliable",
                                  "input_qos.depth": 10,
                                  "diagnostics_period": 0.2, "max_objects": cfg.max_objects,
                                  "intra_op_threads": cfg.threads})
    client = Client(f"soak_client_{os.getpid()}")
    sched = Schedule(cfg)
    status_name = "sam2_tracker: tracker"
    latest: dict[str, str] = {}

    def counters() -> dict[str, str]:
        with client._cond:
            for arr in client.diagnostics:
                for st in arr.status:
                    if st.name == status_name:
                        latest.update({kv.key: kv.value for kv in st.values})
            client.diagnostics.clear()
        return latest

    published = 0  # frames published with a new stamp
    sent = 0  # image messages sent (with the deliberate duplicates)
    processed = 0  # lockstep results received (bursts excluded)
    window: list[float] = []
    lockstep: deque[int] = deque(maxlen=cfg.past_frames + 1)  # stamps of the last processed frames
    t0 = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.frames, unit="frame", file=sys.stderr)
    try:
        client.wait_for_subscriber()

        def publish(k: int, stamp: int):
            nonlocal sent
            client.image_pub.publish(image_msg(frames[k % len(frames)], stamp))
            sent += 1

        def one_frame() -> None:
            nonlocal published, processed
            stamp = (published + 1) * FRAME_NS
            sent = time.perf_counter()
            publish(published, stamp)
            published += 1
            msg = client.result_for(stamp, timeout=120)
            rtt = (client.arrived[stamp] - sent) * 1000
            with client._cond:  # the client keeps every message: drop them (10,000 frames of masks)
                client.objects.clear()
                client.arrived.clear()
            ids = [o.id for o in msg.objects]
            if ids != sorted(sched.alive):
                res.errors.append(f"frame {processed}: objects {ids}, expected {sorted(sched.alive)}")
            processed += 1
            lockstep.append(stamp)
            res.rtt_ms.append(rtt)
            window.append(rtt)

        one_frame()
        while processed < cfg.frames:
            for action in sched.actions(processed, past_ok=len(lockstep) == lockstep.maxlen):
                srv, name, req = sched.request(action, lockstep[0])
                if action == "reset":
                    lockstep.clear()  # frames before a reset are no frames of the tracker any more
                reply = client.call(srv, name, req, timeout=60)
                if not reply.success:
                    res.errors.append(f"frame {processed}: {action} refused: {reply.message}")
                    if action == "add":
                        sched.alive.pop()  # the node has no such object: keep comparing ids
                        sched.next_id -= 1
                elif action == "add" and reply.object_id != sched.alive[-1]:
                    res.errors.append(f"frame {processed}: new object got id {reply.object_id}, "
                                      f"expected {sched.alive[-1]}")
                    sched.alive[-1] = reply.object_id
            if processed % cfg.burst_every == 0:  # 5 frames at once and a repeated stamp: drops, a rejection
                for _ in range(5):
                    published += 1
                    publish(published, published * FRAME_NS)
                publish(published, published * FRAME_NS)
                sched.counts["burst"] = sched.counts.get("burst", 0) + 1
            one_frame()
            if bar is not None:
                bar.update(1)
            if processed % cfg.sample_every == 0:
                node.assert_alive()
                # the node's counters once its diagnostics have seen every message sent so far
                deadline = time.monotonic() + 10
                while int(counters().get("frames_received", "0")) < sent and time.monotonic() < deadline:
                    time.sleep(0.05)
                c = {k: int(v) for k, v in counters().items() if k.startswith("frames_") or k == "queue_depth"}
                c.setdefault("frames_in_flight", 0)
                rss, fds, threads = proc_figures(node.pid)
                res.samples.append(Sample(
                    frame=processed, t_s=time.monotonic() - t0, rss_mib=rss, fds=fds, threads=threads, counters=c,
                    step_mean_ms=float(latest.get("tracker_step_mean_ms", "nan")),
                    rtt_p50_ms=float(np.percentile(window, 50)), rtt_p99_ms=float(np.percentile(window, 99)),
                    objects=int(latest.get("objects", "-1"))))
                window.clear()
    except AssertionError as e:  # a timeout of the client: the node hung or died
        res.errors.append(f"after {processed} frames: {e}")
    finally:
        if bar is not None:
            bar.close()
        client.close()
        res.exit_code = node.stop()
        res.wall_s = time.monotonic() - t0
    res.actions = dict(sched.counts)
    res.log_problems = [line for line in node.log().splitlines() if not EXPECTED.search(line)
                        and ("Traceback" in line or "[ERROR]" in line or "Exception" in line)]
    return res


def check(res: SoakResult, latency: bool = True) -> list[str]:
    """The soak's failures (empty: every target met). ``latency=False``: all but the latency target
    (the short soak of the tests: timing is for benchmarks on a quiet machine)."""
    cfg = SoakConfig(**res.config)
    fails = list(res.errors)
    if res.exit_code != 0:
        fails.append(f"the node exited with {res.exit_code} on SIGINT")
    fails += [f"node log: {line}" for line in res.log_problems[:10]]
    for s in res.samples:
        c = s.counters
        accounted = (c["frames_processed"] + c["frames_dropped"] + c["frames_rejected"] + c["queue_depth"]
                     + c["frames_in_flight"])
        if c["frames_received"] != accounted:
            fails.append(f"frame {s.frame}: received {c['frames_received']} != processed + dropped + rejected + "
                         f"pending = {accounted} ({c})")
    after = [s for s in res.samples if s.frame >= cfg.warmup]
    if not after:
        return fails + [f"no sample after the {cfg.warmup}-frame warm-up"]
    rss = [s.rss_mib for s in after]
    if max(rss) - min(rss) > RSS_FLAT_MIB:
        fails.append(f"resident memory after warm-up spans {min(rss):.1f}..{max(rss):.1f} MiB "
                     f"(more than {RSS_FLAT_MIB:g} MiB)")
    base, end = after[0], res.samples[-1]
    if end.fds > base.fds or end.threads > base.threads:
        fails.append(f"descriptors {base.fds} -> {end.fds}, threads {base.threads} -> {end.threads} after warm-up")
    p_start, p_end = latency_p99(res)
    if latency and p_end > P99_RATIO * p_start:
        fails.append(f"round-trip p99 {p_start:.1f} ms after warm-up -> {p_end:.1f} ms at the end "
                     f"(more than {P99_RATIO:g}x)")
    return fails


def latency_p99(res: SoakResult) -> tuple[float, float]:
    """p99 of the round trip over the first 10 % of frames after warm-up and over the last 10 %."""
    cfg = SoakConfig(**res.config)
    rtt = res.rtt_ms
    tenth = max((len(rtt) - cfg.warmup) // 10, 1)
    return float(np.percentile(rtt[cfg.warmup:cfg.warmup + tenth], 99)), float(np.percentile(rtt[-tenth:], 99))


def report(res: SoakResult, fails: list[str]) -> str:
    cfg = SoakConfig(**res.config)
    if not res.samples:  # the run ended before its first sample
        return "No sample: the run ended early.\n" + "\n".join(f"- {f}" for f in fails)
    after = [s for s in res.samples if s.frame >= cfg.warmup] or res.samples
    base, end = after[0], res.samples[-1]
    p_start, p_end = latency_p99(res)
    rss = [s.rss_mib for s in after]
    c = end.counters
    lines = [
        f"{end.frame} processed frames of four clips looped at {WH[0]}x{WH[1]} (engines {Path(res.engines).name}), "
        f"1..{cfg.max_objects} objects, node intra_op_threads {cfg.threads}, {os.cpu_count()} CPUs, "
        f"{res.wall_s / 60:.1f} min. Scheduled calls: "
        + ", ".join(f"{k} {v}" for k, v in sorted(res.actions.items())) + ".",
        "",
        "| figure | after warm-up (frame %d) | end (frame %d) | target | met |" % (base.frame, end.frame),
        "| --- | --- | --- | --- | --- |",
        f"| resident memory (MiB) | {base.rss_mib:.1f} | {end.rss_mib:.1f} (span {max(rss) - min(rss):.1f}) | "
        f"flat within {RSS_FLAT_MIB:g} | {'yes' if max(rss) - min(rss) <= RSS_FLAT_MIB else 'NO'} |",
        f"| open descriptors | {base.fds} | {end.fds} | no growth | {'yes' if end.fds <= base.fds else 'NO'} |",
        f"| threads | {base.threads} | {end.threads} | no growth | {'yes' if end.threads <= base.threads else 'NO'} |",
        f"| round-trip p99 (ms) | {p_start:.1f} | {p_end:.1f} ({p_end / p_start:.2f}x) | within {P99_RATIO:g}x | "
        f"{'yes' if p_end <= P99_RATIO * p_start else 'NO'} |",
        f"| tracker step mean (ms) | {base.step_mean_ms:.1f} | {end.step_mean_ms:.1f} | | |",
        "",
        f"Counters at the end: received {c['frames_received']} = processed {c['frames_processed']} + dropped "
        f"{c['frames_dropped']} + rejected {c['frames_rejected']} + waiting {c['queue_depth']} + in flight "
        f"{c['frames_in_flight']} "
        f"(checked at all {len(res.samples)} samples). Node exit code on SIGINT: {res.exit_code}; "
        f"errors or tracebacks in its log: {len(res.log_problems)}.",
        "",
        *([f"Command: `{res.command}`.", ""] if res.command else []),
        "Result: " + ("every target met." if not fails else "FAILED:\n" + "\n".join(f"- {f}" for f in fails)),
    ]
    return "\n".join(lines)


def plot(res: SoakResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = [s.frame for s in res.samples]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(f, [s.rss_mib for s in res.samples])
    axes[0].set(xlabel="processed frames", ylabel="MiB", title="node resident memory")
    axes[1].plot(f, [s.fds for s in res.samples], label="open descriptors")
    axes[1].plot(f, [s.threads for s in res.samples], label="threads")
    axes[1].set(xlabel="processed frames", title="descriptors and threads")
    axes[2].plot(f, [s.rtt_p50_ms for s in res.samples], label="round trip p50")
    axes[2].plot(f, [s.rtt_p99_ms for s in res.samples], label="round trip p99")
    axes[2].plot(f, [s.step_mean_ms for s in res.samples], label="tracker step mean")
    axes[2].set(xlabel="processed frames", ylabel="ms", title="latency per 100 frames")
    for ax in axes:
        ax.axvline(SoakConfig(**res.config).warmup, color="grey", lw=0.8, ls="--")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[1].legend()
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", type=Path, help="export directory (default: make a random tiny@256 one)")
    ap.add_argument("--frames", type=int, default=SoakConfig.frames)
    ap.add_argument("--warmup", type=int, default=SoakConfig.warmup)
    ap.add_argument("--max-objects", type=int, default=SoakConfig.max_objects)
    ap.add_argument("--threads", type=int, default=SoakConfig.threads)
    ap.add_argument("--sample-every", type=int, default=SoakConfig.sample_every)
    ap.add_argument("--burst-every", type=int, default=SoakConfig.burst_every)
    ap.add_argument("--reset-every", type=int, default=SoakConfig.reset_every)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "soak")
    args = ap.parse_args()

    import ros_support  # noqa: F401 - first: its ROS domain and discovery range

    engines = args.engines
    if engines is None:  # a random-weights tiny at 256, exported once and kept
        from sam2_ros_export.onnx_export import cached_random_export

        _, engines = cached_random_export("sam2.1_hiera_tiny", 256, Path(tempfile.gettempdir()) / "sam2_ros_bench")
    cfg = SoakConfig(frames=args.frames, warmup=args.warmup, max_objects=args.max_objects, threads=args.threads,
                     sample_every=args.sample_every, burst_every=args.burst_every, reset_every=args.reset_every)
    log = Path(tempfile.mkdtemp(prefix="soak_log_")) / "node.log"
    print(f"node log: {log}", file=sys.stderr)
    res = run_soak(engines, cfg, log, progress=True)
    res.command = "python benchmarks/soak.py " + " ".join(sys.argv[1:])
    fails = check(res)
    table = report(res, fails)
    print(table)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(asdict(res), indent=1) + "\n")
    plot(res, args.out.with_suffix(".png"))
    return 1 if fails else 0


if __name__ == "__main__":
    raise SystemExit(main())
