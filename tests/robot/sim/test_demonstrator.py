"""The scripted fold on the simulated rig: it must fold the towel (real physics, no shortcuts)."""

import numpy as np
import pytest

from robot.aloha import start_pose
from robot.kinematics import BimanualKinematics
from robot.sim.config import SimRigConfig
from robot.sim.demonstrator import DemonstratorConfig, ScriptedFoldDemonstrator
from robot.sim.sim_rig import SimRig
from robot.types import ActionSource, ControlSource


@pytest.fixture(scope="module")
def rig():
    with SimRig(SimRigConfig(camera_names=())) as sim:
        yield sim


@pytest.fixture(scope="module")
def demo(rig):
    return ScriptedFoldDemonstrator(rig, BimanualKinematics())


def run_episode(rig, demo, max_ticks=1000):
    observation = rig.read()
    demo.start(observation)
    first = demo.next_action(observation)
    rig.command(first)
    ticks = 1
    while not demo.finished and ticks < max_ticks:
        observation = rig.read()
        rig.command(demo.next_action(observation))
        ticks += 1
    return first, ticks


def test_it_is_a_scripted_action_source(demo):
    assert isinstance(demo, ActionSource)
    assert demo.kind is ControlSource.SCRIPTED
    assert demo.phase == "idle" and not demo.finished
    assert demo.next_action(None) is None  # not started: nothing to say, the loop holds


# Seeds 0, 1, 2: the first three, not picked; benchmarks/sim_demonstrator.py measures 20.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_folds_the_towel(rig, demo, seed, caplog):
    rig.reset_episode(seed)
    with caplog.at_level("WARNING", logger="robot.sim.demonstrator"):
        _, ticks = run_episode(rig, demo)
    # The fingers close a tick into the lift; a grasp that did catch the cloth is not a warning.
    assert not [r for r in caplog.records if "caught no cloth" in r.getMessage()]
    assert demo.finished and demo.phase == "done"
    result = rig.evaluate_task()
    assert result.success, result
    assert result.fold_error_m < 0.04
    assert ticks * 0.02 < 15.0


def test_it_starts_from_wherever_the_arms_are(rig, demo):
    rig.reset_episode(5)
    pose = start_pose()
    pose[[0, 7]] = [0.3, -0.25]  # waists turned
    pose[[2, 9]] += 0.2
    for _ in range(40):
        rig.command(pose)
    observation = rig.read()
    demo.start(observation)
    first = demo.next_action(observation)
    # First command: within one small IK step of the current pose (no jump), grippers unchanged.
    assert np.abs(first - observation.qpos).max() < 0.05
    allowed = rig.joint_limits().max_step.copy()
    arm_joints = [i for i in range(14) if i not in (6, 13)]
    allowed[arm_joints] = np.minimum(allowed[arm_joints], demo.config.max_joint_speed_rad_s / 50)
    rig.command(first)
    previous = first
    while not demo.finished:
        action = demo.next_action(rig.read())
        assert np.all(np.abs(action - previous) <= allowed + 1e-6), "a step the safety filter would clip"
        rig.command(action)
        previous = action
    assert rig.evaluate_task().success


def test_stop_makes_it_quiet_and_config_is_validated(rig, demo):
    rig.reset_episode(0)
    observation = rig.read()
    demo.start(observation)
    assert demo.next_action(observation) is not None
    demo.stop()
    assert demo.next_action(observation) is None
    with pytest.raises(ValueError, match="grasp_height_m"):
        DemonstratorConfig(grasp_height_m=0.2, hover_height_m=0.1)


def test_a_grasp_that_misses_the_cloth_is_reported(rig, caplog):
    # Closing 7 cm above the table catches nothing: the operator's log must say so.
    high = ScriptedFoldDemonstrator(rig, BimanualKinematics(), DemonstratorConfig(grasp_height_m=0.07))
    rig.reset_episode(0)
    with caplog.at_level("WARNING", logger="robot.sim.demonstrator"):
        run_episode(rig, high)
    missed = [r.getMessage() for r in caplog.records if "caught no cloth" in r.getMessage()]
    assert len(missed) == 2 and "left" in missed[0] and "right" in missed[1]
    assert not rig.evaluate_task().success
