"""The bus: the real dynamixel-sdk against the pty emulator."""

import time

import numpy as np
import pytest

from robot.dynamixel import control_table as ct
from robot.dynamixel.bus import BusConfig, DynamixelBus, PingResult
from robot.dynamixel.emulator import ServoBusEmulator, arm_servos
from robot.dynamixel.errors import CommError, ServoError, ServoMismatch, ServoNotResponding
from robot.dynamixel.layout import VIPERX_300_FOLLOWER as FOLLOWER
from robot.dynamixel.protocol import Instruction

IDS = FOLLOWER.primary_ids
MODELS = {i: FOLLOWER.model_of(i) for i in FOLLOWER.all_ids}


def test_connect_pings_every_servo_and_reads_firmware(follower_bus, follower_emulator):
    assert follower_bus.ping(8) == PingResult(ct.XM430_W350.model_number, 46)
    assert follower_bus.fast_sync_read_supported(IDS)
    assert follower_emulator.stats.instructions["PING"] >= len(FOLLOWER.all_ids)


def test_read_write_single_registers_with_signs(follower_bus, follower_emulator):
    follower_bus.write(1, "Goal_Velocity", -20)
    assert follower_bus.read(1, "Goal_Velocity") == -20
    assert follower_emulator.read_register(1, "Goal_Velocity") == -20
    assert follower_bus.read(2, "Present_Position") == ct.rad_to_pulses(-0.96)


def test_read_state_matches_the_servos_with_fast_and_normal_sync_read(follower_bus, follower_emulator, bus_config):
    expected = [follower_emulator.read_register(i, "Present_Position") for i in IDS]
    fast = follower_bus.read_state(IDS)
    assert fast.position.tolist() == expected and fast.ids == IDS
    assert follower_emulator.stats.instructions.get("FAST_SYNC_READ") >= 1
    follower_bus.disconnect()
    normal_bus = DynamixelBus(bus_config(follower_emulator.port_name, fast_sync_read="off"), MODELS)
    with normal_bus:
        before = dict(follower_emulator.stats.instructions)
        normal = normal_bus.read_state(IDS)
        after = follower_emulator.stats.instructions
    assert normal.position.tolist() == expected
    assert after.get("SYNC_READ", 0) - before.get("SYNC_READ", 0) == 1 + normal_bus.stats.retries
    assert after.get("FAST_SYNC_READ") == before.get("FAST_SYNC_READ")


def test_old_firmware_falls_back_to_normal_sync_read(bus_config):
    servos = arm_servos(FOLLOWER, firmware_version=44)
    with ServoBusEmulator(servos) as em, DynamixelBus(bus_config(em.port_name), MODELS) as bus:
        assert not bus.fast_sync_read_supported(IDS)
        bus.read_state(IDS)
        assert "FAST_SYNC_READ" not in em.stats.instructions


def test_sync_write_moves_the_joints_and_their_shadows(follower_bus, follower_emulator, wait_for):
    follower_bus.set_torque(IDS, True)
    assert wait_for(lambda: follower_emulator.read_register(9, "Torque_Enable") == 1)
    goal = {i: follower_emulator.read_register(i, "Present_Position") + 60 for i in IDS}
    follower_bus.sync_write("Goal_Position", goal)
    time.sleep(0.2)
    state = follower_bus.read_state(IDS)
    assert np.abs(state.position - np.array([goal[i] for i in IDS])).max() <= 2
    assert abs(follower_emulator.read_register(3, "Present_Position") - goal[2]) <= 2  # shoulder shadow
    assert abs(follower_emulator.read_register(5, "Present_Position") - goal[4]) <= 2  # elbow shadow


def test_torque_disabled_restores_torque_in_finally(follower_bus, follower_emulator, wait_for):
    follower_bus.set_torque([1, 2], True)
    assert wait_for(lambda: follower_emulator.read_register(2, "Torque_Enable") == 1)
    with pytest.raises(RuntimeError, match="inside"):
        with follower_bus.torque_disabled([1, 2, 4]):
            assert wait_for(lambda: follower_emulator.read_register(1, "Torque_Enable") == 0)
            follower_bus.write(1, "Velocity_Limit", 131)  # EEPROM: allowed now
            raise RuntimeError("inside")
    assert wait_for(lambda: [follower_emulator.read_register(i, "Torque_Enable") for i in (1, 2, 4)] == [1, 1, 0])
    assert follower_emulator.read_register(1, "Velocity_Limit") == 131


def test_refused_write_is_a_servo_error_naming_servo_and_register(follower_bus):
    follower_bus.set_torque([1], True)
    with pytest.raises(ServoError, match=r"Servo 1 on .* refused Velocity_Limit.*torque off") as err:
        follower_bus.write(1, "Velocity_Limit", 100)
    assert (err.value.servo_id, err.value.register, err.value.error_number) == (1, "Velocity_Limit", 7)


