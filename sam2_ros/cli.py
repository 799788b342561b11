"""``sam2-ros``: one entry point for checkpoints, export, tracking, comparison and the ROS node.

Subcommands: download, checkpoint, export, build, track, compare, bench, demo, node (the
contract is in README.md). The CLI is the top layer: the runtime subcommands (download, build,
track, node) use only the torch-free ``sam2_ros`` core; the toolchain subcommands (checkpoint,
export, compare, bench, demo) import the export toolchain ``sam2_ros_export`` (PyTorch and the
official ``sam2`` package) lazily, so the runtime runs on a robot without PyTorch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("sam2_ros")

CHECKPOINT_DIR = Path.home() / ".cache" / "sam2_ros" / "checkpoints"


# ------------------------------------------------------------------ helpers
#: the configurations of ours that `bench --ours` may name: backend:precision
BENCH_OURS = ("onnxruntime:fp32", "openvino:fp32", "openvino:bf16", "torch:fp32", "torch:bf16")
BENCH_DEFAULT_OURS = ("onnxruntime:fp32", "openvino:fp32", "torch:fp32", "openvino:bf16", "torch:bf16")


def _die(msg: str, code: int = 2) -> int:
    print(f"sam2-ros: error: {msg}", file=sys.stderr)
    return code


def _backend_options(args) -> dict:
    from sam2_ros.backends import CUDA_GRAPH_CHOICES, backend_options, takes_precision

    if args.precision != "fp32" and not takes_precision(args.backend):
        raise ValueError(f"--precision {args.precision} is for the torch and openvino backends; the {args.backend} "
                         "backend's precision comes from its export / engine build")
    return backend_options(
        args.backend, providers=args.providers.split(",") if args.providers else None, checkpoint=args.checkpoint,
        device=args.device if args.backend == "torch" else None, precision=args.precision,
        intra_op_threads=args.threads, threads=args.threads, imaging=args.imaging,
        cuda_graph=CUDA_GRAPH_CHOICES[args.cuda_graph], compile=args.compile or None,
    )


# -------------------------------------------------------------- subcommands
def cmd_download(args) -> int:
    from sam2_ros.io.download import download_checkpoint

    try:
        path = download_checkpoint(args.model, args.out, timeout=args.timeout)
    except (ValueError, RuntimeError) as e:
        return _die(str(e))
    print(path)
    return 0


def _in_model_env(args) -> int | None:
    """Re-run this command under the Python whose ``sam2`` package builds ``args.model`` (EdgeTAM's
    lives in .venv-edgetam); its exit code, or None to run it here."""
    from sam2_ros_export.model_env import model_python, run_python

    python = model_python(args.model)
    if python is None:
        return None
    log.info("%s: running under %s", args.model, python)
    return run_python(python, ["-m", "sam2_ros.cli", *args.argv]).returncode


def _rerun_in_model_env(args) -> int | None:
    """The exit status of this command re-run in the model's own environment (or of the error
    saying that environment is missing); None when it runs here."""
    try:
        return _in_model_env(args)
    except RuntimeError as e:
        return _die(str(e))


def cmd_checkpoint(args) -> int:
    rc = _rerun_in_model_env(args)
    if rc is not None:
        return rc
    from sam2_ros_export.checkpoint import random_checkpoint

    print(
        "WARNING: writing a RANDOMLY INITIALISED model (seed %d) in the official checkpoint format. "
        "It segments nothing meaningful: use it for tests and smoke runs only." % args.random_seed,
        file=sys.stderr,
    )
    print(random_checkpoint(args.model, args.random_seed, args.out, score_shift=args.score_shift,
                            mask_shift=args.mask_shift))
    return 0


def cmd_export(args) -> int:
    if not Path(args.checkpoint).is_file():
        return _die(f"checkpoint {args.checkpoint} does not exist (`sam2-ros download --model {args.model}`)")
    rc = _rerun_in_model_env(args)
    if rc is not None:
        return rc
    from sam2_ros_export.onnx_export import export_model

    manifest = export_model(args.model, args.checkpoint, args.out, image_size=args.image_size, tolerance=args.tolerance)
    for name, g in manifest["graphs"].items():
        print(f"{name:17s} max|onnx - torch| = {g.get('max_abs_diff_vs_torch', float('nan')):.2e}")
    print(f"wrote {args.out}/manifest.json")
    return 0


def cmd_build(args) -> int:
    """Delegates to ``sam2_ros.backends.tensorrt.build.main`` (all its options: --max-points, --cond-slots, ...)."""
    from sam2_ros.backends.tensorrt.build import main as build_main
    from sam2_ros.errors import Sam2RosError

    try:
        return build_main(args.build_args) or 0
    except (Sam2RosError, ValueError) as e:
        return _die(str(e))


def _open_tracker(args, num_frames: int | None = None, fill_hole_area: int | None = None):
    from sam2_ros.backends import load_backend
    from sam2_ros.tracker import Tracker

    backend = load_backend(args.engines, args.backend, **_backend_options(args))
    tracker = Tracker(
        backend, max_objects=args.max_objects, cond_slots=args.cond_slots, num_frames=num_frames,
        fill_hole_area=args.fill_hole_area if fill_hole_area is None else fill_hole_area,
        corrections_as_conditioning=args.corrections_as_conditioning,
        keep_first_cond_frame=args.keep_first_cond_frame, history_frames=args.history_frames,
    )
    if args.warm_up:
        backend.warm_up(tracker.max_objects, args.cond_slots)
    return tracker


def cmd_track(args) -> int:
    """``track``: stopped by SIGTERM at any point, it exits 143 and leaves no output half-written."""
    with _sigterm_as_exit():
        return _track(args)


def _track(args) -> int:
    from tqdm import tqdm

    from sam2_ros.errors import Sam2RosError
    from sam2_ros.io.atomic import write_text_atomic
    from sam2_ros.io.masks_file import MasksWriter
    from sam2_ros.io.prompts_file import load_prompts, require_frames
    from sam2_ros.io.runner import run_tracker
    from sam2_ros.io.video import OverlayWriter, iter_frames, video_fps

    if args.bag is None and (args.topic is not None or args.overlay_topic or args.depth_topic
                             or args.camera_info_topic or args.detections_topic):
        return _die("--topic, --overlay-topic, --depth-topic, --camera-info-topic and --detections-topic go with --bag")
    if args.bag is not None and not args.topic:
        return _die("--bag needs --topic: the image topic to track (sensor_msgs/msg/Image or CompressedImage)")
    videos = args.video or []
    if len(args.prompts) != max(len(videos), 1):
        return _die(f"give one --prompts per --video, in the same order ({len(videos)} videos, "
                    f"{len(args.prompts)} prompts files)" if videos else "--bag takes one --prompts")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # stats.json is the run's completion mark: written last, atomically; a run that fails or is
    # killed leaves none (each other output is staged and moved into place whole)
    (out / "stats.json").unlink(missing_ok=True)
    if len(videos) > 1:
        return _track_videos(args, out)
    writer = None
    try:
        prompts = load_prompts(args.prompts[0])
        if args.bag is not None:
            run, inputs, tracker = _track_bag(args, prompts, out)
        else:
            video = videos[0]
            require_frames(prompts, f"video {video}")
            inputs = {"video": str(video)}
            tracker = _open_tracker(args)

            def on_frame(i, frame, res):
                nonlocal writer
                if writer is None:
                    writer = OverlayWriter(out / "overlay.mp4", video_fps(video), frame.shape[:2])
                writer.write(frame, res.masks, res.object_ids)

            frames = tqdm(iter_frames(video, args.max_frames), desc="track", unit="frame")
            # masks go to disk frame by frame: memory stays flat however long the clip
            with MasksWriter(out / "masks.npz", [p.object_id for p in prompts]) as masks:
                run = run_tracker(tracker, frames, prompts, on_frame=on_frame, keep_masks=False, sink=masks.write)
            if writer is not None:
                writer, done = None, writer
                done.close()
    except (Sam2RosError, ValueError, FileNotFoundError) as e:
        return _die(str(e))
    finally:
        if writer is not None:  # the run failed or was stopped: no overlay
            writer.abort()
    stats = _track_stats(args, run, tracker, inputs)
    write_text_atomic(out / "stats.json", json.dumps(stats, indent=2))
    print(json.dumps(stats))
    return 0


def _track_stats(args, run, tracker, inputs: dict) -> dict:
    """A ``track`` run's stats.json."""
    return {
        "frames": len(run.frame_seconds), "objects": len(run.object_ids), "backend": args.backend,
        "fps": round(run.fps, 3), "engines": str(args.engines), **inputs,
        "fill_hole_area": tracker.fill_hole_area, "cond_slots": args.cond_slots,
        "keep_first_cond_frame": args.keep_first_cond_frame,
        "corrections_as_conditioning": tracker.corrections_as_conditioning,
        "history_frames": tracker.history_frames,
    }


