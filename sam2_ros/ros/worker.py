"""The tracker loop behind the ROS node, without ROS: newest frame per camera, one scheduler
thread for every camera, prompts by stamp.

- :meth:`CameraWorker.submit` (called from a camera's image subscription) never blocks on
  inference: it puts the frame into the camera's one-frame slot. A frame still waiting there
  is replaced and counted as dropped, so each camera's newest frame is processed and no
  camera builds a backlog.
- One :class:`Scheduler` thread owns every camera's :class:`~sam2_ros.tracker.Tracker` (no
  other thread touches them). Each round it runs the commands queued for every camera
  (prompts, remove, reset), then takes the waiting frame of every camera that has one and
  steps them together in one call of its ``step`` function (``MultiTracker.step``: where the
  cameras are batched), then, camera by camera, applies prompts held for that frame and hands
  the result to the camera's ``publish``. Fairness: a round serves each camera with a frame
  waiting once, in an order that rotates from round to round, so a camera publishing five
  times faster than the others gets one frame per round like them and cannot starve them; a
  camera with nothing waiting is skipped and never blocks the others. A camera whose frames
  change size resets only its own tracker (when it tracks no object; otherwise its frames are
  rejected until its reset).
- :meth:`CameraWorker.call` runs a command on the camera's tracker for a given frame stamp and
  waits for its outcome, from any number of threads at once (:meth:`CameraWorker.post`: the
  same without waiting, for topic inputs; a callback gets the outcome):
  stamp 0 (latest) or the latest processed frame's stamp: run before the next frame;
  an earlier processed frame still in the tracker's history (its last ``history_frames``
  frames): run before the next frame, on that frame (:meth:`frame_index_of` gives the
  command its frame index; a prompt is applied there and caught up to the latest frame);
  a frame received but not processed yet: held, run right after that frame is processed
  (fails if the frame is dropped or cannot be decoded); a stamp newer than every frame
  received (the request overtook its image): held until that frame arrives (fails when a
  newer frame arrives first); a processed frame older than the history, or an unknown
  stamp: a clear error (naming the oldest stamp still in the history).
- Stamps (:meth:`CameraWorker.submit`): a camera's stamps must increase. A frame stamped more
  than ``restart_after_ns`` before the newest frame received is the start of a new stream (a
  rosbag that loops, a simulator clock reset): the camera is reset (objects dropped, ids from 1,
  ``stream_resets`` counted and reported) before that frame is processed; every command still
  waiting fails, and a stamp of the old stream that the new one has not sent again is refused
  (it cannot be told apart from the new stream's frame). A frame with the newest stamp again
  (a duplicate) or a step back of at most ``restart_after_ns`` is rejected (counted, with the
  reason) and leaves the waiting frame and the history alone. Unstamped frames (stamp 0) are
  outside this order.
- :class:`TrackerWorker`: one camera with a scheduler of its own (the single-tracker API).
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam2_ros.errors import FrameSizeChanged, TrackerInputError
from sam2_ros.tracker import FrameResult, Tracker

log = logging.getLogger(__name__)

LATEST = 0  # the stamp that means "the latest processed frame"


def fmt_stamp(ns: int | None) -> str:
    if ns is None:
        return "none"
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


class CommandError(Exception):
    """A command that could not run; the message is meant for the service caller."""


class FrameStatus(enum.Enum):
    PENDING = "waiting to be processed"
    IN_FLIGHT = "being processed"
    PROCESSED = "processed"
    DROPPED = "dropped because a newer frame arrived while the tracker was busy"
    FAILED = "rejected"
    STALE = "processed before the last reset"
    BEFORE_RESTART = "received before the stream restarted (its stamps jumped back)"


@dataclass
class Frame:
    stamp_ns: int
    payload: Any  # whatever ``decode`` understands (a ROS image message in the node)
    received: float  # time.perf_counter() at submit
    epoch: int = 0  # the camera's stream (counts restarts) when the frame came
    restart: str = ""  # why the camera must be reset before this frame (the first frame of a new stream)


@dataclass
class ObjectInfo:
    label: str
    first_frame_index: int
    first_stamp_ns: int
    num_prompts: int = 0


@dataclass
class _Command:
    fn: Callable[[CameraWorker, int], Any]  # fn(camera, frame_stamp_ns) -> value, runs on the scheduler thread
    stamp_ns: int  # LATEST or an explicit stamp
    needs_frame: bool = True  # fails before the first frame (prompts), or not (remove, reset)
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: str | None = None
    cancelled: bool = False
    started: bool = False
    on_done: Callable[[Any, str | None], None] | None = None  # posted commands: (value, error), nobody waits

    def finish(self, value=None, error: str | None = None) -> None:
        self.value, self.error = value, error
        self.done.set()
        if self.on_done is not None:
            try:
                self.on_done(value, error)
            except Exception:  # noqa: BLE001 - a reporting callback must not kill the worker
                log.exception("command callback failed")


@dataclass
class Stats:
    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0  # frames refused (bad image, size, stamp order), each counted once
    queue_depth: int = 0  # a frame waiting (0 or 1)
    in_flight: int = 0  # a frame taken by the tracking thread, not processed or rejected yet (0 or 1)
    stream_resets: int = 0  # restarts of the stream (stamps jumped back by more than the threshold)
    out_of_order: int = 0  # frames rejected for a stamp behind the newest (by at most the threshold)
    duplicate_stamps: int = 0  # frames rejected for repeating the newest stamp
    objects: int = 0
    last_error: str = ""
    # over the last window (see CameraWorker.window_stats)
    fps: float = 0.0
    latency_mean_ms: float = 0.0
    latency_max_ms: float = 0.0
    step_mean_ms: float = 0.0


#: The counters of :class:`Stats` (the rest is computed over a window).
COUNTERS = ("received", "processed", "dropped", "rejected", "queue_depth", "in_flight", "stream_resets", "out_of_order",
            "duplicate_stamps", "objects", "last_error")

#: A scheduler's step: {camera: RGB frame} -> {camera: its result, or the exception of its frame}
#: (``MultiTracker.step``: every camera of a round in one call).
StepFn = Callable[[dict[str, np.ndarray]], Mapping[str, "FrameResult | Exception"]]


class CameraWorker:
    """One camera on a :class:`Scheduler`: its frame slot, commands, frame stamps, objects and counters.

    Command functions (:meth:`call`, :meth:`post`) get this object: ``tracker`` is the camera's
    tracker, and the helpers below (:meth:`frame_index_of`, :meth:`note_prompt`, ...) keep its
    bookkeeping. Nothing here touches another camera's tracker or state.

    Args:
        scheduler: the thread that serves this camera (the camera registers itself).
        name: the camera's name (its stream in the MultiTracker, the key of ``step``).
        tracker: the camera's tracker.
        decode: payload -> [H, W, 3] uint8 RGB; raises ValueError with a clear message.
        publish: called on the scheduler thread with (frame, rgb, result) after each processed frame.
        report: called with (kind, message) for problems that have no caller to answer
            (bad frames: kind "frame"; publishing failures: "publish").
        history: how many recent frame stamps are remembered to answer prompts by stamp.
        restart_after_ns: a frame stamped more than this before the newest one received
            restarts the stream (see the module docstring); closer ones are rejected.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        name: str,
        tracker: Tracker,
        decode: Callable[[Any], np.ndarray],
        publish: Callable[[Frame, np.ndarray, FrameResult], None],
        report: Callable[[str, str], None] = lambda kind, msg: log.warning("%s: %s", kind, msg),
        history: int = 1024,
        restart_after_ns: int = 1_000_000_000,
    ):
        self.name = name
        self.scheduler = scheduler
        self.tracker = tracker
        self._decode = decode
        self._publish = publish
        self._report = report
        self._cond = scheduler.cond  # one lock for the scheduler and all its cameras
        self._pending: Frame | None = None
        self._commands: collections.deque[_Command] = collections.deque()
        self._held: dict[int, list[_Command]] = {}
        self._status: collections.OrderedDict[int, FrameStatus] = collections.OrderedDict()
        self._history = history
        # stamp -> frame index of the frames in the tracker's history (the last history_frames
        # processed frames), oldest first
        self._in_history: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._newest_received: int | None = None  # largest stamp submitted (in this stream)
        self.restart_after_ns = int(restart_after_ns)
        self._epoch = 0  # streams restarted so far (frames of an older one are stale)
        # state read by other threads (under _cond)
        self.current_stamp: int | None = None  # stamp of the tracker's current frame
        self.current_result: FrameResult | None = None
        self.current_frame: Frame | None = None
        self.objects: dict[int, ObjectInfo] = {}
        self._next_id = 1
        self.stats = Stats()
        self._window: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=256)
        scheduler._add(self)

    @property
    def running(self) -> bool:
        return self.scheduler.running

    # ---------------------------------------------------------------- input
    def submit(self, stamp_ns: int, payload: Any) -> None:
        """Offer a frame; replaces (drops) a frame that is still waiting. Never blocks on inference.

        A stamp behind the newest one restarts the stream or is rejected (module docstring)."""
        frame = Frame(stamp_ns, payload, time.perf_counter())
        failed: list[tuple[_Command, str]] = []
        refused = ""
        with self._cond:
            self.stats.received += 1
            newest = self._newest_received
            back = None if newest is None or stamp_ns == LATEST else newest - stamp_ns  # >= 0: not newer
            if back is not None and 0 <= back <= self.restart_after_ns:
                refused = self._refuse_order(stamp_ns, newest)
            else:
                if back is not None and back > 0:
                    frame.restart, failed = self._restart(stamp_ns, newest)
                self._accept(frame, failed)
        if refused:
            self._report("frame", f"frame {fmt_stamp(stamp_ns)} rejected: {refused}")
        for cmd, error in failed:
            cmd.finish(error=error)

    def _accept(self, frame: Frame, failed: list[tuple[_Command, str]]) -> None:
        """Put ``frame`` (newer than every frame of its stream) into the slot (under _cond); commands
        that can no longer be served go to ``failed``."""
        stamp_ns = frame.stamp_ns
        frame.epoch = self._epoch
        # commands held for stamps between the previous newest frame and this one wait for
        # frames that will not come
        for s in [s for s in self._held if s < stamp_ns and s not in self._status]:
            failed += [(cmd, f"no frame with stamp {fmt_stamp(s)} arrived: frame "
                             f"{fmt_stamp(stamp_ns)} came after it") for cmd in self._held.pop(s)]
        if stamp_ns != LATEST:  # an unstamped frame (0) is outside the order: only stamp 0 names it
            self._newest_received = stamp_ns
        if self._pending is not None:
            old = self._pending
            self.stats.dropped += 1
            self._set_status(old.stamp_ns, FrameStatus.DROPPED)
            frame.restart = frame.restart or old.restart  # the reset still comes first
            failed += [(cmd, f"frame {fmt_stamp(cmd.stamp_ns)} was {FrameStatus.DROPPED.value}; prompt again "
                             "with stamp 0 (latest) or a newer frame's stamp") for cmd in self._held.pop(old.stamp_ns, [])]
        self._pending = frame
        self.stats.queue_depth = 1
        self._set_status(stamp_ns, FrameStatus.PENDING)
        self._cond.notify_all()

    def _refuse_order(self, stamp_ns: int, newest: int) -> str:
        """Reject a frame with the newest stamp again or a little older (under _cond); the reason."""
        if stamp_ns == newest:
            self.stats.duplicate_stamps += 1
            reason = f"duplicate stamp: a frame with stamp {fmt_stamp(stamp_ns)} was already received"
        else:
            self.stats.out_of_order += 1
            reason = (f"stamp {fmt_stamp(stamp_ns)} is behind the newest frame received ({fmt_stamp(newest)}) by "
                      f"{(newest - stamp_ns) / 1e9:.3f} s, not more than the stream restart threshold of "
                      f"{self.restart_after_ns / 1e9:.3f} s: frames out of order are not processed")
        self.stats.rejected += 1
        self.stats.last_error = reason
        return reason

    def _restart(self, stamp_ns: int, newest: int) -> tuple[str, list[tuple[_Command, str]]]:
        """Stamps jumped back: a new stream (under _cond). Frames and stamps so far belong to the old
        one; the scheduler resets the tracker before the next frame. Returns why, and the commands
        to fail."""
        why = (f"the stream restarted: stamp {fmt_stamp(stamp_ns)} is {(newest - stamp_ns) / 1e9:.3f} s behind the "
               f"newest frame received ({fmt_stamp(newest)}), more than the stream restart threshold of "
               f"{self.restart_after_ns / 1e9:.3f} s")
        self._epoch += 1
        self.stats.stream_resets += 1
        failed = [(cmd, f"{why}; the camera is reset") for cmds in self._held.values() for cmd in cmds]
        self._held.clear()
        for stamp in self._status:
            self._status[stamp] = FrameStatus.BEFORE_RESTART
        self._in_history.clear()
        self.current_stamp = self.current_frame = self.current_result = None
        self._newest_received = None
        return why, failed

    def _set_status(self, stamp_ns: int, status: FrameStatus) -> None:
        self._status[stamp_ns] = status
        self._status.move_to_end(stamp_ns)
        while len(self._status) > self._history:
            self._status.popitem(last=False)

    # ------------------------------------------------------------- commands
    def call(
        self,
        fn: Callable[[CameraWorker, int | None], Any],
        stamp_ns: int = LATEST,
        timeout: float = 10.0,
        needs_frame: bool = True,
    ) -> Any:
        """Run ``fn(camera, frame_stamp)`` on the scheduler thread, on the frame ``stamp_ns`` refers to.

        Returns fn's value; raises :class:`CommandError` with a message for the caller when
        the stamp cannot be served, the call times out, or fn raises TrackerInputError /
        CommandError.
        """
        cmd = _Command(fn, stamp_ns, needs_frame)
        self._enqueue(cmd)
        if not cmd.done.wait(timeout):
            with self._cond:
                if not cmd.started:
                    cmd.cancelled = True
            if cmd.cancelled:
                raise CommandError(
                    f"timed out after {timeout:.1f} s waiting for the tracker"
                    + (f" to process frame {fmt_stamp(stamp_ns)}" if stamp_ns != LATEST else "")
                )
            cmd.done.wait()  # it is running: it finishes within one tracker call
        if cmd.error is not None:
            raise CommandError(cmd.error)
        return cmd.value

    def post(
        self,
        fn: Callable[[CameraWorker, int | None], Any],
        stamp_ns: int = LATEST,
        on_done: Callable[[Any, str | None], None] | None = None,
        needs_frame: bool = True,
        max_held: int | None = None,
    ) -> bool:
        """Like :meth:`call` without waiting (topic inputs: detections, clicks): ``on_done(value,
        error)`` runs on the scheduler thread (or here) when the command ran or failed. Returns
        whether the command was held for a frame not processed yet. Raises :class:`CommandError`
        at once for a stamp that cannot be served, or when ``max_held`` posted commands are
        already held."""
        cmd = _Command(fn, stamp_ns, needs_frame, on_done=on_done)
        return self._enqueue(cmd, max_held)

    def _enqueue(self, cmd: _Command, max_held: int | None = None) -> bool:
        stamp_ns = cmd.stamp_ns
        with self._cond:
            if not self.scheduler.accepting:
                raise CommandError("the tracker is not running (node not active)")
            held = False
            if stamp_ns == LATEST or stamp_ns == self.current_stamp or stamp_ns in self._in_history:
                self._commands.append(cmd)  # the latest frame, or a past frame still in the history
            else:
                status = self._status.get(stamp_ns)
                not_yet = status is None and (self._newest_received is None or stamp_ns > self._newest_received)
                if status in (FrameStatus.PENDING, FrameStatus.IN_FLIGHT) or not_yet:
                    # a frame not processed yet, or one newer than every frame received (the
                    # request overtook its image): hold the command for that frame
                    if max_held is not None and sum(
                            c.on_done is not None for cmds in self._held.values() for c in cmds) >= max_held:
                        raise CommandError(f"{max_held} inputs already wait for frames not processed yet")
                    self._held.setdefault(stamp_ns, []).append(cmd)
                    held = True
                else:
                    raise CommandError(self._stamp_error(stamp_ns, status))
            self._cond.notify_all()
        return held

    def _stamp_error(self, stamp_ns: int, status: FrameStatus | None) -> str:
        latest = (
            f"the latest processed frame is {fmt_stamp(self.current_stamp)}"
            if self.current_stamp is not None
            else "no frame has been processed yet"
        )
        if status is None:
            oldest = f"; {self._oldest_text()}" if self._in_history else ""
            return f"no frame with stamp {fmt_stamp(stamp_ns)} was received recently; {latest} (use stamp 0 for it){oldest}"
        if status == FrameStatus.PROCESSED:
            return (f"frame {fmt_stamp(stamp_ns)} is older than the tracker's history of its last "
                    f"{self.tracker.history_frames} frames (history_frames): {self._oldest_text()}; {latest} "
                    "(use stamp 0 for it)")
        return f"frame {fmt_stamp(stamp_ns)} was {status.value}; {latest} (use stamp 0 for it)"

    def _oldest_text(self) -> str:
        if not self._in_history:
            return "no frame is in the history"
        stamp, index = next(iter(self._in_history.items()))
        return f"the oldest frame a prompt may name has stamp {fmt_stamp(stamp)} (frame index {index})"

    def _run_command(self, cmd: _Command, frame_stamp: int | None = None, held: bool = False) -> None:
        """Run ``cmd`` on the tracker's current frame (held: on ``frame_stamp``, just processed)."""
        with self._cond:
            if cmd.cancelled:
                return
            cmd.started = True
            if not held:
                frame_stamp = self.current_stamp
                if cmd.stamp_ns != LATEST and cmd.stamp_ns in self._in_history:
                    frame_stamp = cmd.stamp_ns  # a past frame still in the history
            stale = self._stamp_error(cmd.stamp_ns, self._status.get(cmd.stamp_ns))
        if frame_stamp is None and cmd.needs_frame:
            cmd.finish(error="no frame has been processed yet: publish images first, or give the stamp of a "
                             "frame that was received and is waiting to be processed")
            return
        if cmd.stamp_ns != LATEST and cmd.stamp_ns != frame_stamp:  # left the history meanwhile
            cmd.finish(error=stale)
            return
        try:
            cmd.finish(value=cmd.fn(self, frame_stamp))
        except (TrackerInputError, CommandError) as e:
            cmd.finish(error=str(e))
        except Exception as e:  # a bug or a backend failure: answer the caller, keep the worker alive
            log.exception("command failed")
            cmd.finish(error=f"internal error: {type(e).__name__}: {e}")

    # ------------------------------------------- the scheduler's side (its thread)
    def _has_work(self) -> bool:
        return bool(self._commands) or self._pending is not None

    def _take_commands(self) -> list[_Command]:
        """The queued commands (under _cond)."""
        commands = list(self._commands)
        self._commands.clear()
        return commands

    def _take_frame(self) -> Frame | None:
        """The waiting frame, now in flight (under _cond)."""
        frame, self._pending = self._pending, None
        if frame is not None:
            self._set_status(frame.stamp_ns, FrameStatus.IN_FLIGHT)
            self.stats.queue_depth, self.stats.in_flight = 0, 1
        return frame

    def _decode_frame(self, frame: Frame) -> np.ndarray | None:
        """The frame's RGB array, or None after rejecting the frame."""
        try:
            return self._decode(frame.payload)
        except ValueError as e:
            self._fail_frame(frame, str(e))
        except Exception as e:
            log.exception("decoding a frame failed")
            self._fail_frame(frame, f"internal error: {type(e).__name__}: {e}")
        return None

    def _size_changed(self, error: FrameSizeChanged) -> TrackerInputError | None:
        """A frame of a new size: reset this camera's tracker when it has nothing to lose
        (returns None: step the frame again), or the error that rejects the frame."""
        if self.tracker.num_objects == 0:
            self.tracker.reset()  # follow the camera's new resolution
            return None
        (h0, w0), (h1, w1) = error.old_hw, error.new_hw
        return TrackerInputError(f"frame size changed from {w0}x{h0} to {w1}x{h1} while objects are tracked; "
                                 "reset the tracker to follow it")

    def _finish_frame(self, frame: Frame, rgb: np.ndarray, result: FrameResult, step_s: float) -> None:
        """After the step: bookkeeping, prompts held for this frame, publishing."""
        with self._cond:
            if frame.epoch != self._epoch:  # the stream restarted meanwhile: publish it, remember nothing
                self.stats.processed += 1
                self.stats.in_flight = 0
                stale = True
            else:
                stale = False
        if stale:
            self._publish_safely(frame, rgb, result)
            return
        with self._cond:
            self.current_stamp = frame.stamp_ns
            self.current_frame = frame
            if result.frame_index == 0:  # a new stream (first frame, or a reset for a new size)
                self._forget_history()
            self._set_status(frame.stamp_ns, FrameStatus.PROCESSED)
            self._in_history[frame.stamp_ns] = result.frame_index
            while len(self._in_history) > self.tracker.history_frames:
                self._in_history.popitem(last=False)
            held = self._held.pop(frame.stamp_ns, [])
        for cmd in held:
            self._run_command(cmd, frame.stamp_ns, held=True)
        if held:
            result = self.tracker.current_result()
        with self._cond:
            self.current_result = result
            self.stats.objects = len(result.object_ids)
        self._publish_safely(frame, rgb, result)
        done = time.perf_counter()
        with self._cond:
            self.stats.processed += 1
            self.stats.in_flight = 0
            self._window.append((done, done - frame.received, step_s))

    def _publish_safely(self, frame: Frame, rgb: np.ndarray, result: FrameResult) -> None:
        try:
            self._publish(frame, rgb, result)
        except Exception as e:
            log.exception("publishing failed")
            self._report("publish", f"publishing frame {fmt_stamp(frame.stamp_ns)} failed: {e}")

    def _restart_stream(self, why: str) -> None:
        """Reset the tracker for a new stream, before its first frame (scheduler thread). Commands
        that came after that frame (held for it, or queued) are the new stream's: kept."""
        self.tracker.reset()
        with self._cond:
            self.objects.clear()
            self._next_id = 1
            self.current_stamp = self.current_frame = self.current_result = None
            self.stats.objects = 0
            self._forget_history()
        self._report("restart", f"{why}: camera reset, objects dropped")

    def _fail_frame(self, frame: Frame, reason: str) -> None:
        with self._cond:
            self.stats.rejected += 1
            self.stats.in_flight = 0
            self.stats.last_error = reason
            self._set_status(frame.stamp_ns, FrameStatus.FAILED)
            held = self._held.pop(frame.stamp_ns, [])
        for cmd in held:
            cmd.finish(error=f"frame {fmt_stamp(frame.stamp_ns)} was rejected: {reason}")
        self._report("frame", f"frame {fmt_stamp(frame.stamp_ns)} rejected: {reason}")

    def _abort(self, reason: str) -> None:
        """The scheduler stopped: drop the waiting frame, fail every waiting command (under _cond)."""
        if self._pending is not None:
            self._set_status(self._pending.stamp_ns, FrameStatus.DROPPED)
            self._pending = None
            self.stats.dropped += 1  # received, never processed: counted like any other drop
        self.stats.queue_depth = 0
        for cmd in [*self._commands, *(c for cmds in self._held.values() for c in cmds)]:
            cmd.finish(error=reason)
        self._commands.clear()
        self._held.clear()

    # ------------------------------------------------------------ reporting
    def window_stats(self, window_s: float = 5.0) -> Stats:
        """Counters plus FPS / latency (submit to published) / step time over the last ``window_s`` seconds."""
        now = time.perf_counter()
        with self._cond:
            s = Stats(**{k: getattr(self.stats, k) for k in COUNTERS})
            recent = [w for w in self._window if now - w[0] <= window_s]
        if recent:
            span = recent[-1][0] - recent[0][0]
            s.fps = (len(recent) - 1) / span if len(recent) > 1 and span > 0 else 0.0
            lat = [r[1] for r in recent]
            s.latency_mean_ms = 1000 * float(np.mean(lat))
            s.latency_max_ms = 1000 * float(np.max(lat))
            s.step_mean_ms = 1000 * float(np.mean([r[2] for r in recent]))
        return s

    def _forget_history(self) -> None:
        """Processed frames before a reset are no frames of the tracker any more (under _cond)."""
        self._in_history.clear()
        for stamp, status in self._status.items():
            if status == FrameStatus.PROCESSED:
                self._status[stamp] = FrameStatus.STALE

    # ------------------------------------------- helpers for command functions
    def frame_index_of(self, stamp_ns: int) -> int:
        """The tracker's frame index of processed frame ``stamp_ns`` (in the history; scheduler thread)."""
        with self._cond:
            if stamp_ns not in self._in_history:
                raise CommandError(self._stamp_error(stamp_ns, self._status.get(stamp_ns)))
            return self._in_history[stamp_ns]

    def new_object_id(self) -> int:
        """The lowest id above every id used since the last reset (scheduler thread)."""
        return max([self._next_id - 1, *self.tracker.object_ids]) + 1

    def note_prompt(self, object_id: int, label: str, frame_stamp: int, frame_index: int | None = None) -> None:
        """Record a successful prompt on frame ``frame_index`` (default: the current one; scheduler thread)."""
        with self._cond:
            info = self.objects.get(object_id)
            if info is None:
                first = self.tracker.frame_index if frame_index is None else frame_index
                info = self.objects[object_id] = ObjectInfo(label, first, frame_stamp)
            elif label and not info.label:
                info.label = label
            info.num_prompts += 1
            self._next_id = max(self._next_id, object_id + 1)
            self.current_result = self.tracker.current_result()
            self.stats.objects = self.tracker.num_objects

    def note_removed(self, object_id: int) -> None:
        with self._cond:
            self.objects.pop(object_id, None)
            self.current_result = self.tracker.current_result()
            self.stats.objects = self.tracker.num_objects

    def reset_tracker(self) -> None:
        """Reset the tracker and everything known about objects and frames (scheduler thread)."""
        self.tracker.reset()
        with self._cond:
            held = [c for cmds in self._held.values() for c in cmds]
            self._held.clear()
            self.objects.clear()
            self._next_id = 1
            self.current_stamp = None
            self.current_frame = None
            self.current_result = None
            self.stats.objects = 0
            self._forget_history()
        for cmd in held:
            cmd.finish(error="the tracker was reset before the prompt's frame was processed")

    def snapshot(self) -> tuple[int | None, FrameResult | None, dict[int, ObjectInfo]]:
        """(current stamp, current result, object infos) without waiting for the tracker."""
        with self._cond:
            infos = {k: ObjectInfo(**vars(v)) for k, v in self.objects.items()}
            return self.current_stamp, self.current_result, infos


