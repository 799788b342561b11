"""Shared fixtures: real video from ../shared/data, random-weights checkpoints made with the
official package, and their ONNX exports (session-scoped: built once per test run)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from sam2_ros.postprocess import mask_iou  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SAM2_ROS_SHARED_DATA", REPO.parent / "shared" / "data"))

warnings.filterwarnings("ignore", message=".*cannot import name '_C' from 'sam2'.*")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "videos" / "bedroom.mp4").is_file():
        pytest.fail(
            f"test data missing: expected ../shared/data beside the repository ({SHARED_DATA}); "
            "set SAM2_ROS_SHARED_DATA to its location"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


def _checkpoint(artifacts: Path, model: str, seed: int = 0) -> Path:
    from sam2_ros_export.checkpoint import random_checkpoint

    path = artifacts / f"{model}_seed{seed}.pt"
    if not path.is_file():
        random_checkpoint(model, seed, path)
    return path


def _export(artifacts: Path, model: str, ckpt: Path, size: int, tag: str = "", verify: bool = True) -> Path:
    """``verify=False``: skip the per-graph ONNX Runtime vs PyTorch check of the export (for a
    test that compares the whole tracker with the official predictor anyway)."""
    from sam2_ros_export.onnx_export import export_model

    out = artifacts / f"{model}{tag}_{size}"
    if not (out / "manifest.json").is_file():
        export_model(model, ckpt, out, image_size=size, verify=verify)
    return out


def perturbed_checkpoint(src: Path, dst: Path, score_shift: float, mask_shift: float) -> Path:
    """A random checkpoint whose object-score head and mask hypernetworks are biased so that
    objects are absent on prompted frames (negative scores) and tracked masks are small.
    Random weights alone give near-trivial masks that never exercise these paths."""
    from sam2_ros_export.checkpoint import perturb_checkpoint

    return perturb_checkpoint(src, dst, score_shift, mask_shift)


@pytest.fixture(scope="session")
def tiny_checkpoint(artifacts) -> Path:
    return _checkpoint(artifacts, "sam2.1_hiera_tiny")


@pytest.fixture(scope="session")
def tiny_export_256(artifacts, tiny_checkpoint) -> Path:
    """ONNX export of a random-weights sam2.1_hiera_tiny at image size 256."""
    return _export(artifacts, "sam2.1_hiera_tiny", tiny_checkpoint, 256)


@pytest.fixture(scope="session")
def tiny_export_128(artifacts, tiny_checkpoint) -> Path:
    """The same model at image size 128: the cheapest real export, for long runs (memory growth)."""
    return _export(artifacts, "sam2.1_hiera_tiny", tiny_checkpoint, 128)


@pytest.fixture(scope="session")
def hard_checkpoint(artifacts, tiny_checkpoint) -> Path:
    return perturbed_checkpoint(tiny_checkpoint, artifacts / "tiny_hard.pt", score_shift=-0.178, mask_shift=-0.5)


@pytest.fixture(scope="session")
def hard_export_256(artifacts, hard_checkpoint) -> Path:
    return _export(artifacts, "sam2.1_hiera_tiny", hard_checkpoint, 256, tag="_hard")


@pytest.fixture(scope="session")
def bedroom_frames(shared_data):
    from sam2_ros.io.video import read_frames

    return read_frames(shared_data / "videos" / "bedroom.mp4", 12)




# ------------------------------------------------------------------ EdgeTAM
# Meta's EdgeTAM code lives in .venv-edgetam (scripts/install_edgetam.sh): checkpoints and exports
# are made through the CLI, which re-runs itself there, and the official predictor runs there in a
# subprocess. Without that environment (SAM2_ROS_NO_EDGETAM=1) the EdgeTAM tests skip.
EDGETAM_SIZE = 512


@pytest.fixture(scope="session")
def edgetam_python() -> Path:
    from sam2_ros_export.model_env import edgetam_python

    try:
        return edgetam_python()
    except RuntimeError as e:
        pytest.skip(str(e))


def run_cli(*args: str, check: bool = True):
    """``python -m sam2_ros.cli ARGS`` in a subprocess (the EdgeTAM commands re-run themselves)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sam2_ros.cli", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"sam2-ros {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def edgetam_checkpoint(artifacts, edgetam_python) -> Path:
    """Random EdgeTAM weights in the official format, object-score bias +0.3: visible masks (13-65 %)."""
    path = artifacts / "edgetam_seed0_s0.3.pt"
    if not path.is_file():
        run_cli("checkpoint", "--model", "edgetam", "--random-seed", "0", "--score-shift", "0.3", "--out", str(path))
    return path


@pytest.fixture(scope="session")
def edgetam_export(artifacts, edgetam_checkpoint) -> Path:
    return _edgetam_export(edgetam_checkpoint, artifacts / f"edgetam_{EDGETAM_SIZE}")


@pytest.fixture(scope="session")
def edgetam_hard_checkpoint(artifacts, edgetam_checkpoint) -> Path:
    """Scores near zero (objects absent on some frames, reappearing) and small masks (1-7 %)."""
    return perturbed_checkpoint(edgetam_checkpoint, artifacts / "edgetam_hard.pt", score_shift=-0.192, mask_shift=-0.05)


@pytest.fixture(scope="session")
def edgetam_hard_export(artifacts, edgetam_hard_checkpoint) -> Path:
    return _edgetam_export(edgetam_hard_checkpoint, artifacts / f"edgetam_hard_{EDGETAM_SIZE}")


def _edgetam_export(checkpoint: Path, out: Path) -> Path:
    """An EdgeTAM export at EDGETAM_SIZE through the CLI (it re-runs under .venv-edgetam), made once."""
    if not (out / "manifest.json").is_file():
        run_cli("export", "--model", "edgetam", "--checkpoint", str(checkpoint),
                "--image-size", str(EDGETAM_SIZE), "--out", str(out))
    return out