def stream_names(videos: list[str]) -> list[str]:
    """One stream name per video: its file stem, made unique (``a``, ``a_2``, ...)."""
    names: list[str] = []
    for v in videos:
        stem = Path(v).stem or "video"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.append(name)
    return names


def _track_videos(args, out: Path) -> int:
    """``track`` with several ``--video``: one stream each over one backend (a MultiTracker, the
    image encoder batched across streams); each stream's masks.npz, overlay.mp4 and stats.json
    in ``out/<stream>/``, a summary in ``out/stats.json``."""
    from contextlib import ExitStack

    from tqdm import tqdm

    from sam2_ros.backends import load_backend
    from sam2_ros.errors import Sam2RosError
    from sam2_ros.io.atomic import write_text_atomic
    from sam2_ros.io.masks_file import MasksWriter
    from sam2_ros.io.prompts_file import load_prompts, require_frames
    from sam2_ros.io.runner import run_multi_tracker
    from sam2_ros.io.video import OverlayWriter, iter_frames, video_fps
    from sam2_ros.multi_tracker import MultiTracker

    names = stream_names(args.video)
    videos = dict(zip(names, args.video))
    writers: dict[str, OverlayWriter] = {}
    try:
        prompts = {s: load_prompts(p) for s, p in zip(names, args.prompts)}
        for s in names:
            require_frames(prompts[s], f"video {videos[s]}")
        backend = load_backend(args.engines, args.backend, **_backend_options(args))
        multi = MultiTracker(
            backend, names, max_objects=args.max_objects, cond_slots=args.cond_slots, fill_hole_area=args.fill_hole_area,
            corrections_as_conditioning=args.corrections_as_conditioning,
            keep_first_cond_frame=args.keep_first_cond_frame, history_frames=args.history_frames,
        )
        if args.warm_up:
            backend.warm_up(args.max_objects, args.cond_slots)
        with ExitStack() as stack:
            def on_frame(s, i, frame, res):
                if s not in writers:
                    writers[s] = OverlayWriter(out / s / "overlay.mp4", video_fps(videos[s]), frame.shape[:2])
                writers[s].write(frame, res.masks, res.object_ids)

            sinks = {}
            for s in names:
                (out / s).mkdir(parents=True, exist_ok=True)
                (out / s / "stats.json").unlink(missing_ok=True)
                sinks[s] = stack.enter_context(MasksWriter(out / s / "masks.npz", [p.object_id for p in prompts[s]])).write
            frames = {s: iter_frames(v, args.max_frames) for s, v in videos.items()}
            frames[names[0]] = tqdm(frames[names[0]], desc=f"track {len(names)} streams", unit="step")
            runs = run_multi_tracker(multi, frames, prompts, on_frame=on_frame, sinks=sinks, keep_masks=False)
        while writers:  # each overlay moved into place whole
            writers.popitem()[1].close()
    except (Sam2RosError, ValueError, FileNotFoundError) as e:
        return _die(str(e))
    finally:
        for w in writers.values():  # the run failed or was stopped: no overlays
            w.abort()
    streams = {}
    for s in names:
        streams[s] = _track_stats(args, runs[s], multi.tracker(s), {"video": str(videos[s]), "stream": s})
        write_text_atomic(out / s / "stats.json", json.dumps(streams[s], indent=2))
    total = sum(st["frames"] for st in streams.values())
    steps = max(len(r.frame_seconds) for r in runs.values())
    seconds = max(sum(r.frame_seconds) for r in runs.values())
    summary = {"streams": streams, "frames": total, "steps": steps, "fps": round(total / max(seconds, 1e-9), 3),
               "frames_per_encoder_call": multi.frames_per_call or len(names)}
    write_text_atomic(out / "stats.json", json.dumps(summary, indent=2))
    print(json.dumps(summary))
    multi.close()
    return 0


