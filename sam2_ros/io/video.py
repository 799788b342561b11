"""Reading video files as RGB frames and writing overlay videos (OpenCV)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from sam2_ros.io.atomic import AtomicOutput
from sam2_ros.palette import object_color



def iter_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames of a video file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"OpenCV cannot open video {path}")
    try:
        n = 0
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            n += 1
    finally:
        cap.release()


def read_frames(path: str | Path, max_frames: int | None = None) -> list[np.ndarray]:
    return list(iter_frames(path, max_frames))


def video_fps(path: str | Path) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    return float(fps)


def overlay(frame_rgb: np.ndarray, masks: np.ndarray, object_ids: list[int], alpha: float = 0.5) -> np.ndarray:
    """Blend each object's mask in its palette colour over the frame (RGB in, RGB out)."""
    out = frame_rgb.astype(np.float32)
    for m, oid in zip(masks, object_ids):
        colour = np.asarray(object_color(oid), np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
    return out.astype(np.uint8)


class OverlayWriter(AtomicOutput):
    """Writes an MP4 of frames with their masks blended in, beside ``path`` until :meth:`close`
    moves it there: a run that fails or is killed leaves no truncated video at ``path``."""

    def __init__(self, path: str | Path, fps: float, frame_hw: tuple[int, int]):
        h, w = frame_hw
        self.path = Path(path)
        self._staging = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")  # OpenCV needs the suffix
        self.writer = cv2.VideoWriter(str(self._staging), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not self.writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write video {path}")

    def write(self, frame_rgb: np.ndarray, masks: np.ndarray, object_ids: list[int]) -> None:
        self.writer.write(cv2.cvtColor(overlay(frame_rgb, masks, object_ids), cv2.COLOR_RGB2BGR))

    def close(self) -> Path:
        """Finish the video and move it to ``path``."""
        self.writer.release()
        os.replace(self._staging, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the video being written (an older one at ``path`` is left as it was)."""
        self.writer.release()
        self._staging.unlink(missing_ok=True)
