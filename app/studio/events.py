"""Events the studio shows the user: what happened, and what to do about it. No Qt here.

Everything that goes wrong below the window (a loop fault, a recorder error, a rig message)
becomes one `StudioEvent` in the bridge's `EventLog`; the GUI thread reads copies.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


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