#: Exit status of ``track`` stopped by SIGTERM (128 + 15, as a shell reports a process it killed).
SIGTERM_EXIT = 143


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM raises SystemExit(143) in the main thread, so that outputs being written are dropped
    (their context managers abort) instead of left half-written; the old handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(SIGTERM_EXIT)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _track_bag(args, prompts, out: Path):
    """``track --bag``: the bag's image topic -> masks.npz and an output bag of results."""
    try:
        from sam2_ros.io.bag import BagImageTopic, track_bag
    except ModuleNotFoundError as e:
        if e.name != "rosbags":
            raise
        raise ValueError("--bag needs the rosbags package: pip install 'rosbags==0.11.9' (or sam2_ros[bag])") from None

    from sam2_ros.io.bag import BagSideTopics

    side_topics = {"depth": args.depth_topic, "camera_info": args.camera_info_topic, "detections": args.detections_topic}
    if bool(args.depth_topic) != bool(args.camera_info_topic):
        raise ValueError("--depth-topic and --camera-info-topic go together: 3D positions need both")
    with (
        BagImageTopic(args.bag, args.topic) as source,  # checks the bag and topics before loading the model
        BagSideTopics(args.bag, side_topics, int(round(args.depth_tolerance * 1e9))) as side,
    ):
        tracker = _open_tracker(args)
        run, bag = track_bag(
            tracker, source, prompts, out, args.max_objects, overlay=args.overlay_topic, max_frames=args.max_frames,
            side=side if side.topics else None,
        )
    inputs = {"bag": str(args.bag), "topic": args.topic, "output_bag": str(bag.path), "output_topics": bag.topics}
    if side.topics:
        inputs["side_topics"] = side.topics
        inputs["side_counts"] = dict(sorted(side.counts.items()))
    return run, inputs, tracker


