"""Executing action chunks: three strategies over one tick-indexed schedule (numpy only).

A chunk is planned from the observation of tick `first_tick`: `actions[i]` is meant for tick
`first_tick + i` (as in training, where action[t : t + H] goes with the state of step t). It
becomes usable at tick `start_tick >= first_tick` (the control loop went on while the policy
thought); its actions for the ticks in between are *skipped*, never executed late.

The strategies (`STRATEGIES`), each an `ExecutionStrategy`:

- `PlainChunks` ("plain"): a new chunk is asked for every `every` ticks (k); when it arrives it
  replaces the plan. With no delay this is "execute k of H, re-plan"; with a delay of d ticks each
  chunk executes its actions d .. d + k - 1 while the previous plan bridges the wait.
- `TemporalEnsemble` ("ensemble"): ACT's temporal ensembling. A chunk every `every` ticks; each
  tick's action is the weighted mean of every plan that covers it (and has arrived), weight
  exp(-decay * i) with i = 0 for the oldest plan. A re-plan from an unfamiliar state nudges the
  action instead of replacing it.
- `RealTimeChunking` ("rtc"): Black, Galliker and Levine (2025), "Real-Time Execution of Action
  Chunking Flow Policies". A chunk every `every` ticks (the execution horizon s); the new chunk is
  sampled *guided* towards the plan it replaces (`guide()`): the actions that will execute while it
  is computed (the expected delay d) are frozen to the current plan, the rest of the overlap is
  pulled towards it with exponentially decaying weight, nothing beyond. It then replaces the plan
  on arrival like plain chunks, but without a seam. The guided sampling is `model.rtc`.

Threads: a strategy belongs to the control thread (`model.runner.PolicyRunner.next_action`);
`guide()` is called there too, when a chunk is asked for, and its result handed to the policy
thread. Every method costs microseconds (arrays of H x 14).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STRATEGIES: tuple[str, ...] = ("plain", "ensemble", "rtc")

#: Ticks between chunks when ensembling: a chunk every 4 ticks (80 ms at 50 Hz) is what ACT does
#: and is within reach of the tiny preset on a CPU (a chunk takes about 20 ms).
ENSEMBLE_EVERY = 4
#: The paper's ceiling on the guidance weight (beta): larger values follow the previous plan more
#: tightly at the start of sampling, where the flow's estimate of the clean chunk is poor.
RTC_MAX_GUIDANCE = 5.0


@dataclass(frozen=True)
class Plan:
    """One chunk in the schedule. actions: (H, A) float32 in robot units; first_tick: the tick of
    the observation it was planned from (actions[0] is for that tick); start_tick: the first tick it
    may act on (earlier actions were skipped); index: the runner's chunk number."""

    actions: np.ndarray
    first_tick: int
    start_tick: int
    index: int

    @property
    def end_tick(self) -> int:
        """One past the last tick the plan covers."""
        return self.first_tick + len(self.actions)

    def covers(self, tick: int) -> bool:
        return self.start_tick <= tick < self.end_tick


@dataclass(frozen=True)
class Guide:
    """What RTC hands the sampler for the next chunk (all indexed like the new chunk).

    prefix: (H, A) robot units, the current plan's actions for the new chunk's ticks (zeros where it
    has none); weights: (H,) in [0, 1], 1 for the actions frozen during the expected delay, decaying
    over the rest of the overlap, 0 beyond it; delay_ticks: the expected delay d used for them;
    max_guidance: the ceiling beta on the guidance weight.
    """

    prefix: np.ndarray
    weights: np.ndarray
    delay_ticks: int
    max_guidance: float = RTC_MAX_GUIDANCE


