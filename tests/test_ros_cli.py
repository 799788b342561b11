"""`sam2-ros node --ros-args ...` reaches the ROS node with its ROS arguments (real rclpy)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")


def test_node_subcommand_passes_ros_args_and_reports_a_bad_engine_dir():
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID="77")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sam2_ros.cli", "node", "--ros-args", "-p", "engine_dir:=/nonexistent", "-p", "autostart:=true"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:  # the node keeps running, unconfigured, as it should
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "engine_dir '/nonexistent' is not a directory" in out, out
    assert "Traceback" not in out
