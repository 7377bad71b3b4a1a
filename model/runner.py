"""The policy runner: a chunk policy as the control loop's action source, without the loop ever
waiting for the model.

    runner = PolicyRunner(policy, make_strategy("rtc", policy.config.action_horizon), limits)
    loop.set_source(runner); loop.request_mode(Mode.POLICY)   # the studio wraps it for take-overs
    runner.status()                                           # any thread: plans, latencies
    runner.close()                                            # owner: stops the policy thread

Clocks (`RunnerConfig.delay_ms`):
- real time (None): the studio and `run.py eval --real-time`. The control thread's `next_action`
  reads the schedule (`model.execution`) and, when the strategy wants a chunk, hands the newest
  observation to the "policy-runner" thread, which runs the model and posts the chunk back; the
  next tick merges it, skipping the actions whose time passed meanwhile.
- simulated delay (a number of ms, or "auto" for the measured latency): `run.py eval --delay-ms`.
  The model runs inline when a chunk is wanted (the simulation waits), but the chunk becomes usable
  only that many ms of *simulated* time later (rounded to ticks); until then the previous plan
  keeps executing. Results under inference delay are then the same on any machine.

Faults: `next_action` raises `PolicyFault` (model.errors) on the control thread for a chunk with
NaN/inf, a chunk beyond the rig's joint limits by more than `range_margin`, no action due at a tick
(the policy fell behind), a camera image older than `max_image_age_s` (real time: on a simulated
delay the sim renders in step with itself), an exception in the policy,
and no first chunk within `first_chunk_timeout_s`; the loop then holds the arm within the tick and
shows the message and what to do. Until the first chunk of a start arrives the runner holds the pose
it started from (its `kind` is HOLD meanwhile), so autonomy begins without a jump.

Latency accounting: a `ChunkRecord` per chunk and a `StepRecord` per executed action, given to
listeners (`add_chunk_listener`, `add_step_listener`) on the control thread, where a chunk's record
is complete (its apply tick is known there); listeners must only copy or enqueue (the recorder's
`on_policy_chunk` does). `status()` (any thread) copies the plans, queue depth and latency series.

The engines that make the chunks (inline, a thread, a process) are in `model.inference_engines`.

Threads: `start`, `next_action`, `stop` on the control thread (the ActionSource contract); the
policy object on the policy thread only (real time) or the calling thread (simulated delay);
`status`, `add_*_listener` on any thread; `close` by the owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from model.errors import PolicyFault
from model.execution import ExecutionStrategy
from model.inference_engines import (
    ChunkPolicy,
    InlineEngine,
    ProcessEngine,
    Request,
    Result,
    ThreadEngine,
    default_threads,
    set_torch_threads,
)
from model.policy_process import PolicyProcess
from robot.types import JOINT_NAMES, ControlSource, JointLimits, Observation

log = logging.getLogger(__name__)

__all__ = ["ChunkPolicy", "ChunkRecord", "LatencySummary", "PolicyRunner", "RunnerConfig", "RunnerStatus",
           "StepRecord", "default_threads", "set_torch_threads"]


@dataclass(frozen=True)
class RunnerConfig:
    """rate_hz: the control rate (ticks per second). delay_ms: None = real time (policy thread);
    a number = simulated delay of that many ms; "auto" = simulated, each chunk delayed by its own
    measured latency. max_image_age_s: a camera frame older than this (against the joint reading)
    stops the policy (0.5 s: ten ticks, several camera frames missed). first_chunk_timeout_s: real
    time only, how long the first chunk of a start may take (compiling on a GPU takes a while).
    range_margin: how far (rad; normalised units for the grippers) beyond the rig's joint limits a
    chunk may reach before it counts as broken (the safety filter clamps the rest).
    threads / cpu_affinity: torch threads and the CPUs of the policy thread (None: `default_threads`,
    no pinning). history: chunks kept for the status's latency series.
    """

    rate_hz: float = 50.0
    delay_ms: float | str | None = None
    max_image_age_s: float = 0.5
    first_chunk_timeout_s: float = 60.0
    range_margin: float = 0.25
    threads: int | None = None
    cpu_affinity: tuple[int, ...] | None = None
    history: int = 300

    def __post_init__(self) -> None:
        if not (isinstance(self.rate_hz, (int, float)) and 1.0 <= self.rate_hz <= 1000.0):
            raise ValueError(f"rate_hz must be within 1 and 1000 Hz, got {self.rate_hz!r}")
        delay = self.delay_ms
        if delay is not None and delay != "auto" and not (isinstance(delay, (int, float)) and 0 <= delay < 60_000):
            raise ValueError(f"delay_ms must be None (real time), 'auto' or a number of ms within 0 and 60000, got {delay!r}")
        for name in ("max_image_age_s", "first_chunk_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not (isinstance(self.range_margin, (int, float)) and self.range_margin >= 0):
            raise ValueError(f"range_margin must be >= 0, got {self.range_margin!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be a positive integer or None (automatic), got {self.threads!r}")
        if self.history < 10:
            raise ValueError(f"history must keep at least 10 chunks, got {self.history!r}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def real_time(self) -> bool:
        return self.delay_ms is None


@dataclass(frozen=True)
class ChunkRecord:
    """Where the time of one chunk went (seconds; ticks are the runner's, from 0 at each start).

    obs_tick / obs_time_s: the observation it was planned from (its actions[0] is for obs_tick);
    obs_age_s: that observation's age when inference started; image_age_s: the oldest camera
    frame's age then; encode_s / action_s / inference_s: canvas + VAE + video expert, action
    steps, both; queue_depth: actions left in the plan when the chunk was asked for; apply_tick:
    the tick it started to act on (-1: it came too late and was dropped); skipped: its actions
    whose tick had passed; obs_to_command_s: from the observation to its first command (real
    time: host clock; simulated: ticks); delay_ticks: the delay RTC's guidance assumed (0 unguided).
    """

    index: int
    obs_tick: int
    obs_time_s: float
    obs_age_s: float
    image_age_s: float
    encode_s: float
    action_s: float
    inference_s: float
    queue_depth: int
    apply_tick: int
    skipped: int
    obs_to_command_s: float
    delay_ticks: int = 0
    guided: bool = False


@dataclass(frozen=True)
class StepRecord:
    """One executed policy action. obs_time_s: the tick's observation time (joins the episode's
    /timestamp); chunk_index: the newest plan covering the tick; staleness_s: how old the
    observation that plan came from was when the action was commanded."""

    obs_time_s: float
    chunk_index: int
    staleness_s: float


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of a latency series in ms (None when empty)."""

    n: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    @classmethod
    def of(cls, seconds) -> "LatencySummary":
        values = np.asarray(seconds, dtype=np.float64)
        values = values[np.isfinite(values)] * 1e3
        if values.size == 0:
            return cls()
        p50, p95, p99 = np.percentile(values, (50, 95, 99))
        return cls(int(values.size), round(float(p50), 2), round(float(p95), 2), round(float(p99), 2),
                   round(float(values.max()), 2))


