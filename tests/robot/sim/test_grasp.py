"""The sim grasp model in the real scene: cloth is held only by a gripper closed on it."""

import numpy as np
import pytest

from robot.aloha import start_pose
from robot.kinematics import BimanualKinematics
from robot.sim.config import SimRigConfig
from robot.sim.demonstrator import gripper_down_rotation
from robot.sim.sim_rig import SimRig


@pytest.fixture(scope="module")
def rig():
    with SimRig(SimRigConfig(camera_names=())) as sim:
        yield sim


@pytest.fixture(scope="module")
def kin():
    return BimanualKinematics()


def move(rig, kin, command, target, gripper, ticks, arm="left"):
    """Drive the left grasp point in a straight line to `target` (pointing down), gripper fixed."""
    rot = gripper_down_rotation(rig.model.body("vx300s_left").pos[:2], target)
    start = kin.forward(command)[arm][0]
    for i in range(1, ticks + 1):
        command = kin.solve(arm, command, start + (target - start) * i / ticks, rot, max_iterations=20)
        command[6] = gripper
        rig.command(command)
    return command


def corner(rig, name="near_left"):
    return rig.towel_vertices_m()[rig.task.corner_ids[name]].copy()


def above_corner(rig, height_m):
    target = corner(rig) + np.array([0.006, 0.006, 0.0])  # a little inside the towel
    target[2] = height_m
    return target


def test_a_gripper_closed_on_the_corner_holds_it_until_opened(rig, kin):
    rig.reset_episode(0)
    corner_id = rig.task.corner_ids["near_left"]
    command = move(rig, kin, start_pose().astype(float), above_corner(rig, 0.09), 1.0, 60)
    command = move(rig, kin, command, above_corner(rig, 0.025), 1.0, 30)
    assert len(rig.held_vertices("left")) == 0  # open: nothing held, even with cloth between the fingers
    command = move(rig, kin, command, above_corner(rig, 0.025), 0.0, 20)
    held = rig.held_vertices("left")
    assert corner_id in held and 1 <= len(held) <= 8
    assert len(rig.held_vertices("right")) == 0
    command = move(rig, kin, command, above_corner(rig, 0.14), 0.0, 30)
    assert corner(rig)[2] > 0.09  # lifted with the gripper
    grasp_point = rig.gripper_poses()["left"][0]
    assert np.linalg.norm(corner(rig) - grasp_point) < 0.04
    command = move(rig, kin, command, above_corner(rig, 0.14), 1.0, 5)
    assert len(rig.held_vertices("left")) == 0
    move(rig, kin, command, above_corner(rig, 0.14), 1.0, 40)
    assert corner(rig)[2] < 0.01  # fell back onto the table


def test_a_gripper_closed_in_the_air_does_not_pick_cloth_up_later(rig, kin):
    rig.reset_episode(0)
    command = move(rig, kin, start_pose().astype(float), above_corner(rig, 0.09), 1.0, 60)
    command = move(rig, kin, command, above_corner(rig, 0.09), 0.0, 20)  # close 9 cm above the cloth
    assert len(rig.held_vertices("left")) == 0
    command = move(rig, kin, command, above_corner(rig, 0.025), 0.0, 30)  # lower the shut fingers onto it
    move(rig, kin, command, above_corner(rig, 0.12), 0.0, 30)
    assert len(rig.held_vertices("left")) == 0
    assert corner(rig)[2] < 0.01


def test_open_fingers_far_from_the_cloth_catch_nothing(rig, kin):
    rig.reset_episode(0)
    target = above_corner(rig, 0.025) + np.array([-0.08, 0.0, 0.0])  # 8 cm off the towel's left edge
    command = move(rig, kin, start_pose().astype(float), target + np.array([0, 0, 0.06]), 1.0, 60)
    command = move(rig, kin, command, target, 1.0, 20)
    move(rig, kin, command, target, 0.0, 20)
    assert len(rig.held_vertices("left")) == 0
