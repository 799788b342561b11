"""`sam2-ros node --ros-args ...` reaches the ROS node with its ROS arguments (real rclpy), and the
node stops cleanly on SIGTERM / SIGINT (launch and Ctrl-C) without a traceback."""

import os
import signal
import subprocess
import sys
import threading

import pytest

pytest.importorskip("rclpy")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_node_subcommand_passes_ros_args_reports_bad_engine_dir_and_stops_cleanly(sig):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID="77", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sam2_ros.cli", "node", "--ros-args", "-p", "engine_dir:=/nonexistent", "-p", "autostart:=true"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: list[str] = []
    seen = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "autostart: configure failed" in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(30), "".join(lines)
        proc.send_signal(sig)
        assert proc.wait(20) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    out = "".join(lines)
    assert "engine_dir '/nonexistent' is not a directory" in out, out
    assert "Traceback" not in out, out
