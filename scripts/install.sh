#!/usr/bin/env bash
# Install everything sam2_ros needs (core, export toolchain, tests, ROS 2 wheels) into .venv.
# Idempotent. Usage: bash scripts/install.sh   (SAM2_ROS_NO_ROS=1 skips the ROS 2 wheels)
# Also makes .venv-edgetam, Meta's EdgeTAM code for the EdgeTAM export and its parity tests
# (scripts/install_edgetam.sh; SAM2_ROS_NO_EDGETAM=1 skips it, and those tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: the CPU build (never let a later step swap it for a CUDA build).
python -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu' and torch.__version__ != '2.13.0')" 2>/dev/null \
  || pip install -q "torch==2.13.0"
pip install -q -r requirements.txt
# The official SAM 2 package: source only; no build isolation (it would pull its own torch),
# no deps (torchvision has no CPU build here and is not needed), no CUDA extension.
python -c "import sam2" 2>/dev/null || SAM2_BUILD_CUDA=0 pip install -q --no-deps --no-build-isolation "sam2==1.1.0"
pip install -q --no-deps --no-build-isolation -e .
if [ "${SAM2_ROS_NO_EDGETAM:-0}" != "1" ]; then
  bash scripts/install_edgetam.sh
fi
if [ "${SAM2_ROS_NO_ROS:-0}" != "1" ] && [ -f scripts/install_ros.sh ]; then
  bash scripts/install_ros.sh
fi
python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('torch', torch.__version__)"