def compare_runs(ours, ref) -> dict:
    """Per-frame/object agreement of our run with the official one (where the official tracks the object)."""
    from sam2_ros.postprocess import mask_iou

    ious, diffs, sign_ok = [], [], []
    for k, oid in enumerate(ref.object_ids):
        kk = ours.object_ids.index(oid)
        for f in range(len(ours.frame_seconds)):
            if np.isnan(ref.scores[f, k]):
                continue
            ious.append(mask_iou(ours.masks[f, kk], ref.masks[f, k]))
            if ours.low_res is not None:
                diffs.append(float(np.abs(ours.low_res[f, kk] - ref.low_res[f, k]).max()))
            sign_ok.append(bool((ours.scores[f, kk] > 0) == (ref.scores[f, k] > 0)))
    return {
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "min_iou": float(np.min(ious)) if ious else float("nan"),
        "max_logit_diff": float(np.max(diffs)) if diffs else float("nan"),
        "score_sign_agreement": float(np.mean(sign_ok)) if sign_ok else float("nan"),
        "pairs": len(ious),
    }


def cmd_compare(args) -> int:
    from sam2_ros.errors import Sam2RosError
    from sam2_ros.manifest import load_manifest
    from sam2_ros.io.prompts_file import load_prompts, require_frames
    from sam2_ros.io.runner import run_tracker
    from sam2_ros.io.video import read_frames
    from sam2_ros.backends.torch_backend.official import build_video_predictor
    from sam2_ros_export.model_env import model_python
    from sam2_ros_export.reference import reference_in_subprocess, run_official

    try:
        prompts = load_prompts(args.prompts)
        require_frames(prompts, f"video {args.video}")
        frames = read_frames(args.video, args.max_frames)
        spec = load_manifest(args.engines).spec
        # the official predictor configured like ours (its defaults: every prompted frame kept,
        # corrections not conditioning): max_cond_frames_in_attn = cond_slots is exact for K >= 2
        exact_k = args.cond_slots >= 2 and not args.keep_first_cond_frame
        official = {"corrections_as_conditioning": args.corrections_as_conditioning,
                    "max_cond_frames": args.cond_slots if exact_k else None}
        python = model_python(spec.model)
        if python is None:
            predictor = build_video_predictor(spec.model, args.checkpoint, image_size=spec.image_size, device="cpu",
                                              **official)
            ref = run_official(predictor, frames, prompts)
        else:  # EdgeTAM: Meta's predictor in its own environment, one object per inference state
            ref = reference_in_subprocess(python, spec.model, args.checkpoint, spec.image_size, frames, prompts,
                                          official=official, per_object=True)
        # hole filling as the official predictor really does it here (SAM 2: none on CPU), unless asked otherwise
        fill = ref.fill_hole_area if args.fill_hole_area is None else args.fill_hole_area
        tracker = _open_tracker(args, num_frames=len(frames), fill_hole_area=fill)
        # late prompts (received_at) are compared on every frame from their own frame on, the frames
        # they were caught up over included: the track as finally known
        ours = run_tracker(tracker, frames, prompts, keep_low_res=True, revised=True)
    except (Sam2RosError, ValueError, FileNotFoundError, RuntimeError) as e:
        return _die(str(e))
    summary = {
        "frames": len(frames), "objects": len(ours.object_ids), "backend": args.backend,
        "model": spec.model, "image_size": spec.image_size, **compare_runs(ours, ref),
        "fps_ours": round(ours.fps, 3), "fps_reference": round(len(frames) / ref.seconds, 3),
    }
    print(json.dumps(summary))
    return 0


