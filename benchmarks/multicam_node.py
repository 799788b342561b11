"""One node serving N cameras against N single-camera nodes, robots simulated on loopback.

    python benchmarks/multicam_node.py [--engines DIR] [--cameras 1,2,3] [--seconds 20] [--rate 10]

Each robot is a separate publisher process sending JPEG frames of its own clip
(sensor_msgs/CompressedImage, best effort, as a robot sends over a network) on
`robotK/front/image/compressed` at --rate Hz. For each N:

- one node, ``cameras: [robot1/front, ..., robotN/front]``, ``image_transport: compressed``;
- N nodes (N > 1), one per robot (``-r __node:=sam2_tracker_K -r image:=robotK/front/image``);
- one node, N cameras, robot 1 publishing --fast times faster than the others (fairness).

Each camera tracks one object (a point prompt once its first frame is processed). After a
warm-up, the per-camera processed rate, dropped frames and latency (image received → results
published, the node's own /diagnostics) are taken over --seconds, and the resident memory
(VmRSS) of the node processes at the end. Writes benchmarks/multicam_node.{md,json,png}.
Without --engines it exports a random-weights sam2.1_hiera_tiny at 256 first, once (kept in
$TMPDIR/sam2_ros_bench; needs torch and sam2). Numbers depend on the machine's load: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # ros_support: the ROS client used by the tests
os.environ.setdefault("SAM2_ROS_TEST_DOMAIN_ID", str(150 + os.getpid() % 50))
CLIPS = ("02_cups.mp4", "03_blocks.mp4", "08_driving.mp4", "bedroom.mp4")
VIDEOS = Path(os.environ.get("SAM2_ROS_SHARED_DATA", REPO.parent / "shared" / "data")) / "videos"
SIZE = (640, 360)  # frames the robots publish


def publish_main(topic: str, clip: str, rate: float, seconds: float, size: str) -> int:
    """A robot: JPEG frames of ``clip`` on ``topic``/compressed at ``rate`` Hz for ``seconds``."""
    import cv2
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    from sam2_ros.io.video import iter_frames

    w, h = (int(v) for v in size.split("x"))
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA),
                                               cv2.COLOR_RGB2BGR))[1].tobytes() for f in iter_frames(VIDEOS / clip, 30)]
    rclpy.init()
    node = rclpy.create_node(f"robot_{os.getpid()}")
    pub = node.create_publisher(CompressedImage, topic + "/compressed", qos_profile_sensor_data)
    t0, k = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        msg = CompressedImage(format="jpeg", data=jpegs[k % len(jpegs)])
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
        msg.header.frame_id = topic
        pub.publish(msg)
        k += 1
        time.sleep(max(0.0, t0 + k / rate - time.monotonic()))
    node.destroy_node()
    rclpy.shutdown()
    return 0


class Diagnostics:
    """The latest /diagnostics values of every status, by status name."""

    def __init__(self):
        import threading

        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("multicam_bench", context=self.context)
        self.latest: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 50)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on(self, msg):
        for st in msg.status:
            self.latest[st.name] = {kv.key: kv.value for kv in st.values}

    def wait(self, names, predicate, timeout=120.0, what=""):
        deadline = time.monotonic() + timeout
        while not all(n in self.latest and predicate(self.latest[n]) for n in names):
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {self.latest}")
            time.sleep(0.2)

    def close(self):
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def prompt(node_ns: str, camera: str) -> None:
    """One object from a point in the middle of the camera's latest frame."""
    from geometry_msgs.msg import Point32
    from ros_support import Client

    from sam2_ros_interfaces.srv import AddPrompt

    client = Client(f"bench_prompt_{os.getpid()}", node_ns=node_ns, camera=camera)
    try:
        reply = client.call(AddPrompt, "add_prompt", AddPrompt.Request(
            object_id=-1, points=[Point32(x=SIZE[0] / 2, y=SIZE[1] / 2)], labels=[1]))
        if not reply.success:
            raise RuntimeError(f"{node_ns} {camera}: {reply.message}")
    finally:
        client.close()