@dataclass(frozen=True)
class RunnerStatus:
    """A copy of the runner's state for the window (any thread).

    state: "stopped", "warming" (started, no chunk yet), "running", "fault" (message says why).
    tick: the newest tick; period_s: seconds per tick (plot a plan at (first_tick - tick) *
    period_s from now). plan / previous: (H, 14) actions of the newest plan and of the one it
    replaced, with the tick of their actions[0] (None before). queue_depth: actions planned from
    `tick` on. chunks: chunks accepted since the runner was built; skipped: their skipped actions.
    Series (one value per recent chunk, oldest first): apply_ticks, inference_s, obs_age_s,
    obs_to_command_s, queue_depths. The summaries are over the same chunks.
    """

    state: str = "stopped"
    message: str = ""
    strategy: dict = field(default_factory=dict)
    tick: int = 0
    period_s: float = 0.02
    plan: np.ndarray | None = None
    plan_first_tick: int = 0
    previous: np.ndarray | None = None
    previous_first_tick: int = 0
    queue_depth: int = 0
    chunks: int = 0
    skipped: int = 0
    apply_ticks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inference_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obs_age_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obs_to_command_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    queue_depths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inference: LatencySummary = field(default_factory=LatencySummary)
    obs_age: LatencySummary = field(default_factory=LatencySummary)
    obs_to_command: LatencySummary = field(default_factory=LatencySummary)


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------