def cmd_bench(args) -> int:
    from sam2_ros_export.bench_cpu import run_cpu_benchmark

    if args.baseline is None and args.model == "edgetam":
        args.baseline = "sam2.1_hiera_tiny"  # what EdgeTAM is for: the same tracking, cheaper than SAM 2.1's smallest
    run_cpu_benchmark(args)
    return 0


def cmd_demo(args) -> int:
    """download (or random weights) -> export -> track the sample clip -> overlay + masks."""
    from sam2_ros.io.download import download_checkpoint
    repo = Path(__file__).resolve().parent.parent
    out = Path(args.out)
    work = out / "work"
    if args.random_weights:
        print("WARNING: --random-weights: a randomly initialised model; masks are meaningless (smoke run).", file=sys.stderr)
        ckpt = work / f"{args.model}_random.pt"
        argv = ["checkpoint", "--model", args.model, "--random-seed", "0", "--out", str(ckpt)]
        if (rc := cmd_checkpoint(_parse(argv))) != 0:  # EdgeTAM: made in its own environment
            return rc
    else:
        try:
            ckpt = download_checkpoint(args.model, args.checkpoint_dir)
        except (ValueError, RuntimeError) as e:
            return _die(f"{e}\nWithout the official checkpoint, run the pipeline on random weights with --random-weights.")
    engines = Path(args.engines) if args.engines else out / "engines" / f"{args.model}_{args.image_size}"
    if not (engines / "manifest.json").is_file() or args.force_export:
        export = ["export", "--model", args.model, "--checkpoint", str(ckpt), "--out", str(engines),
                  "--image-size", str(args.image_size)]
        if (rc := cmd_export(_parse(export))) != 0:
            return rc
    video = Path(args.video) if args.video else repo / "samples" / "bedroom_short.mp4"
    prompts = Path(args.prompts) if args.prompts else repo / "samples" / "bedroom_prompts.json"
    # the track subcommand's own parser gives every other setting its documented default
    track = ["track", "--engines", str(engines), "--video", str(video), "--prompts", str(prompts),
             "--out", str(out / "track")]
    if args.max_frames is not None:
        track += ["--max-frames", str(args.max_frames)]
    return cmd_track(build_parser().parse_args(track))