def run(config: str, n: int, rates: list[float], args, engines: Path, diag: Diagnostics) -> dict:
    """One configuration; returns its figures."""
    from ros_support import NodeProcess

    tmp = Path(tempfile.mkdtemp(prefix="multicam_bench_"))
    common = {"engine_dir": engines, "image_transport": "compressed", "diagnostics_period": 0.5,
              "max_objects": 2, "intra_op_threads": args.threads}
    cams = [f"robot{k + 1}/front" for k in range(n)]
    if config == "nodes":
        nodes = [NodeProcess(tmp / f"node{k}.log", common, ros_args=(
            "-r", f"__node:=sam2_tracker_{k + 1}", "-r", f"image:=robot{k + 1}/front/image")) for k in range(n)]
        status = [f"sam2_tracker_{k + 1}: tracker" for k in range(n)]
        services = [(f"/sam2_tracker_{k + 1}", "") for k in range(n)]
    else:
        nodes = [NodeProcess(tmp / "node.log", {**common, "cameras": "[" + ", ".join(cams) + "]"})]
        status = [f"sam2_tracker: {c}" for c in cams]
        services = [("/sam2_tracker", c) for c in cams]
    pubs = []
    try:
        diag.wait(status, lambda v: v.get("state") == "active", what="the nodes to be active")
        seconds = args.warmup + args.seconds + 30
        pubs = [subprocess.Popen([sys.executable, __file__, "--publish", f"robot{k + 1}/front/image",
                                  "--clip", CLIPS[k % len(CLIPS)], "--rate", str(rates[k]),
                                  "--for", str(seconds), "--size", f"{SIZE[0]}x{SIZE[1]}"]) for k in range(n)]
        diag.wait(status, lambda v: int(v.get("frames_processed", "0")) > 0, what="first frames")
        for node_ns, camera in services:
            prompt(node_ns, camera)
        time.sleep(args.warmup)
        before = {s: dict(diag.latest[s]) for s in status}
        t0 = time.monotonic()
        time.sleep(args.seconds)
        after = {s: dict(diag.latest[s]) for s in status}
        span = time.monotonic() - t0
        rss = sum(node.rss_mb() for node in nodes)
        for node in nodes:
            node.assert_alive()
    finally:
        for p in pubs:
            p.kill()
            p.wait()
        for node in nodes:
            node.stop()

    def delta(s, key):
        return int(after[s][key]) - int(before[s][key])

    per_camera = [{"camera": cams[k], "rate_hz": rates[k], "processed_fps": delta(s, "frames_processed") / span,
                   "dropped_per_s": delta(s, "frames_dropped") / span,
                   "latency_mean_ms": float(after[s]["latency_mean_ms"]), "objects": int(after[s]["objects"])}
                  for k, s in enumerate(status)]
    batch = float(after[status[0]].get("batch_size_mean", "1"))
    return {"config": config, "cameras": n, "rss_mb": rss, "batch_size_mean": batch,
            "total_fps": sum(c["processed_fps"] for c in per_camera), "per_camera": per_camera}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", type=Path, help="export directory (default: make a random tiny@256 one)")
    ap.add_argument("--cameras", default="1,2,3")
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second each robot publishes")
    ap.add_argument("--fast", type=float, default=5.0, help="robot 1's rate multiple in the fairness run")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=0, help="intra_op_threads of every node (0: the runtime's)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "multicam_node")
    ap.add_argument("--publish", help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    ap.add_argument("--for", dest="for_s", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish:
        return publish_main(args.publish, args.clip, args.rate, args.for_s, args.size)

    import ros_support  # noqa: F401 - first: its ROS domain and discovery range, for every process started here

    engines = args.engines
    if engines is None:  # a random-weights tiny at 256, exported once and kept
        from sam2_ros_export.onnx_export import cached_random_export

        _, engines = cached_random_export("sam2.1_hiera_tiny", 256, Path(tempfile.gettempdir()) / "sam2_ros_bench")
    diag = Diagnostics()
    results = []
    try:
        for n in (int(v) for v in args.cameras.split(",")):
            for config in ("one node",) + (("nodes",) if n > 1 else ()):
                results.append(run(config, n, [args.rate] * n, args, engines, diag))
                print(json.dumps(results[-1]), file=sys.stderr)
        n = max(int(v) for v in args.cameras.split(","))
        if n > 1:
            res = run("one node, robot1 fast", n, [args.rate * args.fast] + [args.rate] * (n - 1), args, engines, diag)
            results.append(res)
    finally:
        diag.close()

    lines = [f"Robots publish {SIZE[0]}x{SIZE[1]} JPEG at {args.rate:g} Hz each (fairness run: robot 1 at "
             f"{args.rate * args.fast:g} Hz), one object per camera, {args.seconds:g} s after a {args.warmup:g} s "
             f"warm-up; engines {engines.name}; intra_op_threads {args.threads} in every node; "
             f"{os.cpu_count()} CPUs.", "",
             "| configuration | cameras | node RSS (MB, all processes) | total processed FPS | mean batch | "
             "per camera: processed FPS / dropped per s / latency ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        cams = "; ".join(f"{c['camera']} {c['processed_fps']:.2f} / {c['dropped_per_s']:.1f} / "
                         f"{c['latency_mean_ms']:.0f}" for c in r["per_camera"])
        name = {"nodes": f"{r['cameras']} nodes"}.get(r["config"], r["config"])
        lines.append(f"| {name} | {r['cameras']} | {r['rss_mb']:.0f} | {r['total_fps']:.2f} | "
                     f"{r['batch_size_mean']:.2f} | {cams} |")
    table = "\n".join(lines)
    print(table)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out.with_suffix(".png"))
    return 0


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for config, marker in (("one node", "o"), ("nodes", "s")):
        rs = [r for r in results if r["config"] == config or (config == "nodes" and r["cameras"] == 1
                                                              and r["config"] == "one node")]
        label = "one node, N cameras" if config == "one node" else "N single-camera nodes"
        ax1.plot([r["cameras"] for r in rs], [r["rss_mb"] for r in rs], marker=marker, label=label)
        ax2.plot([r["cameras"] for r in rs], [r["total_fps"] for r in rs], marker=marker, label=label)
    ax1.set(xlabel="cameras", ylabel="resident memory, MB", title="memory")
    ax2.set(xlabel="cameras", ylabel="frames processed per second, all cameras", title="throughput")
    for ax in (ax1, ax2):
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({r["cameras"] for r in results}))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
