"""Executing a chunk policy in the control loop: `ChunkedPolicySource` turns predicted chunks of H
actions into one action per tick (plain chunks, or ACT's temporal ensembling), synchronously.

`run.py eval` (app/studio/jobs/evaluate.py) drives it on the simulated rig.
"""

from __future__ import annotations

import collections
import logging
import math
import time

import numpy as np

from robot.types import ControlSource, Observation

log = logging.getLogger(__name__)


def set_cpu_threads(threads: int) -> None:
    """torch's intra-op CPU threads (the app may not import torch itself). On a busy 2-core
    machine one thread is faster than two: spinning OpenMP workers wait on each other."""
    import torch

    torch.set_num_threads(int(threads))


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
