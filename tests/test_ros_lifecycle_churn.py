"""Lifecycle churn: the node in its own process cycled through configure / activate / deactivate /
cleanup by its lifecycle services while a camera streams real frames and clients call every
service all along.

Checked: every transition answers and succeeds; every service call is answered within the
node's ``service_timeout`` plus a margin, with a success or a clear refusal (lost only where
ROS itself loses requests: a service destroyed at cleanup, or one discovered an instant before
its reply path after configure; counted and bounded); results are published only while the node
is active; after warm-up cycles the process has no more threads and bounded resident memory.

Signals: SIGINT and SIGTERM end the node process within a second in every state (unconfigured,
configuring, inactive, active idle, active with a frame in flight and a prompt waiting), with
status 0 and no traceback (killed by the signal while engines load: docs/ROS.md, "Lifecycle and
shutdown"). Regression: a reply to a service destroyed meanwhile no longer ends the node.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from ros_support import Client, NodeProcess, image_msg, set_stamp, stamp_ns, video_frames  # noqa: E402

from sam2_ros_interfaces.srv import AddPrompt, ListObjects, RemoveObject, Reset  # noqa: E402

#: Lifecycle cycles of the CI run (the issue's 100: SAM2_ROS_CHURN_CYCLES=100, see docs/ROS.md).
CYCLES = int(os.environ.get("SAM2_ROS_CHURN_CYCLES", "15"))
#: Cycles before the thread count and resident memory are taken as the reference.
WARM_UP_CYCLES = 5
#: The node's service_timeout in this test (seconds), and what a call may take on top of it.
SERVICE_TIMEOUT = 2.0
MARGIN = 2.0
#: Resident memory may grow this much (MiB) between the end of the warm-up and the last cycle.
RSS_GROWTH_MB = 32
S = 1_000_000_000

#: What a refusal says, per service (anything else fails the test).
REFUSALS = {
    "add_prompt": ("not running (node not active)", "no frame has been processed yet", "max_objects=",
                   "too many service calls in progress", "the node was deactivated", "the node was cleaned up"),
    "remove_object": ("not running (node not active)", "unknown object id", "too many service calls in progress",
                      "the node was deactivated", "the node was cleaned up"),
    "reset": ("not running (node not active)", "too many service calls in progress", "the node was deactivated",
              "the node was cleaned up"),
    "list_objects": (),
}
STATES = {"unconfigured", "inactive", "active", "configuring", "activating", "deactivating", "cleaningup"}


@dataclass
class Call:
    service: str
    sent: float
    latency: float | None  # None: no answer within the deadline
    success: bool = False
    message: str = ""


def node_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def timed_call(cli, request, timeout: float, node: NodeProcess | None = None):
    """(seconds, response) of one call, (None, None) when nothing came back within ``timeout``;
    ``node``: fail at once when its process ends meanwhile."""
    done = threading.Event()
    t0 = time.monotonic()
    future = cli.call_async(request)
    future.add_done_callback(lambda _: done.set())
    while not done.wait(min(0.5, max(t0 + timeout - time.monotonic(), 0.0))):
        if node is not None:
            node.assert_alive()
        if time.monotonic() >= t0 + timeout:
            cli.remove_pending_request(future)
            return None, None
    return time.monotonic() - t0, future.result()


class Caller(threading.Thread):
    """A client that calls every service in turn until stopped; records each call."""

    def __init__(self, name: str, box: list[float]):
        super().__init__(daemon=True)
        self.client = Client(name)
        node = self.client.node
        ns = self.client.ns
        self.clients = {
            "add_prompt": node.create_client(AddPrompt, f"{ns}/add_prompt"),
            "remove_object": node.create_client(RemoveObject, f"{ns}/remove_object"),
            "reset": node.create_client(Reset, f"{ns}/reset"),
            "list_objects": node.create_client(ListObjects, f"{ns}/list_objects"),
            "get_state": node.create_client(GetState, f"{ns}/get_state"),
        }
        self.box = box
        self.calls: list[Call] = []
        self.stop = threading.Event()

    def run(self):
        """add a new object, refine it, list, remove it, get the state, reset; again."""
        order = ["add_prompt", "add_prompt", "list_objects", "remove_object", "get_state", "reset"]
        k, oid = 0, 1
        while not self.stop.is_set():
            service = order[k % len(order)]
            k += 1
            cli = self.clients[service]
            if not cli.service_is_ready():  # camera services exist only while configured
                time.sleep(0.02)
                continue
            request = {
                "add_prompt": lambda: AddPrompt.Request(object_id=-1 if k % len(order) == 1 else oid, box=self.box,
                                                        label="churn"),
                "remove_object": lambda: RemoveObject.Request(object_id=oid),
                "reset": Reset.Request, "list_objects": ListObjects.Request, "get_state": GetState.Request,
            }[service]()
            sent = time.monotonic()
            latency, resp = timed_call(cli, request, SERVICE_TIMEOUT + MARGIN)
            call = Call(service, sent, latency)
            if resp is not None:
                if service == "get_state":
                    call.success, call.message = resp.current_state.label in STATES, resp.current_state.label
                else:
                    call.success, call.message = resp.success, resp.message
                if service == "add_prompt" and resp.success:
                    oid = resp.object_id
            self.calls.append(call)

    def close(self):
        self.stop.set()
        self.join(30)
        self.client.close()


class Streamer(threading.Thread):
    """Publishes real frames at ~20 Hz with increasing stamps; remembers when each was sent."""

    def __init__(self, client: Client, frames):
        super().__init__(daemon=True)
        self.client = client
        self.messages = [image_msg(f, 0) for f in frames]
        self.sent: dict[int, float] = {}  # stamp -> time.monotonic() before publishing
        self.stop = threading.Event()

    def run(self):
        k = 0
        while not self.stop.is_set():
            k += 1
            msg = self.messages[k % len(self.messages)]
            stamp = k * S // 20
            set_stamp(msg.header.stamp, stamp)
            self.sent[stamp] = time.monotonic()
            self.client.image_pub.publish(msg)
            time.sleep(0.05)


def test_lifecycle_churn_with_streaming_and_service_calls(tiny_export_128, shared_data, tmp_path):
    node = NodeProcess(tmp_path / "node.log", {
        "engine_dir": tiny_export_128, "autostart": False, "warm_up": False, "max_objects": 2,
        "history_frames": 4, "intra_op_threads": 1, "input_qos.reliability": "reliable",
        "service_timeout": SERVICE_TIMEOUT, "diagnostics_period": 0.1,
    })
    manager = Client("churn_manager")
    change = manager.node.create_client(ChangeState, "/sam2_tracker/change_state")
    get_state = manager.node.create_client(GetState, "/sam2_tracker/get_state")
    assert change.wait_for_service(timeout_sec=60), node.log()
    # the first replies of a just-discovered service may be lost: ask until one comes back
    for _ in range(30):
        if timed_call(get_state, GetState.Request(), 2.0)[1] is not None:
            break
    else:
        raise AssertionError("get_state never answered")

    transitions: list[tuple[str, float, float]] = []  # (label, sent, answered)

    def transition(label: str, tid: int):
        sent = time.monotonic()
        latency, resp = timed_call(change, ChangeState.Request(transition=Transition(id=tid)), 60.0, node)
        assert resp is not None, f"{label} did not answer in 60 s (deadlock?)\n{node.log()[-3000:]}"
        assert resp.success, f"{label} failed\n{node.log()[-3000:]}"
        transitions.append((label, sent, sent + latency))

    frames = video_frames(shared_data, 8)
    streamer = Streamer(manager, frames)
    callers = [Caller(f"churn_caller_{i}", box) for i, box in enumerate(([100.0, 60.0, 300.0, 200.0],
                                                                         [20.0, 20.0, 140.0, 120.0]))]
    reference = None
    t_start = time.monotonic()
    try:
        streamer.start()
        for c in callers:
            c.start()
        for cycle in range(CYCLES):
            transition("configure", Transition.TRANSITION_CONFIGURE)
            transition("activate", Transition.TRANSITION_ACTIVATE)
            time.sleep(0.5)  # frames and calls on an active node
            transition("deactivate", Transition.TRANSITION_DEACTIVATE)
            transition("cleanup", Transition.TRANSITION_CLEANUP)
            node.assert_alive()
            if cycle + 1 == WARM_UP_CYCLES:
                reference = (node_threads(node.pid), node.rss_mb())
        end = (node_threads(node.pid), node.rss_mb())
        elapsed = time.monotonic() - t_start
    finally:
        streamer.stop.set()
        for c in callers:
            c.close()
        streamer.join(10)
    try:
        node.assert_alive()
        log = node.log()
        calls = [call for c in callers for call in c.calls]
        durations = collections.defaultdict(list)
        for label, sent, done in transitions:
            durations[label].append(done - sent)
        print(f"\n{CYCLES} cycles in {elapsed:.1f} s ({elapsed / CYCLES:.2f} s per cycle); transition means (s): "
              + ", ".join(f"{k} {sum(v) / len(v):.3f} (max {max(v):.3f})" for k, v in durations.items()))
        print(f"threads after {WARM_UP_CYCLES} cycles {reference[0]}, at the end {end[0]}; "
              f"VmRSS {reference[1]:.1f} MiB -> {end[1]:.1f} MiB ({end[1] - reference[1]:+.1f} MiB)")

        # every call answered within service_timeout + margin, except where ROS loses requests
        def near_transition(call: Call) -> bool:
            end_ = call.sent + SERVICE_TIMEOUT + MARGIN
            return any(s - 0.5 <= end_ and call.sent <= d + (1.0 if label == "configure" else 0.0)
                       for label, s, d in transitions if label in ("cleanup", "configure"))

        lost = [c for c in calls if c.latency is None]
        unexcused = [c for c in lost if c.service == "get_state" or not near_transition(c)]
        counts = collections.Counter((c.service, c.success) for c in calls if c.latency is not None)
        print(f"{len(calls)} service calls: " + ", ".join(f"{s} {'ok' if ok else 'refused'} {n}"
                                                           for (s, ok), n in sorted(counts.items())))
        refusals = collections.Counter(c.message.split(":")[0][:50] for c in calls if c.latency and not c.success)
        print("refusals:", dict(refusals.most_common(8)))
        after_configure = sum(any(label == "configure" and s <= c.sent <= d + 1.0 for label, s, d in transitions)
                              for c in lost)
        print(f"lost (no answer): {len(lost)}, {after_configure} of them sent within 1 s of a configure's answer, "
              f"the others around a cleanup; slowest answer "
              f"{max(c.latency for c in calls if c.latency is not None):.3f} s")
        assert not unexcused, unexcused[:10]
        # every answer a success or a clear refusal
        for c in calls:
            if c.latency is not None and not c.success and c.service != "get_state":
                assert any(r in c.message for r in REFUSALS[c.service]), c
        assert all(c.success for c in calls if c.service in ("get_state", "list_objects") and c.latency is not None)
        for service in ("add_prompt", "reset", "list_objects", "get_state"):  # remove_object: when lucky
            assert counts[(service, True)] > 0, f"no successful {service} call: {counts}"
        assert "Traceback" not in log and "internal error" not in log, log[-3000:]

        # results only from frames sent while active, and received before the deactivation answered
        active = [(s, d) for (label, s, _), (label2, _, d) in zip(transitions[1::4], transitions[2::4])]
        results = list(manager.objects)
        assert len(results) >= CYCLES, f"only {len(results)} results in {CYCLES} cycles"
        for msg in results:
            stamp = stamp_ns(msg.header.stamp)
            arrived = manager.arrived[stamp]
            sent = streamer.sent[stamp]
            assert any(s <= sent and arrived <= d + 0.5 for s, d in active), (stamp, sent, arrived)

        # no leaked threads, bounded memory
        assert end[0] <= reference[0], f"threads grew from {reference[0]} to {end[0]}"
        assert end[1] - reference[1] < RSS_GROWTH_MB, f"VmRSS grew from {reference[1]:.0f} to {end[1]:.0f} MiB"
    finally:
        manager.close()
        node.stop()


def test_a_reply_to_a_service_destroyed_meanwhile_does_not_end_the_node():
    """Regression: cleanup destroying a service while a call to it was being answered ended the
    node process (rclpy raised InvalidHandle out of ``spin_once``, main() re-raised it)."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from sam2_ros.ros.shutdown import spin_until_shutdown

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    server = rclpy.create_node("destroyed_service_server", context=ctx)
    client = rclpy.create_node("destroyed_service_client", context=ctx)
    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    stop = threading.Event()
    try:
        def answer_after_destroying(request, response):  # what a cleanup does during a call
            server.destroy_service(doomed)
            response.success = True
            return response

        doomed = server.create_service(Reset, "doomed", answer_after_destroying)
        kept = server.create_service(ListObjects, "kept", lambda req, resp: setattr(resp, "success", True) or resp)
        for n in (server, client):
            executor.add_node(n)
        spinner = threading.Thread(target=spin_until_shutdown, args=(executor, server, stop), daemon=True)
        spinner.start()
        doomed_cli, kept_cli = client.create_client(Reset, "doomed"), client.create_client(ListObjects, "kept")
        assert doomed_cli.wait_for_service(timeout_sec=10) and kept_cli.wait_for_service(timeout_sec=10)
        doomed_cli.call_async(Reset.Request())  # its reply cannot go out: the service is gone
        deadline = time.monotonic() + 10
        while doomed in server.services and time.monotonic() < deadline:
            time.sleep(0.05)
        assert doomed not in server.services
        time.sleep(3 * 0.1)  # a few more rounds of the loop, which sees the failed callback
        assert spinner.is_alive()
        answers = [timed_call(kept_cli, ListObjects.Request(), 5.0)[1] for _ in range(3)]
        assert any(a is not None and a.success for a in answers), "the node stopped answering"
    finally:
        stop.set()
        executor.shutdown()
        for n in (server, client):
            n.destroy_node()
        rclpy.shutdown(context=ctx)


