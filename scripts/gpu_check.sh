#!/usr/bin/env bash
# Everything a lent GPU must prove, in one run of at most 8 minutes (scripts/gpu_check.py says what).
#
#   bash scripts/gpu_check.sh --prepare            here, with network: fill .gpu_carry/ with what a GPU
#                                                  machine without network lacks (the official sam2 package
#                                                  and its pure-Python needs as wheels, the shared clips)
#   bash scripts/gpu_check.sh --out DIR [ARGS...]  there: install .gpu_carry/ into a temporary prefix (only
#                                                  what is not importable already) and run the checks;
#                                                  ARGS go to scripts/gpu_check.py (--device cpu: a dry run)
#
# On the device tool: carry [".gpu_carry"], command `bash scripts/gpu_check.sh --out $OUT`.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
# The official sam2 package and what it imports that a CUDA PyTorch image does not have. All pure Python.
CARRY_WHEELS=("sam2==1.1.0" "hydra-core==1.3.2" "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" "iopath==0.1.10")

if [ "${1:-}" = "--prepare" ]; then
  PY=${PYTHON:-python3}
  [ -x .venv/bin/python ] && PY=.venv/bin/python
  rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/data/videos"
  # sam2 is source-only: build its wheel without the CUDA extension (pure Python, any platform)
  SAM2_BUILD_CUDA=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$CARRY/wheels" "${CARRY_WHEELS[@]}"
  DATA=${SAM2_ROS_SHARED_DATA:-../shared/data}
  cp "$DATA"/videos/*.mp4 "$CARRY/data/videos/"
  du -sh "$CARRY"
  echo "gpu_check: $CARRY is ready; carry it to the GPU machine and run: bash scripts/gpu_check.sh --out DIR"
  exit 0
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
if [ -d "$CARRY/wheels" ]; then
  SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
  missing=()
  for w in "$CARRY"/wheels/*.whl; do
    mod=$(basename "$w" | cut -d- -f1)
    case "$mod" in
      hydra_core) mod=hydra ;; antlr4_python3_runtime) mod=antlr4 ;;
    esac
    "$PY" -c "import $mod" 2>/dev/null || missing+=("$w")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${missing[@]}"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  [ -d "$CARRY/data/videos" ] && export SAM2_ROS_SHARED_DATA="${SAM2_ROS_SHARED_DATA:-$PWD/$CARRY/data}"
fi
export PYTHONPATH="$PWD:$PWD/export${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec "$PY" scripts/gpu_check.py "$@"
