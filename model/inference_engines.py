"""How the policy runner gets its chunks made: the request and result of one chunk, and the three
engines that serve them (`model.runner.PolicyRunner` picks one from its config and policy).

- `InlineEngine` (simulated delay): the model runs at once on the calling thread; the chunk is
  usable `delay` ticks later.
- `ThreadEngine` (real time): the "policy-runner" thread serves one request at a time.
- `ProcessEngine` (real time, `model.policy_process.PolicyProcess`): the model runs in a process
  of its own; the control thread copies the observation into shared memory and polls a pipe.

Each has `busy`, `submit(request)`, `poll(tick) -> Result | None`, `cancel()`, `close()` and
`expected_delay_ticks(recent_inference_s)`; `submit`/`poll` belong to the control thread.
`default_threads` and `set_torch_threads` choose and set torch's CPU threads.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from model.errors import PolicyFault, PolicyOutputInvalid
from model.execution import Guide
from model.policy_process import PolicyProcess
from robot.types import Observation

if TYPE_CHECKING:
    from model.runner import RunnerConfig

log = logging.getLogger(__name__)


def default_threads(cpu_count: int | None = None) -> int:
    """torch CPU threads for a policy beside the control loop: 1 on a machine of up to 4 cores
    (measured on the 2-core lab machine: a second OpenMP thread spinning on the core the control
    loop, the renderer or another job needs turns a 20 ms chunk into seconds at the tail), else
    half the cores up to 8."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return 1 if cores <= 4 else min(8, cores // 2)


