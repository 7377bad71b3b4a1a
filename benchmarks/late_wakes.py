"""Why the control thread woke late: CPU starvation or another thread of its own process.

`LateWakeProbe` is a control-loop subscriber (it runs on the control thread, after the tick's
work). For every tick it knows how late the thread woke (from the tick's period and the previous
tick's lateness: the loop re-bases its schedule after a late wake, so the recorded jitter alone
would hide the large ones) and how long the thread sat runnable in the kernel's run queue since
the previous tick (`/proc/self/task/<tid>/schedstat`, second field, in ns). Split of a late wake:

- starvation: the part spent runnable without a CPU (other processes or our own threads had the
  cores); no change inside our process can remove it, only priority (SCHED_FIFO) or a free core;
- in-process: the rest, the thread had a CPU but waited for the interpreter lock (GIL), held by
  another thread of the same process (plus ~0.1 ms of timer slack).

For a late wake with an in-process part, the probe samples where every other thread of the
process is (`sys._current_frames()`) and how much CPU each used since the previous tick (their
schedstat run time), and attributes the in-process milliseconds to causes (h5py writes, JPEG
encoding, Qt painting, MuJoCo rendering, camera threads, logging, the policy's Python work, ...)
in proportion to that CPU time (Python threads only: a native thread cannot hold the lock). A thread running GIL-free C code (OpenCV's encoder, MuJoCo's
renderer) also uses CPU without holding the lock, so the table is an upper bound per cause
(`py-spy record --gil`, where it installs, measures the lock holders alone).

Cost: two `pread`s per tick on the control thread; with `sample_threads` one per thread of the
process per tick (~5 us each), so the probe is for diagnosis runs, not for the headline numbers.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from robot.types import TickRecord

#: Late wakes below this are timer noise, not worth explaining (ms).
LATE_THRESHOLD_MS = 1.0

#: (cause, words in a thread's name or its stack). The first match wins, so the specific come
#: first; a thread nothing matches is "other: <thread name>".
CAUSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("recorder link (writer process status)", ("episode-writer-link",)),
    ("JPEG encoding", ("encode_jpeg", "imencode")),
    ("h5py writes", ("h5py", "_commit", "_append", "_finalise", "episode-writer")),
    ("logging", ("logging/__init__",)),
    ("policy Python work", ("busy-policy", "model/runner", "model/policy")),
    ("window painting (Qt, pyqtgraph)", ("pyqtgraph", "PySide6", "app/ui")),
    ("MuJoCo rendering", ("sim-cameras", "camera_render_thread", "mujoco")),
    ("camera threads", ("camera-", "emulated-realsense", "robot/cameras")),
    ("servo bus (emulator)", ("dxl-emulator", "torque-watchdog", "dynamixel")),
    ("studio monitor", ("studio-monitor", "app/studio/monitor")),
    ("main thread (benchmark driver)", ("MainThread",)),
)


def cause_of(thread_name: str, stack_text: str) -> str:
    """The cause a thread's work falls under, from its name and a text of its stack."""
    text = f"{thread_name}\n{stack_text}"
    for cause, words in CAUSES:
        if any(word in text for word in words):
            return cause
    return f"other: {thread_name}"


