"""ALOHA conventions that every rig shares (see ALOHA.md): start pose and gripper normalisation.

The gripper constants are the original ALOHA values. Mobile ALOHA and Trossen rigs use other
values, so a rig file may override each of them; these are only the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot.types import STATE_DIM

CONTROL_RATE_HZ = 50.0  # ALOHA's DT = 0.02 s
START_ARM_POSE_RAD: tuple[float, ...] = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0)
START_FINGER_POS_M = 0.02239  # follower fingers at the start pose (each finger, +/-)
MIN_ACCEPTABLE_LOOP_RATE_HZ = 42.0  # ALOHA re-records an episode whose mean rate is below this


@dataclass(frozen=True)
class GripperRange:
    """One calibrated range: the value at fully open and fully closed."""

    open: float
    close: float

    def normalize(self, x):
        """Raw value -> [0, 1] (0 closed, 1 open); values outside the range extrapolate."""
        return (np.asarray(x, dtype=np.float64) - self.close) / (self.open - self.close)

    def unnormalize(self, y):
        """[0, 1] -> raw value."""
        return np.asarray(y, dtype=np.float64) * (self.open - self.close) + self.close


@dataclass(frozen=True)
class GripperCalibration:
    """The four gripper ranges of an ALOHA rig (leader/follower x finger position/joint)."""

    leader_finger_m: GripperRange = GripperRange(open=0.02417, close=0.01244)
    follower_finger_m: GripperRange = GripperRange(open=0.05800, close=0.01844)
    leader_joint_rad: GripperRange = GripperRange(open=0.3083, close=-0.6842)
    follower_joint_rad: GripperRange = GripperRange(open=1.4910, close=-0.6213)

    def action_from_leader_joint(self, leader_joint_rad):
        """Action gripper = leader *joint* normalised."""
        return self.leader_joint_rad.normalize(leader_joint_rad)

    def follower_command_from_action(self, action_gripper):
        """Follower gripper joint command (rad) = unnormalise(action)."""
        return self.follower_joint_rad.unnormalize(action_gripper)

    def observation_from_follower_finger(self, follower_finger_m):
        """Observation gripper = follower *finger position* normalised."""
        return self.follower_finger_m.normalize(follower_finger_m)


ALOHA_GRIPPERS = GripperCalibration()


def start_pose(gripper_open: float = 1.0) -> np.ndarray:
    """The (14,) ALOHA start pose as an action (gripper normalised, default open)."""
    arm = list(START_ARM_POSE_RAD) + [gripper_open]
    pose = np.asarray(arm + arm, dtype=np.float32)
    assert pose.shape == (STATE_DIM,)
    return pose