class PolicyRunner:
    """A chunk policy as an `ActionSource` (robot.types) of kind POLICY. See the module doc.

    policy: a `ChunkPolicy` (run on the runner's thread, or inline under a simulated delay) or a
    `model.policy_process.PolicyProcess` (real time only: run in its own process); strategy: a
    `model.execution.ExecutionStrategy` for its horizon; limits: the rig's joint limits (the range
    check of every chunk).
    """

    name = "policy"

    def __init__(self, policy: ChunkPolicy, strategy: ExecutionStrategy, limits: JointLimits,
                 config: RunnerConfig | None = None) -> None:
        horizon = int(policy.config.action_horizon)
        if strategy.horizon != horizon:
            raise ValueError(f"the strategy plans {strategy.horizon} actions per chunk but the policy makes {horizon}")
        self.config = config or RunnerConfig()
        self.policy = policy
        self.strategy = strategy
        self._low = np.asarray(limits.low, dtype=np.float32) - self.config.range_margin
        self._high = np.asarray(limits.high, dtype=np.float32) + self.config.range_margin
        if isinstance(policy, PolicyProcess):
            if not self.config.real_time:
                raise ValueError("a policy process runs in real time only; give the policy itself for a simulated delay")
            self._engine = ProcessEngine(policy, self.config)
        elif self.config.real_time:
            self._engine = ThreadEngine(policy, self.config)
        else:
            self._engine = InlineEngine(policy, self.config)
        # Control thread.
        self.kind = ControlSource.HOLD
        self._session = 0
        self._tick = 0
        self._next_index = 0
        self._hold: np.ndarray | None = None
        self._started_s = 0.0
        self._requested_s = 0.0
        self._accepted_this_start = False
        self._first_request = True
        self._obs_times: dict[int, float] = {}  # chunk index -> observation time of its plan
        self._recent_inference_s: deque[float] = deque(maxlen=5)
        # Shared, under _lock.
        self._lock = threading.Lock()
        self._state = "stopped"
        self._message = ""
        self._records: deque[ChunkRecord] = deque(maxlen=self.config.history)
        self._chunks = 0
        self._skipped = 0
        self._published: tuple = (None, 0, None, 0, 0, 0)  # plan, first, previous, first, depth, tick
        self._chunk_listeners: tuple[Callable[[ChunkRecord], None], ...] = ()
        self._step_listeners: tuple[Callable[[StepRecord], None], ...] = ()

    # -- any thread -------------------------------------------------------------------------------
    def add_chunk_listener(self, callback: Callable[[ChunkRecord], None]) -> Callable[[], None]:
        """Call `callback(record)` on the control thread for every chunk; returns a remover."""
        with self._lock:
            self._chunk_listeners = self._chunk_listeners + (callback,)

        def remove() -> None:
            with self._lock:
                self._chunk_listeners = tuple(c for c in self._chunk_listeners if c is not callback)

        return remove

    def add_step_listener(self, callback: Callable[[StepRecord], None]) -> Callable[[], None]:
        """Call `callback(record)` on the control thread for every executed action; returns a remover."""
        with self._lock:
            self._step_listeners = self._step_listeners + (callback,)

        def remove() -> None:
            with self._lock:
                self._step_listeners = tuple(c for c in self._step_listeners if c is not callback)

        return remove

    def status(self) -> RunnerStatus:
        with self._lock:
            records = list(self._records)
            plan, plan_first, previous, previous_first, depth, tick = self._published
            state, message, chunks, skipped = self._state, self._message, self._chunks, self._skipped
        inference = np.array([r.inference_s for r in records])
        age = np.array([r.obs_age_s for r in records])
        to_command = np.array([r.obs_to_command_s for r in records if r.apply_tick >= 0])
        return RunnerStatus(
            state=state, message=message, strategy=self.strategy.settings(), tick=tick,
            period_s=self.config.period_s, plan=plan, plan_first_tick=plan_first, previous=previous,
            previous_first_tick=previous_first, queue_depth=depth, chunks=chunks, skipped=skipped,
            apply_ticks=np.array([r.apply_tick for r in records], dtype=np.int64), inference_s=inference,
            obs_age_s=age, obs_to_command_s=np.array([r.obs_to_command_s for r in records]),
            queue_depths=np.array([r.queue_depth for r in records], dtype=np.int64),
            inference=LatencySummary.of(inference), obs_age=LatencySummary.of(age),
            obs_to_command=LatencySummary.of(to_command),
        )

    def records(self) -> list[ChunkRecord]:
        """The recent chunk records, oldest first (any thread)."""
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        """Stop the policy thread or process (owner; after the loop stopped using the runner)."""
        self._engine.close()

    # -- control thread: the ActionSource ----------------------------------------------------------
    @property
    def finished(self) -> bool:
        return False

    def start(self, observation: Observation) -> None:
        self._session += 1
        self._tick = 0
        self._hold = np.asarray(observation.qpos, dtype=np.float32).copy()
        self._started_s = time.monotonic()
        self._accepted_this_start = False
        self._first_request = True
        self._obs_times.clear()
        self.kind = ControlSource.HOLD
        self.strategy.reset()
        self._engine.cancel()
        self._set_state("warming", "")
        self._publish_plans(0)

    def stop(self) -> None:
        self.strategy.reset()
        self._engine.cancel()
        self.kind = ControlSource.HOLD
        with self._lock:
            if self._state != "fault":
                self._state, self._message = "stopped", ""

    def next_action(self, observation: Observation) -> np.ndarray:
        tick = self._tick
        self._tick += 1
        try:
            return self._act(observation, tick)
        except PolicyFault as fault:
            self.kind = ControlSource.HOLD
            self._set_state("fault", f"{fault.message} {fault.what_to_do}")
            raise

    def _act(self, observation: Observation, tick: int) -> np.ndarray:
        self._check_images(observation)
        result = self._engine.poll(tick)
        if result is not None and result.request.session == self._session:
            self._accept(result, tick)
        strategy = self.strategy
        if not self._engine.busy and strategy.wants_chunk(tick):
            self._request(observation, tick)
            result = self._engine.poll(tick)  # simulated delay 0: usable at once
            if result is not None:
                self._accept(result, tick)
        action = strategy.action(tick)
        if action is None:
            if not self._accepted_this_start:
                return self._warm_up_hold()
            waiting = (f"the chunk asked for {1e3 * (time.monotonic() - self._requested_s):.0f} ms ago has not come"
                       if self._engine.busy and self.config.real_time else "no chunk was being made")
            raise PolicyFault(
                "late",
                f"No policy action was due at tick {tick}: the plan ran out before the next chunk arrived "
                f"({waiting}; the last chunks took {self._recent_ms()} of inference).",
                "The computer is too busy for this policy (close other jobs), or the strategy re-plans too rarely "
                "for its latency; start autonomy again.")
        self.kind = ControlSource.POLICY
        self._publish_plans(tick)
        plan = strategy.current
        if plan is not None and self._step_listeners:
            staleness = self._staleness(plan, tick, observation)
            step = StepRecord(float(observation.time_s), plan.index, staleness)
            for listener in self._step_listeners:
                listener(step)
        return np.asarray(action, dtype=np.float32)

    def _warm_up_hold(self) -> np.ndarray:
        if self.config.real_time and time.monotonic() - self._started_s > self.config.first_chunk_timeout_s:
            raise PolicyFault(
                "no_first_chunk",
                f"The policy gave no first chunk within {self.config.first_chunk_timeout_s:g} s.",
                "Check the device (a GPU busy with training?) and the log, then start autonomy again.")
        self.kind = ControlSource.HOLD
        return self._hold.copy()

    def _check_images(self, observation: Observation) -> None:
        times = observation.image_times_s
        # Under a simulated delay the sim waits for the policy and renders in step with itself:
        # host-clock ages there measure the model's speed, not a camera's.
        if not times or not self.config.real_time:
            return
        camera, captured = min(times.items(), key=lambda item: item[1])
        age = float(observation.time_s) - float(captured)
        if age > self.config.max_image_age_s:
            raise PolicyFault(
                "stale_camera",
                f"Camera {camera}'s newest image is {age:.2f} s old (limit {self.config.max_image_age_s:g} s): "
                "the policy would act on the past.",
                "Check the camera's cable and the status bar's camera rates, then start autonomy again.")

    def _request(self, observation: Observation, tick: int) -> None:
        strategy = self.strategy
        delay = self._engine.expected_delay_ticks(self._recent_inference_s)
        request = Request(self._session, self._next_index, tick, observation, strategy.guide(tick, delay),
                           strategy.remaining(tick), self._first_request)
        self._next_index += 1
        self._first_request = False
        strategy.note_request(tick)
        self._requested_s = time.monotonic()
        self._engine.submit(request)

    def _accept(self, result: Result, tick: int) -> None:
        if result.fault is not None:
            raise result.fault
        request, actions = result.request, result.actions
        self._recent_inference_s.append(result.inference_s)
        if not np.all(np.isfinite(actions)):
            raise PolicyFault("invalid_chunk", "The policy's chunk has NaN/inf actions.",
                              "Take over or hold; reload the checkpoint, and if it repeats check its normalisation statistics.")
        below, above = actions < self._low, actions > self._high
        if below.any() or above.any():
            step, joint = np.argwhere(below | above)[0]
            value = float(actions[step, joint])
            limit = float(self._low[joint] if below[step, joint] else self._high[joint])
            raise PolicyFault(
                "out_of_range",
                f"The policy asked for {JOINT_NAMES[joint]} = {value:.3f} (chunk step {step}), beyond its limit by more "
                f"than {self.config.range_margin:g} (allowed up to {limit:.3f}).",
                "The checkpoint may not fit this rig (calibration, action convention) or its normalisation is "
                "broken; check it before starting autonomy again.")
        skipped = self.strategy.accept(actions, request.tick, tick, request.index)
        applied = skipped < self.strategy.horizon
        obs = request.observation
        if self.config.real_time:
            to_command = time.monotonic() - float(obs.time_s)
        else:
            to_command = (tick - request.tick) * self.config.period_s
        oldest_image = min(obs.image_times_s.values()) if obs.image_times_s else None
        # Real time: ages at the start of inference (host clock); simulated: at the observation.
        seen_s = result.started_s if self.config.real_time else float(obs.time_s)
        image_age = 0.0 if oldest_image is None else seen_s - float(oldest_image)
        record = ChunkRecord(
            index=request.index, obs_tick=request.tick, obs_time_s=float(obs.time_s),
            obs_age_s=(result.started_s - float(obs.time_s)) if self.config.real_time else 0.0,
            image_age_s=float(image_age), encode_s=result.encode_s, action_s=result.action_s,
            inference_s=result.inference_s, queue_depth=request.queue_depth, apply_tick=tick if applied else -1,
            skipped=skipped, obs_to_command_s=float(to_command),
            delay_ticks=request.guide.delay_ticks if request.guide is not None else 0, guided=request.guide is not None,
        )
        if applied:
            self._accepted_this_start = True
            self._obs_times[request.index] = float(obs.time_s)
            if len(self._obs_times) > 64:  # only the plans still in the schedule are needed
                for index in sorted(self._obs_times)[:-32]:
                    del self._obs_times[index]
        with self._lock:
            self._records.append(record)
            self._chunks += 1
            self._skipped += skipped
            if self._state == "warming" and applied:
                self._state = "running"
            listeners = self._chunk_listeners
        for listener in listeners:
            listener(record)

    def _staleness(self, plan, tick: int, observation: Observation) -> float:
        if self.config.real_time:
            planned_from = self._obs_times.get(plan.index)
            if planned_from is not None:
                return float(observation.time_s) - planned_from
        return (tick - plan.first_tick) * self.config.period_s

    def _publish_plans(self, tick: int) -> None:
        # Plan arrays are never written after `accept`, so publishing references is safe.
        strategy = self.strategy
        current, previous = strategy.current, strategy.previous
        published = (
            None if current is None else current.actions, 0 if current is None else current.first_tick,
            None if previous is None else previous.actions, 0 if previous is None else previous.first_tick,
            strategy.remaining(tick), tick,
        )
        with self._lock:
            self._published = published

    def _set_state(self, state: str, message: str) -> None:
        with self._lock:
            self._state, self._message = state, message

    def _recent_ms(self) -> str:
        recent = list(self._recent_inference_s)
        return ", ".join(f"{s * 1e3:.0f} ms" for s in recent[-3:]) or "no chunk yet"
