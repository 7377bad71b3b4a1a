"""Hand-over between a policy and a person: the policy drives, the person takes the arm when they
want (or when they grab a leader arm) and hands it back.

    supervised = SupervisedSource(policy_source, human_source, blend_ticks=25, leaders=rig)
    loop.set_source(supervised); loop.request_mode(Mode.POLICY)
    supervised.take_over()      # any thread: the human's source drives, steps are INTERVENTION
    supervised.hand_back()      # any thread: the policy drives again

Each step says what it was: `kind` (read by the loop after `next_action`) is the policy's own
kind while it drives (POLICY; HOLD while it waits for its first chunk) and INTERVENTION while the
person does. Every switch ramps from the last action this source gave to the new source's actions
(smoothstep, `robot.control_loop.Blend`), and the safety filter's per-tick limit stays the final
guarantee: no hand-over makes a jump.

Leaders (`robot.capabilities.LeadersFollow`, the real rig): while the policy drives, the leader
arms follow the followers (torque on, low gains); a leader pushed away from its goal switches to
the person at once (the rig releases the leaders' torque, so the hands holding them now drive), and
handing back makes them follow again. Without leaders (the simulation) a key takes over into
keyboard jogging.

Threads: `start`, `next_action`, `stop` on the control thread (the ActionSource contract);
`take_over`, `hand_back` and `supervision` from any thread (one attribute each, read by the control
thread at its next tick).
"""

from __future__ import annotations

import enum
import logging

import numpy as np

from robot.capabilities import LeadersFollow
from robot.control_loop import Blend
from robot.types import ActionSource, ControlSource, Observation

log = logging.getLogger(__name__)


class Supervision(str, enum.Enum):
    """Who drives a supervised source."""

    AUTONOMOUS = "autonomous"  # the policy
    INTERVENTION = "intervention"  # the person, correcting the policy


class SupervisedSource:
    """An `ActionSource` (robot.types) that is either the policy or the person (see the module doc).

    policy, human: ActionSources (the policy runner; the leader arms or the jog source).
    blend_ticks: ticks of the ramp at each hand-over (the loop's blend time is a good choice).
    leaders: the rig, when its leader arms can follow and detect a push (None otherwise).
    """

    def __init__(self, policy: ActionSource, human: ActionSource, blend_ticks: int,
                 leaders: LeadersFollow | None = None, name: str = "policy") -> None:
        if blend_ticks < 1:
            raise ValueError(f"blend_ticks must be at least 1 tick, got {blend_ticks!r}")
        self.name = name
        self.policy = policy
        self.human = human
        self.blend_ticks = int(blend_ticks)
        self.leaders = leaders
        # Any thread writes `_wanted`; the control thread acts on it (an attribute store is atomic).
        self._wanted = Supervision.AUTONOMOUS
        self._published = Supervision.AUTONOMOUS
        self._pushed = False  # control thread: the last take-over came from a leader push
        # Control thread.
        self._active = Supervision.AUTONOMOUS
        self._started = False
        self._blend: Blend | None = None
        self._last: np.ndarray | None = None
        self.kind = ControlSource.HOLD

    # -- any thread --------------------------------------------------------------------------------
    def take_over(self) -> None:
        """The person takes the arm at the next tick (ramped from where the policy left it)."""
        self._wanted = Supervision.INTERVENTION

    def hand_back(self) -> None:
        """The policy takes the arm again at the next tick (it re-plans from the newest observation)."""
        self._wanted = Supervision.AUTONOMOUS

    @property
    def supervision(self) -> Supervision:
        """Who drives now (as of the last tick)."""
        return self._published

    @property
    def taken_by_push(self) -> bool:
        """The current intervention began with a leader pushed away from its goal."""
        return self._pushed and self._published is Supervision.INTERVENTION

    # -- control thread ------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return False

    def start(self, observation: Observation) -> None:
        self._last = np.asarray(observation.qpos, dtype=np.float32).copy()
        self._blend = None
        self._active = self._wanted
        self._pushed = False
        self._source().start(observation)
        self._started = True
        self._follow(self._active is Supervision.AUTONOMOUS)
        self._published = self._active

    def next_action(self, observation: Observation) -> np.ndarray | None:
        wanted = self._wanted
        if self._active is Supervision.AUTONOMOUS and self.leaders is not None and self.leaders.leaders_pushed():
            log.info("a leader arm was pushed away from the policy's pose: the operator takes over")
            wanted = self._wanted = Supervision.INTERVENTION
            self._pushed = True
        if wanted is not self._active:
            self._switch(wanted, observation)
        source = self._source()
        raw = source.next_action(observation)
        if raw is None:
            self.kind = ControlSource.HOLD
            return None
        action = np.asarray(raw, dtype=np.float64)
        if self._blend is not None:
            action = self._blend.mix(action)
            if self._blend.finished:
                self._blend = None
        self._last = action.astype(np.float32)
        self.kind = ControlSource.INTERVENTION if self._active is Supervision.INTERVENTION else source.kind
        return self._last

    def stop(self) -> None:
        if self._started:
            self._started = False
            try:
                self._source().stop()
            finally:
                self._follow(False)

    # -- internals -----------------------------------------------------------------------------------
    def _source(self) -> ActionSource:
        return self.policy if self._active is Supervision.AUTONOMOUS else self.human

    def _switch(self, to: Supervision, observation: Observation) -> None:
        self._source().stop()
        self._active = to
        if to is Supervision.AUTONOMOUS:
            self._pushed = False
        self._follow(to is Supervision.AUTONOMOUS)
        self._source().start(observation)
        start = self._last if self._last is not None else np.asarray(observation.qpos, dtype=np.float32)
        self._blend = Blend(start, self.blend_ticks)
        self._published = to
        log.info("supervision: %s", to.value)

    def _follow(self, enabled: bool) -> None:
        if self.leaders is not None:
            self.leaders.set_leaders_follow(enabled)