@pytest.mark.parametrize("fault", ["drop", "corrupt", "late"])
def test_a_lost_reply_is_retried_within_the_budget(follower_bus, follower_emulator, fault):
    inject = {"drop": lambda: follower_emulator.drop_replies(1, servo_id=4),
              "corrupt": lambda: follower_emulator.corrupt_replies(1, servo_id=4),
              "late": lambda: follower_emulator.delay_replies(40, servo_id=4)}[fault]
    expected = follower_emulator.read_register(4, "Present_Position")
    inject()
    assert follower_bus.read(4, "Present_Position") == expected
    inject()
    assert follower_bus.read_state(IDS).position[IDS.index(4)] == expected
    stats = follower_bus.stats
    assert stats.retries >= 2 and stats.failures == 0
    assert stats.timeouts + stats.corrupt >= 2 and stats.errors_per_s > 0
    assert stats.rtt_ms_p50 > 0 and stats.rtt_ms_p99 >= stats.rtt_ms_p50
    time.sleep(0.06)  # a late reply must not be taken for the next call's
    assert follower_bus.read(4, "Goal_Position") == follower_emulator.read_register(4, "Goal_Position")


def test_a_silent_servo_is_named_in_a_typed_error(follower_emulator, bus_config):
    names = {j.servo_id: j.name for j in FOLLOWER.joints}
    follower_bus = DynamixelBus(bus_config(follower_emulator.port_name, retries=2, call_budget_ms=200),
                                MODELS, joint_names=names)
    follower_bus.connect()
    follower_emulator.set_silent(6)
    t0 = time.monotonic()
    with pytest.raises(ServoNotResponding) as err:
        follower_bus.read_state(IDS)
    assert err.value.servo_id == 6 and err.value.joint == "forearm_roll" and err.value.port == follower_bus.port
    assert "Servo 6 (forearm_roll joint)" in str(err.value) and "Present_Position" in str(err.value)
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(ServoNotResponding, match="Servo 6"):
        follower_bus.read(6, "Present_Temperature")
    assert follower_bus.stats.failures == 2
    follower_emulator.set_silent(6, False)
    assert follower_bus.read_state(IDS).position.shape == (7,)
    follower_bus.disconnect()


def test_retries_stop_when_the_budget_is_spent(follower_emulator, bus_config):
    config = bus_config(follower_emulator.port_name, retries=50, call_budget_ms=30.0)
    with DynamixelBus(config, MODELS) as bus:
        follower_emulator.set_silent(1)
        t0 = time.monotonic()
        with pytest.raises(CommError):
            bus.read(1, "Present_Position")
        assert time.monotonic() - t0 < 0.1
        assert bus.stats.retries < 50


def test_connect_refuses_the_wrong_servos(follower_emulator, bus_config):
    wrong = dict(MODELS)
    wrong[8] = ct.XL430_W250
    with pytest.raises(ServoMismatch, match="Servo 8 .*expected XL430-W250, found XM430-W350"):
        DynamixelBus(bus_config(follower_emulator.port_name), wrong).connect()
    missing = dict(MODELS)
    missing[12] = ct.XM430_W350
    with pytest.raises(CommError, match="servo 12"):
        DynamixelBus(bus_config(follower_emulator.port_name), missing).connect()


def test_a_missing_port_is_a_comm_error_naming_it():
    with pytest.raises(CommError, match="/dev/ttyDXL_nowhere.*cannot open the port"):
        DynamixelBus(BusConfig("/dev/ttyDXL_nowhere"), MODELS).connect()


def test_bus_config_validates_with_the_fix_in_the_message():
    with pytest.raises(ValueError, match="1000000"):
        BusConfig("/dev/x", baud_rate=1_234_567)
    with pytest.raises(ValueError, match="ALOHA uses 1"):
        BusConfig("/dev/x", latency_timer_ms=0)


def test_emergency_torque_off_works_while_the_bus_lock_is_held(follower_bus, follower_emulator, wait_for):
    follower_bus.set_torque(FOLLOWER.primary_ids, True)
    assert wait_for(lambda: follower_emulator.read_register(3, "Torque_Enable") == 1)
    follower_bus._lock.acquire()  # a control thread stuck inside a transaction
    try:
        assert follower_bus.emergency_torque_off(FOLLOWER.all_ids, lock_timeout_s=0.01)
    finally:
        follower_bus._lock.release()
    assert wait_for(lambda: all(follower_emulator.read_register(i, "Torque_Enable") == 0 for i in FOLLOWER.all_ids))
    assert follower_emulator.stats.instructions[Instruction.SYNC_WRITE.name] >= 2


def test_alert_bit_is_tracked_per_servo(follower_bus, follower_emulator):
    from robot.dynamixel.control_table import HardwareError

    follower_emulator.inject_hardware_error(9, HardwareError.OVERLOAD)
    state = follower_bus.read_state(IDS)
    assert state.alerts == (9,) and follower_bus.alerts() == (9,)
    follower_bus.reboot(9)
    time.sleep(0.06)
    assert follower_bus.read_state(IDS).alerts == ()
