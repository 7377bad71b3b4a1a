"""BimanualKinematics on gym-aloha's real ViperX model: FK symmetry, IK reaching targets."""

import numpy as np
import pytest

from robot.aloha import start_pose
from robot.kinematics import ARM_SLICE, BimanualKinematics

DOWN = np.column_stack([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # fingers pointing at the table


@pytest.fixture(scope="module")
def kin():
    return BimanualKinematics()


def test_forward_at_start_pose_is_mirror_symmetric_and_in_front_of_each_base(kin):
    poses = kin.forward(start_pose())
    (left, left_rot), (right, right_rot) = poses["left"], poses["right"]
    # gym-aloha places the right arm mirrored to within a few micrometres.
    assert left[0] == pytest.approx(-right[0], abs=1e-5)
    assert left[1:] == pytest.approx(right[1:], abs=1e-5)
    # Bases at x = -/+0.469: each gripper reaches towards the middle, above the table.
    assert -0.469 < left[0] < 0.0 and 0.0 < right[0] < 0.469
    assert 0.1 < left[2] < 0.5
    for rot in (left_rot, right_rot):
        assert rot @ rot.T == pytest.approx(np.eye(3), abs=1e-9)
    # Fingers (gripper x axis) point at the other arm.
    assert left_rot[0, 0] > 0.9 and right_rot[0, 0] < -0.9


@pytest.mark.parametrize("arm", ["left", "right"])
def test_solve_reaches_a_table_target_pointing_down(kin, arm):
    sign = -1.0 if arm == "left" else 1.0
    target = np.array([sign * 0.17, 0.33, 0.03])
    qpos = start_pose()
    solved = kin.solve(arm, qpos, target, DOWN, max_iterations=200)
    pos, rot = kin.forward(solved)[arm]
    assert np.linalg.norm(pos - target) < 1e-3
    assert np.degrees(np.arccos(np.clip((np.trace(rot.T @ DOWN) - 1) / 2, -1, 1))) < 1.0
    other = "right" if arm == "left" else "left"
    assert solved[ARM_SLICE[other]] == pytest.approx(qpos[ARM_SLICE[other]])  # other arm untouched
    assert solved[[6, 13]] == pytest.approx(qpos[[6, 13]])  # grippers untouched
    low, high = kin.joint_range(arm)
    assert np.all(solved[ARM_SLICE[arm]] >= low) and np.all(solved[ARM_SLICE[arm]] <= high)


def test_small_step_converges_in_few_iterations(kin):
    qpos = start_pose()
    pos, rot = kin.forward(qpos)["left"]
    target = pos + np.array([0.004, -0.003, 0.002])
    solved = kin.solve("left", qpos, target, rot, max_iterations=10)
    assert np.linalg.norm(kin.forward(solved)["left"][0] - target) < 1e-3


def test_unreachable_target_returns_best_pose_within_limits_without_raising(kin):
    qpos = start_pose()
    target = np.array([-2.0, 0.5, 0.2])  # 1.5 m beyond the left arm's base
    solved = kin.solve("left", qpos, target)
    start_error = np.linalg.norm(kin.forward(qpos)["left"][0] - target)
    best_error = np.linalg.norm(kin.forward(solved)["left"][0] - target)
    assert best_error < start_error - 0.3  # stretched towards it
    low, high = kin.joint_range("left")
    assert np.all(solved[:6] >= low) and np.all(solved[:6] <= high)


def test_bad_input_is_rejected_with_a_clear_error(kin):
    with pytest.raises(ValueError, match="shape"):
        kin.forward(np.zeros(7))
    with pytest.raises(ValueError, match="arm"):
        kin.solve("middle", start_pose(), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        kin.solve("left", start_pose(), np.array([np.nan, 0.0, 0.0]))
