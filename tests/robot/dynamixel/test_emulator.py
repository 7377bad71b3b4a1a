"""The pty emulator at the byte level, driven with our own packets (no SDK): status packets,
error numbers, the alert bit, shadows, the bus watchdog, physics and wire timing."""

import time

import pytest

from robot.dynamixel import control_table as ct
from robot.dynamixel.control_table import HardwareError
from robot.dynamixel.emulator import EmulatedServo, Push, ServoBusEmulator, Squeeze, Sinusoid, Trajectory, arm_servos
from robot.dynamixel.layout import VIPERX_300_FOLLOWER
from robot.dynamixel.protocol import (
    ALERT_BIT,
    BadPacket,
    ErrorNumber,
    Instruction,
    Packet,
    crc16,
    instruction_packet,
    le_bytes,
)


def write(servo_id, register, value, model=ct.XM540_W270):
    reg = model.register(register)
    return instruction_packet(servo_id, Instruction.WRITE, le_bytes(reg.address, 2) + le_bytes(value, reg.size))


def read(servo_id, register, model=ct.XM540_W270):
    reg = model.register(register)
    return instruction_packet(servo_id, Instruction.READ, le_bytes(reg.address, 2) + le_bytes(reg.size, 2))


def one(items) -> Packet:
    assert len(items) == 1 and isinstance(items[0], Packet), items
    return items[0]


def test_ping_answers_model_and_firmware_in_a_status_packet(raw_follower):
    status = one(raw_follower.transact(instruction_packet(1, Instruction.PING)))
    assert (status.servo_id, status.instruction, status.error) == (1, Instruction.STATUS, 0)
    assert status.params == le_bytes(1120, 2) + bytes((46,))


def test_broadcast_ping_answers_every_servo_in_id_order(raw_follower):
    replies = raw_follower.transact(instruction_packet(0xFE, Instruction.PING), count=9)
    assert [p.servo_id for p in replies] == list(range(1, 10))


def test_read_write_and_error_numbers(raw_follower):
    port = raw_follower
    assert one(port.transact(write(2, "Goal_Position", 2100))).error == 0
    assert int.from_bytes(one(port.transact(read(2, "Goal_Position"))).params, "little") == 2100
    assert one(port.transact(write(2, "Present_Position", 5))).error == ErrorNumber.ACCESS  # read-only
    assert one(port.transact(write(2, "Operating_Mode", 2))).error == ErrorNumber.DATA_RANGE  # no mode 2
    assert one(port.transact(write(2, "Goal_Position", 5000))).error == ErrorNumber.DATA_LIMIT  # beyond Max_Position_Limit
    half = instruction_packet(2, Instruction.WRITE, le_bytes(116, 2) + b"\x01\x02")  # 2 of Goal_Position's 4 bytes
    assert one(port.transact(half)).error == ErrorNumber.DATA_LENGTH
    assert one(port.transact(instruction_packet(2, 0x77))).error == ErrorNumber.INSTRUCTION


def test_eeprom_is_locked_while_torque_is_on(raw_follower, follower_emulator):
    port = raw_follower
    assert one(port.transact(write(1, "Torque_Enable", 1))).error == 0
    assert one(port.transact(write(1, "Velocity_Limit", 131))).error == ErrorNumber.ACCESS
    assert follower_emulator.read_register(1, "Velocity_Limit") == 128
    assert one(port.transact(write(1, "Torque_Enable", 0))).error == 0
    assert one(port.transact(write(1, "Velocity_Limit", 131))).error == 0


def test_a_packet_with_a_bad_crc_gets_a_crc_error_and_changes_nothing(raw_follower, follower_emulator):
    bad = bytearray(write(1, "LED", 1))
    bad[-2] ^= 0x01
    assert one(raw_follower.transact(bytes(bad))).error == ErrorNumber.CRC
    assert follower_emulator.read_register(1, "LED") == 0


