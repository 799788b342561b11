"""Run the toolchain under the Python whose ``sam2`` package builds a model.

Meta's SAM 2 and Meta's EdgeTAM are both the import name ``sam2``: they cannot share an
environment. The main environment (``.venv``) has SAM 2; EdgeTAM's code lives in ``.venv-edgetam``
(``scripts/install_edgetam.sh``). ``sam2-ros checkpoint/export --model edgetam`` started from the
main environment re-runs itself under EdgeTAM's Python (:func:`model_python`), and the EdgeTAM
parity tests drive Meta's EdgeTAM predictor there in a subprocess. What the export writes (ONNX
graphs + manifest) runs in any environment: the runtime never imports ``sam2``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sam2_ros
from sam2_ros.backends.torch_backend.official import installed_package
from sam2_ros.models import official_model

#: Environment variable naming EdgeTAM's Python (default: ``.venv-edgetam/bin/python`` of the repository).
EDGETAM_PYTHON_ENV = "SAM2_ROS_EDGETAM_PYTHON"
#: Set in a re-run child: it must not re-run itself again.
_CHILD_ENV = "SAM2_ROS_MODEL_ENV_CHILD"


def repo_root() -> Path:
    return Path(sam2_ros.__file__).resolve().parent.parent


def edgetam_python() -> Path:
    """EdgeTAM's Python: ``$SAM2_ROS_EDGETAM_PYTHON``, else the repository's ``.venv-edgetam``;
    ``RuntimeError`` saying how to make it when there is none."""
    named = os.environ.get(EDGETAM_PYTHON_ENV)
    if named:
        if not Path(named).is_file():
            raise RuntimeError(f"${EDGETAM_PYTHON_ENV} = {named} does not exist")
        return Path(named)
    default = repo_root() / ".venv-edgetam" / "bin" / "python"
    if default.is_file():
        return default
    raise RuntimeError(
        f"EdgeTAM needs Meta's EdgeTAM code, which lives in an environment of its own: run "
        f"`bash scripts/install_edgetam.sh` (makes {default.parent.parent}) or set ${EDGETAM_PYTHON_ENV}"
    )


def model_python(model_name: str) -> Path | None:
    """The Python to run ``model_name``'s toolchain under, or None when this one has its package."""
    package = official_model(model_name).package
    if installed_package() == package or package != "edgetam":
        return None  # SAM 2 models: a missing package is reported where it is imported
    if os.environ.get(_CHILD_ENV):
        raise RuntimeError(f"{sys.executable} was chosen to build {model_name} but has no EdgeTAM package")
    return edgetam_python()


def child_env() -> dict[str, str]:
    """This environment with our packages (sam2_ros and the toolchain) importable, marked as a child."""
    root = repo_root()
    env = dict(os.environ)
    paths = [str(root), str(root / "export")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env[_CHILD_ENV] = "1"
    return env


def run_python(python: str | Path, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``python args...`` with :func:`child_env`."""
    return subprocess.run([str(python), *args], env=child_env(), **kwargs)
