"""Follower and leader arms on the emulator, calibration and the ALOHA gripper mapping."""

import json

import numpy as np
import pytest

from robot.aloha import ALOHA_GRIPPERS, START_ARM_POSE_RAD
from robot.dynamixel import control_table as ct
from robot.dynamixel.arm import ArmConfig, ArmReading, ArmRole, FollowerArm, GripperLinkage, LeaderArm, TeleopMapping
from robot.dynamixel.calibration import (
    ArmCalibration,
    CalibrationError,
    CalibrationProcedure,
    CalibrationStep,
    CalibrationStore,
    JointCalibration,
)
from robot.dynamixel.errors import ServoMismatch
from robot.dynamixel.layout import VIPERX_300_FOLLOWER, WIDOWX_250_LEADER

POSE = np.array([*START_ARM_POSE_RAD, 0.5])


def follower(emulator, bus_config, **kw):
    return FollowerArm(ArmConfig("follower_left", ArmRole.FOLLOWER, bus_config(emulator.port_name)), **kw)


def leader(emulator, bus_config, **kw):
    return LeaderArm(ArmConfig("leader_left", ArmRole.LEADER, bus_config(emulator.port_name)), **kw)


def test_follower_connect_sets_modes_limits_and_bus_watchdog(follower_emulator, bus_config, monkeypatch):
    with follower(follower_emulator, bus_config) as arm:
        reg = follower_emulator.read_register
        for sid in VIPERX_300_FOLLOWER.all_ids:  # shadows too: EEPROM is per servo
            assert reg(sid, "Return_Delay_Time") == 0 and reg(sid, "Velocity_Limit") == 131
        assert [reg(i, "Operating_Mode") for i in arm.ids] == [3, 3, 3, 3, 3, 3, 5]
        assert reg(3, "Operating_Mode") == 3 and reg(9, "Current_Limit") == 300 and reg(9, "Goal_Current") == 300
        assert arm.watchdog_ms() == {name: 100 for name in ("waist", "shoulder", "elbow", "forearm_roll",
                                                            "wrist_angle", "wrist_rotate", "gripper")}
        assert not any(arm.torque_enabled().values())
        written = []
        real_write, real_sync_write = arm.bus.write, arm.bus.sync_write
        monkeypatch.setattr(arm.bus, "write", lambda sid, reg, value: (written.append(reg), real_write(sid, reg, value)))
        monkeypatch.setattr(arm.bus, "sync_write", lambda reg, values: (written.append(reg), real_sync_write(reg, values)))
        assert not arm.configure()  # again: EEPROM already right, only the RAM settings are written
        assert sorted(set(written)) == ["Bus_Watchdog", "Goal_Current"]


def test_follower_reads_radians_holds_on_torque_and_follows_commands(follower_emulator, bus_config, wait_for):
    with follower(follower_emulator, bus_config) as arm:
        reading = arm.read()
        assert np.abs(reading.joint_pos_rad - POSE).max() <= ct.RAD_PER_PULSE
        assert reading.effort.shape == (7,) and reading.alerts == ()
        arm.set_torque(True)
        assert np.abs(arm.read().joint_pos_rad - POSE).max() <= ct.RAD_PER_PULSE  # no jump at torque-on
        target = POSE + np.array([0.1, -0.05, 0.05, 0.2, -0.1, 0.1, -0.3])
        arm.command(target)
        assert wait_for(lambda: np.abs(arm.read().joint_pos_rad - target).max() <= 2 * ct.RAD_PER_PULSE, 1.0)
        with pytest.raises(ValueError, match="7 finite"):
            arm.command(np.full(7, np.nan))
    assert wait_for(lambda: follower_emulator.read_register(1, "Torque_Enable") == 0)  # disconnect cut it