# ----------------------------------------------------------------------------------- signals
#: Longest time from SIGINT / SIGTERM to the end of the node process, in any state (seconds).
SHUTDOWN_S = 1.0
#: The node's states when the signal comes (reached through its lifecycle services).
SIGNAL_STATES = ("unconfigured", "configuring", "inactive", "active_idle", "active_busy")


def change_state(manager: Client, node: NodeProcess, tid: int) -> None:
    cli = manager.node.create_client(ChangeState, "/sam2_tracker/change_state")
    assert cli.wait_for_service(timeout_sec=60), node.log()
    _, resp = timed_call(cli, ChangeState.Request(transition=Transition(id=tid)), 60.0, node)
    assert resp is not None and resp.success, node.log()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("state", SIGNAL_STATES)
def test_signal_ends_the_node_within_a_second_in_any_state(state, sig, tiny_export_128, shared_data, tmp_path):
    """SIGINT and SIGTERM end the process with status 0 (killed by the signal while engines load),
    no traceback, within SHUTDOWN_S; busy:
    while frames stream in (one in flight), a prompt waits for a frame not received yet and
    other calls come in."""
    node = NodeProcess(tmp_path / "node.log", {
        "engine_dir": tiny_export_128, "autostart": False, "warm_up": False, "intra_op_threads": 1,
        "input_qos.reliability": "reliable", "service_timeout": 30.0,
    })
    manager = Client("signal_manager")
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        get_state = manager.node.create_client(GetState, "/sam2_tracker/get_state")
        assert get_state.wait_for_service(timeout_sec=60), node.log()
        assert any(timed_call(get_state, GetState.Request(), 2.0)[1] is not None for _ in range(30))
        if state == "configuring":
            change = manager.node.create_client(ChangeState, "/sam2_tracker/change_state")
            assert change.wait_for_service(timeout_sec=60)
            change.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
            time.sleep(0.3)  # configure takes over a second here: loading five ONNX Runtime sessions
        elif state != "unconfigured":
            change_state(manager, node, Transition.TRANSITION_CONFIGURE)
        if state.startswith("active"):
            change_state(manager, node, Transition.TRANSITION_ACTIVATE)
        if state == "active_busy":
            streamer = Streamer(manager, video_frames(shared_data, 4))
            manager.wait_for_subscriber()
            streamer.start()
            threads.append(streamer)
            manager.wait_for(lambda: len(manager.objects) >= 2, 60, "tracked frames")
            reply = manager.call(AddPrompt, "add_prompt", AddPrompt.Request(object_id=-1, box=[100.0, 60.0, 300.0,
                                                                                               200.0]))
            assert reply.success, reply.message
            waiting = manager.node.create_client(AddPrompt, "/sam2_tracker/add_prompt")
            future = waiting.call_async(AddPrompt.Request(  # held for a frame an hour ahead
                object_id=1, box=[100.0, 60.0, 300.0, 200.0], stamp=set_stamp(Time(), 3600 * S)))
            time.sleep(0.3)
            assert not future.done()
        node.assert_alive()
        t0 = time.monotonic()
        node.proc.send_signal(sig)
        try:
            code = node.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{sig.name} in state {state}: still running after 20 s\n{node.log()[-3000:]}")
        took = time.monotonic() - t0
        print(f"\n{sig.name} {state}: exit {code} after {took:.3f} s")
        if state == "active_busy":  # the prompt that waited was answered before the node went
            assert future.done() and not future.result().success, node.log()[-3000:]
            assert "the node is shutting down" in future.result().message
        log = node.log()
        # while engines load the signal takes its default action (the ONNX Runtime session being
        # created holds the GIL): the process ends at once, killed by it
        assert code == 0 or (state == "configuring" and code == -sig), log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert took < SHUTDOWN_S, f"{sig.name} in state {state}: the process took {took:.2f} s to end"
    finally:
        for t in threads:
            t.stop.set()
            t.join(10)
        manager.close()
        node.stop()
