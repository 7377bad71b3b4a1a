"""Policy evaluation pieces that need no robot driver: chunked execution of a policy as an
action source, and the statistics of an evaluation (Wilson interval, latency percentiles).

The simulated evaluation loop itself (SimRig, ControlLoop, recording) lives in `app/evaluate.py`,
because `model` may not import the robot's drivers or the sim.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from robot.types import ControlSource, Observation

log = logging.getLogger(__name__)


def set_cpu_threads(threads: int) -> None:
    """torch's intra-op CPU threads (the app may not import torch itself). On a busy 2-core
    machine one thread is faster than two: spinning OpenMP workers wait on each other."""
    import torch

    torch.set_num_threads(int(threads))


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


class ChunkedPolicySource:
    """A chunk policy as an `ActionSource` (robot.types), executed synchronously: predict a chunk
    of H actions, execute the first `execute` of them, then re-plan from the observation of that
    tick. For headless evaluation, where the simulation waits for the policy; the studio's policy
    thread produces chunks ahead of need instead.

    `ensemble=True` is ACT's temporal ensembling: a chunk is still predicted every `execute`
    ticks, but each tick's action is the weighted mean of what every chunk still covering that
    tick planned for it, weight exp(-ensemble_decay * i) with i = 0 for the oldest plan. Plans
    re-made from states the demonstrations never visited then nudge the action instead of
    replacing it.

    Control thread only. `latencies_s` collects the duration of every `predict_chunk` call.
    """

    kind = ControlSource.POLICY

    def __init__(self, policy, execute: int, name: str = "policy", ensemble: bool = False,
                 ensemble_decay: float = 0.01):
        horizon = policy.config.action_horizon
        if not 1 <= execute <= horizon:
            raise ValueError(f"execute must be within 1 and the action horizon {horizon}, got {execute}")
        if not (math.isfinite(ensemble_decay) and ensemble_decay >= 0):
            raise ValueError(f"ensemble_decay must be a finite number >= 0 (e.g. 0.01), got {ensemble_decay}")
        self.name = name
        self.policy = policy
        self.execute = execute
        self.horizon = horizon
        self.ensemble = ensemble
        self.ensemble_decay = ensemble_decay
        self.latencies_s: list[float] = []
        self.chunks = 0
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._plans: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # (first tick, chunk)
        self._tick = 0

    @property
    def finished(self) -> bool:
        return False

    def start(self, observation: Observation) -> None:
        self._queue.clear()
        self._plans.clear()
        self._tick = 0
        self.policy.reset()

    def _predict(self, observation) -> np.ndarray:
        started = time.perf_counter()
        chunk = self.policy.predict_chunk(observation)
        self.latencies_s.append(time.perf_counter() - started)
        self.chunks += 1
        return chunk

    def next_action(self, observation: Observation) -> np.ndarray | None:
        if not self.ensemble:
            if not self._queue:
                self._queue.extend(self._predict(observation)[: self.execute])
            return self._queue.popleft()
        tick = self._tick
        self._tick += 1
        if tick % self.execute == 0:
            self._plans.append((tick, self._predict(observation)))
        while self._plans and tick - self._plans[0][0] >= self.horizon:
            self._plans.popleft()
        actions = np.stack([chunk[tick - first] for first, chunk in self._plans])
        weights = np.exp(-self.ensemble_decay * np.arange(len(actions)))
        return (weights[:, None] * actions).sum(axis=0) / weights.sum()

    def stop(self) -> None:
        self._queue.clear()
        self._plans.clear()


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
