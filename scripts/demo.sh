#!/usr/bin/env bash
# The main job end to end: install, official checkpoint (download) -> ONNX export -> track the
# sample clip -> out/demo/track/{overlay.mp4,masks.npz,stats.json}.
# Offline smoke run on random weights: bash scripts/demo.sh --random-weights
set -euo pipefail
cd "$(dirname "$0")/.."
SAM2_ROS_NO_ROS=1 bash scripts/install.sh
. .venv/bin/activate
exec sam2-ros demo "$@"
