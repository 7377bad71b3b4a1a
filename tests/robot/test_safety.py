"""The safety filter: position limits, per-tick step limits, gripper range, NaN/inf and shape."""

import math

import numpy as np
import pytest

from robot.aloha import start_pose
from robot.safety import InvalidAction, NonFiniteAction, SafetyConfig, SafetyFilter, SafetyLimit
from robot.types import GRIPPER_INDICES, JOINT_NAMES, STATE_DIM, JointLimits


def rig_limits(max_step: float = 0.1) -> JointLimits:
    low = np.full(STATE_DIM, -2.0)
    high = np.full(STATE_DIM, 2.0)
    # A rig whose gripper range is wider than the action convention's [0, 1].
    low[list(GRIPPER_INDICES)] = -0.5
    high[list(GRIPPER_INDICES)] = 1.5
    return JointLimits(low=low, high=high, max_step=np.full(STATE_DIM, max_step))


def make_filter(max_step=0.1, joint_speed=100.0, gripper_speed=100.0, rate_hz=50.0) -> SafetyFilter:
    return SafetyFilter(rig_limits(max_step), rate_hz, SafetyConfig(joint_speed, gripper_speed))


def test_action_inside_every_limit_passes_unchanged():
    f = make_filter()
    previous = start_pose()
    action = previous + 0.05
    action[list(GRIPPER_INDICES)] = 0.5
    previous[list(GRIPPER_INDICES)] = 0.5
    result = f.apply(action, previous)
    np.testing.assert_allclose(result.action, action, atol=1e-6)
    assert result.clipped == () and result.limits_hit == ()
    assert result.action.dtype == np.float32 and result.action.shape == (STATE_DIM,)


def test_position_limits_clip_and_name_the_joint():
    f = make_filter(max_step=10.0)
    previous = np.zeros(STATE_DIM, dtype=np.float32)
    previous[list(GRIPPER_INDICES)] = 0.5
    action = previous.copy()
    action[1] = 3.0  # left_shoulder above 2.0
    action[9] = -7.0  # right_elbow below -2.0
    result = f.apply(action, previous)
    assert result.action[1] == pytest.approx(2.0)
    assert result.action[9] == pytest.approx(-2.0)
    assert set(result.clipped) == {"left_shoulder", "right_elbow"}
    assert set(result.position_limited) == {"left_shoulder", "right_elbow"}
    hit = next(h for h in result.limits_hit if h.joint == "left_shoulder")
    assert isinstance(hit, SafetyLimit)
    assert (hit.value, hit.limit, hit.what) == (3.0, 2.0, "position")
    assert "left_shoulder" in str(hit)


def test_gripper_is_kept_in_zero_one_even_if_the_rig_allows_more():
    f = make_filter(max_step=10.0)
    previous = np.zeros(STATE_DIM, dtype=np.float32)
    action = previous.copy()
    action[6], action[13] = 1.4, -0.3
    result = f.apply(action, previous)
    assert result.action[6] == pytest.approx(1.0)
    assert result.action[13] == pytest.approx(0.0)
    assert set(result.clipped) == {"left_gripper", "right_gripper"}


def test_step_limit_is_the_tighter_of_rig_and_speed():
    # Rig allows 0.1 rad/tick; 1.5 rad/s at 50 Hz is 0.03 rad/tick -> 0.03 wins for arm joints;
    # grippers: 2.0 /s at 50 Hz = 0.04 per tick.
    f = SafetyFilter(rig_limits(0.1), 50.0, SafetyConfig(1.5, 2.0))
    assert f.max_step[0] == pytest.approx(0.03)
    assert f.max_step[6] == pytest.approx(0.04)
    previous = np.zeros(STATE_DIM, dtype=np.float32)
    previous[list(GRIPPER_INDICES)] = 0.5
    action = previous + 1.0
    action[list(GRIPPER_INDICES)] = 0.0
    result = f.apply(action, previous)
    delta = result.action - previous
    np.testing.assert_allclose(delta[0], 0.03, atol=1e-6)
    np.testing.assert_allclose(delta[6], -0.04, atol=1e-6)
    assert set(result.clipped) == set(JOINT_NAMES)
    rate_hit = next(h for h in result.limits_hit if h.joint == "left_waist")
    assert rate_hit.what == "change per tick" and rate_hit.limit == pytest.approx(0.03)


def test_repeated_filtering_reaches_a_far_target_without_exceeding_the_step():
    f = make_filter(max_step=0.05)
    command = np.zeros(STATE_DIM, dtype=np.float32)
    command[list(GRIPPER_INDICES)] = 0.5
    target = command + 1.0
    target[list(GRIPPER_INDICES)] = 1.0
    for _ in range(40):
        new = f.apply(target, command).action
        assert np.max(np.abs(new - command)) <= 0.05 + 1e-6
        command = new
    np.testing.assert_allclose(command, target, atol=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_action_is_rejected_with_the_joint_named(bad):
    f = make_filter()
    action = start_pose()
    action[4] = bad
    with pytest.raises(NonFiniteAction) as info:
        f.apply(action, start_pose())
    assert info.value.joint == "left_wrist_angle"
    assert isinstance(info.value, SafetyLimit)
    assert "holds" in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros(13), np.zeros((2, 14)), "fourteen", None])
def test_malformed_action_is_rejected(bad):
    with pytest.raises(InvalidAction, match="holds"):
        make_filter().apply(bad, start_pose())


def test_previous_command_outside_the_limits_may_only_move_back_in():
    f = make_filter(max_step=0.1)
    previous = np.zeros(STATE_DIM, dtype=np.float32)
    previous[list(GRIPPER_INDICES)] = 0.5
    previous[0] = 2.3  # a hold pose read from an arm that sits past its limit
    outward = previous.copy()
    outward[0] = 2.5
    # Asking to go further out is read as "go to the limit": one step back toward the range.
    assert f.apply(outward, previous).action[0] == pytest.approx(2.2)
    inward = previous.copy()
    inward[0] = 0.0
    assert f.apply(inward, previous).action[0] == pytest.approx(2.2)


def test_clamp_to_limits_for_hold_poses():
    f = make_filter()
    pose = np.full(STATE_DIM, 5.0)
    clamped = f.clamp_to_limits(pose)
    assert clamped[0] == pytest.approx(2.0) and clamped[6] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"max_joint_speed_rad_s": 0.0}, "max_joint_speed_rad_s"), ({"max_gripper_speed_per_s": math.nan}, "max_gripper_speed_per_s")],
)
def test_safety_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SafetyConfig(**kwargs)


def test_gripper_limits_that_do_not_overlap_zero_one_are_refused():
    limits = rig_limits()
    low, high = limits.low.copy(), limits.high.copy()
    low[6], high[6] = 1.2, 1.5
    with pytest.raises(ValueError, match="left_gripper"):
        SafetyFilter(JointLimits(low=low, high=high, max_step=limits.max_step), 50.0)
