"""Replay: send a recorded episode's actions to a rig, from the episode's start pose, through the
control loop (so through its safety filter, with E-stop and blending as always).

The simulated rig is reset to the episode's seed when its notes name one (`seed=N`, as the
studio and `run.py demos` write), which lays the towel out as it was; the arms start from the
start pose either way. A real rig replays only with `real_rig_confirmed=True` - the window asks
first - and only once its arms are started (ALOHA's opening ceremony: the followers go to the
start pose, the operator squeezes the leaders).

Threads: `replay_episode` runs on the caller's thread (a worker: it takes as long as the episode
on a real rig) and opens its own session of the rig file (`app.studio.session.open_session`) for
that time. A simulation is stepped unpaced, as fast as it goes. Inside the window, whose session
already holds the rig, the lead's wiring should hand that session over instead.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from recordings.reader import Episode
from app.studio.session import SessionError, open_session
from robot.capabilities import Resettable, Simulation, Startable
from robot.control_loop import ControlLoop
from robot.rig import Rig
from robot.types import ARM_JOINT_INDICES, ControlSource, Mode, Observation, TickRecord

log = logging.getLogger(__name__)

_SEED = re.compile(r"(?:^|[;\s])seed=(\d+)")


class ReplayRefused(RuntimeError):
    """The replay did not start; the message says why and what to do."""


@dataclass(frozen=True)
class ReplayResult:
    """steps: actions sent; tracking_rms_rad: RMS over steps and arm joints of the replayed qpos
    minus the recorded qpos (how closely the rig redid the episode); seed: the sim seed used."""

    episode: Path
    steps: int
    tracking_rms_rad: float
    seed: int | None
    replayed_qpos: np.ndarray


class EpisodeReplaySource:
    """An ActionSource playing `actions` (T, 14) one per tick after holding the first action for
    `settle_ticks` (the loop blends from the arm's pose to it meanwhile). Control thread only."""

    name = "replay"
    kind = ControlSource.SCRIPTED

    def __init__(self, actions: np.ndarray, settle_ticks: int = 0):
        self.actions = np.asarray(actions, dtype=np.float32)
        self.settle_ticks = int(settle_ticks)
        self._tick = 0

    def start(self, observation: Observation) -> None:
        self._tick = 0

    def next_action(self, observation: Observation) -> np.ndarray | None:
        step = max(self._tick - self.settle_ticks, 0)
        self._tick += 1
        return self.actions[min(step, len(self.actions) - 1)].copy()

    def stop(self) -> None:
        pass

    @property
    def sent(self) -> int:
        """Recorded actions sent so far (not counting the settling ticks)."""
        return max(self._tick - self.settle_ticks, 0)

    @property
    def finished(self) -> bool:
        return self.sent >= len(self.actions)


def episode_seed(notes: str) -> int | None:
    found = _SEED.search(notes or "")
    return int(found.group(1)) if found else None


def replay_episode(
    episode_path: str | Path,
    rig_file: str | Path,
    real_rig_confirmed: bool = False,
    start_timeout_s: float = 60.0,
    cancel: threading.Event | None = None,
    on_tick: Callable[[TickRecord], None] | None = None,
) -> ReplayResult:
    """Replay the episode on the rig of `rig_file` (see the module doc). Raises ReplayRefused."""
    with Episode.open(episode_path) as episode:
        actions, recorded = episode.action.copy(), episode.qpos.copy()
        notes, rate = episode.metadata.notes, episode.metadata.control_rate_hz
    # Unpaced stepping for a simulation: each frame the state of its tick.
    try:
        session = open_session(rig_file, record=False, render_thread=False)
    except SessionError as error:
        raise ReplayRefused(str(error)) from error
    rig, control = session.rig, session.rig_file.control
    try:
        simulated = isinstance(rig, Simulation)
        if not simulated and not real_rig_confirmed:
            raise ReplayRefused(
                f"{rig.name} is a real rig: replaying moves the arms. Confirm the replay (the window asks), "
                f"keep the E-stop in reach and the workspace clear."
            )
        if abs(control.rate_hz - rate) > 1e-6:
            raise ReplayRefused(f"The episode was recorded at {rate:g} Hz but {rig.name} runs at {control.rate_hz:g} Hz; replay needs the same rate.")
        seed = episode_seed(notes)
        if isinstance(rig, Resettable):
            seed = rig.reset_episode(seed)
            session.new_loop()  # its hold pose is read from the reset arms
        settle = int(round(control.blend_s * control.rate_hz)) + 1
        source = EpisodeReplaySource(actions, settle_ticks=settle)
        replayed: list[np.ndarray] = []

        def collect(record: TickRecord) -> None:
            if record.source is ControlSource.SCRIPTED and source.sent > 0:
                replayed.append(np.asarray(record.observation.qpos, dtype=np.float32))
            if on_tick is not None:
                on_tick(record)

        session.subscribe(collect)
        loop = session.loop
        if not simulated:
            _start_arms(rig, loop, start_timeout_s)
        loop.set_source(source)
        loop.request_mode(Mode.TELEOP)
        if simulated:
            while not source.finished and not (cancel and cancel.is_set()):
                loop.tick_once()
        else:
            if not loop.running:
                loop.start()
            while not source.finished and not (cancel and cancel.is_set()):
                time.sleep(0.05)
        loop.request_mode(Mode.HOLD)
        if simulated:
            loop.tick_once()
    finally:
        session.close()
    # replayed[k] is the observation before recorded action k+1 was applied, like recorded[k+1].
    steps = min(len(replayed), len(recorded) - 1)
    error = np.asarray(replayed[:steps]) - recorded[1 : steps + 1] if steps > 0 else np.zeros((0, recorded.shape[1]))
    rms = float(np.sqrt(np.mean(error[:, list(ARM_JOINT_INDICES)] ** 2))) if steps > 0 else float("nan")
    return ReplayResult(Path(episode_path), source.sent, rms, seed, np.asarray(replayed))


def _start_arms(rig: Rig, loop: ControlLoop, timeout_s: float) -> None:
    """A real rig: run the opening ceremony (followers to the start pose) before replaying."""
    if not isinstance(rig, Startable):
        return
    loop.request_mode(Mode.IDLE)
    loop.start()
    rig.begin_start()
    deadline = time.monotonic() + timeout_s
    while not rig.started:
        if time.monotonic() > deadline:
            raise ReplayRefused(f"{rig.name} did not finish starting within {timeout_s:.0f} s: {rig.start_prompt or 'no prompt'}.")
        time.sleep(0.05)