def test_leader_release_lets_the_hand_move_it(leader_emulator, bus_config, wait_for):
    from robot.dynamixel.emulator import Squeeze

    leader_emulator.attach_motion(9, Squeeze(closed_rad=-0.6842, delay_s=0.0, ramp_s=0.1))
    with leader(leader_emulator, bus_config) as arm:
        arm.set_torque(True)
        assert arm.torque_enabled()["gripper"]
        arm.release(("gripper",))
        assert wait_for(lambda: arm.read().joint_pos_rad[6] < -0.6, 1.0)
        assert arm.torque_enabled() == {"waist": True, "shoulder": True, "elbow": True, "forearm_roll": True,
                                        "wrist_angle": True, "wrist_rotate": True, "gripper": False}
        assert arm.read().effort.shape == (7,)  # % load on the XL/XC servos, mA on the XM


def test_connect_refuses_servos_that_do_not_match_the_calibration(follower_emulator, bus_config):
    cal = ArmCalibration.default("follower_left", VIPERX_300_FOLLOWER)
    wrong = ArmCalibration(cal.arm_id, (*cal.joints[:5], JointCalibration("wrist_rotate", 8, 1060, 2048, 1), cal.joints[6]))
    with pytest.raises(ServoMismatch, match="Servo 8 .*model number 1060 .*calibration of follower_left"):
        follower(follower_emulator, bus_config, calibration=wrong)
    follower_emulator.write_register(8, "Model_Number", 1060)  # someone fitted another servo
    with pytest.raises(ServoMismatch, match="Servo 8 .*expected XM430-W350, found XL430-W250"):
        follower(follower_emulator, bus_config).connect()


def test_arm_config_validates_with_the_fix_in_the_message(bus_config):
    with pytest.raises(ValueError, match="Trossen uses 300"):
        ArmConfig("f", ArmRole.FOLLOWER, bus_config("/dev/x"), gripper_current_limit=5000)
    with pytest.raises(ValueError, match="multiple of 20"):
        ArmConfig("f", ArmRole.FOLLOWER, bus_config("/dev/x"), bus_watchdog_ms=30)
    with pytest.raises(ValueError, match="not a follower"):
        FollowerArm(ArmConfig("l", "leader", bus_config("/dev/x")))


def _move(emulator, pose):
    for joint, q in zip(WIDOWX_250_LEADER.joints, pose):
        for sid in (joint.servo_id, *joint.shadow_ids):
            emulator.set_position_rad(sid, q)


def test_calibration_procedure_measures_zero_signs_and_gripper_range(leader_emulator, bus_config, tmp_path):
    with leader(leader_emulator, bus_config) as arm:
        arm.set_torque(True)
        proc = CalibrationProcedure("leader_left", WIDOWX_250_LEADER, arm)
        assert "Next" in proc.prompt and proc.state is CalibrationStep.START
        proc.advance()
        assert not any(arm.torque_enabled().values())  # the operator moves it by hand from now on
        zero = np.array([0.02, -0.01, 0.03, 0.0, 0.01, -0.02, 0.0])
        _move(leader_emulator, zero)
        proc.step()
        assert proc.live_rad is not None
        proc.advance()
        assert proc.state is CalibrationStep.ROTATED and "90 degrees" in proc.prompt
        # Forgot the elbow: the step is refused with the joint named, and stays put.
        turned = zero + np.array([1.5, 1.6, 0.0, -1.5, 1.6, 1.5, 0.0])
        _move(leader_emulator, turned)
        with pytest.raises(CalibrationError, match="elbow"):
            proc.advance()
        assert proc.state is CalibrationStep.ROTATED
        turned[2] += 1.5
        _move(leader_emulator, turned)
        proc.advance()
        _move(leader_emulator, [*turned[:6], 0.3083])
        proc.advance()
        _move(leader_emulator, [*turned[:6], -0.6842])
        proc.advance()
        assert proc.done and "Save" in proc.prompt
    cal = proc.result
    assert [j.sign for j in cal.joints] == [1, 1, 1, -1, 1, 1, 1]  # forearm_roll turned the other way
    assert cal.joints[1].zero_pulses == ct.rad_to_pulses(-0.01)
    assert cal.gripper_open_rad == pytest.approx(0.3083, abs=2e-3) and cal.gripper_closed_rad == pytest.approx(-0.6842, abs=2e-3)
    assert cal.pulses_to_rad(ct.rad_to_pulses(zero)) == pytest.approx(np.zeros(7), abs=ct.RAD_PER_PULSE)  # zero pose -> 0 rad

    store = CalibrationStore(tmp_path / "calibration")
    path = store.save(cal)
    assert path.name == "leader_left.json" and store.load("leader_left") == cal
    assert len(cal.digest) == 16
    path.write_text(path.read_text()[:50])
    with pytest.raises(CalibrationError, match="Recalibrate arm leader_left"):
        store.load("leader_left")
    with pytest.raises(CalibrationError, match="Run the calibration"):
        store.load("leader_right")