def cmd_node(args) -> int:
    try:
        from sam2_ros.ros.node import main as node_main
    except ImportError as e:
        return _die(
            f"the ROS 2 node needs rclpy and the sam2_ros_interfaces messages ({e}). Install them with "
            "`bash scripts/install_ros.sh` (ROS 2 Jazzy wheels from PyPI), or build the workspace with colcon "
            "and source it (docs/ROS.md)"
        )
    return node_main(args.ros_args) or 0


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from sam2_ros.backends import BACKENDS
    from sam2_ros.models import DEFAULT_MODEL, MODELS

    models = list(MODELS)
    p = argparse.ArgumentParser(prog="sam2-ros", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("download", help="fetch an official checkpoint from Meta")
    s.add_argument("--model", choices=models, default=DEFAULT_MODEL)
    s.add_argument("--out", default=str(CHECKPOINT_DIR), help="directory for the checkpoint")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("checkpoint", help="write a RANDOM-weights checkpoint (tests only)")
    s.add_argument("--model", choices=models, default=DEFAULT_MODEL)
    s.add_argument("--random-seed", type=int, required=True)
    s.add_argument("--score-shift", type=float, default=0.0,
                   help="add to the object-score head's bias (negative: objects absent more often; tests)")
    s.add_argument("--mask-shift", type=float, default=0.0,
                   help="add to the mask hypernetworks' output biases (negative: smaller masks; tests)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_checkpoint)

    s = sub.add_parser("export", help="checkpoint -> ONNX graphs + manifest.json")
    s.add_argument("--model", choices=models, required=True)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--image-size", type=int, default=1024)
    s.add_argument("--out", required=True)
    s.add_argument("--tolerance", type=float, default=1e-3, help="max |ONNX - PyTorch| per graph")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser(
        "build", help="ONNX graphs -> TensorRT engines (GPU + TensorRT): --onnx DIR --out DIR [--fp16] [--max-objects N] ...",
        add_help=False,
    )
    s.add_argument("build_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_build)

    def tracking_args(s, bag: bool = False):
        s.add_argument("--engines", required=True, help="export directory (manifest.json)")
        s.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
        s.add_argument("--providers", default=None, help="onnxruntime providers, e.g. cuda,cpu")
        s.add_argument("--device", default="auto", help="torch backend: cpu, cuda, cuda:N or auto (cuda when available)")
        s.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                       help="torch backend: fp32, or autocast to bf16 (GPU or a bf16-capable CPU) / fp16 (GPU); "
                            "openvino backend: fp32 or bf16 (a CPU with bf16 units)")
        s.add_argument("--threads", type=int, default=0,
                       help="onnxruntime / openvino: inference threads per graph (default: the runtime's, one per core)")
        s.add_argument("--imaging", choices=("auto", "device", "host"), default="auto",
                       help="torch backend: frame resize and masks on the device, or the exact CPU path on the host "
                            "(auto: device on CUDA, host on the CPU)")
        s.add_argument("--cuda-graph", choices=("auto", "on", "off"), default="auto",
                       help="torch backend: replay the tracking step from CUDA graphs (auto: on a CUDA device)")
        s.add_argument("--compile", action="store_true", help="torch backend: torch.compile the graphs (slow start-up)")
        s.add_argument("--warm-up", action="store_true",
                       help="run every graph once at the steady-state shapes before the first frame (GPU backends: "
                            "kernel selection, compilation, CUDA-graph capture)")
        if bag:
            src = s.add_mutually_exclusive_group(required=True)
            src.add_argument("--video", action="append",
                             help="a video file; several --video: one stream each, tracked together by one model "
                                  "(outputs in OUT/<video stem>/)")
            src.add_argument("--bag", help="a rosbag2 bag (folder, or its .mcap / .db3 file); needs --topic")
            s.add_argument("--topic", default=None,
                           help="with --bag: the image topic (sensor_msgs/msg/Image or CompressedImage)")
            s.add_argument("--overlay-topic", action="store_true",
                           help="with --bag: also write <ns>/sam2/overlay (rgb8) to the output bag")
            s.add_argument("--depth-topic", default=None,
                           help="with --bag and --camera-info-topic: a depth topic registered to the images (16UC1 mm "
                                "or 32FC1 m): writes <ns>/sam2/detections_3d and markers, as the node")
            s.add_argument("--camera-info-topic", default=None, help="with --bag: the colour camera's CameraInfo topic")
            s.add_argument("--depth-tolerance", type=float, default=0.005,
                           help="with --depth-topic: largest stamp difference (s) between an image and its depth")
            s.add_argument("--detections-topic", default=None,
                           help="with --bag: a vision_msgs/Detection2DArray topic: its boxes prompt the tracker on the "
                                "frame each message's stamp names (the node's association, default policy)")
        else:
            s.add_argument("--video", required=True)
        if bag:
            s.add_argument("--prompts", required=True, action="append",
                           help="prompts file (JSON); with several --video, one per video in the same order")
        else:
            s.add_argument("--prompts", required=True)
        s.add_argument("--max-frames", type=int, default=None)
        s.add_argument("--max-objects", type=int, default=8)
        s.add_argument("--cond-slots", type=int, default=2,
                       help="prompted frames kept per object: the latest (official max_cond_frames_in_attn)")
        s.add_argument("--keep-first-cond-frame", action="store_true",
                       help="keep the first prompted frame plus the latest cond_slots - 1")
        s.add_argument("--corrections-as-conditioning", action=argparse.BooleanOptionalAction, default=True,
                       help="a prompt on a tracked object makes the frame a conditioning frame (default; official "
                            "add_all_frames_to_correct_as_cond=True); --no-...: the official default, the "
                            "correction is only a recent memory")
        s.add_argument("--history-frames", type=int, default=30,
                       help="frames a prompt may lag behind (prompts file 'received_at'); each costs one frame of "
                            "image features (16 MiB at 1024 px) plus ~1.3 MiB per object")

    s = sub.add_parser(
        "track", help="track a video file (-> masks.npz, overlay.mp4, stats.json) or a rosbag2 image topic "
                      "(-> masks.npz, bag/ with the node's result topics, stats.json) with prompts",
    )
    tracking_args(s, bag=True)
    s.add_argument("--checkpoint", default=None, help="weights for --backend torch")
    s.add_argument("--fill-hole-area", type=int, default=8, metavar="PIXELS",
                   help="fill mask holes up to this many low-res pixels: 8 = official predictor on GPU (default), "
                        "0 = official predictor on CPU")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_track)

    s = sub.add_parser("compare", help="ours vs the official SAM2VideoPredictor; last line is JSON")
    tracking_args(s)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--fill-hole-area", type=int, default=None, metavar="PIXELS",
                   help="default: what the official run does here (SAM 2: 8 with its CUDA extension, else 0; "
                        "EdgeTAM: 8, its package fills holes on the CPU too)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("bench", help="per-frame time, ours vs the official predictor, same run, interleaved (CPU)")
    s.add_argument("--model", choices=models, default=DEFAULT_MODEL)
    s.add_argument("--image-size", type=int, default=512)
    s.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    s.add_argument("--ours", nargs="+", choices=BENCH_OURS, default=list(BENCH_DEFAULT_OURS), metavar="BACKEND:PRECISION",
                   help=f"our configurations to measure, of {', '.join(BENCH_OURS)} (default: %(default)s)")
    s.add_argument("--frames", type=int, default=8)
    s.add_argument("--warmup", type=int, default=2, help="first frames run but not timed (frame 0 holds the prompts)")
    s.add_argument("--threads", type=int, default=0, help="threads of both runtimes (default: one per core)")
    s.add_argument("--gap", type=float, default=0.2,
                   help="idle seconds before each step, as between camera frames (default: %(default)s)")
    s.add_argument("--video", default=None, help="default: samples/bedroom_short.mp4")
    s.add_argument("--baseline", choices=models, default=None,
                   help="also time our tracker on this model, same size, backends and prompts, in the same run "
                        "(default: sam2.1_hiera_tiny for edgetam, none otherwise)")
    s.add_argument("--no-baseline", dest="baseline", action="store_const", const="", help="no baseline model")
    s.add_argument("--out", default="benchmarks")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="the main job: checkpoint -> export -> track the sample clip")
    s.add_argument("--model", choices=models, default=DEFAULT_MODEL)
    s.add_argument("--random-weights", action="store_true", help="no download: random weights (smoke run)")
    s.add_argument("--checkpoint-dir", default=str(CHECKPOINT_DIR))
    s.add_argument("--image-size", type=int, default=512)
    s.add_argument("--engines", default=None)
    s.add_argument("--force-export", action="store_true")
    s.add_argument("--video", default=None)
    s.add_argument("--prompts", default=None)
    s.add_argument("--max-frames", type=int, default=None)
    s.add_argument("--out", default="out/demo")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("node", help="run the ROS 2 tracker node (same as `ros2 run sam2_ros sam2_tracker`)")
    s.add_argument("ros_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_node)
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parsed ``argv``, remembering it (a command may re-run itself in the model's environment)."""
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build"]:  # all options belong to the TensorRT builder
        return cmd_build(argparse.Namespace(build_args=argv[1:]))
    if argv[:1] == ["node"]:  # all arguments belong to ROS (--ros-args ...)
        return cmd_node(argparse.Namespace(ros_args=argv[1:]))
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    rc = args.func(args)
    log.info("%s took %.1f s", args.command, time.perf_counter() - t0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
