"""A fixed-size history of control ticks for the plots: what was commanded, what was measured, how
long each tick took.

Written on the control thread (`on_tick`, a control-loop subscriber), read on the GUI thread
(`window(...)`). No Qt here: the bridge owns it and the window only reads copies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from robot.types import STATE_DIM, TickRecord


@dataclass(frozen=True)
class HistoryWindow:
    """A copy of the most recent ticks, oldest first.

    time_s: (N,) seconds relative to the newest tick (so <= 0, the newest is 0).
    commanded: (N, 14) actions after the safety filter; measured: (N, 14) observed qpos.
    period_ms, jitter_ms: (N,) control timing of each tick.
    """

    time_s: np.ndarray
    commanded: np.ndarray
    measured: np.ndarray
    period_ms: np.ndarray
    jitter_ms: np.ndarray

    @property
    def length(self) -> int:
        return int(self.time_s.shape[0])


class TickHistory:
    """Ring buffer of the last `capacity` ticks. `on_tick` costs a few array writes under a lock,
    so it is safe to subscribe on the control thread.
    """

    def __init__(self, capacity: int = 750) -> None:
        if capacity < 2:
            raise ValueError(f"TickHistory needs capacity >= 2 ticks, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._time_s = np.zeros(capacity, dtype=np.float64)
        self._commanded = np.zeros((capacity, STATE_DIM), dtype=np.float32)
        self._measured = np.zeros((capacity, STATE_DIM), dtype=np.float32)
        self._period_ms = np.zeros(capacity, dtype=np.float32)
        self._jitter_ms = np.zeros(capacity, dtype=np.float32)
        self._count = 0  # ticks ever written; the write slot is count % capacity
        #: The newest record as published (cameras and mode are painted from it). A plain
        #: attribute: assigning a reference is atomic, and records are immutable.
        self.latest: TickRecord | None = None

    def on_tick(self, record: TickRecord) -> None:
        """Control-loop subscriber (control thread)."""
        # Plot against simulated time on a sim rig so the x axis shows what the arm did, not how
        # fast the host rendered; on hardware the host clock is the truth.
        t = record.sim_time_s if record.sim_time_s is not None else record.observation.time_s
        with self._lock:
            i = self._count % self.capacity
            self._time_s[i] = t
            self._commanded[i] = record.action
            self._measured[i] = record.observation.qpos
            self._period_ms[i] = record.timings.period_s * 1e3
            self._jitter_ms[i] = record.timings.jitter_s * 1e3
            self._count += 1
        self.latest = record

    def clear(self) -> None:
        with self._lock:
            self._count = 0
        self.latest = None

    @property
    def count(self) -> int:
        """Ticks written since the last clear (GUI uses it to skip repaints when nothing is new)."""
        return self._count

    def window(self, span_s: float | None = None) -> HistoryWindow:
        """Copy of the newest ticks, at most `span_s` seconds back (all kept ticks if None)."""
        with self._lock:
            n = min(self._count, self.capacity)
            end = self._count % self.capacity
            order = np.arange(end - n, end) % self.capacity
            t = self._time_s[order]
            commanded = self._commanded[order]
            measured = self._measured[order]
            period = self._period_ms[order]
            jitter = self._jitter_ms[order]
        if n:
            t = t - t[-1]
            if span_s is not None:
                keep = t >= -span_s
                t, commanded, measured = t[keep], commanded[keep], measured[keep]
                period, jitter = period[keep], jitter[keep]
        return HistoryWindow(t, commanded, measured, period, jitter)
