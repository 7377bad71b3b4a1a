"""Servo health: readings against thresholds, hardware errors, a servo that goes silent."""

import pytest

from robot.dynamixel.arm import ArmConfig, ArmRole, FollowerArm, LeaderArm
from robot.dynamixel.control_table import HardwareError
from robot.dynamixel.errors import ServoHardwareError, ServoNotResponding
from robot.dynamixel.health import HealthThresholds, read_health


@pytest.fixture
def follower_arm(follower_emulator, bus_config):
    with FollowerArm(ArmConfig("follower_left", ArmRole.FOLLOWER, bus_config(follower_emulator.port_name))) as arm:
        yield arm


def test_a_healthy_arm_reports_every_servo(follower_arm):
    report = read_health(follower_arm)
    assert report.ok and report.problems == ()
    assert [s.servo_id for s in report.servos] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert report.servos[2].joint == "shoulder shadow"
    s = report.servos[0]
    assert 11.5 < s.voltage_v <= 12.0 and 20 < s.temperature_c < 60
    assert s.current_ma is not None and s.load_percent is None and s.hardware_error == HardwareError.NONE


def test_hot_servo_warns_before_the_servo_shuts_itself_down(follower_arm, follower_emulator):
    follower_emulator.set_temperature(7, 70.0)  # above our 65 degC warning, below its own 80 degC limit
    report = read_health(follower_arm)
    assert not report.ok
    assert report.problems == ("follower_left wrist_angle (servo 7): hot: 70 degC (limit 65); let it cool down",)
    report.raise_for_hardware_errors()  # no hardware error yet

    follower_emulator.set_temperature(7, 85.0)  # now beyond Temperature_Limit: the servo trips
    report = read_health(follower_arm)
    assert report.servos[6].hardware_error == HardwareError.OVERHEATING
    with pytest.raises(ServoHardwareError, match="Servo 7 \\(wrist_angle joint\\).*overheating.*cool down") as err:
        report.raise_for_hardware_errors()
    assert err.value.bits == HardwareError.OVERHEATING


def test_supply_voltage_threshold_and_input_voltage_error(follower_arm, follower_emulator):
    follower_emulator.set_supply_voltage(9.0)  # below Min_Voltage_Limit (9.5 V): input voltage error too
    report = read_health(follower_arm, HealthThresholds(min_voltage_v=10.5))
    assert all(any("supply at 9.0 V" in p for p in s.problems) for s in report.servos)
    assert all(s.hardware_error & HardwareError.INPUT_VOLTAGE for s in report.servos)


def test_overloaded_gripper_is_a_hardware_error_with_advice(follower_arm, follower_emulator):
    follower_emulator.inject_hardware_error(9, HardwareError.OVERLOAD)
    with pytest.raises(ServoHardwareError, match="Servo 9 \\(gripper joint\\).*overload.*free the arm"):
        read_health(follower_arm).raise_for_hardware_errors()


def test_leader_without_current_sensing_reports_load(leader_emulator, bus_config):
    with LeaderArm(ArmConfig("leader_left", ArmRole.LEADER, bus_config(leader_emulator.port_name))) as arm:
        report = read_health(arm)
    wrist_rotate, gripper = report.servos[-2], report.servos[-1]
    assert wrist_rotate.current_ma is None and wrist_rotate.load_percent is not None
    assert gripper.joint == "gripper" and report.ok


def test_a_servo_that_stops_answering_is_named(follower_arm, follower_emulator):
    follower_emulator.set_silent(5)
    with pytest.raises(ServoNotResponding, match="Servo 5 \\(elbow shadow joint\\)") as err:
        read_health(follower_arm)
    assert err.value.servo_id == 5 and err.value.port == follower_arm.bus.port


def test_thresholds_validate_with_the_fix_in_the_message():
    with pytest.raises(ValueError, match="must be below max_voltage_v"):
        HealthThresholds(min_voltage_v=14.0)