def test_a_stored_calibration_is_applied_on_the_next_connect(leader_emulator, bus_config, tmp_path):
    cal = ArmCalibration.default("leader_left", WIDOWX_250_LEADER)
    joints = list(cal.joints)
    joints[0] = JointCalibration("waist", 1, 1020, 2048 + 100, -1)
    CalibrationStore(tmp_path).save(ArmCalibration(cal.arm_id, tuple(joints)))
    with leader(leader_emulator, bus_config, calibration=CalibrationStore(tmp_path).load("leader_left")) as arm:
        # The waist servo sits at 2048, 100 pulses below the calibrated zero, and turns the other way.
        assert arm.read().joint_pos_rad[0] == pytest.approx(100 * ct.RAD_PER_PULSE, abs=1e-9)
    data = json.loads((tmp_path / "leader_left.json").read_text())
    assert data["joints"][0]["sign"] == -1


def test_gripper_linkage_reproduces_the_aloha_finger_constants():
    link = GripperLinkage()
    g = ALOHA_GRIPPERS
    assert link.finger_m(g.follower_joint_rad.open) == pytest.approx(g.follower_finger_m.open, abs=2e-4)
    assert link.finger_m(g.follower_joint_rad.close) == pytest.approx(g.follower_finger_m.close, abs=2e-4)
    th, w, h = 0.4, 0.7, 1e-6
    numeric = (link.finger_m(th + h * w) - link.finger_m(th)) / h
    assert link.finger_velocity_m_s(th, w) == pytest.approx(numeric, rel=1e-4)


def test_teleop_mapping_follows_aloha_conventions():
    m = TeleopMapping()
    g = ALOHA_GRIPPERS
    leader_q = np.array([*START_ARM_POSE_RAD, g.leader_joint_rad.open])
    action = m.action_from_leader(leader_q)
    assert action.dtype == np.float32 and action[6] == pytest.approx(1.0)
    assert np.allclose(action[:6], START_ARM_POSE_RAD)
    assert m.follower_command(action)[6] == pytest.approx(g.follower_joint_rad.open, abs=1e-6)
    closed = m.follower_command(m.action_from_leader([*START_ARM_POSE_RAD, g.leader_joint_rad.close]))
    assert closed[6] == pytest.approx(g.follower_joint_rad.close, abs=1e-6)
    reading = ArmReading(np.array([*START_ARM_POSE_RAD, g.follower_joint_rad.open]), np.zeros(7), np.zeros(7), 0.0)
    qpos, qvel, effort = m.observation(reading)
    assert qpos[6] == pytest.approx(1.0, abs=3e-3) and qvel.dtype == np.float32
    half = TeleopMapping().observation(ArmReading(np.r_[np.zeros(6), 0.4], np.r_[np.zeros(6), 1.0], np.zeros(7), 0.0))
    assert half[1][6] > 0  # opening moves the fingers apart