def test_hardware_error_sets_the_alert_bit_and_shuts_down_until_reboot(raw_follower, follower_emulator):
    port = raw_follower
    port.transact(write(9, "Torque_Enable", 1))
    follower_emulator.inject_hardware_error(9, HardwareError.OVERLOAD)
    status = one(port.transact(read(9, "Hardware_Error_Status")))
    assert status.error == ALERT_BIT and status.params == bytes((HardwareError.OVERLOAD,))
    assert follower_emulator.read_register(9, "Torque_Enable") == 0  # Shutdown(63) includes overload
    assert one(port.transact(write(9, "Torque_Enable", 1))).error == ALERT_BIT | ErrorNumber.RESULT_FAIL
    assert one(port.transact(instruction_packet(9, Instruction.REBOOT))).error == ALERT_BIT
    time.sleep(0.06)  # the servo is deaf while it boots
    assert one(port.transact(read(9, "Hardware_Error_Status"))).error == 0
    assert one(port.transact(write(9, "Torque_Enable", 1))).error == 0


def test_overheating_is_detected_from_the_temperature(raw_follower, follower_emulator):
    follower_emulator.set_temperature(4, 95.0)
    time.sleep(0.02)
    status = one(raw_follower.transact(read(4, "Hardware_Error_Status")))
    assert status.error & ALERT_BIT and HardwareError(status.params[0]) == HardwareError.OVERHEATING


def test_shadow_obeys_ram_writes_to_its_primary_without_replying(raw_follower, follower_emulator):
    port = raw_follower
    # Shoulder: primary 2, shadow 3 with Secondary_ID 2. One reply (from 2), both torque on.
    assert [p.servo_id for p in port.transact(write(2, "Torque_Enable", 1), count=2)] == [2]
    assert follower_emulator.read_register(3, "Torque_Enable") == 1
    # EEPROM is out of reach through a Secondary_ID: only the primary changes (after torque off).
    port.transact(write(2, "Torque_Enable", 0))
    port.transact(write(2, "Return_Delay_Time", 7))
    assert (follower_emulator.read_register(2, "Return_Delay_Time"), follower_emulator.read_register(3, "Return_Delay_Time")) == (7, 0)
    # The shadow still answers to its own ID.
    assert one(port.transact(instruction_packet(3, Instruction.PING))).servo_id == 3


def test_sync_write_moves_primary_and_shadow_and_sync_read_answers_in_order(raw_follower, follower_emulator):
    port = raw_follower
    port.transact(write(2, "Torque_Enable", 1))
    body = le_bytes(116, 2) + le_bytes(4, 2) + bytes((2,)) + le_bytes(1700, 4)
    port.send(instruction_packet(0xFE, Instruction.SYNC_WRITE, body))
    assert port.receive(timeout_s=0.05) == []  # no replies to a sync write
    time.sleep(0.3)
    assert abs(follower_emulator.read_register(2, "Present_Position") - 1700) <= 2
    assert abs(follower_emulator.read_register(3, "Present_Position") - 1700) <= 2
    replies = port.transact(instruction_packet(0xFE, Instruction.SYNC_READ, le_bytes(132, 2) + le_bytes(4, 2) + bytes((9, 1, 4))), count=3)
    assert [p.servo_id for p in replies] == [9, 1, 4]


def test_fast_sync_read_is_one_packet_and_old_firmware_stays_out(follower_emulator, raw_port):
    port = raw_port(follower_emulator.port_name)
    request = instruction_packet(0xFE, Instruction.FAST_SYNC_READ, le_bytes(132, 2) + le_bytes(4, 2) + bytes((1, 2, 4)))
    raw = (port.send(request), port.read_raw(0.1))[1]
    assert raw[4] == 0xFE and raw[7] == 0x55 and len(raw) == 8 + 3 * (4 + 4)
    assert [raw[9 + 8 * k] for k in range(3)] == [1, 2, 4]
    assert int.from_bytes(raw[-2:], "little") == crc16(raw[:-2])
    follower_emulator.write_register(2, "Firmware_Version", 44)
    port.send(request)
    assert len(port.read_raw(0.1)) == 8 + 1 * (4 + 4)  # servo 1's block, then the chain stops


