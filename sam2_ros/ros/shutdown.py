"""Shutdown of the node process: SIGINT / SIGTERM, the main loop, and handing memory back.

The node ends in order while its ROS context is still valid (rclpy's own handlers would shut
the context down under a frame in flight): the signal sets an event, the main loop
(:func:`spin_until_shutdown`) returns, and :func:`shut_down` deactivates (calls waiting for the
tracker are answered, the frame in flight is published), waits for the replies, cleans up and
ends ROS. docs/ROS.md, "Lifecycle and shutdown", has the measured times.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

import rclpy
from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor
from rclpy.node import Node

if TYPE_CHECKING:
    from sam2_ros.ros.node import Sam2TrackerNode


def release_freed_memory() -> None:
    """Hand the memory of released engines and trackers back to the system now.

    Transitions run on the executor's threads, each with its own glibc malloc arena; an arena
    keeps the pages of what was freed in it, so every configure / cleanup cycle on another thread
    left the freed sessions' memory behind (the resident size grew by about 50 MiB per cycle of a
    128 px export, tests/test_ros_lifecycle_churn.py). Collects the reference cycles first (the
    scheduler and its cameras refer to each other), then ``malloc_trim`` (glibc; a no-op elsewhere).
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@contextlib.contextmanager
def default_signal_action():
    """SIGINT and SIGTERM end the process (their default action, in C: no GIL needed) inside the
    block; the previous handlers (Python's) after it. Any thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype, libc.signal.argtypes = ctypes.c_void_p, (ctypes.c_int, ctypes.c_void_p)
    previous = {sig: libc.signal(sig, signal.SIG_DFL.value) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            libc.signal(sig, handler)
            libc.siginterrupt(sig, 1)  # as Python installs its handlers: system calls are interrupted


#: Longest wait of the main loop before it checks for a shutdown request again (seconds).
SPIN_PERIOD = 0.1
#: How long a shutdown waits for a transition in progress before it ends the process without it
#: (seconds): activate, deactivate and cleanup take less; configure's warm-up (torch) may take
#: minutes. (During configure's engine load the signal ends the process itself: _default_signal_action.)
TRANSITION_GRACE = 0.2
#: How long a shutdown lets the callbacks in progress (service calls it aborted) finish and send
#: their replies (seconds).
REPLY_GRACE = 0.5


def spin_until_shutdown(executor: Executor, node: Node, stop: threading.Event | None = None) -> None:
    """Spin ``executor`` until ``stop`` is set (SIGINT / SIGTERM: :func:`install_signal_handlers`)
    or its context shuts down, in waits of at most SPIN_PERIOD.

    A callback that outlived its entity (a service call answered just after ``cleanup``
    destroyed the service, a diagnostics message published as its publisher went) fails with
    InvalidHandle in the executor: that reply or message is lost, as any request to a destroyed
    service is, and the node goes on (rclpy would raise it here and end the process).
    """
    while executor.context.ok() and not (stop is not None and stop.is_set()):
        try:
            executor.spin_once(timeout_sec=SPIN_PERIOD)
        except InvalidHandle as e:
            node.get_logger().warning(f"a reply or message was dropped: its service or publisher was destroyed by a "
                                      f"lifecycle transition meanwhile ({e})", throttle_duration_sec=5.0)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (the main loop then shuts the node down while the ROS
    context is still valid: calls waiting for the tracker are answered, the frame in flight is
    published); a second signal ends the process at once (status 128 + signal)."""

    def handler(signum, frame):
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def shut_down(node: Sam2TrackerNode, executor: Executor) -> None:
    """Stop the tracking, answer the waiting calls, release the engines, end ROS; in about a
    frame's step. A transition still running after TRANSITION_GRACE (configure warming engines
    up) is not waited for: the process ends at once (status 0), leaving nothing behind
    (configure writes no file)."""
    if not node.transition_lock.acquire(timeout=TRANSITION_GRACE):
        node.get_logger().warning("shutting down during a lifecycle transition (loading engines?): exiting "
                                  "without waiting for it")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    try:
        node.shutting_down = True
        node._deactivate("the node is shutting down")  # answers the calls waiting for the tracker
        _wait_for_callbacks(executor, REPLY_GRACE)
        node._cleanup()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
    finally:
        node.transition_lock.release()
        rclpy.try_shutdown()


def _wait_for_callbacks(executor: Executor, timeout: float) -> None:
    """Wait (at most ``timeout``) until the callbacks in progress are done, their replies sent.

    ``Executor.shutdown(timeout_sec)`` is documented to do this; rclpy 7.1 (Jazzy) returns at once
    (it tests the flag it has just set), so this waits on the executor's work tracker itself.
    """
    tracker = getattr(executor, "_work_tracker", None)
    if tracker is not None:
        tracker.wait(timeout)
