#!/usr/bin/env bash
# Installs what the sam2_ros ROS 2 node needs into a Python environment, from PyPI:
#   1. the ROS 2 Jazzy wheels pinned in requirements-ros.txt (rclpy, messages, cv_bridge,
#      and the generators that build our interfaces);
#   2. vision_msgs, which has no wheel: our field-for-field copy in msg/vision_msgs (same type
#      hashes as vision_msgs 4.1.x), built only when no vision_msgs is importable;
#   3. the interface package sam2_ros_interfaces, built with CMake through pip.
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

prefix="$("$py" -c 'import sys; print(sys.prefix)')"

# vision_msgs: a ROS install provides it (rosdep); the wheels do not. Build our copy only when
# no vision_msgs is importable, or when the importable one is our copy (pip distribution
# sam2-ros-vision-msgs) and its sources changed. A real vision_msgs is never rebuilt or replaced.
vsrc="$repo/msg/vision_msgs"
vhash="$(cd "$vsrc" && cat package.xml CMakeLists.txt pyproject.toml msg/*.msg | sha256sum | cut -d' ' -f1)"
vstamp="$prefix/share/vision_msgs/source.sha256"
vstate="$("$py" - <<'PY'
import importlib.metadata as md, importlib.util, os
spec = importlib.util.find_spec("vision_msgs")
if spec is None or spec.origin is None:
    print("missing"); raise SystemExit
init = os.path.realpath(spec.origin)
try:
    dist = md.distribution("sam2-ros-vision-msgs")
    ours = any(os.path.realpath(dist.locate_file(f)) == init for f in dist.files or ())
except md.PackageNotFoundError:
    ours = False
try:
    import vision_msgs.msg  # noqa: F401
    ok = "importable"
except Exception:
    ok = "broken"
print("ours" if ours else "other", ok, os.path.dirname(init))
PY
)"
case "$vstate" in
  "other importable "*)
    echo "install_ros: using the installed vision_msgs (${vstate#other importable }); not building ours" ;;
  "other broken "*)
    echo "install_ros: WARNING: a vision_msgs that is not ours (${vstate#other broken }) fails to import;" \
         "not replacing it: fix that install, or remove it to get our copy" >&2 ;;
  "ours importable "*)
    if [[ -f "$vstamp" && "$(cat "$vstamp")" == "$vhash" ]]; then
      echo "install_ros: vision_msgs (our copy of 4.1.x) is up to date"
    else
      vstate="rebuild"
    fi ;;
esac
if [[ "$vstate" == "missing" || "$vstate" == "rebuild" || "$vstate" == "ours broken "* ]]; then
  echo "install_ros: building vision_msgs from msg/vision_msgs, our copy of 4.1.x (about 25 s)"
  # The same build as sam2_ros_interfaces' below (AMENT_PREFIX_PATH: the wheels' ament index).
  AMENT_PREFIX_PATH="$prefix" "$py" -m pip install --disable-pip-version-check -q \
    --no-build-isolation --no-deps --force-reinstall "$vsrc"
  echo "$vhash" > "$vstamp"
fi

# Rebuild the interfaces only when their sources changed since the last install.
src="$repo/msg"
hash="$(cd "$src" && cat package.xml CMakeLists.txt pyproject.toml msg/*.msg srv/*.srv | sha256sum | cut -d' ' -f1)"
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
import sam2_ros_interfaces.msg, sam2_ros_interfaces.srv, vision_msgs.msg, visualization_msgs.msg
print("install_ros: rclpy, vision_msgs, visualization_msgs and sam2_ros_interfaces import fine")
PY
