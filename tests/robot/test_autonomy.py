"""The supervised source (robot/autonomy.py): who drives each tick, what each step is recorded as,
and that every hand-over ramps from the last action instead of jumping. The policy and the person
are plain ActionSources here (the seam); the studio tests run the real policy, jog source and rig."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from robot.autonomy import SupervisedSource, Supervision
from robot.types import ControlSource, Observation

POSE_A = np.full(14, 0.2, np.float32)
POSE_B = np.full(14, -0.4, np.float32)  # 0.6 away in every joint


class PoseSource:
    """An ActionSource that asks for one pose and counts its starts and stops."""

    def __init__(self, pose, kind=ControlSource.POLICY, name="pose"):
        self.pose, self.kind, self.name = pose, kind, name
        self.starts = self.stops = 0
        self.active = False

    def start(self, observation):
        self.starts += 1
        self.active = True

    def next_action(self, observation):
        assert self.active, "asked for an action while stopped"
        return self.pose.copy()

    def stop(self):
        self.stops += 1
        self.active = False

    @property
    def finished(self):
        return False


class Leaders:
    """The LeadersFollow seam: records what it was told; `pushed` is set by the test."""

    def __init__(self):
        self.following: list[bool] = []
        self.pushed = False

    def set_leaders_follow(self, enabled):
        self.following.append(enabled)

    def leaders_pushed(self):
        return self.pushed


def obs(qpos=POSE_A) -> Observation:
    return Observation(qpos, np.zeros(14, np.float32), np.zeros(14, np.float32), {}, {}, 0.0)


def run(source, ticks):
    actions, kinds = [], []
    for _ in range(ticks):
        actions.append(source.next_action(obs()))
        kinds.append(source.kind)
    return np.stack(actions), kinds


def test_take_over_and_hand_back_ramp_and_label_every_step():
    policy, human = PoseSource(POSE_A), PoseSource(POSE_B, ControlSource.TELEOP)
    supervised = SupervisedSource(policy, human, blend_ticks=30)
    supervised.start(obs())
    before, kinds = run(supervised, 5)
    assert set(kinds) == {ControlSource.POLICY} and np.all(before == POSE_A)
    threading.Thread(target=supervised.take_over).start()  # any thread
    while supervised.supervision is not Supervision.INTERVENTION:
        supervised.next_action(obs())
    during, kinds = run(supervised, 40)
    assert set(kinds) == {ControlSource.INTERVENTION}  # the person's steps, whatever their source's kind
    assert policy.stops == 1 and human.starts == 1 and np.allclose(during[-1], POSE_B)
    supervised.hand_back()
    after, kinds = run(supervised, 40)
    assert set(kinds) == {ControlSource.POLICY} and policy.starts == 2 and human.stops == 1
    path = np.concatenate([before, during, after])
    # Smoothstep over 30 ticks: at most 1.5 * 0.6 / 30 = 0.03 per tick, never the 0.6 jump.
    assert np.abs(np.diff(path, axis=0)).max() <= 1.5 * 0.6 / 30 + 1e-6
    supervised.stop()
    assert policy.stops == 2 and not policy.active and not human.active


def test_a_pushed_leader_takes_over_and_the_leaders_follow_only_while_the_policy_drives():
    policy, human, leaders = PoseSource(POSE_A), PoseSource(POSE_B, ControlSource.TELEOP), Leaders()
    supervised = SupervisedSource(policy, human, blend_ticks=10, leaders=leaders)
    supervised.start(obs())
    run(supervised, 3)
    assert leaders.following == [True]
    leaders.pushed = True
    supervised.next_action(obs())
    assert supervised.supervision is Supervision.INTERVENTION and supervised.taken_by_push
    assert supervised.kind is ControlSource.INTERVENTION and leaders.following == [True, False]
    leaders.pushed = False
    supervised.hand_back()
    supervised.next_action(obs())
    assert leaders.following == [True, False, True] and not supervised.taken_by_push
    supervised.stop()
    assert leaders.following[-1] is False


def test_a_policy_that_has_nothing_yet_holds_and_a_failing_one_raises():
    class Warming(PoseSource):
        def next_action(self, observation):
            return None

    supervised = SupervisedSource(Warming(POSE_A), PoseSource(POSE_B), blend_ticks=5)
    supervised.start(obs())
    assert supervised.next_action(obs()) is None and supervised.kind is ControlSource.HOLD

    class Failing(PoseSource):
        def next_action(self, observation):
            raise RuntimeError("chunk exploded")

    supervised = SupervisedSource(Failing(POSE_A), PoseSource(POSE_B), blend_ticks=5)
    supervised.start(obs())
    with pytest.raises(RuntimeError, match="chunk exploded"):  # the loop turns this into HOLD
        supervised.next_action(obs())
    with pytest.raises(ValueError, match="blend_ticks"):
        SupervisedSource(PoseSource(POSE_A), PoseSource(POSE_B), blend_ticks=0)
