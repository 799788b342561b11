"""The layers of the project and their one-way dependencies (docs/ARCHITECTURE.md).

* Static: every import in ``sam2_ros/`` and ``export/`` (module level and inside functions)
  respects the layer rules below.
* Dynamic: with PyTorch and the official ``sam2`` package made unimportable, the runtime's
  commands run as a user would run them on a robot without PyTorch.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROS_MODULES = {"rclpy", "cv_bridge", "rcl_interfaces", "lifecycle_msgs", "builtin_interfaces", "sam2_ros_interfaces"}
TORCH_MODULES = {"torch", "torchvision", "sam2"}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (absolute imports; the project uses no relative ones)."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            out.add(node.module)
    return out


def _sources() -> dict[str, set[str]]:
    files = sorted((REPO / "sam2_ros").rglob("*.py")) + sorted((REPO / "export").rglob("*.py"))
    assert len(files) > 20
    return {f.relative_to(REPO).as_posix(): _imports(f) for f in files}


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def _is_ros(top: str) -> bool:
    return top in ROS_MODULES or top.endswith("_msgs")


def test_only_the_ros_layer_imports_ros():
    bad = {
        f: sorted(t for t in _top(mods) if _is_ros(t))
        for f, mods in _sources().items()
        if not f.startswith("sam2_ros/ros/")
    }
    assert not {f: v for f, v in bad.items() if v}, "ROS imported outside sam2_ros/ros/"


#: TensorRT's optional torch device memory (``device_memory="torch"``): imported only lazily (below).
TORCH_INTEROP = "sam2_ros/backends/tensorrt/torch_interop.py"


def test_only_the_export_toolchain_and_the_torch_backend_import_torch():
    allowed = ("export/", "sam2_ros/backends/torch_backend/", TORCH_INTEROP)
    bad = {f: sorted(_top(mods) & TORCH_MODULES) for f, mods in _sources().items() if not f.startswith(allowed)}
    assert not {f: v for f, v in bad.items() if v}, "torch / sam2 imported outside the export toolchain and torch backend"


def _module_level_imports(path: Path) -> set[str]:
    """Modules ``path`` imports outside functions (what importing it imports)."""
    out = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else []:
            if isinstance(sub, ast.Import):
                out |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                out.add(sub.module)
    return out


def test_tensorrt_imports_its_torch_interop_only_lazily():
    """The TensorRT backend takes torch only when asked for torch device memory: no module imports
    the interop module at import time (it is imported inside the backend's constructor)."""
    interop = TORCH_INTEROP[:-3].replace("/", ".")
    files = sorted((REPO / "sam2_ros").rglob("*.py"))
    eager = [f for f in files if interop in _module_level_imports(f)]
    assert not eager, f"{interop} imported at module level by {eager}"
    lazy = [f for f in files if interop in _imports(f)]
    assert [f.relative_to(REPO).as_posix() for f in lazy] == ["sam2_ros/backends/tensorrt/backend.py"]


def test_dependencies_point_into_the_core():
    sources = _sources()
    # the runtime never reaches into the export toolchain (only the CLI's toolchain subcommands do)
    bad = [f for f, mods in sources.items()
           if f.startswith("sam2_ros/") and f != "sam2_ros/cli.py" and "sam2_ros_export" in _top(mods)]
    assert not bad, f"the runtime imports the export toolchain: {bad}"
    # nothing outside the ROS layer (and the CLI's `node` subcommand) imports the ROS layer
    bad = [f for f, mods in sources.items()
           if not f.startswith("sam2_ros/ros/") and f != "sam2_ros/cli.py" and any(m.startswith("sam2_ros.ros") for m in mods)]
    assert not bad, f"imports the ROS layer: {bad}"
    # the core below the backends knows no backend implementation
    core = [f for f in sources if f.startswith("sam2_ros/") and f.count("/") == 1 and f != "sam2_ros/cli.py"]
    bad = [f for f in core if any(m.startswith("sam2_ros.backends.") and m != "sam2_ros.backends.base" for m in sources[f])]
    assert not bad, f"core modules import a backend implementation: {bad}"


def test_the_layer_checks_can_fail(tmp_path):
    """The scanner sees imports inside functions too (where the lazy ones are)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import torch.nn as nn\n    from rclpy.node import Node\n")
    assert _top(_imports(f)) == {"torch", "rclpy"}


# ------------------------------------------------------------------ without torch
BLOCKER = """
import importlib.abc, runpy, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (made unimportable by the test)")
        return None
sys.meta_path.insert(0, _NoTorch())
for m in list(sys.modules):
    assert m.split(".")[0] not in {blocked!r}, m
"""


def run_without_torch(
    code: str, tmp_path: Path, env: dict | None = None, blocked: set[str] = TORCH_MODULES
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where the ``blocked`` packages cannot be imported."""
    script = BLOCKER.format(blocked=sorted(blocked)) + code + f"""
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(blocked)!r})
assert not leaked, leaked
"""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path,
        # this checkout's sam2_ros first, not whichever one the environment has installed (a worktree)
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
             **(env or {})},
    )


