#!/usr/bin/env bash
# Installs what the sam2_ros ROS 2 node needs into a Python environment, from PyPI:
#   1. the ROS 2 Jazzy wheels pinned in requirements-ros.txt (rclpy, messages, cv_bridge,
#      and the generators that build our interfaces);
#   2. the interface package sam2_ros_interfaces, built with CMake through pip.
# Idempotent: a second run changes nothing and takes a few seconds.
# Nothing needs sourcing afterwards: `python -c "import rclpy, sam2_ros_interfaces"` works.
#
# Which Python: $PYTHON if set, else the active virtualenv, else ./.venv, else python3.
# On a machine with a ROS 2 install, use colcon instead (docs/ROS.md).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
  py="$VIRTUAL_ENV/bin/python"
elif [[ -x "$repo/.venv/bin/python" ]]; then
  py="$repo/.venv/bin/python"
else
  py="python3"
fi
echo "install_ros: using $py"

"$py" -m pip install --disable-pip-version-check -q -r "$repo/requirements-ros.txt"

# A C/C++ compiler and CMake >= 3.16 build the interfaces.
if ! command -v cmake >/dev/null 2>&1 ||
   ! cmake -P /dev/stdin <<<'if(CMAKE_VERSION VERSION_LESS 3.16)
message(FATAL_ERROR "old")
endif()' >/dev/null 2>&1; then
  "$py" -m pip install --disable-pip-version-check -q "cmake>=3.22,<4"
fi

# Rebuild the interfaces only when their sources changed since the last install.
src="$repo/msg"
hash="$(cd "$src" && cat package.xml CMakeLists.txt pyproject.toml msg/*.msg srv/*.srv | sha256sum | cut -d' ' -f1)"
prefix="$("$py" -c 'import sys; print(sys.prefix)')"
stamp="$prefix/share/sam2_ros_interfaces/source.sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]] &&
   "$py" -c 'import sam2_ros_interfaces.msg, sam2_ros_interfaces.srv' >/dev/null 2>&1; then
  echo "install_ros: sam2_ros_interfaces is up to date"
else
  echo "install_ros: building sam2_ros_interfaces (about 30 s)"
  # The build reads the wheels' ament index under the environment's prefix.
  AMENT_PREFIX_PATH="$prefix" "$py" -m pip install --disable-pip-version-check -q \
    --no-build-isolation --no-deps --force-reinstall "$src"
  echo "$hash" > "$stamp"
fi

"$py" - <<'PY'
import rclpy, cv_bridge, diagnostic_msgs.msg, lifecycle_msgs.srv, sensor_msgs.msg
import sam2_ros_interfaces.msg, sam2_ros_interfaces.srv
print("install_ros: rclpy and sam2_ros_interfaces import fine")
PY
