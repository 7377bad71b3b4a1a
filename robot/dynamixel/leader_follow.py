"""Leader arms that follow the followers while a policy drives, and notice a hand grabbing them.

While following, each leader has torque on in position mode with a low Position_P_Gain (soft: a
hand moves it easily), and its goals track the pose commanded to the followers, rate-limited from
where it was when the torque came on (no jump). A leader held away from its goal by more than
`push_threshold_rad` for `push_ticks` reads in a row is "pushed": someone took hold of it
(`robot.autonomy.SupervisedSource` then hands the arm to that person, releasing the leaders).
For `grace_s` after the torque comes on, pushes are not looked for: the leader is still catching
up with the followers.

Used by the rigs that declare `robot.capabilities.LeadersFollow` (`AlohaRig`). Control thread only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from robot.dynamixel.arm import GRIPPER, LeaderArm, TeleopMapping
from robot.types import JOINTS_PER_ARM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaderFollowConfig:
    """p_gain: Position_P_Gain while following (the XL430's default is 640; at 200 a hand moves
    the leader with a light push). max_step_rad: largest change of a leader goal per tick (0.02 rad
    at 50 Hz = 1 rad/s). push_threshold_rad / push_ticks / grace_s: see the module doc."""

    p_gain: int = 200
    max_step_rad: float = 0.02
    push_threshold_rad: float = 0.15
    push_ticks: int = 3
    grace_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.p_gain <= 16383:
            raise ValueError(f"leader_follow_p_gain must be 1..16383 (XL430 default 640), got {self.p_gain}")
        if self.max_step_rad <= 0 or self.push_threshold_rad <= 0 or self.push_ticks < 1 or self.grace_s < 0:
            raise ValueError("leader following needs max_step_rad > 0, push_threshold_rad > 0, push_ticks >= 1, grace_s >= 0")


class LeaderFollowing:
    """The leaders of a rig (left, right order) following the commanded pose (see the module doc)."""

    def __init__(self, leaders: Sequence[LeaderArm], mapping: TeleopMapping, config: LeaderFollowConfig) -> None:
        self.leaders = list(leaders)
        self.mapping = mapping
        self.config = config
        self.following = False
        self._goals: list[np.ndarray] = []
        self._gains: list[dict[int, int]] = []  # each leader's Position_P_Gain before following
        self._since_s = 0.0
        self._push_count = 0

    def enable(self) -> None:
        """Torque on where the leaders are, soft gains, goals from here on track the followers."""
        if self.following:
            return
        gain = self.config.p_gain
        self._gains = []
        self._goals = []
        for arm in self.leaders:
            self._gains.append(arm.bus.sync_read("Position_P_Gain", list(arm.ids)))
            arm.bus.sync_write("Position_P_Gain", {sid: gain for sid in arm.ids})
            arm.set_torque(True)  # goal = present position first: the leader does not move
            self._goals.append(np.asarray(arm.read().joint_pos_rad, dtype=np.float64))
        self._since_s = time.monotonic()
        self._push_count = 0
        self.following = True

    def disable(self) -> None:
        """Torque off (the hands holding the leaders drive) and the gains as they were."""
        if not self.following:
            return
        self.following = False
        for arm, gains in zip(self.leaders, self._gains):
            arm.release()
            arm.bus.sync_write("Position_P_Gain", gains)

    def forget(self) -> None:
        """The torque was cut by someone else (E-stop, watchdog): stop following without bus I/O."""
        self.following = False

    def command(self, action: np.ndarray) -> None:
        """Move the leader goals towards the (14,) action sent to the followers."""
        if not self.following:
            return
        step = self.config.max_step_rad
        for k, (arm, goal) in enumerate(zip(self.leaders, self._goals)):
            target = np.array(action[k * JOINTS_PER_ARM : (k + 1) * JOINTS_PER_ARM], dtype=np.float64)
            target[GRIPPER] = self.mapping.grippers.leader_joint_rad.unnormalize(target[GRIPPER])
            goal += np.clip(target - goal, -step, step)
            arm.command(goal)

    def pushed(self) -> bool:
        """Whether a leader has been held away from its goal (reads both leaders)."""
        if not self.following or time.monotonic() - self._since_s < self.config.grace_s:
            return False
        worst = 0.0
        for arm, goal in zip(self.leaders, self._goals):
            worst = max(worst, float(np.abs(arm.read().joint_pos_rad - goal).max()))
        self._push_count = self._push_count + 1 if worst > self.config.push_threshold_rad else 0
        if self._push_count >= self.config.push_ticks:
            log.info("a leader arm is held %.2f rad away from its goal: someone took hold of it", worst)
            return True
        return False