def test_reg_write_waits_for_action(raw_follower, follower_emulator):
    port = raw_follower
    reg = instruction_packet(1, Instruction.REG_WRITE, le_bytes(65, 2) + b"\x01")
    assert one(port.transact(reg)).error == 0
    assert follower_emulator.read_register(1, "LED") == 0 and follower_emulator.read_register(1, "Registered_Instruction") == 1
    port.send(instruction_packet(0xFE, Instruction.ACTION))
    time.sleep(0.02)
    assert follower_emulator.read_register(1, "LED") == 1
    assert one(port.transact(instruction_packet(1, Instruction.ACTION))).error == ErrorNumber.INSTRUCTION


def test_status_return_level_one_answers_reads_but_not_writes(raw_follower):
    port = raw_follower
    port.transact(write(1, "Status_Return_Level", 1))
    assert port.transact(write(1, "LED", 1), timeout_s=0.05) == []
    assert one(port.transact(read(1, "LED"))).params == b"\x01"


def test_factory_reset_keeps_the_id_when_asked(raw_follower, follower_emulator):
    port = raw_follower
    port.transact(write(6, "Return_Delay_Time", 0))
    assert one(port.transact(instruction_packet(6, Instruction.FACTORY_RESET, b"\x01"))).error == 0
    assert follower_emulator.read_register(6, "Return_Delay_Time") == 250
    assert follower_emulator.read_register(6, "ID") == 6


def test_bus_watchdog_stops_a_servo_that_hears_nothing(raw_follower, follower_emulator):
    port = raw_follower
    port.transact(write(1, "Torque_Enable", 1))
    assert one(port.transact(write(1, "Bus_Watchdog", 3))).error == 0  # 60 ms
    port.transact(write(1, "Goal_Position", 3000))
    time.sleep(0.25)  # nothing on the bus: the watchdog expires while the servo is on its way
    stopped_at = follower_emulator.read_register(1, "Present_Position")
    assert stopped_at < 2900
    assert int.from_bytes(one(port.transact(read(1, "Bus_Watchdog"))).params, "little", signed=True) == -1
    assert one(port.transact(write(1, "Goal_Position", 3000))).error == ErrorNumber.DATA_RANGE  # goals locked
    assert one(port.transact(write(1, "Bus_Watchdog", 0))).error == 0  # clears the error
    assert one(port.transact(write(1, "Goal_Position", 2500))).error == 0


def test_silent_servo_and_dropped_corrupted_late_replies(raw_follower, follower_emulator):
    port = raw_follower
    follower_emulator.set_silent(5)
    assert port.transact(instruction_packet(5, Instruction.PING), timeout_s=0.05) == []
    follower_emulator.set_silent(5, False)
    follower_emulator.drop_replies(1, servo_id=1)
    assert port.transact(instruction_packet(1, Instruction.PING), timeout_s=0.05) == []
    follower_emulator.corrupt_replies(1)
    assert isinstance(port.transact(instruction_packet(1, Instruction.PING))[0], BadPacket)
    follower_emulator.delay_replies(80, servo_id=1)
    assert port.transact(instruction_packet(1, Instruction.PING), timeout_s=0.04) == []
    assert one(port.receive(timeout_s=0.2)).servo_id == 1  # it does come, late
    stats = follower_emulator.stats
    assert (stats.replies_dropped, stats.replies_corrupted, stats.replies_delayed) == (1, 1, 1)


def test_host_at_the_wrong_baud_rate_hears_nothing(follower_emulator, raw_port):
    port = raw_port(follower_emulator.port_name, baud_rate=57_600)
    assert port.transact(instruction_packet(1, Instruction.PING), timeout_s=0.1) == []