def set_torch_threads(threads: int) -> None:
    """torch's intra-op CPU threads for this process (the app may not import torch itself)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


class ChunkPolicy(Protocol):
    """What the runner needs of a policy (`model.policy.FastWAMPolicy` is one)."""

    config: object  # .action_horizon

    def predict(self, observation, task: str | None = None, guide: Guide | None = None): ...

    def reset(self) -> None: ...


@dataclass
class Request:
    session: int
    index: int
    tick: int
    observation: Observation
    guide: Guide | None
    queue_depth: int
    reset: bool  # first chunk of a start: re-seed the policy's noise first


@dataclass
class Result:
    request: Request
    actions: np.ndarray | None = None
    encode_s: float = 0.0
    action_s: float = 0.0
    inference_s: float = 0.0
    started_s: float = 0.0
    fault: PolicyFault | None = None
    arrival_tick: int = 0  # simulated delay: the tick the chunk becomes usable


def infer(policy: ChunkPolicy, request: Request) -> Result:
    """Run the policy for one request (policy thread, or inline); never raises."""
    result = Result(request, started_s=time.monotonic())
    try:
        if request.reset:
            policy.reset()
        chunk = policy.predict(request.observation, guide=request.guide)
    except PolicyOutputInvalid as exc:
        result.fault = PolicyFault("invalid_chunk", f"The policy produced an invalid chunk: {exc}",
                                   "Take over or hold; reload the checkpoint, and if it repeats retrain it or check its "
                                   "normalisation statistics.")
        return result
    except Exception as exc:  # any failure of the model must reach the control thread as a fault
        log.exception("the policy failed on chunk %d", request.index)
        result.fault = PolicyFault("policy_error", f"The policy failed: {type(exc).__name__}: {exc}.",
                                   "Check the checkpoint matches this rig (cameras, task) and the log, then start "
                                   "autonomy again.")
        return result
    result.actions = np.asarray(chunk.actions, dtype=np.float32)
    result.encode_s, result.action_s, result.inference_s = chunk.encode_s, chunk.action_s, chunk.total_s
    return result


class InlineEngine:
    """Simulated delay: infer at once on the calling thread; the result arrives `delay` ticks later."""

    def __init__(self, policy: ChunkPolicy, config: RunnerConfig) -> None:
        self.policy = policy
        self.config = config
        self._pending: Result | None = None

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def delay_ticks(self, result: Result) -> int:
        delay = self.config.delay_ms
        if delay == "auto":
            return max(0, math.ceil(result.inference_s * self.config.rate_hz - 1e-9))
        return int(round(float(delay) * 1e-3 * self.config.rate_hz))

    def expected_delay_ticks(self, recent_s: deque) -> int:
        if self.config.delay_ms == "auto":
            return math.ceil(max(recent_s) * self.config.rate_hz) if recent_s else 0
        return int(round(float(self.config.delay_ms) * 1e-3 * self.config.rate_hz))

    def submit(self, request: Request) -> None:
        result = infer(self.policy, request)
        result.arrival_tick = request.tick + self.delay_ticks(result)
        self._pending = result

    def poll(self, tick: int) -> Result | None:
        pending = self._pending
        if pending is None or (pending.fault is None and tick < pending.arrival_tick):
            return None
        self._pending = None
        return pending

    def cancel(self) -> None:
        self._pending = None

    def close(self) -> None:
        pass


class ThreadEngine:
    """Real time: the "policy-runner" thread serves one request at a time."""

    def __init__(self, policy: ChunkPolicy, config: RunnerConfig) -> None:
        self.policy = policy
        self.config = config
        self._lock = threading.Lock()
        self._request: Request | None = None
        self._result: Result | None = None
        self._in_flight = False  # control thread: submitted, result not yet taken
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="policy-runner", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._in_flight

    def expected_delay_ticks(self, recent_s: deque) -> int:
        # The chunk is taken at the first tick after it is ready: latency // period + 1 ticks.
        period = self.config.period_s
        return int(max(recent_s) // period) + 1 if recent_s else 1

    def submit(self, request: Request) -> None:
        with self._lock:
            self._request = request
        self._in_flight = True
        self._wake.set()

    def poll(self, tick: int) -> Result | None:
        if not self._in_flight:
            return None
        with self._lock:
            result, self._result = self._result, None
        if result is not None:
            self._in_flight = False
        return result

    def cancel(self) -> None:
        """Nothing to undo: a result of an earlier start carries its session number and is
        dropped when polled (until then `busy` keeps a new request from overtaking it)."""

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        threads = self.config.threads or default_threads()
        try:
            set_torch_threads(threads)
            if self.config.cpu_affinity:
                os.sched_setaffinity(0, set(self.config.cpu_affinity))  # 0: this thread only
        except Exception:  # a refused affinity must not stop the policy; the log says so
            log.exception("setting the policy thread's threads/affinity failed")
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            with self._lock:
                request, self._request = self._request, None
            if request is None:
                continue
            result = infer(self.policy, request)
            with self._lock:
                self._result = result


class ProcessEngine:
    """Real time, the policy in its own process (`model.policy_process`): the control thread
    copies the observation into shared memory and polls the pipe; no model work shares its GIL."""

    def __init__(self, process: PolicyProcess, config: RunnerConfig) -> None:
        self.process = process
        self.config = config
        self._in_flight: Request | None = None
        self._sent_s = 0.0

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def expected_delay_ticks(self, recent_s: deque) -> int:
        return int(max(recent_s) // self.config.period_s) + 1 if recent_s else 1

    def submit(self, request: Request) -> None:
        self._in_flight, self._sent_s = request, time.monotonic()
        self.process.submit(request)

    def poll(self, tick: int) -> Result | None:
        request = self._in_flight
        if request is None:
            return None
        answer = self.process.poll()  # raises PolicyFault when the process died
        if answer is None:
            return None
        self._in_flight = None
        result = Result(request, started_s=self._sent_s)
        if answer[0] == "chunk":
            _, result.actions, result.encode_s, result.action_s, result.inference_s = answer
        else:
            _, name, text = answer
            cause = "invalid_chunk" if name == "PolicyOutputInvalid" else "policy_error"
            result.fault = PolicyFault(cause, f"The policy failed: {name}: {text}.",
                                       "Check the checkpoint matches this rig (cameras, task) and the log, then start "
                                       "autonomy again.")
        return result

    def cancel(self) -> None:
        """As the thread engine: a result of an earlier start is dropped by its session number."""

    def close(self) -> None:
        self.process.close()
