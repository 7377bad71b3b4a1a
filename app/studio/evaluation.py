"""Evaluating a policy on the simulated towel task: rollouts through a rig session (the studio's
own loop, safety filter and writer), and the statistics of an evaluation (Wilson interval,
latency percentiles). `run.py eval` (app/studio/jobs/evaluate.py) is the command line over it.

A rollout resets the towel to a seed, puts the policy in charge through a fresh control loop and
runs it in one of two ways:

- stepped (`real_time=False`): the loop is stepped tick by tick with `ControlLoop.tick_once()`,
  without pacing; simulated time (and so the rollout) is what it would be in real time and the
  evaluation runs as fast as the CPU allows. The policy runner's simulated delay
  (`model.runner.RunnerConfig.delay_ms`) decides when each chunk acts, so a rollout under an
  inference delay is the same on any machine.
- real time (`real_time=True`): the loop's own thread paces the sim at the control rate, the
  cameras render on their thread and the policy runs on its thread: exactly the studio's path.

An episode succeeds as soon as the rig's task measure says so (checked every `check_ticks`, on
the thread that steps the rig) and fails when `max_ticks` pass first.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from app.studio.session import Session
from recordings.schema import Label
from robot.types import ActionSource, Mode, Severity


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a success rate (default 95%). (0, 1) for zero trials.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/n and n/n, which
    is where small robot evaluations often land.
    """
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def latency_summary(seconds: Sequence[float]) -> dict:
    """{"n", "p50_ms", "p95_ms", "p99_ms", "max_ms"} of a list of durations in seconds: the tail
    (p99, max) is what stalls an arm, so it is reported with the median."""
    if not len(seconds):
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p95, p99 = np.percentile(ms, (50, 95, 99))
    return {"n": int(ms.size), "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "max_ms": round(float(ms.max()), 2)}




@dataclass
class EvalTally:
    """Running totals of an evaluation: outcomes, and per chunk the inference time and the time
    from the observation to the chunk's first command (seconds)."""

    successes: int = 0
    episodes: int = 0
    fold_errors_m: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    obs_to_command_s: list[float] = field(default_factory=list)

    def add(self, success: bool, fold_error_m: float, latencies_s: Sequence[float],
            obs_to_command_s: Sequence[float] = ()) -> None:
        self.episodes += 1
        self.successes += int(bool(success))
        self.fold_errors_m.append(float(fold_error_m))
        self.latencies_s.extend(latencies_s)
        self.obs_to_command_s.extend(obs_to_command_s)

    def summary(self) -> dict:
        lo, hi = wilson_interval(self.successes, self.episodes)
        errors = np.asarray(self.fold_errors_m, dtype=np.float64)
        return {
            "episodes": self.episodes,
            "successes": self.successes,
            "success_rate": round(self.successes / self.episodes, 4) if self.episodes else None,
            "success_ci95": [round(lo, 4), round(hi, 4)],
            "fold_error_m_mean": round(float(errors.mean()), 4) if errors.size else None,
            "fold_error_m_median": round(float(np.median(errors)), 4) if errors.size else None,
            "latency": latency_summary(self.latencies_s),
            "obs_to_command": latency_summary(self.obs_to_command_s),
        }


@dataclass(frozen=True)
class RolloutSettings:
    """max_ticks: ticks before a rollout counts as failed; check_ticks: ticks between task checks;
    checkpoint: named in the saved episodes' notes; real_time: pace the loop on its own thread
    (the studio's path) instead of stepping it."""

    max_ticks: int
    check_ticks: int
    checkpoint: Path
    real_time: bool = False


class _TaskWatch:
    """Counts ticks and measures the task every `check_ticks` on the thread that steps the rig
    (a loop subscriber in real time: the measure reads the simulation the control thread owns)."""

    def __init__(self, rig, settings: RolloutSettings) -> None:
        self.rig = rig
        self.settings = settings
        self.ticks = 0
        self.success = False
        self.done = threading.Event()

    def on_tick(self, record=None) -> None:
        if self.done.is_set():
            return
        self.ticks += 1
        if self.ticks % self.settings.check_ticks == 0 and self.rig.evaluate_task().success:
            self.success = True
            self.done.set()
        elif self.ticks >= self.settings.max_ticks:
            self.done.set()


def rollout(session: Session, source: ActionSource, seed: int, settings: RolloutSettings) -> dict:
    """One rollout of `source` from towel seed `seed` on `session` (a simulated, Resettable,
    EvaluatesTask rig); recorded when the session has a writer. Returns the episode's line."""
    rig, writer = session.rig, session.writer
    t0 = time.monotonic()
    rig.reset_episode(seed)
    # A fresh loop per rollout: its hold pose starts from the reset arm, not from where the
    # previous rollout left the commands (which would yank the arm back there).
    loop = session.new_loop()
    loop.set_source(source)
    loop.request_mode(Mode.POLICY)
    if writer is not None:
        writer.start(session.metadata(rig.task_name, "policy", notes=f"eval seed={seed}; checkpoint={settings.checkpoint}"))
    watch = _TaskWatch(rig, settings)
    if settings.real_time:
        unsubscribe = loop.subscribe(watch.on_tick)
        loop.start()
        # Generous: a loaded machine runs the sim slower than real time, and it must still finish.
        watch.done.wait(timeout=10.0 + 5.0 * settings.max_ticks / rig.control_rate_hz)
        loop.request_mode(Mode.HOLD)
        time.sleep(3.0 / rig.control_rate_hz)  # the HOLD tick is recorded as the last step
        loop.stop()
        unsubscribe()
    else:
        while not watch.done.is_set():
            loop.tick_once()
            watch.on_tick()
            if writer is not None:
                while writer.status().queue_depth > writer.config.queue_size // 2:
                    time.sleep(0.002)  # unpaced ticks can outrun JPEG encoding; never drop a frame
        loop.request_mode(Mode.HOLD)
        loop.tick_once()  # applies HOLD (and is recorded as the last step)
    result = rig.evaluate_task()
    success = watch.success
    errors = [e for e in loop.events_since(-1) if e.severity is Severity.ERROR]
    loop.set_source(None)
    saved = None
    if writer is not None:
        saved = str(writer.stop(Label.SUCCESS if success else Label.FAILURE,
                                notes=f"eval seed={seed}; fold_error_m={result.fold_error_m:.4f}; checkpoint={settings.checkpoint}"))
    return {
        "seed": seed, "success": success, "fold_error_m": round(result.fold_error_m, 4),
        "corner_distances_m": [round(d, 4) for d in result.corner_distances_m], "ticks": watch.ticks,
        "sim_s": round(watch.ticks / rig.control_rate_hz, 2), "wall_s": round(time.monotonic() - t0, 2),
        "policy_errors": [e.message for e in errors][:3], "saved": saved,
    }