def cli(*args) -> str:
    return f"""
sys.argv = ["sam2-ros", *{[str(a) for a in args]!r}]
try:
    runpy.run_module("sam2_ros.cli", run_name="__main__")
except SystemExit as e:
    print("EXIT", e.code)
    sys.stdout.flush()
"""


def test_the_blocker_blocks(tmp_path):
    proc = run_without_torch("import torch\n", tmp_path)
    assert proc.returncode != 0 and "made unimportable by the test" in proc.stderr


def test_track_with_onnxruntime_runs_without_torch(tiny_export_256, tmp_path):
    out = tmp_path / "track"
    proc = run_without_torch(cli(
        "track", "--engines", tiny_export_256, "--video", REPO / "samples" / "bedroom_short.mp4",
        "--prompts", REPO / "samples" / "bedroom_prompts.json", "--out", out, "--max-frames", 3,
    ), tmp_path)
    assert proc.returncode == 0 and "EXIT 0" in proc.stdout, proc.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["frames"] == 3 and stats["backend"] == "onnxruntime"
    assert (out / "masks.npz").is_file()


def test_track_bag_runs_without_torch_and_ros(tiny_export_256, tmp_path):
    """`track --bag` reads and writes rosbag2 with the rosbags library: no torch, no rclpy, no ROS messages."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from sam2_ros.io.video import iter_frames

    ts = get_typestore(Stores.ROS2_JAZZY)
    image, header = ts.types["sensor_msgs/msg/Image"], ts.types["std_msgs/msg/Header"]
    with Writer(tmp_path / "in", version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=ts)
        for i, rgb in enumerate(iter_frames(REPO / "samples" / "bedroom_short.mp4", 2)):
            stamp = ts.types["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=0)
            msg = image(header=header(stamp=stamp, frame_id="cam"), height=rgb.shape[0], width=rgb.shape[1],
                        encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1))
            w.write(conn, (100 + i) * 10**9, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    out = tmp_path / "track"
    no_ros = TORCH_MODULES | ROS_MODULES | {"sensor_msgs", "std_msgs", "geometry_msgs", "diagnostic_msgs"}
    proc = run_without_torch(cli(
        "track", "--engines", tiny_export_256, "--bag", tmp_path / "in", "--topic", "/cam/image",
        "--prompts", REPO / "samples" / "bedroom_prompts.json", "--out", out,
    ), tmp_path, blocked=no_ros)
    assert proc.returncode == 0 and "EXIT 0" in proc.stdout, proc.stderr[-3000:]
    assert json.loads((out / "stats.json").read_text())["frames"] == 2
    assert (out / "masks.npz").is_file() and (out / "bag" / "metadata.yaml").is_file()


def test_download_needs_only_the_network(tmp_path):
    """No torch: the download gets as far as the network (a closed local proxy refuses at once)."""
    proxy = "http://127.0.0.1:9"
    proc = run_without_torch(
        cli("download", "--model", "sam2.1_hiera_tiny", "--out", tmp_path / "ckpt", "--timeout", 5), tmp_path,
        env={"https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""},
    )
    assert proc.returncode == 0 and "EXIT 2" in proc.stdout, proc.stderr[-3000:]
    assert "cannot download the official sam2.1_hiera_tiny checkpoint" in proc.stderr
    assert "sam2.1_hiera_tiny.pt" in proc.stderr and "No module named" not in proc.stderr
    assert not (tmp_path / "ckpt" / "sam2.1_hiera_tiny.pt").exists()


def test_build_help_runs_without_torch(tmp_path):
    proc = run_without_torch(cli("build", "--help"), tmp_path)
    assert proc.returncode == 0 and "EXIT 0" in proc.stdout, proc.stderr[-3000:]
    assert "--max-objects" in proc.stdout and "--onnx" in proc.stdout


def test_the_node_imports_without_torch(tmp_path):
    proc = run_without_torch(
        "import sam2_ros.ros.node as n\nassert n.Sam2TrackerNode\nimport sam2_ros.backends.onnxruntime_backend\n", tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_node_without_rclpy_says_what_to_install(tmp_path):
    proc = run_without_torch(cli("node", "--ros-args", "-p", "engine_dir:=/nowhere"), tmp_path, blocked={"rclpy"})
    assert proc.returncode == 0 and "EXIT 2" in proc.stdout, proc.stderr[-3000:]
    assert "needs rclpy" in proc.stderr and "scripts/install_ros.sh" in proc.stderr
    assert "Traceback" not in proc.stderr
