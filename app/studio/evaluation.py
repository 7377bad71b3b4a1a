"""Evaluating a policy on the simulated towel task: rollouts through a rig session (the studio's
own loop, safety filter and writer), and the statistics of an evaluation (Wilson interval,
latency percentiles). `run.py eval` (app/studio/jobs/evaluate.py) is the command line over it.

A rollout resets the towel to a seed, puts the policy in charge through a fresh control loop and
steps it tick by tick with `ControlLoop.tick_once()`, without real-time pacing: simulated time
(and so the rollout) is what it would be in real time, and evaluation runs as fast as the CPU
allows. The policy runs synchronously, so its latency cannot change the rollout; it is measured.
An episode succeeds as soon as the rig's task measure says so (checked every `check_ticks`) and
fails when `max_ticks` pass first.
"""

from __future__ import annotations

import math
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
    """{"n", "p50_ms", "p95_ms", "max_ms"} of a list of durations in seconds."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "max_ms": round(float(ms.max()), 2)}




@dataclass
class EvalTally:
    """Running totals of an evaluation."""

    successes: int = 0
    episodes: int = 0
    fold_errors_m: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    def add(self, success: bool, fold_error_m: float, latencies_s: Sequence[float]) -> None:
        self.episodes += 1
        self.successes += int(bool(success))
        self.fold_errors_m.append(float(fold_error_m))
        self.latencies_s.extend(latencies_s)

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
        }


@dataclass(frozen=True)
class RolloutSettings:
    """max_ticks: ticks before a rollout counts as failed; check_ticks: ticks between task checks;
    checkpoint: named in the saved episodes' notes."""

    max_ticks: int
    check_ticks: int
    checkpoint: Path


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
    success = False
    ticks = 0
    while ticks < settings.max_ticks:
        loop.tick_once()
        ticks += 1
        if writer is not None:
            while writer.status().queue_depth > writer.config.queue_size // 2:
                time.sleep(0.002)  # unpaced ticks can outrun JPEG encoding; never drop a frame
        if ticks % settings.check_ticks == 0 and rig.evaluate_task().success:
            success = True
            break
    result = rig.evaluate_task()
    errors = [e for e in loop.events_since(-1) if e.severity is Severity.ERROR]
    loop.request_mode(Mode.HOLD)
    loop.tick_once()  # applies HOLD (and is recorded as the last step)
    loop.set_source(None)
    saved = None
    if writer is not None:
        saved = str(writer.stop(Label.SUCCESS if success else Label.FAILURE,
                                notes=f"eval seed={seed}; fold_error_m={result.fold_error_m:.4f}; checkpoint={settings.checkpoint}"))
    return {
        "seed": seed, "success": success, "fold_error_m": round(result.fold_error_m, 4),
        "corner_distances_m": [round(d, 4) for d in result.corner_distances_m], "ticks": ticks,
        "sim_s": round(ticks / rig.control_rate_hz, 2), "wall_s": round(time.monotonic() - t0, 2),
        "policy_errors": [e.message for e in errors][:3], "saved": saved,
    }
