"""How far the torch backend's device imaging (``TorchImaging``) is from the exact host path.

* **resize**: ``TorchImaging.resize`` (PIL's fixed-point taps in integer arithmetic) and, for
  comparison, ``F.interpolate(bicubic, antialias=True)`` per axis with uint8 rounding between the
  passes, against PIL's ``resize((S, S), BICUBIC)`` on frames of every video in
  ``../shared/data/videos``: fraction of differing uint8 values, largest difference in levels;
  and ``frame_tensor`` against ``preprocess_frame`` (differing float32 values);
* **masks**: ``TorchRendering.masks`` (``F.interpolate`` bilinear) against ``HostRendering``
  (OpenCV) on the logits of a tracker run (torch backend, random weights, bedroom.mp4, no hole
  filling), upsampled to several camera sizes; and ``fill_holes`` against OpenCV (mismatching rows).

    PYTHONPATH=.:export python benchmarks/device_imaging.py --device cpu --frames 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sam2_ros.backends.torch_backend.imaging import TorchImaging
from sam2_ros.imaging import HostRendering
from sam2_ros.io.video import read_frames
from sam2_ros.postprocess import fill_holes
from sam2_ros.preprocess import preprocess_frame

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO.parent / "shared" / "data" / "videos"


def interpolate_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """The alternative: torch's antialiased bicubic per axis, rounded to uint8 after each pass."""
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    for hw in ((frame.shape[0], size), (size, size)):
        x = F.interpolate(x, hw, mode="bicubic", antialias=True, align_corners=False).round().clamp(0, 255)
    return x[0].permute(1, 2, 0).to(torch.uint8).numpy()


def resize_rows(imaging: TorchImaging, frames: list[np.ndarray], sizes: list[int]) -> list[str]:
    rows = []
    for size in sizes:
        stats = {"ours": [0, 0], "interpolate": [0, 0]}
        total = float_diff = 0
        for f in frames:
            ref = np.asarray(Image.fromarray(f, "RGB").resize((size, size), Image.Resampling.BICUBIC)).astype(np.int16)
            ours = imaging.resize(torch.from_numpy(f).to(imaging.device), size).cpu().numpy()
            for name, out in (("ours", ours), ("interpolate", interpolate_resize(f, size))):
                d = np.abs(out.astype(np.int16) - ref)
                stats[name][0] += int(np.count_nonzero(d))
                stats[name][1] = max(stats[name][1], int(d.max()))
            total += ref.size
            float_diff += int(np.count_nonzero(imaging.frame_tensor(f, size).cpu().numpy() != preprocess_frame(f, size)))
        (a, am), (b, bm) = stats["ours"], stats["interpolate"]
        rows.append(f"| {size} | {len(frames)} | {a / total:.2e} | {am} | {float_diff} | {b / total:.2e} | {bm} |")
    return rows


def tracker_logits(device: str, work: Path, frames: list[np.ndarray]) -> np.ndarray:
    from sam2_ros.backends import load_backend
    from sam2_ros.tracker import Tracker
    from sam2_ros_export.onnx_export import cached_random_export

    ckpt, engines = cached_random_export("sam2.1_hiera_tiny", 256, work)
    tracker = Tracker(load_backend(engines, "torch", checkpoint=str(ckpt), device=device), max_objects=3,
                      fill_hole_area=0)
    tracker.step(frames[0])
    tracker.add_prompt(1, points=[[300, 200]], labels=[1])
    tracker.add_prompt(2, box=[600, 250, 800, 450])
    tracker.add_prompt(3, points=[[100, 400], [150, 420]], labels=[1, 0])
    return np.stack([tracker.step(f).low_res_logits.copy() for f in frames[1:]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=3, help="frames per video (spread over its first 60)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--work", default="/tmp/sam2_ros_bench", help="where the random-weights export is kept")
    args = ap.parse_args()
    imaging = TorchImaging(args.device)

    frames = []
    for video in sorted(VIDEOS.glob("*.mp4")):
        clip = read_frames(video, 60)
        frames += [clip[i] for i in np.linspace(0, len(clip) - 1, args.frames).astype(int)]
    print(f"## Resize vs PIL ({args.device}; {len({f.shape for f in frames})} frame sizes)\n")
    print("| S | frames | ours: uint8 differing | ours: max levels | ours: float32 differing vs preprocess_frame "
          "| interpolate: differing | interpolate: max levels |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(resize_rows(imaging, frames, args.sizes)))

    logits = tracker_logits(args.device, Path(args.work), read_frames(VIDEOS / "bedroom.mp4", 12))
    print(f"\n## Masks vs OpenCV on tracker logits {logits.shape} (frames, objects, h, w)\n")
    print("| camera size | differing mask pixels |")
    print("|---|---|")
    for hw in ((540, 960), (720, 1280), (1080, 1920)):
        diff = total = 0
        for lr in logits:
            ours = imaging.render(torch.from_numpy(lr).to(imaging.device), hw, 0.0).masks()
            diff += int(np.count_nonzero(ours != HostRendering(lr, hw, 0.0).masks()))
            total += ours.size
        print(f"| {hw[1]}x{hw[0]} | {diff}/{total} = {diff / total:.2e} |")
    bad = 0
    for lr in logits:
        for area in (1, 8, 20):
            t = torch.from_numpy(lr.copy()).to(imaging.device)
            imaging.fill_holes(t, area)
            bad += not np.array_equal(t.cpu().numpy(), fill_holes(lr.copy(), area))
    print(f"\nfill_holes vs OpenCV: {bad} of {3 * len(logits)} (frame, max_area) cases differ")


if __name__ == "__main__":
    main()