class Scheduler:
    """One thread that serves every camera registered on it (see the module docstring).

    Args:
        step: steps one frame of each named camera at once (``MultiTracker.step``).
    """

    def __init__(self, step: StepFn):
        self._step = step
        self.cond = threading.Condition()
        self.cameras: list[CameraWorker] = []
        self._stop = False
        self._thread: threading.Thread | None = None
        self._turn = 0  # rotates the order in which the cameras of a round are served
        self.rounds = 0  # rounds that stepped frames, and the frames they stepped (batch size = ratio)
        self.frames_stepped = 0

    def _add(self, camera: CameraWorker) -> None:
        with self.cond:
            if any(c.name == camera.name for c in self.cameras):
                raise ValueError(f"camera {camera.name!r} is already served by this scheduler")
            self.cameras.append(camera)

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def accepting(self) -> bool:
        """Whether commands are accepted (under cond)."""
        return self._thread is not None and not self._stop

    def start(self) -> None:
        with self.cond:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="sam2_tracker_worker", daemon=True)
            self._thread.start()

    def stop(self, reason: str = "the tracker stopped") -> None:
        """Stop the thread (after the round it is on); fail every camera's waiting commands with ``reason``."""
        with self.cond:
            self._stop = True
            self.cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self.cond:
            self._thread = None
            for camera in self.cameras:
                camera._abort(reason)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self._stop and not any(c._has_work() for c in self.cameras):
                    self.cond.wait()
                if self._stop:
                    return
                k = self._turn % len(self.cameras)
                order = self.cameras[k:] + self.cameras[:k]
                commands = [(c, c._take_commands()) for c in order]
            for camera, cmds in commands:  # commands first: they refer to the current frames
                for cmd in cmds:
                    camera._run_command(cmd)
            # then the newest frame of every camera that has one, even if more commands came
            # meanwhile: a stream of service calls cannot starve the tracking
            with self.cond:
                frames = [(c, f) for c in order if (f := c._take_frame()) is not None]
                if frames:
                    self._turn += 1
            if frames:
                self._process(frames)

    def _process(self, frames: list[tuple[CameraWorker, Frame]]) -> None:
        batch = {}
        for camera, frame in frames:
            if frame.restart:
                camera._restart_stream(frame.restart)
            rgb = camera._decode_frame(frame)
            if rgb is not None:
                batch[camera.name] = (camera, frame, rgb)
        if not batch:
            return
        t0 = time.perf_counter()
        results = self._safe_step({name: rgb for name, (_, _, rgb) in batch.items()})
        step_s = time.perf_counter() - t0
        with self.cond:
            self.rounds += 1
            self.frames_stepped += len(batch)
        for name, (camera, frame, rgb) in batch.items():
            result = results[name]
            if isinstance(result, FrameSizeChanged):
                result = camera._size_changed(result) or self._safe_step({name: rgb})[name]
            if isinstance(result, Exception):
                camera._fail_frame(frame, str(result))
            else:
                camera._finish_frame(frame, rgb, result, step_s)

    def _safe_step(self, frames: dict[str, np.ndarray]) -> Mapping[str, FrameResult | Exception]:
        """``step``, with a failure of the call as every frame's error (a frame's bad input is its own)."""
        try:
            return self._step(frames)
        except ValueError as e:
            return dict.fromkeys(frames, e)
        except Exception as e:
            log.exception("tracker step failed")
            return dict.fromkeys(frames, RuntimeError(f"internal error: {type(e).__name__}: {e}"))

    def batch_size_mean(self) -> float:
        """Frames per step call so far (1 with one camera; up to the number of cameras)."""
        with self.cond:
            return self.frames_stepped / self.rounds if self.rounds else 0.0


def step_each(trackers: Mapping[str, Tracker], frames: dict[str, np.ndarray]) -> dict[str, FrameResult | Exception]:
    """A :data:`StepFn` over separate trackers, one call each (no MultiTracker)."""
    out: dict[str, FrameResult | Exception] = {}
    for name, frame in frames.items():
        try:
            out[name] = trackers[name].step(frame)
        except TrackerInputError as e:
            out[name] = e
    return out


class TrackerWorker(CameraWorker):
    """One camera with a scheduler of its own: the single-tracker API (``start`` / ``stop`` its thread)."""

    def __init__(self, tracker: Tracker, *args, **kwargs):
        """``tracker`` and then :class:`CameraWorker`'s arguments after its ``tracker`` (decode, publish, ...)."""
        name = "camera"
        super().__init__(Scheduler(lambda frames: step_each({name: tracker}, frames)), name, tracker, *args, **kwargs)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self, reason: str = "the tracker stopped") -> None:
        """Stop the thread (after the frame it is on); fail every waiting command with ``reason``."""
        self.scheduler.stop(reason)
