"""Latency the ROS node adds over the bare tracker, and how it drops frames under load.

    python benchmarks/node_latency.py --engines DIR [--frames 30] [--size 960x540]

1. bare tracker: ``Tracker.step`` on real frames of bedroom.mp4 (one object), in this process;
2. node, lockstep: the sam2_tracker node in its own process; this process publishes a frame,
   waits for its TrackedObjects message, publishes the next. Latency = message received -
   image published (both clocks here), so it includes the image transfer, conversion, the
   tracker step, building and sending the result;
3. node, overload: frames published at several multiples of the node's lockstep rate for a few
   seconds each: frames processed / dropped and the age of each result when it arrives.

Prints a Markdown table. Without --engines it exports a random-weights sam2.1_hiera_tiny at
256 first, once (kept in $TMPDIR/sam2_ros_bench; needs torch and sam2; about 20 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # ros_support: the ROS client used by the tests

os.environ.setdefault("SAM2_ROS_TEST_DOMAIN_ID", str(150 + os.getpid() % 50))
if "--default-dds" not in sys.argv:
    # camera-size messages need a larger Fast DDS shared-memory segment (see the file)
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_images.xml"))


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def row(name, values_s):
    ms = [1000 * v for v in values_s]
    return f"| {name} | {len(ms)} | {statistics.mean(ms):.1f} | {percentile(ms, 50):.1f} | {percentile(ms, 95):.1f} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", type=Path, help="export directory (default: make a random tiny@256 one)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared" / "data" / "videos" / "bedroom.mp4")
    ap.add_argument("--frames", type=int, default=30, help="frames per measurement")
    ap.add_argument("--size", default="960x540", help="frame size WxH published to the node")
    ap.add_argument("--rates", default="2,5,20", help="overload rates as multiples of the lockstep FPS")
    ap.add_argument("--overload-seconds", type=float, default=8.0)
    ap.add_argument("--qos", choices=("best_effort", "reliable"), default="best_effort",
                    help="reliability of the image topic (the node's default is best_effort, as cameras publish)")
    ap.add_argument("--default-dds", action="store_true",
                    help="do not use config/fastdds_large_images.xml (Fast DDS defaults)")
    ap.add_argument("--node-param", action="append", default=[], metavar="NAME=VALUE",
                    help="extra node parameter, e.g. publish.object_masks=false (repeatable)")
    args = ap.parse_args()

    import cv2
    from ros_support import Client, NodeProcess, image_msg, stamp_ns

    from sam2_ros.backends import load_backend
    from sam2_ros.tracker import Tracker
    from sam2_ros.io.video import iter_frames

    engines = args.engines
    if engines is None:  # a random-weights tiny at 256, exported once and kept
        from sam2_ros_export.onnx_export import cached_random_export

        _, engines = cached_random_export("sam2.1_hiera_tiny", 256, Path(tempfile.gettempdir()) / "sam2_ros_bench")
    w, h = (int(v) for v in args.size.split("x"))
    frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in iter_frames(args.video, args.frames)]
    click = [[w * 0.5, h * 0.66]]

    # 1. bare tracker
    tracker = Tracker(load_backend(engines, args.backend), max_objects=8)
    tracker.step(frames[0])
    tracker.add_prompt(1, points=click, labels=[1])
    bare = []
    for f in frames[1:]:
        t0 = time.perf_counter()
        tracker.step(f)
        bare.append(time.perf_counter() - t0)
    del tracker

    # 2. node, lockstep
    log = Path(tempfile.mkdtemp(prefix="sam2_bench_")) / "node.log"
    params = {"engine_dir": engines, "backend": args.backend, "input_qos.reliability": args.qos,
              "diagnostics_period": 0.5}
    params.update(p.split("=", 1) for p in args.node_param)
    node = NodeProcess(log, params)
    from rclpy.qos import qos_profile_sensor_data
    from ros_support import RELIABLE

    client = Client("bench_client", image_qos=qos_profile_sensor_data if args.qos == "best_effort" else RELIABLE)
    from geometry_msgs.msg import Point32

    from sam2_ros_interfaces.srv import AddPrompt

    S = 1_000_000_000
    try:
        client.wait_for_subscriber()
        for attempt in range(10):  # best effort may lose a frame: offer the first one until it is processed
            try:
                client.publish_and_wait(frames[0], S + attempt, timeout=10)
                break
            except AssertionError:
                continue
        reply = client.call(AddPrompt, "add_prompt", AddPrompt.Request(
            object_id=1, points=[Point32(x=click[0][0], y=click[0][1])], labels=[1]))
        assert reply.success, reply.message
        lockstep, lost = [], 0
        for k, f in enumerate(frames[1:], start=2):
            t0 = time.perf_counter()
            try:
                client.publish_and_wait(f, k * S, timeout=10)
            except AssertionError:
                lost += 1  # lost on the way (best effort): nothing to time
                continue
            lockstep.append(client.arrived[k * S] - t0)
        node_fps = 1.0 / statistics.mean(lockstep)
        time.sleep(1.0)  # one more diagnostics message covering the last lockstep frames
        internal = {}
        for arr in reversed(client.diagnostics):
            for st in arr.status:
                if st.name == "sam2_tracker: tracker":
                    internal = {kv.key: kv.value for kv in st.values}
            if internal:
                break

        # 3. overload
        overload_rows = []
        next_k = 1000
        for mult in (float(m) for m in args.rates.split(",")):
            rate = mult * node_fps
            sent: dict[int, float] = {}
            with client._cond:
                before = len(client.objects)
            t_end = time.perf_counter() + args.overload_seconds
            k = 0
            while time.perf_counter() < t_end:
                stamp = (next_k + k) * S
                msg = image_msg(frames[k % len(frames)], stamp)
                sent[stamp] = time.perf_counter()
                client.image_pub.publish(msg)
                k += 1
                time.sleep(max(0.0, sent[stamp] + 1.0 / rate - time.perf_counter()))
            last = (next_k + k - 1) * S
            client.result_for(last, timeout=60)
            got = [m for m in client.objects[before:] if stamp_ns(m.header.stamp) in sent]
            ages = [client.arrived[stamp_ns(m.header.stamp)] - sent[stamp_ns(m.header.stamp)] for m in got]
            processed = len(got)
            overload_rows.append((mult, rate, k, processed, k - processed, ages))
            next_k += k + 10
            time.sleep(1.0)
    finally:
        client.close()
        node.stop()

    print(f"\nengines: {engines} ({args.backend}), frames {w}x{h}, one tracked object\n")
    print("| measurement | frames | mean ms | p50 ms | p95 ms |")
    print("| --- | --- | --- | --- | --- |")
    print(row("bare Tracker.step", bare))
    print(row("node, lockstep: publish -> result", lockstep))
    added = [n - b for n, b in zip(sorted(lockstep), sorted(bare), strict=False)]  # quantiles of the difference
    print(f"| node overhead (lockstep - bare, by rank) | {len(added)} | {statistics.mean(added) * 1000:.1f} | "
          f"{percentile(added, 50) * 1000:.1f} | {percentile(added, 95) * 1000:.1f} |")
    print(f"\nnode lockstep rate: {node_fps:.2f} FPS; inside the node over its last 5 s: image received -> "
          f"results published {internal.get('latency_mean_ms')} ms mean, of which Tracker.step "
          f"{internal.get('tracker_step_mean_ms')} ms\n")
    dds = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "Fast DDS defaults")
    print(f"DDS profile: {dds}")
    print(f"image QoS: {args.qos}; frames lost on the way in lockstep: {lost}; "
          f"node parameters: {', '.join(args.node_param) or 'defaults'}\n")
    print("| publish rate | published | processed | dropped | result age mean ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mult, rate, sent_n, processed, dropped, ages in overload_rows:
        print(f"| {mult:g}x ({rate:.1f} Hz) | {sent_n} | {processed} | {dropped} | "
              f"{1000 * statistics.mean(ages):.0f} | {1000 * max(ages):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