class ExecutionStrategy:
    """The common schedule: when to ask for a chunk, how an arriving chunk is merged, the action of
    a tick. Subclasses decide `action()` and `_merge()`; see the module doc."""

    name = "plain"

    def __init__(self, horizon: int, every: int):
        if not (isinstance(horizon, int) and horizon >= 1):
            raise ValueError(f"the action horizon must be a positive number of actions, got {horizon!r}")
        if not (isinstance(every, int) and 1 <= every <= horizon):
            raise ValueError(f"{self.name}: ticks between chunks must be within 1 and the horizon {horizon}, got {every!r}")
        self.horizon = horizon
        self.every = every
        self.reset()

    def reset(self) -> None:
        self._plans: list[Plan] = []
        self._previous: Plan | None = None
        self._next_request_tick: int | None = None

    # -- asking -----------------------------------------------------------------------------------
    def wants_chunk(self, tick: int) -> bool:
        """Whether a chunk should be asked for at `tick` (the runner asks only when none is being
        computed, so a slow policy stretches the period instead of queueing requests)."""
        return self._next_request_tick is None or tick >= self._next_request_tick

    def note_request(self, tick: int) -> None:
        self._next_request_tick = tick + self.every

    def guide(self, first_tick: int, delay_ticks: int) -> Guide | None:
        """Guidance for a chunk planned from tick `first_tick` (None: sample freely)."""
        return None

    # -- merging ----------------------------------------------------------------------------------
    def accept(self, actions: np.ndarray, first_tick: int, tick: int, index: int) -> int:
        """A chunk planned from tick `first_tick` arrives at `tick`: merge it; returns how many of
        its actions were skipped because their tick had passed (all H: the chunk is dropped)."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[0] != self.horizon:
            raise ValueError(f"a chunk must be ({self.horizon}, A), got {actions.shape}")
        if tick < first_tick:
            raise ValueError(f"a chunk planned at tick {first_tick} cannot arrive before it, at tick {tick}")
        skipped = min(tick - first_tick, self.horizon)
        if skipped >= self.horizon:
            return self.horizon
        self._merge(Plan(actions, first_tick, tick, index))
        return skipped

    def _merge(self, plan: Plan) -> None:
        if self._plans:
            self._previous = self._plans[-1]
        self._plans = [plan]

    # -- acting -----------------------------------------------------------------------------------
    def action(self, tick: int) -> np.ndarray | None:
        """The action for `tick` (None: no plan covers it - the policy fell behind)."""
        plan = self._plans[-1] if self._plans else None
        if plan is None or not plan.covers(tick):
            return None
        return plan.actions[tick - plan.first_tick]

    def remaining(self, tick: int) -> int:
        """Actions planned from `tick` on (the queue depth)."""
        return max((max(0, plan.end_tick - max(tick, plan.start_tick)) for plan in self._plans), default=0)

    @property
    def current(self) -> Plan | None:
        """The newest plan (what the window draws ahead of the arm)."""
        return self._plans[-1] if self._plans else None

    @property
    def previous(self) -> Plan | None:
        """The plan the newest one replaced (drawn faded)."""
        return self._previous

    def settings(self) -> dict:
        """The strategy and its settings, for episode attributes and the status."""
        return {"strategy": self.name, "every": self.every, "horizon": self.horizon}


class PlainChunks(ExecutionStrategy):
    """Execute k of H, re-plan (see the module doc). `every` is k."""

    name = "plain"


class TemporalEnsemble(ExecutionStrategy):
    """ACT's temporal ensembling (see the module doc)."""

    name = "ensemble"

    def __init__(self, horizon: int, every: int = ENSEMBLE_EVERY, decay: float = 0.01):
        if not (isinstance(decay, (int, float)) and math.isfinite(decay) and decay >= 0):
            raise ValueError(f"ensemble decay must be a finite number >= 0 (e.g. 0.01), got {decay!r}")
        self.decay = float(decay)
        super().__init__(horizon, every)

    def _merge(self, plan: Plan) -> None:
        if self._plans:
            self._previous = self._plans[-1]
        self._plans.append(plan)

    def action(self, tick: int) -> np.ndarray | None:
        # Plans that ended are dropped here: the list stays at most H / every long.
        while self._plans and self._plans[0].end_tick <= tick:
            self._plans.pop(0)
        covering = [plan.actions[tick - plan.first_tick] for plan in self._plans if plan.covers(tick)]
        if not covering:
            return None
        if len(covering) == 1:
            return covering[0]
        weights = np.exp(-self.decay * np.arange(len(covering)))
        return (weights[:, None] * np.stack(covering)).sum(axis=0) / weights.sum()

    def settings(self) -> dict:
        return {**super().settings(), "decay": self.decay}


