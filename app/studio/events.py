"""Events the studio shows the user: what happened, and what to do about it. No Qt here.

The one channel from the core to the window: the control loop's events (pushed by its event
listener, on the control thread), the recorder's problems and the rig's messages (turned into
events by the monitor thread when they appear), and the studio's own answers to requests all
become `StudioEvent`s in the studio's `EventLog`, on the one severity scale of `robot.types`.
The window reads copies (`since(event_id)`, or the recent ones a snapshot carries).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from robot.types import Severity

__all__ = ["EventLog", "Severity", "StudioEvent"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudioEvent:
    """One thing the user should know. `what_to_do` is empty only for plain information."""

    event_id: int
    severity: Severity
    origin: str  # "loop", "recorder", "rig", "studio"
    message: str
    what_to_do: str = ""
    wall_time: float = field(default_factory=time.time)  # for the clock shown next to the event

    @property
    def clock(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.wall_time))


class EventLog:
    """Thread-safe, bounded, append-only log of events with increasing ids."""

    def __init__(self, max_events: int = 500) -> None:
        self._events: deque[StudioEvent] = deque(maxlen=max_events)
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def add(self, severity: Severity, origin: str, message: str, what_to_do: str = "") -> StudioEvent:
        with self._lock:
            event = StudioEvent(next(self._ids), severity, origin, message, what_to_do)
            self._events.append(event)
        level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING, Severity.ERROR: logging.ERROR}
        log.log(level[severity], "%s: %s%s", origin, message, f" ({what_to_do})" if what_to_do else "")
        return event

    def since(self, event_id: int) -> tuple[StudioEvent, ...]:
        """Events with an id above `event_id`, oldest first."""
        with self._lock:
            return tuple(e for e in self._events if e.event_id > event_id)

    def all(self) -> tuple[StudioEvent, ...]:
        with self._lock:
            return tuple(self._events)

    def recent(self, count: int) -> tuple[StudioEvent, ...]:
        """The newest `count` events, oldest first (what a snapshot carries)."""
        with self._lock:
            n = len(self._events)
            return tuple(self._events[i] for i in range(max(0, n - count), n))
