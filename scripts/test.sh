#!/usr/bin/env bash
# Install what the tests need (scripts/install.sh) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec python -m pytest tests -q -p no:cacheprovider --durations=15 "$@"