class RealTimeChunking(ExecutionStrategy):
    """Real-time chunking (see the module doc). `every` is the execution horizon s."""

    name = "rtc"

    def __init__(self, horizon: int, every: int | None = None, max_guidance: float = RTC_MAX_GUIDANCE):
        if not (isinstance(max_guidance, (int, float)) and math.isfinite(max_guidance) and max_guidance > 0):
            raise ValueError(f"rtc max guidance must be a positive number (the paper uses 5), got {max_guidance!r}")
        self.max_guidance = float(max_guidance)
        super().__init__(horizon, every if every is not None else default_every("rtc", horizon))

    def guide(self, first_tick: int, delay_ticks: int) -> Guide | None:
        plan = self.current
        if plan is None:
            return None  # the first chunk has nothing to continue
        offset = first_tick - plan.first_tick  # new index i is old index i + offset
        overlap = max(0, min(self.horizon, plan.end_tick - first_tick))
        if overlap == 0 or offset < 0:
            return None
        prefix = np.zeros_like(plan.actions)
        prefix[:overlap] = plan.actions[offset : offset + overlap]
        return Guide(prefix, prefix_weights(delay_ticks, overlap, self.horizon), int(delay_ticks), self.max_guidance)

    def settings(self) -> dict:
        return {**super().settings(), "max_guidance": self.max_guidance}


def prefix_weights(frozen: int, overlap: int, horizon: int) -> np.ndarray:
    """RTC's soft mask, (horizon,) float32: 1 for the first `frozen` actions (they execute while
    the chunk is computed), then c * (e^c - 1) / (e - 1) with c falling linearly from 1 towards 0
    across the rest of the `overlap`, and 0 from `overlap` on (the previous plan says nothing there).
    """
    frozen = max(0, min(int(frozen), int(overlap)))
    index = np.arange(horizon, dtype=np.float64)
    c = np.clip((frozen - 1 - index) / (overlap - frozen + 1) + 1.0, 0.0, 1.0)
    weights = c * np.expm1(c) / (math.e - 1.0)
    weights[:frozen] = 1.0
    weights[index >= overlap] = 0.0
    return weights.astype(np.float32)


def default_every(strategy: str, horizon: int) -> int:
    """Ticks between chunks when not given: plain executes half the chunk (the Fast-WAM paper runs
    24 or 10 of 32 actions); ensembling asks every 4 ticks; RTC's execution horizon is a quarter of
    the chunk (8 of 32 at 50 Hz: 160 ms), leaving three quarters of overlap to guide across."""
    if strategy == "plain":
        return max(1, horizon // 2)
    if strategy == "ensemble":
        return min(ENSEMBLE_EVERY, horizon)
    if strategy == "rtc":
        return max(1, horizon // 4)
    raise ValueError(f"unknown execution strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def make_strategy(name: str, horizon: int, every: int | None = None, *, decay: float = 0.01,
                  max_guidance: float = RTC_MAX_GUIDANCE) -> ExecutionStrategy:
    """The strategy called `name` ("plain", "ensemble", "rtc") for chunks of `horizon` actions."""
    every = default_every(name, horizon) if every is None else every
    if name == "plain":
        return PlainChunks(horizon, every)
    if name == "ensemble":
        return TemporalEnsemble(horizon, every, decay)
    return RealTimeChunking(horizon, every, max_guidance)
