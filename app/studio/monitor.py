"""The monitor thread: what costs a system call or a computation, refreshed in the background so a
snapshot only copies it.

- 10 Hz: whether a Startable rig's arms have just started (one event) and the recorder's
  problems (as events).
- 4 Hz: the control loop's rate and timing statistics (percentiles over its window, ~2 ms).
- 1 Hz: free disk and episode count of the store, the rig's status, its messages (a message that
  appears becomes one event, by its key: live numbers in the text do not repeat it), the servo
  health of a ReportsHealth rig, and whether the control loop still runs.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Callable

from app.studio.events import EventLog, Severity
from app.studio.recording import RecordingControl
from app.studio.session import Session
from robot.capabilities import START_PROMPT_KEY, ReportsHealth, Startable
from robot.control_loop import LoopStats
from robot.dynamixel.health import HealthReport
from robot.types import RigStatus

log = logging.getLogger(__name__)

FAST_INTERVAL_S = 0.1  # the start prompt changes within a ceremony of a few seconds
STATS_INTERVAL_S = 0.25
SLOW_INTERVAL_S = 1.0
#: Below this much free space in the store the user is warned (a minute of 3 cameras at
#: 640x480 JPEG q90 is a few hundred MB).
LOW_DISK_BYTES = 1 * 1024**3


@dataclass(frozen=True)
class MonitorReadings:
    """The latest values of the monitor thread (one immutable object, replaced whole)."""

    disk_free_bytes: int | None = None
    episode_count: int | None = None
    rig_status: RigStatus | None = None
    loop_stats: LoopStats | None = None
    started: bool = False
    health: tuple[HealthReport, ...] = ()


class RigMonitor:
    """One daemon thread over a session. `loop_expected()` (any thread) says whether the control
    loop should be running now (not while the studio opens, resets or closes); `on_started` is
    called on this thread when a Startable rig reports its arms started."""

    def __init__(self, session: Session, events: EventLog, recording: RecordingControl | None,
                 loop_expected: Callable[[], bool], on_started: Callable[[], None] = lambda: None) -> None:
        self.session = session
        self.events = events
        self.recording = recording
        self._loop_expected = loop_expected
        self._on_started = on_started
        self._lock = threading.Lock()
        self._readings = MonitorReadings()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._messages_present: set[str] = set()
        self._low_disk_warned = False
        self._loop_dead_reported = False

    @property
    def readings(self) -> MonitorReadings:
        with self._lock:
            return self._readings

    def refresh_loop_stats(self) -> None:
        """Read the loop's statistics now (any thread; after a request the caller waits on)."""
        stats = self.session.loop.snapshot(max_events=0).stats
        self._update(loop_stats=stats)

    def start(self) -> None:
        self.refresh_slow()
        self._thread = threading.Thread(target=self._run, name="studio-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _update(self, **changes) -> None:
        with self._lock:
            self._readings = dataclasses.replace(self._readings, **changes)

    def _run(self) -> None:
        next_stats_s = next_slow_s = 0.0
        while not self._stop.wait(FAST_INTERVAL_S):
            try:
                self._refresh_arms()
                if self.recording is not None:
                    self.recording.check_writer()
                now = time.monotonic()
                if now >= next_stats_s:
                    next_stats_s = now + STATS_INTERVAL_S
                    self.refresh_loop_stats()
                if now >= next_slow_s:
                    next_slow_s = now + SLOW_INTERVAL_S
                    self.refresh_slow()
            except Exception:  # the monitor must outlive a broken reading; the log has it
                log.exception("studio monitor")

    def _refresh_arms(self) -> None:
        rig = self.session.rig
        if not isinstance(rig, Startable):
            return
        started = rig.started
        was_started = self.readings.started
        self._update(started=started)
        if started and not was_started:
            self._on_started()

    def refresh_slow(self) -> None:
        self._refresh_store()
        rig = self.session.rig
        if isinstance(rig, ReportsHealth):
            reports = rig.health_reports()
            order = {name: k for k, name in enumerate(rig.health_arm_ids)}
            self._update(health=tuple(sorted(reports.values(), key=lambda r: order.get(r.arm_id, len(order)))))
        try:
            status = rig.status()
        except Exception as exc:
            log.exception("rig.status failed")
            status = None
            self.events.add(Severity.WARNING, "rig", f"The rig's status is unavailable: {exc}")
        self._update(rig_status=status)
        if status is not None:
            self._report_messages(status)
        self._check_loop()

    def _report_messages(self, status: RigStatus) -> None:
        # One event when a message appears, and again only after it went away. The start prompt
        # has its own place in the window (the arms panel).
        present = set()
        for message in status.messages:
            present.add(message.key)
            if message.key not in self._messages_present and message.key != START_PROMPT_KEY:
                self.events.add(message.severity, "rig", message.text)
        self._messages_present = present

    def _refresh_store(self) -> None:
        store = self.session.store
        if store is None:
            return
        try:
            free = shutil.disk_usage(store.root).free
            count = len(store.episode_paths())
        except OSError as exc:
            free, count = None, None
            log.warning("episode store %s unreadable: %s", store.root, exc)
        self._update(disk_free_bytes=free, episode_count=count)
        if free is None:
            return
        warn = free < LOW_DISK_BYTES and not self._low_disk_warned
        # Warn again only after the space has come back (hysteresis of 2x).
        self._low_disk_warned = free < LOW_DISK_BYTES or (self._low_disk_warned and free < 2 * LOW_DISK_BYTES)
        if warn:
            self.events.add(Severity.WARNING, "recorder",
                            f"Only {free / 1024**3:.1f} GB free where episodes are saved ({store.root}).",
                            "Free some space or choose another store (--store DIR): a recording stops when the disk is full.")

    def _check_loop(self) -> None:
        if self._loop_dead_reported or self.session.loop.running or not self._loop_expected():
            return
        self._loop_dead_reported = True
        self.events.add(Severity.ERROR, "loop", "The control loop is not running.",
                        "Save your work and restart the studio; report the log file.")