def test_position_moves_to_the_goal_at_the_profile_velocity(raw_follower, follower_emulator):
    port = raw_follower
    start = follower_emulator.read_register(1, "Present_Position")
    port.transact(write(1, "Profile_Velocity", 50))  # 11.45 rpm = 1.2 rad/s = 782 pulses/s
    port.transact(write(1, "Torque_Enable", 1))
    port.transact(write(1, "Goal_Position", start + 2000))
    time.sleep(0.5)
    moved = follower_emulator.read_register(1, "Present_Position") - start
    assert 250 < moved < 550  # ~390 expected; the emulator thread's scheduling blurs it
    status = one(port.transact(read(1, "Present_Velocity")))
    assert int.from_bytes(status.params, "little", signed=True) == pytest.approx(50, abs=3)


def test_leader_hands_move_only_a_servo_without_torque():
    servo = EmulatedServo(ct.XC430_W150, 9, position_rad=0.0)
    with ServoBusEmulator([servo]) as em:
        em.attach_motion(9, Squeeze(closed_rad=-0.6, delay_s=0.0, ramp_s=0.1))
        time.sleep(0.2)
        assert em.position_rad(9) == pytest.approx(-0.6, abs=0.01)
    assert Sinusoid(0.2, 2.0).position_rad(0.0, 1.0) == 1.0  # starts where the hand took the joint
    traj = Trajectory((0.0, 1.0), (0.0, 1.0), blend_s=0.0, loop=False)
    assert traj.position_rad(0.5, 0.0) == pytest.approx(0.5) and traj.position_rad(2.0, 0.0) == 1.0


def test_a_hand_pushes_a_torqued_servo_only_when_its_gains_are_soft():
    soft, stiff = EmulatedServo(ct.XL430_W250, 1, position_rad=0.0), EmulatedServo(ct.XL430_W250, 2, position_rad=0.0)
    with ServoBusEmulator([soft, stiff]) as em:
        em.write_register(1, "Position_P_Gain", 200)  # a leader following on soft gains
        for sid in (1, 2):
            em.write_register(sid, "Torque_Enable", 1)
            em.attach_push(sid, Push(offset_rad=0.4, ramp_s=0.05))
        time.sleep(0.2)
        assert em.position_rad(1) == pytest.approx(0.4, abs=0.01)  # the hand wins, the goal stays
        assert em.read_register(1, "Goal_Position") == ct.rad_to_pulses(0.0)
        assert em.position_rad(2) == pytest.approx(0.0, abs=0.01)  # the default gain holds the joint
        em.attach_push(1, None)  # let go: the servo returns to its goal
        time.sleep(0.3)
        assert em.position_rad(1) == pytest.approx(0.0, abs=0.01)
    push = Push(0.3, delay_s=0.1, ramp_s=0.1, hold_s=0.5)
    assert push.position_rad(0.05, 1.0) is None and push.position_rad(0.15, 1.0) == pytest.approx(1.15)
    assert push.position_rad(1.0, 1.0) is None  # held for 0.5 s, then let go


def _sync_read_wire_time(baud: int, raw_port) -> float:
    servos = arm_servos(VIPERX_300_FOLLOWER, baud_rate=baud)
    with ServoBusEmulator(servos) as em:
        port = raw_port(em.port_name, baud)
        ids = bytes(VIPERX_300_FOLLOWER.primary_ids)
        request = instruction_packet(0xFE, Instruction.SYNC_READ, le_bytes(126, 2) + le_bytes(10, 2) + ids)
        best = 1.0
        for _ in range(30):  # the best of many: the host's own delays only ever add
            t0 = time.perf_counter()
            assert len(port.transact(request, count=7)) == 7
            best = min(best, time.perf_counter() - t0)
        return best


def test_replies_take_the_wire_time_of_the_baud_rate(raw_port):
    # 7 replies of 21 bytes + a 21-byte request = 168 bytes: 1.68 ms at 1 Mbps, 0.42 ms at 4 Mbps.
    slow, fast = _sync_read_wire_time(1_000_000, raw_port), _sync_read_wire_time(4_000_000, raw_port)
    assert slow >= 1.68e-3
    assert slow - fast > 0.8e-3
