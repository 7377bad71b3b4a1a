"""The control loop: one thread that reads the rig, asks the active source, filters and commands.

Thread ownership
----------------
`ControlLoop` owns one control thread (`start()` / `stop()`). Only that thread touches the rig
(`read()`, `command()`), the active source (`start()`, `next_action()`, `stop()`) and the loop's
state. Every other thread talks to it through a queue of requests, applied at the start of the
next tick (at most one period later, 20 ms at 50 Hz), and reads it through `snapshot()`.

Each tick: `rig.read()` -> the action of the active source (blended in after a switch) -> the
safety filter (`robot.safety`) -> `rig.command()` -> a `TickRecord` published to subscribers.

Pacing: deadlines on `time.monotonic()` every 1/rate_hz. The thread sleeps until the next
deadline; when a tick overruns, the next one starts at once and the schedule is re-based from
there - there is never a burst of catch-up ticks. A tick that wakes more than half a period late
(the CPU was busy elsewhere) re-bases the schedule on itself likewise, so two ticks are never
closer than half a period. Both count as `late_ticks` (and the whole periods lost as
`missed_deadlines`). No tick is ever skipped, so a simulated rig, whose
physics advances one period per command, just runs slower than real time.

Modes (`robot.types.Mode`)
--------------------------
- IDLE: read and publish (the GUI sees the arm) but do not drive. A real rig is not commanded at
  all (torque may be off; the arm can be moved by hand) and the hold pose follows the reading. A
  simulated rig advances physics only when commanded, so it is commanded the hold pose (the
  last command, or the first reading), which keeps the simulated arm still. Source: NONE.
- TELEOP and POLICY: the selected source drives. POLICY is the same path with a policy source.
- HOLD: the last command is repeated. Source: HOLD.
- ESTOP: latched; the last command is repeated and `Rig.on_estop()` is called once (a hardware
  rig cuts torque there). Only `clear_estop()` leaves it, and it leaves to HOLD, never to motion.

No jumps: when a source becomes active (mode change into TELEOP/POLICY, a new source, or the
source resuming after returning None) it is started with the current observation and its actions
are blended in from the last command over `blend_s` (smoothstep). The safety filter's per-tick
step limit is the final guarantee. A source that raises sends the loop to HOLD with an error
event naming it; one that returns None holds (a warning event once per dry spell); one that is
`finished` sends the loop to HOLD with an info event. A NaN/inf or malformed action is rejected
(the arm holds) and the loop goes to HOLD.

Using it
--------
From the GUI bridge (any thread)::

    loop = ControlLoop(rig, LoopConfig(rate_hz=50))
    loop.set_source(jog)                 # an ActionSource (robot.types), e.g. EndEffectorJogSource
    loop.request_mode(Mode.TELEOP)
    loop.start()
    snap = loop.snapshot()               # LoopSnapshot: latest TickRecord, stats, mode, events
    new = loop.events_since(last_seq)    # LoopEvents with seq > last_seq, oldest first
    loop.estop(); loop.clear_estop()
    loop.stop()

From the recorder (its callback runs on the control thread: it must only enqueue)::

    unsubscribe = loop.subscribe(recorder.on_tick)   # callable(TickRecord) -> None
    ...
    unsubscribe()

An exception in a subscriber is logged and reported as an event; it never stops the loop.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from robot.capabilities import Simulation
from robot.rig import Rig
from robot.safety import SafetyConfig, SafetyError, SafetyFilter, SafetyLimit
from robot.types import (
    GRIPPER_INDICES,
    JOINT_NAMES,
    ActionSource,
    ControlSource,
    LoopEvent,
    Mode,
    RigStatus,
    Severity,
    SourceFault,
    TickRecord,
    TickTimings,
)

log = logging.getLogger(__name__)

#: How far past a position limit a request may be before the loop reports it (rad): the safety
#: filter clamps either way.
POSITION_LIMIT_QUIET = 0.01
#: The same for grippers (normalised 0..1). Demonstrations hold the grippers at fully open or
#: closed, so a policy's chunks overshoot those ends by a few hundredths all the time (seen:
#: -0.010 to -0.019 every second or two); that is clamping doing its job, not a push to report.
GRIPPER_LIMIT_QUIET = 0.05
_GRIPPERS = frozenset(JOINT_NAMES[i] for i in GRIPPER_INDICES)

#: Modes in which the selected source drives the arm.
DRIVING_MODES = frozenset({Mode.TELEOP, Mode.POLICY})

Subscriber = Callable[[TickRecord], None]


@dataclass(frozen=True)
class LoopConfig:
    """Settings of the control loop (the `[control]` table of a rig file).

    rate_hz: control rate; ALOHA runs at 50 Hz (DT = 0.02 s). A simulated rig must be built for
    the same rate (its physics advances one period per command).
    blend_s: how long a newly active source is blended in from the last command; 0.75 s is long
    enough that a far-off leader pose is approached gently, short enough not to feel sluggish.
    max_joint_speed_rad_s / max_gripper_speed_per_s: the safety filter's speed limits
    (`robot.safety.SafetyConfig`), applied on top of the rig's own per-tick limits.
    stats_window_s: the rolling window of the rate and period statistics (10 s shows a trend
    without hiding a recent stall for long).
    max_events: events kept for the GUI; older ones fall off.
    realtime_priority: 0 (default) runs the control thread at normal priority; 1..99 asks for
    SCHED_FIFO at that priority, so the thread gets a CPU the moment its deadline comes even on a
    busy computer (other programs and the studio's own threads then only run in its sleep).
    Needs root or CAP_SYS_NICE (or an rtprio limit); refused, the loop runs at normal priority
    and says so with a warning event.
    switch_interval_ms: how long another Python thread of the control loop's process may keep the
    interpreter lock once the control thread wants it (`sys.setswitchinterval`, set by
    `app.studio.session.open_session` for the whole process). Python's default, 5 ms, is a
    quarter of a period; 0.5 ms halved the control thread's lock waits with the window and a
    policy thread beside it (benchmarks/control_loop.py, issue 15).
    """

    rate_hz: float = 50.0
    blend_s: float = 0.75
    max_joint_speed_rad_s: float = 1.5
    max_gripper_speed_per_s: float = 2.0
    stats_window_s: float = 10.0
    max_events: int = 200
    realtime_priority: int = 0
    switch_interval_ms: float = 0.5

    def __post_init__(self) -> None:
        if not (isinstance(self.rate_hz, (int, float)) and 1.0 <= self.rate_hz <= 1000.0):
            raise ValueError(f"rate_hz must be between 1 and 1000 Hz, got {self.rate_hz!r}; ALOHA uses rate_hz = 50")
        if not (isinstance(self.blend_s, (int, float)) and 0.0 <= self.blend_s <= 10.0):
            raise ValueError(f"blend_s must be between 0 and 10 s, got {self.blend_s!r}; e.g. blend_s = 0.75")
        if not (isinstance(self.stats_window_s, (int, float)) and self.stats_window_s > 0):
            raise ValueError(f"stats_window_s must be positive, got {self.stats_window_s!r}; e.g. 10")
        if not (isinstance(self.max_events, int) and self.max_events >= 10):
            raise ValueError(f"max_events must be an integer of at least 10, got {self.max_events!r}")
        if not (isinstance(self.realtime_priority, int) and 0 <= self.realtime_priority <= 99):
            raise ValueError(
                f"realtime_priority must be an integer 0..99 (0: normal priority; e.g. 50 for SCHED_FIFO), "
                f"got {self.realtime_priority!r}"
            )
        if not (isinstance(self.switch_interval_ms, (int, float)) and 0.05 <= self.switch_interval_ms <= 10.0):
            raise ValueError(
                f"switch_interval_ms must be between 0.05 and 10 ms, got {self.switch_interval_ms!r}; e.g. 0.5"
            )
        # The speed limits are checked by SafetyConfig, whose message names the field.
        self.safety_config()

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    def safety_config(self) -> SafetyConfig:
        return SafetyConfig(
            max_joint_speed_rad_s=self.max_joint_speed_rad_s,
            max_gripper_speed_per_s=self.max_gripper_speed_per_s,
        )


@dataclass(frozen=True)
class LoopStats:
    """Rolling timing statistics over the last `stats_window_s` (ms in names means milliseconds).

    period_error = |period - 1/rate_hz|. late_ticks: ticks whose work ran past the next
    deadline (the next tick then started at once, re-based); missed_deadlines: whole periods
    lost that way. Both count since start.
    """

    ticks: int = 0
    target_rate_hz: float = 0.0
    achieved_rate_hz: float = 0.0
    period_error_p50_ms: float = 0.0
    period_error_p99_ms: float = 0.0
    period_error_max_ms: float = 0.0
    jitter_p99_ms: float = 0.0
    busy_p50_ms: float = 0.0  # read..command time of a tick
    busy_p99_ms: float = 0.0
    publish_p99_ms: float = 0.0  # time spent in subscribers
    late_ticks: int = 0
    missed_deadlines: int = 0
    subscriber_errors: int = 0


@dataclass(frozen=True)
class LoopState:
    """What the loop is doing now: running, the mode, the source (name, kind), blending in."""

    running: bool
    mode: Mode
    source_name: str
    source_kind: ControlSource
    blending: bool


@dataclass(frozen=True)
class LoopSnapshot:
    """What the GUI needs, copied under a short lock. tick: the latest TickRecord (None before
    the first). events: the most recent events, oldest first. rig: the rig's own health summary
    (`Rig.status()`: the sim's real-time factor, camera rates, messages)."""

    running: bool
    mode: Mode
    source_name: str
    source_kind: ControlSource
    blending: bool
    tick: TickRecord | None
    stats: LoopStats
    events: tuple[LoopEvent, ...]
    rig: RigStatus | None = None


class Blend:
    """Smoothstep from a fixed start pose to whatever the source asks, over `ticks` ticks."""

    def __init__(self, start: np.ndarray, ticks: int) -> None:
        self.start = np.asarray(start, dtype=np.float64).copy()
        self.ticks = max(1, ticks)
        self.done = 0

    def mix(self, target: np.ndarray) -> np.ndarray:
        self.done += 1
        x = min(1.0, self.done / self.ticks)
        weight = x * x * (3.0 - 2.0 * x)
        return self.start + weight * (np.asarray(target, dtype=np.float64) - self.start)

    @property
    def finished(self) -> bool:
        return self.done >= self.ticks


class ControlLoop:
    """The fixed-rate control loop of one rig. See the module docstring for threads and modes.

    The rig must be connected by its owner before the loop is made (its joint limits are read
    here); the loop never connects or disconnects it.
    """

    def __init__(self, rig: Rig, config: LoopConfig | None = None) -> None:
        self.config = config or LoopConfig()
        rig_rate = getattr(rig, "control_rate_hz", None)
        if rig.simulated and rig_rate is not None and not math.isclose(rig_rate, self.config.rate_hz, rel_tol=1e-6):
            raise ValueError(
                f"the simulated rig {rig.name!r} advances {1.0 / rig_rate:.4f} s per command but the loop "
                f"would run at {self.config.rate_hz} Hz; set [control] rate_hz = {rig_rate:g} in the rig file "
                "(or build the sim rig for the loop's rate)"
            )
        self._rig = rig
        self._safety = SafetyFilter(rig.joint_limits(), self.config.rate_hz, self.config.safety_config())
        self._requests: queue.SimpleQueue = queue.SimpleQueue()

        # Control-thread state (only the control thread, or tick_once() while stopped, touches it).
        self._mode = Mode.IDLE
        self._source: ActionSource | None = None
        self._source_started = False
        self._source_dry = False
        self._blend: Blend | None = None
        self._needs_blend = False
        self._last_command: np.ndarray | None = None  # (14,) float32, the last action sent (or the hold pose)
        self._index = 0
        self._prev_start_s: float | None = None
        self._read_failures = 0
        self._position_limited: set[str] = set()
        self._limit_event_time_s: dict[str, float] = {}
        self._subscriber_failures: dict[int, tuple[int, float]] = {}

        # Shared with other threads, under _lock (held only for copies and appends).
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()
        self._event_listeners: tuple[Callable[[LoopEvent], None], ...] = ()
        self._latest: TickRecord | None = None
        self._events: deque[LoopEvent] = deque(maxlen=self.config.max_events)
        self._event_seq = 0
        window = max(10, int(self.config.stats_window_s * self.config.rate_hz))
        self._periods_s: deque[float] = deque(maxlen=window)
        self._tick_starts_s: deque[float] = deque(maxlen=window)
        self._jitters_s: deque[float] = deque(maxlen=window)
        self._busy_s: deque[float] = deque(maxlen=window)
        self._publish_s: deque[float] = deque(maxlen=window)
        self._late_ticks = 0
        self._missed_deadlines = 0
        self._subscriber_errors = 0
        self._published_mode = Mode.IDLE
        self._published_source: tuple[str, ControlSource] = ("", ControlSource.NONE)
        self._published_blending = False

        self._thread: threading.Thread | None = None
        self._stop_flag = threading.Event()

    # ------------------------------------------------------------------ any thread: lifecycle

    @property
    def rig(self) -> Rig:
        return self._rig

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the control thread (idempotent)."""
        if self.running:
            return
        self._stop_flag.clear()
        self._thread = threading.Thread(target=self._run, name="control-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the control thread after its current tick, then stop the active source.

        The rig is left as the last tick left it (the owner disconnects it, which makes it safe).
        """
        thread = self._thread
        if thread is None:
            return
        self._stop_flag.set()
        thread.join(timeout_s)
        if thread.is_alive():
            log.error("control thread did not stop within %.1f s", timeout_s)
            return
        self._thread = None
        self._stop_source()

    def __enter__(self) -> "ControlLoop":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ any thread: requests

    def request_mode(self, mode: Mode) -> None:
        """Ask for a mode; applied at the start of the next tick. ESTOP is the same as `estop()`."""
        mode = Mode(mode)
        if mode is Mode.ESTOP:
            self.estop()
        else:
            self._requests.put(("mode", mode))

    def set_source(self, source: ActionSource | None) -> None:
        """Select the action source TELEOP/POLICY drive with (None: no source; a driving loop holds).

        Switching while driving blends from the last command to the new source.
        """
        if source is not None and not isinstance(source, ActionSource):
            raise TypeError(f"{source!r} is not an ActionSource (needs name, kind, start, next_action, stop, finished)")
        self._requests.put(("source", source))

    def estop(self, reason: str = "E-stop pressed") -> None:
        """Latch the emergency stop at the start of the next tick: the arm holds; only
        `clear_estop()` leaves it."""
        self._requests.put(("estop", reason))

    def clear_estop(self) -> None:
        """Unlatch the E-stop; the loop goes to HOLD (never straight back to motion)."""
        self._requests.put(("clear_estop", None))

    # ------------------------------------------------------------------ any thread: subscribers, snapshot

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(record)` on the control thread after every tick; returns an
        unsubscribe function. The callback must be quick (enqueue, never write a file)."""
        if not callable(callback):
            raise TypeError(f"subscriber {callback!r} is not callable")
        with self._lock:
            self._subscribers = self._subscribers + (callback,)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def add_event_listener(self, callback: Callable[["LoopEvent"], None]) -> Callable[[], None]:
        """Call `callback(event)` with every event as it is emitted, on the emitting thread (the
        control thread); returns a function that removes it. The callback must be quick (append
        to a log). Events are also kept for `events_since`."""
        if not callable(callback):
            raise TypeError(f"event listener {callback!r} is not callable")
        with self._lock:
            self._event_listeners = self._event_listeners + (callback,)

        def remove() -> None:
            with self._lock:
                self._event_listeners = tuple(c for c in self._event_listeners if c is not callback)

        return remove

    def state(self) -> "LoopState":
        """Mode, source and whether it blends in: a few fields copied under the lock, cheap
        enough for every paint (`snapshot()` adds the percentile statistics, ~2 ms)."""
        with self._lock:
            mode, (name, kind), blending = self._published_mode, self._published_source, self._published_blending
        return LoopState(running=self.running, mode=mode, source_name=name, source_kind=kind, blending=blending)

    def snapshot(self, max_events: int = 20) -> LoopSnapshot:
        """The latest tick, statistics, mode, source and recent events (cheap; any thread)."""
        with self._lock:
            periods = np.fromiter(self._periods_s, dtype=np.float64)
            starts = (self._tick_starts_s[0], self._tick_starts_s[-1], len(self._tick_starts_s)) if self._tick_starts_s else None
            jitters = np.fromiter(self._jitters_s, dtype=np.float64)
            busy = np.fromiter(self._busy_s, dtype=np.float64)
            publish = np.fromiter(self._publish_s, dtype=np.float64)
            counters = (self._late_ticks, self._missed_deadlines, self._subscriber_errors)
            latest = self._latest
            events = tuple(self._events)[-max_events:] if max_events > 0 else ()
            mode, (source_name, source_kind), blending = (
                self._published_mode,
                self._published_source,
                self._published_blending,
            )
        return LoopSnapshot(
            running=self.running,
            mode=mode,
            source_name=source_name,
            source_kind=source_kind,
            blending=blending,
            tick=latest,
            stats=self._stats(periods, starts, jitters, busy, publish, counters, latest),
            events=events,
            rig=self._rig_status(),
        )

    def _rig_status(self) -> RigStatus | None:
        try:
            return self._rig.status()
        except Exception:  # the status bar must not take the GUI down with a broken rig
            log.exception("rig.status() failed")
            return None

    def events_since(self, seq: int) -> tuple[LoopEvent, ...]:
        """Events with `seq` above the given one, oldest first (those still kept)."""
        with self._lock:
            return tuple(e for e in self._events if e.seq > seq)

    def _stats(self, periods, starts, jitters, busy, publish, counters, latest) -> LoopStats:
        target = self.config.period_s
        achieved = 0.0
        if starts is not None and starts[2] >= 2 and starts[1] > starts[0]:
            achieved = (starts[2] - 1) / (starts[1] - starts[0])
        errors_ms = np.abs(periods - target) * 1e3

        def pct(values: np.ndarray, q: float, scale: float = 1.0) -> float:
            return float(np.percentile(values, q)) * scale if values.size else 0.0

        return LoopStats(
            ticks=0 if latest is None else latest.index + 1,
            target_rate_hz=self.config.rate_hz,
            achieved_rate_hz=achieved,
            period_error_p50_ms=pct(errors_ms, 50),
            period_error_p99_ms=pct(errors_ms, 99),
            period_error_max_ms=float(errors_ms.max()) if errors_ms.size else 0.0,
            jitter_p99_ms=pct(jitters, 99, 1e3),
            busy_p50_ms=pct(busy, 50, 1e3),
            busy_p99_ms=pct(busy, 99, 1e3),
            publish_p99_ms=pct(publish, 99, 1e3),
            late_ticks=counters[0],
            missed_deadlines=counters[1],
            subscriber_errors=counters[2],
        )

    # ------------------------------------------------------------------ the control thread

    def _enter_realtime(self) -> None:
        """Ask for SCHED_FIFO for this (the control) thread when the config says so."""
        priority = self.config.realtime_priority
        if priority <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: the calling thread
        except (OSError, AttributeError) as exc:
            self._emit(
                Severity.WARNING,
                "realtime",
                f"The control thread could not get real-time priority (SCHED_FIFO {priority}): {exc}. "
                "It runs at normal priority, so a busy computer can delay its ticks.",
                "Allow it (run the studio as a user with CAP_SYS_NICE, or an rtprio limit in "
                "/etc/security/limits.conf), or set [control] realtime_priority = 0 to silence this.",
            )
        else:
            log.info("control thread runs with SCHED_FIFO priority %d", priority)

    def _run(self) -> None:
        self._enter_realtime()
        period = self.config.period_s
        deadline = time.monotonic()
        while not self._stop_flag.is_set():
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = time.monotonic()
            lateness = start - deadline
            if lateness > 0.5 * period:
                # Woke up late (CPU contention): this tick takes the slot it is in and the
                # schedule is re-based on it, so the next one does not follow right behind.
                self._count_late(int(lateness // period))
                deadline, lateness = start, 0.0
            try:
                self._tick(start, max(0.0, lateness))
            except Exception as exc:  # a bug of ours: keep the arm held rather than let the thread die
                log.exception("control tick failed")
                self._emit(
                    Severity.ERROR,
                    "loop_error",
                    f"The control loop hit an internal error: {exc}",
                    "The arm holds. Save your work and restart the studio; report the log file.",
                )
                self._enter_mode(Mode.HOLD)
            deadline += period
            end = time.monotonic()
            if end > deadline:
                # Overran: start the next tick now and re-base the schedule (no catch-up burst).
                self._count_late(int((end - deadline) // period))
                deadline = end

    def _count_late(self, missed: int) -> None:
        with self._lock:
            self._late_ticks += 1
            self._missed_deadlines += missed

    def tick_once(self) -> TickRecord | None:
        """Run one tick on the calling thread, with no pacing (tests, scripted jobs that step a
        simulated rig as fast as it goes). Only while the control thread is not running."""
        if self.running:
            raise RuntimeError("tick_once() is for a stopped loop; the control thread is running")
        return self._tick(time.monotonic(), 0.0)

    def _tick(self, start_s: float, jitter_s: float) -> TickRecord | None:
        self._apply_requests()
        period_s = 0.0 if self._prev_start_s is None else start_s - self._prev_start_s
        self._prev_start_s = start_s

        try:
            observation = self._rig.read()
        except Exception as exc:
            self._on_read_failure(exc)
            return None
        if self._read_failures:
            self._emit(Severity.INFO, "rig_read", f"The rig is reading again after {self._read_failures} failed ticks.")
            self._read_failures = 0
        t_read = time.monotonic()

        if self._last_command is None:
            self._last_command = self._safety.clamp_to_limits(observation.qpos)
        target, source_kind = self._target_for(observation)
        t_source = time.monotonic()

        clipped: tuple[str, ...] = ()
        if target is None:
            action = None
        else:
            try:
                result = self._safety.apply(target, self._last_command)
            except SafetyError as exc:
                self._on_unsafe_action(exc)
                result = None
            if result is None:
                action = self._last_command
                source_kind = ControlSource.HOLD
            else:
                action, clipped = result.action, result.clipped
                self._report_position_limits(result.limits_hit, start_s)
        t_safety = time.monotonic()

        if action is not None:
            try:
                self._rig.command(action)
                self._last_command = action
            except Exception as exc:
                log.exception("rig.command failed")
                self._emit(
                    Severity.ERROR,
                    "rig_command",
                    f"Commanding the rig {self._rig.name!r} failed: {exc}",
                    "The loop holds. Check the arm's power and cable; if it persists, stop and reconnect the rig.",
                )
                if self._mode is not Mode.ESTOP:
                    self._enter_mode(Mode.HOLD)
        else:
            # IDLE on a real rig: nothing commanded; holding would start from where the arm is now.
            self._last_command = self._safety.clamp_to_limits(observation.qpos)
        t_command = time.monotonic()

        record = TickRecord(
            index=self._index,
            observation=observation,
            action=(observation.qpos if action is None else action).astype(np.float32, copy=True),
            source=source_kind,
            mode=self._mode,
            timings=TickTimings(
                period_s=period_s,
                jitter_s=jitter_s,
                read_s=t_read - start_s,
                source_s=t_source - t_read,
                safety_s=t_safety - t_source,
                command_s=t_command - t_safety,
                total_s=t_command - start_s,
            ),
            clipped=clipped,
            sim_time_s=self._sim_time_s(),
        )
        with self._lock:
            self._latest = record
            if period_s > 0:
                self._periods_s.append(period_s)
            self._tick_starts_s.append(start_s)
            self._jitters_s.append(jitter_s)
            self._busy_s.append(record.timings.total_s)
            subscribers = self._subscribers
        t_pub = time.monotonic()
        for callback in subscribers:
            self._call_subscriber(callback, record)
        # Counted after publishing: a subscriber's failure is an event of this tick.
        self._index += 1
        publish_s = time.monotonic() - t_pub
        with self._lock:
            self._publish_s.append(publish_s)
        return record

    def _sim_time_s(self) -> float | None:
        rig = self._rig
        return float(rig.sim_time_s) if rig.simulated and isinstance(rig, Simulation) else None

    # ------------------------------------------------------------------ control thread: requests, modes

    def _apply_requests(self) -> None:
        while True:
            try:
                kind, payload = self._requests.get_nowait()
            except queue.Empty:
                return
            if kind == "estop":
                self._latch_estop(payload)
            elif kind == "clear_estop":
                if self._mode is Mode.ESTOP:
                    self._mode = Mode.HOLD
                    self._call_rig_hook("on_estop_cleared")
                    self._emit(
                        Severity.INFO,
                        "estop",
                        "E-stop cleared; the arm holds its pose.",
                        "Choose Teleop (or Policy) to move again.",
                    )
                    self._publish_state()
            elif kind == "mode":
                self._request_mode(payload)
            elif kind == "source":
                self._select_source(payload)

    def _request_mode(self, mode: Mode) -> None:
        if self._mode is Mode.ESTOP:
            self._emit(
                Severity.WARNING,
                "request_refused",
                f"{mode.value.capitalize()} was refused: the E-stop is latched.",
                "Make the workspace safe, then press Clear E-stop.",
            )
            return
        if mode in DRIVING_MODES and self._source is None:
            self._emit(
                Severity.WARNING,
                "request_refused",
                f"{mode.value.capitalize()} needs an action source and none is chosen; the arm stays in {self._mode.value}.",
                "Choose a source (keyboard jog, leader arms, policy) first.",
            )
            return
        self._enter_mode(mode)

    def _enter_mode(self, mode: Mode) -> None:
        # Only clear_estop() leaves ESTOP; no fault path may unlatch it by asking for HOLD.
        if mode is self._mode or self._mode is Mode.ESTOP:
            return
        previous = self._mode
        if mode in DRIVING_MODES:
            self._needs_blend = True
        elif previous in DRIVING_MODES:
            self._stop_source()
        self._mode = mode
        self._emit(Severity.INFO, "mode", f"Mode: {previous.value} -> {mode.value}.")
        self._publish_state()

    def _select_source(self, source: ActionSource | None) -> None:
        if source is self._source:
            return
        self._stop_source()
        self._source = source
        self._source_dry = False
        if self._mode in DRIVING_MODES:
            if source is None:
                self._emit(Severity.INFO, "source_removed", "The action source was removed; the arm holds.")
                self._enter_mode(Mode.HOLD)
            else:
                self._needs_blend = True
        self._publish_state()

    def _latch_estop(self, reason: str) -> None:
        if self._mode is Mode.ESTOP:
            return
        self._stop_source()
        self._mode = Mode.ESTOP
        self._blend = None
        self._emit(
            Severity.ERROR,
            "estop",
            f"{reason}: the arm holds its last commanded pose.",
            "Make the workspace safe, then press Clear E-stop; the arm stays in Hold until you choose a mode.",
        )
        # Hardware seam: a real rig cuts torque here (Rig.on_estop); the sim keeps holding.
        self._call_rig_hook("on_estop")
        self._publish_state()

    def _call_rig_hook(self, name: str) -> None:
        try:
            getattr(self._rig, name)()
        except Exception as exc:
            log.exception("rig.%s failed", name)
            self._emit(
                Severity.ERROR,
                "rig_command",
                f"The rig's {name} failed: {exc}",
                "Switch the arm's power off by hand if it is moving.",
            )

    def _stop_source(self) -> None:
        source = self._source
        self._blend = None
        if source is None or not self._source_started:
            return
        self._source_started = False
        try:
            source.stop()
        except Exception as exc:
            log.exception("source %s failed to stop", getattr(source, "name", source))
            self._emit(
                Severity.WARNING,
                "source_error",
                f"The source {self._source_label(source)} failed while stopping: {exc}",
                "Nothing to do for the arm; if the source misbehaves when restarted, choose it again.",
            )

    @staticmethod
    def _source_label(source: ActionSource) -> str:
        return repr(getattr(source, "name", type(source).__name__))

    def _publish_state(self) -> None:
        source = self._source
        name = "" if source is None else str(getattr(source, "name", type(source).__name__))
        kind = ControlSource.NONE if source is None else source.kind
        with self._lock:
            self._published_mode = self._mode
            self._published_source = (name, kind)
            self._published_blending = self._blend is not None

    # ------------------------------------------------------------------ control thread: the action

    def _target_for(self, observation) -> tuple[np.ndarray | None, ControlSource]:
        """The unfiltered action of this tick (None: command nothing) and who produced it."""
        mode = self._mode
        if mode is Mode.IDLE:
            return (self._last_command if self._rig.simulated else None), ControlSource.NONE
        if mode not in DRIVING_MODES:
            return self._last_command, ControlSource.HOLD
        source = self._source
        assert source is not None  # _request_mode and _select_source keep this true
        try:
            if not self._source_started:
                source.start(observation)
                self._source_started = True
            raw = source.next_action(observation)
            finished = bool(source.finished)
        except SourceFault as fault:
            log.error("source %s stopped: %s", self._source_label(source), fault.message)
            self._emit(
                Severity.ERROR,
                "source_fault",
                f"The source {self._source_label(source)} stopped: {fault.message} The arm holds.",
                fault.what_to_do,
            )
            self._enter_mode(Mode.HOLD)
            return self._last_command, ControlSource.HOLD
        except Exception as exc:
            log.exception("source %s failed", self._source_label(source))
            self._emit(
                Severity.ERROR,
                "source_error",
                f"The source {self._source_label(source)} failed: {type(exc).__name__}: {exc}. The arm holds.",
                "Choose Teleop (or Policy) again to restart it, or pick another source.",
            )
            self._enter_mode(Mode.HOLD)
            return self._last_command, ControlSource.HOLD
        if raw is None:
            if finished:
                self._emit(
                    Severity.INFO,
                    "source_finished",
                    f"The source {self._source_label(source)} finished; the arm holds.",
                    "Choose a mode to continue.",
                )
                self._enter_mode(Mode.HOLD)
            elif not self._source_dry:
                self._source_dry = True
                self._emit(
                    Severity.WARNING,
                    "source_dry",
                    f"The source {self._source_label(source)} has no action; the arm holds until it has.",
                    "If this lasts, check the source (for a policy: is it still running?).",
                )
            # Whatever comes next is blended in from the held pose.
            self._needs_blend = True
            return self._last_command, ControlSource.HOLD
        if self._source_dry:
            self._source_dry = False
            self._emit(Severity.INFO, "source_dry", f"The source {self._source_label(source)} is acting again.")
        if self._needs_blend:
            self._needs_blend = False
            ticks = int(round(self.config.blend_s * self.config.rate_hz))
            self._blend = Blend(self._last_command, ticks) if ticks > 0 else None
            self._publish_state()
        if self._blend is not None:
            try:
                raw = self._blend.mix(self._safety.check(raw))
            except SafetyError:
                pass  # the safety filter reports it below, with the source named
            else:
                if self._blend.finished:
                    self._blend = None
                    self._publish_state()
        if finished:
            # Its last action still counts; the next tick holds.
            self._emit(
                Severity.INFO,
                "source_finished",
                f"The source {self._source_label(source)} finished; the arm holds.",
                "Choose a mode to continue.",
            )
            self._enter_mode(Mode.HOLD)
        return raw, source.kind

    # ------------------------------------------------------------------ control thread: faults

    def _on_unsafe_action(self, exc: SafetyError) -> None:
        source = self._source
        who = self._source_label(source) if source is not None else "the loop"
        self._emit(
            Severity.ERROR,
            "unsafe_action",
            f"The action from {who} was rejected: {exc}",
            "The arm holds. Check the source (for a policy: its checkpoint and normalisation), then choose a mode again.",
        )
        if self._mode in DRIVING_MODES:
            self._enter_mode(Mode.HOLD)

    def _report_position_limits(self, hits: tuple[SafetyLimit, ...], now_s: float) -> None:
        # A request a hair past a limit (a policy's open gripper at 1.001) is clamped without a word:
        # only a real push against the limit is worth the user's attention.
        limited = {hit.joint: hit for hit in hits if hit.what == "position" and abs(hit.value - hit.limit)
                   > (GRIPPER_LIMIT_QUIET if hit.joint in _GRIPPERS else POSITION_LIMIT_QUIET)}
        for joint, hit in limited.items():
            # One event when a joint reaches its limit, at most every 2 s per joint.
            if joint not in self._position_limited and now_s - self._limit_event_time_s.get(joint, -math.inf) > 2.0:
                self._limit_event_time_s[joint] = now_s
                self._emit(
                    Severity.WARNING,
                    "position_limit",
                    f"{joint} is held at its limit {hit.limit:.3f} (asked for {hit.value:.3f}).",
                    "Move the other way; the limits come from the rig file.",
                )
        self._position_limited = set(limited)

    def _on_read_failure(self, exc: Exception) -> None:
        self._read_failures += 1
        if self._read_failures == 1:
            log.exception("rig.read failed")
            self._emit(
                Severity.ERROR,
                "rig_read",
                f"Reading the rig {self._rig.name!r} failed: {exc}",
                "The loop keeps trying each tick and holds. Check the arm's power and USB cable.",
            )
        if self._mode in DRIVING_MODES:
            self._enter_mode(Mode.HOLD)

    def _call_subscriber(self, callback: Subscriber, record: TickRecord) -> None:
        try:
            callback(record)
        except Exception as exc:
            key = id(callback)
            count, last_report_s = self._subscriber_failures.get(key, (0, -math.inf))
            count += 1
            now = time.monotonic()
            with self._lock:
                self._subscriber_errors += 1
            # Report the first failure and then at most every 5 s, so a broken subscriber does
            # not flood the event list (or the log) at 50 Hz.
            if now - last_report_s >= 5.0:
                name = getattr(callback, "__qualname__", repr(callback))
                log.error("subscriber %s failed (%d times):\n%s", name, count, traceback.format_exc())
                self._emit(
                    Severity.ERROR,
                    "subscriber_error",
                    f"A tick subscriber ({name}) failed {count} time(s): {type(exc).__name__}: {exc}",
                    "The arm is unaffected. If a recording is running, stop it and check its events.",
                )
                last_report_s = now
            self._subscriber_failures[key] = (count, last_report_s)

    # ------------------------------------------------------------------ events

    def _emit(self, severity: Severity, code: str, message: str, what_to_do: str = "") -> LoopEvent:
        logging_level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING, Severity.ERROR: logging.ERROR}
        log.log(logging_level[severity], "%s%s", message, f" ({what_to_do})" if what_to_do else "")
        with self._lock:
            self._event_seq += 1
            event = LoopEvent(self._event_seq, time.monotonic(), severity, code, message, what_to_do, self._index)
            self._events.append(event)
            listeners = self._event_listeners
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not stop the loop; the log has it
                log.exception("event listener %r failed", listener)
        return event