def _read_schedstat(fd: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable in the run queue) of one thread."""
    fields = os.pread(fd, 64, 0).split()
    return int(fields[0]), int(fields[1])


@dataclass
class LateWake:
    """One late wake: lateness, its starvation and in-process parts (ms), and the in-process
    part split over causes (ms)."""

    tick: int
    late_ms: float
    starvation_ms: float
    in_process_ms: float
    causes_ms: dict[str, float] = field(default_factory=dict)
    process_cpu_ms: float = 0.0  # CPU our other threads used over the tick's window
    # The longest any other Python thread of ours sat runnable without a CPU over the tick's
    # window: a lock holder the kernel took off the CPU keeps the lock until it runs again, so an
    # in-process wait up to this long is CPU starvation passed on through the lock.
    holder_queued_ms: float = 0.0


@dataclass
class TickWork:
    """Where one tick's work time (read .. command, ms) went: on a CPU, runnable without one
    (starved), or off the CPU for another reason (waiting for the GIL or for a device)."""

    work_ms: float
    cpu_ms: float
    starved_ms: float
    other_ms: float


class LateWakeProbe:
    """Control-loop subscriber explaining late wakes; see the module docstring.

    period_s: the loop's period. sample_threads: also read every thread's CPU time each tick
    and sample stacks at late wakes (needed for the per-cause table). gui_thread: the main thread
    runs Qt's event loop (the window paints from it, Python called back from C++). Read
    `summary()` after the loop stopped.
    """

    def __init__(self, period_s: float, sample_threads: bool = True, threshold_ms: float = LATE_THRESHOLD_MS,
                 gui_thread: bool = False) -> None:
        self.period_s = period_s
        self.gui_thread = gui_thread
        self.sample_threads = sample_threads
        self.threshold_ms = threshold_ms
        self.wakes: list[LateWake] = []
        self.work: list[TickWork] = []
        self.lateness_ms: list[float] = []  # every tick's wake lateness (ms), overruns left out
        self.ticks = 0
        self._own_fd: int | None = None
        self._own_tid = 0
        self._prev_wait_ns = 0
        self._prev_run_ns = 0
        self._prev_now_s = 0.0
        self._prev_jitter_s = 0.0
        self._prev_busy_s = 0.0
        self._thread_fds: dict[int, int] = {}
        self._thread_cpu_ns: dict[int, int] = {}
        self._thread_wait_ns: dict[int, int] = {}
        self._queued_ns: dict[int, int] = {}  # run-queue ns of each other thread since the previous call
        self._names: dict[int, str] = {}
        self._names_age = 0

    # ---- control thread
    def __call__(self, record: TickRecord) -> None:
        timings = record.timings
        if self._own_fd is None:
            self._own_tid = threading.get_native_id()
            self._own_fd = os.open(f"/proc/self/task/{self._own_tid}/schedstat", os.O_RDONLY)
            self._prev_run_ns, self._prev_wait_ns = _read_schedstat(self._own_fd)
            self._prev_now_s = time.monotonic()
            self._prev_jitter_s = timings.jitter_s
            self._prev_busy_s = timings.total_s
            if self.sample_threads:
                self._thread_cpu(refresh=True)
            return
        self.ticks += 1
        now_s = time.monotonic()
        run_ns, wait_ns = _read_schedstat(self._own_fd)
        waited_ms = (wait_ns - self._prev_wait_ns) / 1e6
        ran_ms = (run_ns - self._prev_run_ns) / 1e6
        cycle_ms = (now_s - self._prev_now_s) * 1e3
        self._prev_run_ns, self._prev_wait_ns, self._prev_now_s = run_ns, wait_ns, now_s
        cpu = self._thread_cpu(refresh=self._names_age >= 50) if self.sample_threads else {}
        # The wake's lateness: this period beyond the target, plus how late the previous tick
        # was (its deadline, not its start, paced this one). After an overrun the loop re-based
        # on the overrunning tick's end, which this cannot see: skip those.
        late_ms = (timings.period_s - self.period_s + self._prev_jitter_s) * 1e3
        overran = self._prev_busy_s > 0.5 * self.period_s
        self._prev_jitter_s, self._prev_busy_s = timings.jitter_s, timings.total_s
        # After an overrun there was no sleep: all run-queue time since then is the work's.
        starvation = 0.0 if overran else min(max(late_ms, 0.0), waited_ms)
        if timings.period_s > 0:
            # From the previous publish to this one: asleep until the deadline, then the late
            # wake, then the work. Off-CPU time beyond the sleep and the starvation is GIL or I/O.
            work_ms = timings.total_s * 1e3
            work_cpu = min(work_ms, ran_ms)
            work_starved = min(work_ms - work_cpu, max(0.0, waited_ms - starvation))
            self.work.append(TickWork(work_ms, work_cpu, work_starved, max(0.0, work_ms - work_cpu - work_starved)))
        del cycle_ms
        if not overran and timings.period_s > 0:
            self.lateness_ms.append(late_ms)
        if overran or late_ms < self.threshold_ms or timings.period_s <= 0:
            return
        wake = LateWake(record.index, late_ms, starvation, late_ms - starvation)
        if self.sample_threads:
            wake.process_cpu_ms = sum(cpu.values()) / 1e6
            wake.holder_queued_ms = max((ns for tid, ns in self._queued_ns.items()
                                         if not self._names.get(tid, "native:").startswith("native:")), default=0) / 1e6
            if wake.in_process_ms > 0.5 * self.threshold_ms:
                wake.causes_ms = self._attribute(wake.in_process_ms, cpu)
        self.wakes.append(wake)

    def _thread_cpu(self, refresh: bool) -> dict[int, int]:
        """ns of CPU each other thread of the process used since the previous call."""
        if refresh:
            self._names_age = 0
            tids = {int(t) for t in os.listdir("/proc/self/task")} - {self._own_tid}
            for tid in set(self._thread_fds) - tids:
                os.close(self._thread_fds.pop(tid))
                self._thread_cpu_ns.pop(tid, None)
            for tid in tids - set(self._thread_fds):
                try:
                    self._thread_fds[tid] = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
                except OSError:
                    continue
            python_names = {t.native_id: t.name for t in threading.enumerate()}
            for tid in self._thread_fds:
                self._names[tid] = python_names.get(tid) or _native_name(tid)
        self._names_age += 1
        used = {}
        for tid, fd in list(self._thread_fds.items()):
            try:
                run_ns, wait_ns = _read_schedstat(fd)
            except OSError:  # the thread ended
                os.close(self._thread_fds.pop(tid))
                continue
            previous = self._thread_cpu_ns.get(tid, run_ns)
            self._thread_cpu_ns[tid] = run_ns
            queued = wait_ns - self._thread_wait_ns.get(tid, wait_ns)
            self._thread_wait_ns[tid] = wait_ns
            self._queued_ns[tid] = queued
            if run_ns > previous:
                used[tid] = run_ns - previous
        return used

    def _attribute(self, in_process_ms: float, cpu: dict[int, int]) -> dict[str, float]:
        frames = sys._current_frames()
        by_native = {t.ident: t.native_id for t in threading.enumerate()}
        stacks = {by_native.get(ident): "".join(traceback.format_stack(frame, limit=12)) for ident, frame in frames.items()}
        # Only Python threads can hold the interpreter lock: a native thread (Mesa's llvmpipe
        # workers, Qt's pool) competes for a CPU, which is starvation, not an in-process wait.
        python_cpu = {tid: ns for tid, ns in cpu.items() if not self._names.get(tid, "native:").startswith("native:")}
        total = sum(python_cpu.values())
        causes: dict[str, float] = collections.defaultdict(float)
        if total <= 0:
            causes["unknown (no other thread ran)"] += in_process_ms
            return dict(causes)
        for tid, ns in python_cpu.items():
            name = self._names.get(tid, str(tid))
            cause = cause_of(name, stacks.get(tid, ""))
            if self.gui_thread and name == "MainThread":
                cause = "window painting (Qt, pyqtgraph)"
            causes[cause] += in_process_ms * ns / total
        return dict(causes)

    # ---- after the run
    def summary(self) -> dict:
        """Counts and milliseconds of late wakes, split into starvation and in-process, and the
        in-process milliseconds per cause (largest first)."""
        wakes = self.wakes
        causes: dict[str, float] = collections.defaultdict(float)
        cause_wakes: dict[str, int] = collections.defaultdict(int)
        for wake in wakes:
            for cause, ms in wake.causes_ms.items():
                causes[cause] += ms
                if ms >= 0.1:
                    cause_wakes[cause] += 1
        mostly_starved = sum(1 for w in wakes if w.starvation_ms >= 0.5 * w.late_ms)
        in_process_wakes = [w for w in wakes if w.in_process_ms >= self.threshold_ms]
        return {
            "ticks": self.ticks,
            "late_wakes": len(wakes),
            "wake_late_ms": {"p50": _percentile(self.lateness_ms, 50), "p99": _percentile(self.lateness_ms, 99),
                             "max": round(max(self.lateness_ms, default=0.0), 2)},
            "late_ms_total": round(sum(w.late_ms for w in wakes), 1),
            "starvation_ms_total": round(sum(w.starvation_ms for w in wakes), 1),
            "in_process_ms_total": round(sum(w.in_process_ms for w in wakes), 1),
            "late_wakes_mostly_starvation": mostly_starved,
            "late_wakes_in_process_over_threshold": len(in_process_wakes),
            # In-process waits no longer than another Python thread's time without a CPU: the
            # lock's holder was starved (priority inversion), not busy.
            "in_process_wakes_holder_starved": sum(1 for w in in_process_wakes if w.holder_queued_ms >= w.in_process_ms),
            "in_process_ms_holder_starved": round(sum(min(w.in_process_ms, w.holder_queued_ms) for w in in_process_wakes), 1),
            "in_process_ms_p99_of_late": _percentile([w.in_process_ms for w in wakes], 99),
            "starvation_ms_p99_of_late": _percentile([w.starvation_ms for w in wakes], 99),
            "causes_in_process_ms": {k: round(v, 1) for k, v in sorted(causes.items(), key=lambda kv: -kv[1])},
            "causes_late_wakes": dict(sorted(cause_wakes.items(), key=lambda kv: -kv[1])),
            "work_ms": {part: _spread([getattr(w, part) for w in self.work]) for part in ("work_ms", "cpu_ms", "starved_ms", "other_ms")},
        }

    def close(self) -> None:
        for fd in [self._own_fd, *self._thread_fds.values()]:
            if fd is not None:
                os.close(fd)
        self._own_fd, self._thread_fds = None, {}


def _native_name(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as comm:
            return "native:" + comm.read().strip()
    except OSError:
        return f"native:{tid}"


def _spread(values: list[float]) -> dict[str, float]:
    return {"p50": _percentile(values, 50), "p99": _percentile(values, 99), "total": round(sum(values), 1)}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 2)
