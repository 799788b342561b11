#!/usr/bin/env bash
# The EdgeTAM oracle environment: .venv-edgetam with Meta's EdgeTAM code (PyPI edgetam-dimos,
# the official EdgeTAM `sam2/` package). It cannot live in .venv: its import name `sam2` clashes
# with the official SAM 2 package there, and timm (which it needs) imports torchvision, which
# has no build for .venv's torch 2.13.0 CPU. Used by `sam2-ros checkpoint/export --model edgetam`
# (they re-run themselves under this Python) and by the EdgeTAM parity tests (a subprocess).
# Idempotent: a second run checks the imports and returns in seconds.
# Usage: bash scripts/install_edgetam.sh   (called by scripts/install.sh; SAM2_ROS_NO_EDGETAM=1 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${SAM2_ROS_EDGETAM_VENV:-.venv-edgetam}
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
ready() {
  "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
want = {"torch": "2.14.1", "torchvision": "0.29.1", "edgetam-dimos": "1.0.1", "onnxruntime": "1.23.2"}
import timm, sam2.modeling.perceiver, onnx, onnxruntime, hydra, iopath, cv2  # noqa
sys.exit(any(md.version(k) != v for k, v in want.items()))
EOF
}
if ready; then
  echo "install_edgetam: $VENV is ready"
  exit 0
fi
# torch and torchvision first, pinned together (timm imports torchvision).
"$VENV/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1"
# edgetam-dimos does not declare timm; --no-deps keeps pip from touching torch.
"$VENV/bin/pip" install -q --no-deps "timm==1.0.29" "edgetam-dimos==1.0.1"
"$VENV/bin/pip" install -q "hydra-core==1.3.2" "iopath==0.1.10" "tqdm==4.70.1" "pillow==13.0.0" "numpy==2.2.6" \
  "opencv-python-headless==4.12.0.88" huggingface_hub safetensors "PyYAML==6.0.3" \
  "onnx==1.19.1" "onnxscript==0.5.6" "onnxruntime==1.23.2" "torch==2.14.1"
ready || { echo "install_edgetam: $VENV is incomplete" >&2; exit 1; }
echo "install_edgetam: $VENV ready ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
