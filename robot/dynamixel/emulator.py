"""A Dynamixel Protocol 2.0 servo bus emulated on a pseudo-terminal.

`ServoBusEmulator` opens a pty pair; dynamixel-sdk's PortHandler (pyserial underneath) opens the
slave path (`emulator.port_name`) exactly as it would open /dev/ttyUSB0. The emulator thread
reads instruction packets from the master side, runs them against per-servo control tables and
writes status packets back, so the bus under test runs the real SDK end to end.

What it models:
- Framing: header, CRC-16, byte stuffing both ways, status packets with the error byte and the
  alert bit (bit 7) while Hardware_Error_Status is non-zero; CRC errors answered with error 3.
- Instructions: ping (also broadcast), read, write, reg write/action, factory reset, reboot,
  clear, sync read/write, fast sync read (firmware >= 45), bulk read/write; Status_Return_Level.
- Control tables from `control_table` (the same one the bus uses): access rights, EEPROM locked
  while torque is on, write ranges and limits, Secondary_ID shadows that obey RAM writes to the
  primary's ID without replying, Bus_Watchdog, Shutdown on hardware errors, reboot.
- Physics, per servo, advanced event by event (to the arrival time of each packet, and when a
  test inspects a servo): goals are constant between packets, so one step per interval is exact
  for this motion model and costs nothing while the bus is idle. In position modes the position
  moves to the goal at Profile_Velocity (no acceleration ramp; 0 means the model's no-load
  speed), capped by Velocity_Limit; velocity and PWM modes move at the commanded rate; the present current
  follows the tracking error plus a holding load, capped by Goal_Current in current-based
  position mode; temperature integrates I^2 and cools to ambient; voltage sags with current.
  With torque off a servo is moved by its `JointMotion` (a hand on a leader arm), if any.
- Timing: a half-duplex wire at the servos' baud rate. An instruction of n bytes occupies the wire
  for n x 10 / baud seconds (8N1) after it arrives; each reply then follows after the servo's
  Return_Delay_Time and is handed to the host only when its last byte would have arrived. Sync
  read replies queue one after another. So a 14-servo cycle costs really more wire time at
  1 Mbps than at 4 Mbps; the host side (SDK, pyserial, Python) costs the same at both. USB
  latency (FTDI latency timer) is not modelled beyond `usb_latency_ms`, default 0.
- Baud mismatch: the host's termios speed on the pty is compared with the servos' Baud_Rate; on
  a mismatch the servos hear noise and stay silent, as on a real bus.
- Faults on request (`drop_replies`, `corrupt_replies`, `delay_replies`, `set_silent`,
  `inject_hardware_error`, `set_temperature`).

Thread ownership: the emulator thread owns the servos; other threads (tests, the GUI's emulated
rig) call the public methods, which take `self._lock`.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import os
import random
import select
import signal
import sys
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Protocol

import numpy as np

from robot.dynamixel import control_table as ct
from robot.dynamixel.control_table import HardwareError, OperatingMode, Register, ServoModel
from robot.dynamixel.layout import VIPERX_300_FOLLOWER, WIDOWX_250_LEADER, ArmLayout
from robot.dynamixel.protocol import (
    ALERT_BIT,
    BROADCAST_ID,
    BadPacket,
    ErrorNumber,
    Instruction,
    Packet,
    PacketParser,
    fast_sync_read_reply,
    from_le,
    le_bytes,
    status_packet,
)

log = logging.getLogger(__name__)

AMBIENT_C = 28.0
NOMINAL_SUPPLY_V = 12.0
BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop
_GOAL_REGISTERS = ("Goal_PWM", "Goal_Current", "Goal_Velocity", "Goal_Position")
_PRESENT = frozenset({"Present_Position", "Present_Velocity", "Present_Current", "Present_Load", "Present_Input_Voltage",
                      "Present_Temperature", "Moving", "Realtime_Tick"})


# --- hands on the leader arms --------------------------------------------------------------------
class JointMotion(Protocol):
    """Where a hand holds a joint `t_s` seconds after it took it over at `start_rad` (torque off)."""

    def position_rad(self, t_s: float, start_rad: float) -> float: ...


@dataclass(frozen=True)
class Sinusoid:
    """A gentle oscillation around where the hand took the joint."""

    amplitude_rad: float = 0.15
    period_s: float = 4.0
    phase_rad: float = 0.0

    def position_rad(self, t_s: float, start_rad: float) -> float:
        # sin(phase + wt) - sin(phase) starts at 0, so the hand never jerks the joint.
        w = 2.0 * math.pi / self.period_s
        return start_rad + self.amplitude_rad * (math.sin(self.phase_rad + w * t_s) - math.sin(self.phase_rad))


@dataclass(frozen=True)
class Squeeze:
    """An operator squeezing a leader gripper: wait, close over `ramp_s`, hold, release, repeat."""

    closed_rad: float
    delay_s: float = 0.2
    ramp_s: float = 0.3
    hold_s: float = 1.0
    repeat_s: float | None = None  # None: squeeze once and keep it closed

    def position_rad(self, t_s: float, start_rad: float) -> float:
        if self.repeat_s is not None:
            t_s = t_s % self.repeat_s
        t = t_s - self.delay_s
        if t <= 0:
            return start_rad
        if t < self.ramp_s:
            return start_rad + (self.closed_rad - start_rad) * t / self.ramp_s
        if self.repeat_s is None or t < self.ramp_s + self.hold_s:
            return self.closed_rad
        t -= self.ramp_s + self.hold_s
        return self.closed_rad + (start_rad - self.closed_rad) * min(1.0, t / self.ramp_s)


@dataclass(frozen=True)
class Trajectory:
    """Replays recorded joint positions (times from 0), blending in from the hand-over position."""

    times_s: tuple[float, ...]
    positions_rad: tuple[float, ...]
    blend_s: float = 0.3
    loop: bool = True

    def __post_init__(self) -> None:
        if len(self.times_s) != len(self.positions_rad) or len(self.times_s) < 2:
            raise ValueError("Trajectory needs at least two (time, position) samples of equal count")
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:])):
            raise ValueError("Trajectory times must increase strictly")

    def position_rad(self, t_s: float, start_rad: float) -> float:
        span = self.times_s[-1] - self.times_s[0]
        tt = self.times_s[0] + (t_s % span if self.loop else min(t_s, span))
        target = float(np.interp(tt, self.times_s, self.positions_rad))
        if t_s < self.blend_s:
            a = t_s / self.blend_s
            return (1.0 - a) * start_rad + a * target
        return target


# --- one servo ------------------------------------------------------------------------------------
class EmulatedServo:
    """One servo's control table and physics. Owned by the emulator thread (see module doc)."""

    def __init__(
        self,
        model: ServoModel,
        servo_id: int,
        *,
        secondary_id: int | None = None,
        position_rad: float = 0.0,
        firmware_version: int = 46,
        baud_rate: int = 1_000_000,
        return_delay_us: int = 0,
    ) -> None:
        self.model = model
        # (address, end, size, signed) per register name: get/set run thousands of times a second.
        self._layout = {r.name: (r.address, r.end, r.size, r.signed) for r in model.registers.values()}
        self._boot_id = servo_id
        self._boot_secondary = 255 if secondary_id is None else secondary_id
        self._firmware = firmware_version
        self._baud_code = _baud_code(baud_rate)
        self._return_delay_units = return_delay_us // ct.US_PER_RETURN_DELAY_UNIT
        self.mem = bytearray(model.table_size)
        self.pos_pulses = float(ct.rad_to_pulses(position_rad))
        self.vel_pulses_s = 0.0
        self.current_ma = 0.0
        self.temperature_c = AMBIENT_C + 5.0
        self.voltage_v = NOMINAL_SUPPLY_V
        self.supply_v = NOMINAL_SUPPLY_V
        self.silent = False
        self.motion: JointMotion | None = None
        self._motion_t0: float | None = None
        self._motion_start_rad = 0.0
        self._registered: tuple[int, bytes] | None = None
        self._boot_t = time.monotonic()
        self._t_phys = self._boot_t
        self.rebooting_until = 0.0
        self._factory_defaults(installed=True)

    # -- table access (raw) --
    def _factory_defaults(self, keep_id: bool = False, keep_baud: bool = False, installed: bool = False) -> None:
        """Control table as shipped (`installed`: plus the id, shadow link, baud and return delay
        this servo was set up with in the arm)."""
        keep = {"ID": self.get("ID"), "Baud_Rate": self.get("Baud_Rate")} if (keep_id or keep_baud) else {}
        self.mem[:] = bytes(len(self.mem))
        for name, value in self.model.defaults.items():
            if self.model.has(name):
                self.set(name, value)
        self.set("Firmware_Version", self._firmware)
        if installed:
            self.set("ID", self._boot_id)
            self.set("Secondary_ID", self._boot_secondary)
            self.set("Baud_Rate", self._baud_code)
            self.set("Return_Delay_Time", self._return_delay_units)
        if keep_id:
            self.set("ID", keep["ID"])
        if keep_baud:
            self.set("Baud_Rate", keep["Baud_Rate"])
        self._reset_ram()

    def _reset_ram(self) -> None:
        for reg in self.model.registers.values():
            if reg.area is ct.Area.RAM:
                self.set(reg.name, self.model.defaults.get(reg.name, 0))
        self.set("Goal_Position", int(round(self.pos_pulses)))
        self.vel_pulses_s = 0.0
        self._registered = None
        self._refresh_present()

    def get(self, name: str) -> int:
        if name in _PRESENT:
            self._refresh_present()
        address, end, size, signed = self._layout[name]
        return int.from_bytes(self.mem[address:end], "little", signed=signed)

    def set(self, name: str, value: int) -> None:
        address, end, size, signed = self._layout[name]
        self.mem[address:end] = (int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    @property
    def servo_id(self) -> int:
        return self.get("ID")

    @property
    def secondary_id(self) -> int | None:
        sid = self.get("Secondary_ID")
        return sid if sid <= 252 else None

    @property
    def torque_on(self) -> bool:
        return self.get("Torque_Enable") == 1

    @property
    def hardware_error(self) -> HardwareError:
        return HardwareError(self.get("Hardware_Error_Status"))

    @property
    def position_rad(self) -> float:
        return float(ct.pulses_to_rad(self.pos_pulses))

    @property
    def baud_rate(self) -> int:
        return ct.BAUD_RATE_CODES[self.get("Baud_Rate")]

    @property
    def return_delay_s(self) -> float:
        return self.get("Return_Delay_Time") * ct.US_PER_RETURN_DELAY_UNIT * 1e-6

    def status_error(self, error: int = 0) -> int:
        return error | (ALERT_BIT if self.get("Hardware_Error_Status") else 0)

    # -- instructions --
    def read(self, address: int, length: int) -> tuple[int, bytes]:
        """(error number, data). Reading across undefined gaps returns zeros, as the servo does."""
        if length <= 0 or address < 0 or address + length > len(self.mem):
            return ErrorNumber.ACCESS, b""
        if address + length > 120:  # the Present_* block: bring it up to date from the physics
            self._refresh_present(time.monotonic())
        return ErrorNumber.NONE, bytes(self.mem[address : address + length])

    def write(self, address: int, data: bytes, *, via_secondary: bool = False) -> int:
        """Apply a write after checking all of it (all or nothing); returns the error number."""
        end = address + len(data)
        if not data or address < 0 or end > len(self.mem):
            return ErrorNumber.ACCESS
        regs = [r for r in self.model.registers.values() if r.address < end and r.end > address]
        covered = sum(r.size for r in regs)
        if any(r.address < address or r.end > end for r in regs):
            return ErrorNumber.DATA_LENGTH
        if covered != len(data):
            return ErrorNumber.ACCESS  # part of the write falls on undefined addresses
        values: list[tuple[Register, int]] = []
        for r in sorted(regs, key=lambda r: r.address):
            value = from_le(data[r.address - address : r.end - address], signed=r.signed)
            err = self._check_write(r, value, via_secondary)
            if err:
                return err
            values.append((r, value))
        for r, value in values:
            self._apply_write(r, value)
        return ErrorNumber.NONE

    def _check_write(self, r: Register, value: int, via_secondary: bool) -> int:
        if not r.writable:
            return ErrorNumber.ACCESS
        if r.area is ct.Area.EEPROM and (self.torque_on or via_secondary):
            return ErrorNumber.ACCESS  # EEPROM is locked with torque on; a Secondary_ID never reaches it
        if r.name == "Bus_Watchdog" and value < 0:
            return ErrorNumber.DATA_RANGE
        if (r.low is not None and value < r.low) or (r.high is not None and value > r.high):
            return ErrorNumber.DATA_RANGE
        if r.name == "Operating_Mode" and value not in {int(m) for m in self.model.modes}:
            return ErrorNumber.DATA_RANGE
        if r.name in _GOAL_REGISTERS and self.get("Bus_Watchdog") == -1:
            return ErrorNumber.DATA_RANGE  # goals are read-only after a bus watchdog error
        if r.name == "Goal_Position" and self.get("Operating_Mode") in (OperatingMode.POSITION, OperatingMode.CURRENT_BASED_POSITION):
            if not self.get("Min_Position_Limit") <= value <= self.get("Max_Position_Limit"):
                return ErrorNumber.DATA_LIMIT
        if r.name == "Goal_Current" and abs(value) > self.get("Current_Limit"):
            return ErrorNumber.DATA_LIMIT
        if r.name == "Goal_Velocity" and abs(value) > self.get("Velocity_Limit"):
            return ErrorNumber.DATA_LIMIT
        if r.name == "Goal_PWM" and abs(value) > self.get("PWM_Limit"):
            return ErrorNumber.DATA_LIMIT
        if r.name == "Torque_Enable" and value == 1 and self._shutdown_active():
            return ErrorNumber.RESULT_FAIL  # torque can't come back before a reboot
        return ErrorNumber.NONE

    def _apply_write(self, r: Register, value: int) -> None:
        if r.name == "Torque_Enable":
            if value == 1 and not self.torque_on:
                self._motion_t0 = None  # the hand lets go when the motor takes over
            self.set(r.name, value)
            return
        if r.name == "Bus_Watchdog" and value == 0 and self.get("Bus_Watchdog") == -1:
            self.set(r.name, 0)  # clears the watchdog error
            return
        self.set(r.name, value)

    def _shutdown_active(self) -> bool:
        return bool(self.get("Hardware_Error_Status") & self.get("Shutdown"))

    def reboot(self, now: float, duration_s: float) -> None:
        """Reboot: torque off, RAM back to defaults, hardware error cleared; deaf for `duration_s`."""
        self.set("Torque_Enable", 0)
        self.set("Hardware_Error_Status", 0)
        self.set("Bus_Watchdog", 0)
        self._reset_ram()
        self.rebooting_until = now + duration_s
        self._boot_t = now

    def factory_reset(self, option: int) -> None:
        self._factory_defaults(keep_id=option in (0x01, 0x02), keep_baud=option == 0x02)

    def register_write(self, address: int, data: bytes) -> int:
        end = address + len(data)
        if not data or end > len(self.mem):
            return ErrorNumber.ACCESS
        self._registered = (address, bytes(data))
        self.set("Registered_Instruction", 1)
        return ErrorNumber.NONE

    def action(self) -> int:
        if self._registered is None:
            return ErrorNumber.INSTRUCTION
        address, data = self._registered
        self._registered = None
        self.set("Registered_Instruction", 0)
        return self.write(address, data)

    # -- faults --
    def raise_hardware_error(self, bits: HardwareError) -> None:
        status = HardwareError(self.get("Hardware_Error_Status")) | bits
        self.set("Hardware_Error_Status", int(status))
        if self._shutdown_active():
            self.set("Torque_Enable", 0)
            log.warning("emulated servo %d shut down: %s", self.servo_id, status.describe())

    # -- physics --
    def advance(self, now: float, last_packet_t: float) -> None:
        """Bring the physics up to `now`. Between packets the goals are constant, so one step over
        the whole interval is exact for the motion model (moves at constant speed, clamped at the
        goal); the bus watchdog's expiry inside the interval is found exactly too.
        `last_packet_t`: when the bus last carried an instruction packet (before this one)."""
        dt = now - self._t_phys
        if dt <= 0:
            return
        if self.torque_on:
            wd = self.get("Bus_Watchdog")
            expiry = last_packet_t + wd * ct.MS_PER_WATCHDOG_UNIT * 1e-3
            if wd > 0 and now > expiry:
                self._drive(max(0.0, expiry - self._t_phys))
                self.set("Bus_Watchdog", -1)
                self.set("Goal_Position", int(round(self.pos_pulses)))
                self.set("Goal_Velocity", 0)
                self.set("Goal_PWM", 0)
                log.warning("emulated servo %d: bus watchdog expired, servo stopped", self.servo_id)
                dt = now - max(expiry, self._t_phys)
            self._drive(dt)
        else:
            self._hand(now)
        self._thermal(dt)
        volts = self.supply_v * 10  # 0.1 V units
        if not self.get("Min_Voltage_Limit") <= volts <= self.get("Max_Voltage_Limit"):
            if not self.hardware_error & HardwareError.INPUT_VOLTAGE:
                self.raise_hardware_error(HardwareError.INPUT_VOLTAGE)
        self._t_phys = now

    def _max_speed_pulses_s(self) -> float:
        limit = self.get("Velocity_Limit") * ct.RAD_S_PER_VELOCITY_UNIT
        speed = self.model.no_load_speed_rad_s if limit <= 0 else min(limit, self.model.no_load_speed_rad_s * 1.5)
        return speed / ct.RAD_PER_PULSE

    def _drive(self, dt: float) -> None:
        """Motion over `dt` with torque on; leaves the velocity and current of the end instant."""
        mode = self.get("Operating_Mode")
        if self.get("Bus_Watchdog") == -1:
            self.vel_pulses_s = 0.0
            self.current_ma = self._holding_current_ma()
            return
        vmax = self._max_speed_pulses_s()
        if mode in (OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION, OperatingMode.CURRENT_BASED_POSITION):
            profile = self.get("Profile_Velocity")
            speed = vmax if profile == 0 else min(vmax, profile * ct.RAD_S_PER_VELOCITY_UNIT / ct.RAD_PER_PULSE)
            goal = float(self.get("Goal_Position"))
            if mode == OperatingMode.POSITION:
                goal = min(max(goal, self.get("Min_Position_Limit")), self.get("Max_Position_Limit"))
            error = goal - self.pos_pulses
            reach = speed * dt
            if abs(error) > reach:
                self.pos_pulses += math.copysign(reach, error)
                self.vel_pulses_s = math.copysign(speed, error)
            else:
                self.pos_pulses = goal
                self.vel_pulses_s = 0.0
            current = self._holding_current_ma() + 4.0 * (goal - self.pos_pulses) + 0.02 * self.vel_pulses_s
            stall = self.model.stall_current_ma or 1500.0
            current = max(-stall, min(stall, current))
            if mode == OperatingMode.CURRENT_BASED_POSITION and self.model.has_current_sensing:
                cap = abs(self.get("Goal_Current")) * self.model.current_ma_per_unit
                current = max(-cap, min(cap, current))
            self.current_ma = current
        elif mode == OperatingMode.VELOCITY:
            v = self.get("Goal_Velocity") * ct.RAD_S_PER_VELOCITY_UNIT / ct.RAD_PER_PULSE
            self.vel_pulses_s = max(-vmax, min(vmax, v))
            self.pos_pulses += self.vel_pulses_s * dt
            self.current_ma = self._holding_current_ma() + 0.05 * self.vel_pulses_s
        elif mode == OperatingMode.PWM:
            duty = self.get("Goal_PWM") / 885.0
            self.vel_pulses_s = duty * vmax
            self.pos_pulses += self.vel_pulses_s * dt
            self.current_ma = duty * (self.model.stall_current_ma or 1000.0) * 0.3
        elif mode == OperatingMode.CURRENT:
            ma = self.get("Goal_Current") * (self.model.current_ma_per_unit or 0.0)
            self.vel_pulses_s = max(-vmax, min(vmax, ma * 2.0))
            self.pos_pulses += self.vel_pulses_s * dt
            self.current_ma = ma
        self.pos_pulses = max(-1_048_575.0, min(1_048_575.0, self.pos_pulses))

    def _holding_current_ma(self) -> float:
        return 40.0  # standby/holding draw; the arm's gravity load is not modelled

    def _hand(self, now: float) -> None:
        """Torque off: the servo is where the hand holding it is (or stays put without one)."""
        self.current_ma = 0.0
        if self.motion is None:
            self.vel_pulses_s = 0.0
            return
        if self._motion_t0 is None:
            self._motion_t0 = now
            self._motion_start_rad = self.position_rad
        t = now - self._motion_t0
        here = self.motion.position_rad(t, self._motion_start_rad)
        before = self.motion.position_rad(max(0.0, t - 0.001), self._motion_start_rad)
        self.vel_pulses_s = (here - before) / 0.001 / ct.RAD_PER_PULSE
        self.pos_pulses = float(ct.rad_to_pulses(here))

    def _thermal(self, dt: float) -> None:
        # First-order model, solved exactly over dt: ~0.6 degC/s of heating at stall current,
        # a 10 min time constant towards ambient.
        stall = self.model.stall_current_ma or 1500.0
        tau_s = 600.0
        equilibrium = AMBIENT_C + 0.6 * (self.current_ma / stall) ** 2 * tau_s
        self.temperature_c = equilibrium + (self.temperature_c - equilibrium) * math.exp(-dt / tau_s)
        if self.temperature_c > self.get("Temperature_Limit"):
            if not self.hardware_error & HardwareError.OVERHEATING:
                self.raise_hardware_error(HardwareError.OVERHEATING)

    def _refresh_present(self, now: float | None = None) -> None:
        self.set("Present_Position", int(round(self.pos_pulses)))
        vel_units = int(round(self.vel_pulses_s * ct.RAD_PER_PULSE / ct.RAD_S_PER_VELOCITY_UNIT))
        self.set("Present_Velocity", vel_units)
        if self.model.has_current_sensing:
            self.set("Present_Current", int(round(self.current_ma / self.model.current_ma_per_unit)))
        else:
            load = 1000.0 * self.current_ma / 1500.0
            self.set("Present_Load", int(max(-1000, min(1000, round(load)))))
        self.voltage_v = self.supply_v - 0.0002 * abs(self.current_ma)
        self.set("Present_Input_Voltage", int(round(self.voltage_v / ct.VOLT_PER_UNIT)))
        self.set("Present_Temperature", int(round(self.temperature_c)))
        self.set("Moving", int(abs(vel_units) > self.get("Moving_Threshold")))
        self.set("Position_Trajectory", self.get("Goal_Position"))
        if now is not None:
            self.set("Realtime_Tick", int((now - self._boot_t) * 1000) % 32768)


def _baud_code(baud_rate: int) -> int:
    for code, rate in ct.BAUD_RATE_CODES.items():
        if rate == baud_rate:
            return code
    raise ValueError(f"baud rate {baud_rate} is not a Dynamixel rate; use one of {sorted(ct.BAUD_RATE_CODES.values())}")


def _termios_speeds() -> dict[int, int]:
    speeds = {}
    for rate in set(ct.BAUD_RATE_CODES.values()) | {38_400, 230_400, 460_800, 921_600, 3_500_000}:
        const = getattr(termios, f"B{rate}", None)
        if const is not None:
            speeds[const] = rate
    return speeds


# --- fault plan -------------------------------------------------------------------------------
@dataclass
class _ReplyFault:
    kind: str  # "drop" | "corrupt" | "delay"
    servo_id: int | None  # None: any servo
    remaining: int
    delay_s: float = 0.0


@dataclass
class EmulatorStats:
    """Counters since start (read a copy with `ServoBusEmulator.stats`)."""

    packets_in: int = 0
    bad_packets_in: int = 0
    replies_out: int = 0
    replies_dropped: int = 0
    replies_corrupted: int = 0
    replies_delayed: int = 0
    instructions: dict[str, int] = field(default_factory=dict)


# --- the bus --------------------------------------------------------------------------------------
class ServoBusEmulator:
    """Servos on one emulated serial bus, served from a pty by a background thread.

    Use as a context manager or call `start()`/`stop()`. `port_name` is the path to hand to
    dynamixel-sdk. All servos share one baud rate (that of the first servo's Baud_Rate).
    """

    def __init__(
        self,
        servos: Iterable[EmulatedServo],
        *,
        name: str = "emulated bus",
        usb_latency_ms: float = 0.0,
        idle_advance_ms: float = 20.0,
        reboot_time_ms: float = 30.0,
        seed: int = 0,
    ) -> None:
        self.servos: list[EmulatedServo] = list(servos)
        if not self.servos:
            raise ValueError("an emulated bus needs at least one servo")
        ids = [s.servo_id for s in self.servos]
        if len(set(ids)) != len(ids):
            raise ValueError(f"servo ids on one bus must be unique, got {ids}")
        self.name = name
        self.usb_latency_s = usb_latency_ms * 1e-3
        self._idle_advance_s = idle_advance_ms * 1e-3
        self._reboot_s = reboot_time_ms * 1e-3
        self._lock = threading.RLock()
        self._faults: list[_ReplyFault] = []
        self._random_faults: dict[str, float] = {}
        self._rng = random.Random(seed)
        self._stats = EmulatorStats()
        self._out: list[tuple[float, int, bytes]] = []  # heap of (due time, seq, bytes)
        self._seq = 0
        self._wire_free_t = 0.0
        self._last_packet_t = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._master_fd = -1
        self._slave_fd = -1
        self.port_name = ""
        self._speeds = _termios_speeds()
        self._warned_baud = False
        self._crash: BaseException | None = None

    # -- lifecycle --
    def start(self) -> "ServoBusEmulator":
        if self._thread is not None:
            return self
        self._master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)  # no echo, no CR/LF translation before the SDK opens it
        self.port_name = os.ttyname(self._slave_fd)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"dxl-emulator {self.name}", daemon=True)
        self._thread.start()
        log.info("%s serving %d servos on %s at %d baud", self.name, len(self.servos), self.port_name, self.baud_rate)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._thread = None
        for fd in (self._master_fd, self._slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master_fd = self._slave_fd = -1
        if self._crash is not None:
            raise RuntimeError(f"{self.name} crashed: {self._crash!r}") from self._crash

    def __enter__(self) -> "ServoBusEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def baud_rate(self) -> int:
        return self.servos[0].baud_rate

    # -- inspection and faults (any thread) --
    def servo(self, servo_id: int) -> EmulatedServo:
        """The servo with this id (its state as of the last packet; see `read_register`)."""
        for s in self.servos:
            if s.servo_id == servo_id:
                return s
        raise KeyError(f"no emulated servo with id {servo_id} on {self.name}")

    def read_register(self, servo_id: int, name: str) -> int:
        """A register as the servo would report it now."""
        with self._lock:
            self._advance_all(time.monotonic())
            return self.servo(servo_id).get(name)

    def write_register(self, servo_id: int, name: str, value: int) -> None:
        """Set a register behind the bus's back (test set-up), without any checks."""
        with self._lock:
            self._advance_all(time.monotonic())
            self.servo(servo_id).set(name, value)

    def set_position_rad(self, servo_id: int, position_rad: float) -> None:
        with self._lock:
            self._advance_all(time.monotonic())
            s = self.servo(servo_id)
            s.pos_pulses = float(ct.rad_to_pulses(position_rad))
            s._refresh_present()

    def position_rad(self, servo_id: int) -> float:
        with self._lock:
            self._advance_all(time.monotonic())
            return self.servo(servo_id).position_rad

    def attach_motion(self, servo_id: int, motion: JointMotion | None) -> None:
        """A hand moving this servo whenever its torque is off (leader arms)."""
        with self._lock:
            self._advance_all(time.monotonic())
            s = self.servo(servo_id)
            s.motion = motion
            s._motion_t0 = None

    def drop_replies(self, count: int = 1, servo_id: int | None = None) -> None:
        """The next `count` replies (from `servo_id`, or any) never reach the host."""
        self._add_fault(_ReplyFault("drop", servo_id, count))

    def corrupt_replies(self, count: int = 1, servo_id: int | None = None) -> None:
        """The next `count` replies arrive with a wrong CRC."""
        self._add_fault(_ReplyFault("corrupt", servo_id, count))

    def delay_replies(self, delay_ms: float, count: int = 1, servo_id: int | None = None) -> None:
        """The next `count` replies arrive `delay_ms` late."""
        self._add_fault(_ReplyFault("delay", servo_id, count, delay_ms * 1e-3))

    def set_random_faults(self, drop: float = 0.0, corrupt: float = 0.0) -> None:
        """Drop/corrupt each reply with these probabilities (seeded; for soak tests and benchmarks)."""
        with self._lock:
            self._random_faults = {"drop": drop, "corrupt": corrupt}

    def set_silent(self, servo_id: int, silent: bool = True) -> None:
        """The servo stops hearing and answering anything (unplugged cable, dead board)."""
        with self._lock:
            self.servo(servo_id).silent = silent

    def inject_hardware_error(self, servo_id: int, bits: HardwareError) -> None:
        """Set Hardware_Error_Status bits; a bit in Shutdown(63) also cuts the torque."""
        with self._lock:
            self._advance_all(time.monotonic())
            self.servo(servo_id).raise_hardware_error(bits)

    def set_supply_voltage(self, supply_v: float) -> None:
        """The power supply of the whole bus (a sagging or wrong supply)."""
        with self._lock:
            self._advance_all(time.monotonic())
            for s in self.servos:
                s.supply_v = supply_v

    def set_temperature(self, servo_id: int, temperature_c: float) -> None:
        with self._lock:
            self._advance_all(time.monotonic())
            s = self.servo(servo_id)
            s.temperature_c = temperature_c
            s._thermal(0.0)  # an overheated servo trips now, as the real one would within a tick

    @property
    def stats(self) -> EmulatorStats:
        with self._lock:
            s = self._stats
            return EmulatorStats(
                s.packets_in, s.bad_packets_in, s.replies_out, s.replies_dropped,
                s.replies_corrupted, s.replies_delayed, dict(s.instructions),
            )

    def _add_fault(self, fault: _ReplyFault) -> None:
        if fault.remaining < 1:
            raise ValueError("a fault needs a count of at least 1")
        with self._lock:
            self._faults.append(fault)

    # -- the thread --
    def _run(self) -> None:
        parser = PacketParser()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = self._idle_advance_s
                if self._out:
                    timeout = max(0.0, min(timeout, self._out[0][0] - now))
                readable, _, _ = select.select([self._master_fd], [], [], timeout)
                now = time.monotonic()
                if readable:
                    try:
                        data = os.read(self._master_fd, 4096)
                    except OSError:
                        data = b""
                    if data:
                        items = parser.feed(data)
                        if items:
                            with self._lock:
                                for item in items:
                                    self._handle(item, now)
                self._flush_due(time.monotonic())
                if not readable:
                    with self._lock:
                        self._advance_all(time.monotonic())
        except BaseException as exc:  # surfaced by stop(); a dead emulator must not look like silent servos
            log.exception("%s crashed", self.name)
            self._crash = exc

    def _advance_all(self, now: float) -> None:
        for s in self.servos:
            s.advance(now, self._last_packet_t)

    def _flush_due(self, now: float) -> None:
        while self._out and self._out[0][0] <= now:
            _, _, data = heapq.heappop(self._out)
            try:
                os.write(self._master_fd, data)
            except OSError:
                return

    def _host_baud(self) -> int | None:
        try:
            speed = termios.tcgetattr(self._slave_fd)[4]
        except termios.error:
            return None
        return self._speeds.get(speed)

    def _byte_s(self) -> float:
        return BITS_PER_BYTE / self.baud_rate

    # -- packet handling (emulator thread, under the lock) --
    def _handle(self, item: Packet | BadPacket, now: float) -> None:
        host_baud = self._host_baud()
        if host_baud is not None and host_baud != self.baud_rate:
            if not self._warned_baud:
                log.warning("%s: host opened the port at %d baud, servos run at %d: they hear noise",
                            self.name, host_baud, self.baud_rate)
                self._warned_baud = True
            return
        self._stats.packets_in += 1
        raw_len = 10 + (len(item.params) if isinstance(item, Packet) else 0)
        start = max(now, self._wire_free_t)
        t_received = start + raw_len * self._byte_s()
        self._wire_free_t = t_received
        if isinstance(item, BadPacket):
            self._stats.bad_packets_in += 1
            target = self._primary(item.servo_id)
            if target is not None and item.servo_id != BROADCAST_ID:
                self._reply(target, t_received, ErrorNumber.CRC)
            return
        if item.error is not None:
            return  # another device's status packet; servos ignore those
        self._advance_all(now)
        self._last_packet_t = now
        try:
            name = Instruction(item.instruction).name
        except ValueError:
            name = f"0x{item.instruction:02X}"
        self._stats.instructions[name] = self._stats.instructions.get(name, 0) + 1
        handler = _HANDLERS.get(item.instruction)
        if handler is None:
            target = self._primary(item.servo_id)
            if target is not None:
                self._reply(target, t_received, ErrorNumber.INSTRUCTION)
            return
        handler(self, item, t_received)

    def _alive(self, s: EmulatedServo, t: float) -> bool:
        return not s.silent and t >= s.rebooting_until

    def _primary(self, servo_id: int) -> EmulatedServo | None:
        for s in self.servos:
            if s.servo_id == servo_id and self._alive(s, time.monotonic()):
                return s
        return None

    def _addressed(self, servo_id: int, t: float) -> tuple[EmulatedServo | None, list[EmulatedServo]]:
        """(the servo whose ID matches, servos obeying it through Secondary_ID without replying)."""
        primary = None
        shadows = []
        for s in self.servos:
            if not self._alive(s, t):
                continue
            if s.servo_id == servo_id:
                primary = s
            elif s.secondary_id == servo_id:
                shadows.append(s)
        return primary, shadows

    def _reply(self, servo: EmulatedServo, t_ready: float, error: int, params: bytes = b"", *, level: int = 2) -> float:
        """Queue a status packet if the servo's Status_Return_Level (0: ping only, 1: + reads,
        2: all) allows replies of `level`; returns when the wire is free again."""
        if servo.get("Status_Return_Level") < level:
            return t_ready
        packet = status_packet(servo.servo_id, servo.status_error(error), params)
        return self._queue(packet, (servo.servo_id,), t_ready + servo.return_delay_s)

    def _queue(self, packet: bytes, servo_ids: tuple[int, ...], t_start: float) -> float:
        t_start = max(t_start, self._wire_free_t)
        t_end = t_start + len(packet) * self._byte_s()
        self._wire_free_t = t_end
        packet, extra_delay = self._apply_faults(packet, servo_ids)
        if packet is None:
            return t_end
        self._stats.replies_out += 1
        self._seq += 1
        heapq.heappush(self._out, (t_end + self.usb_latency_s + extra_delay, self._seq, packet))
        return t_end

    def _apply_faults(self, packet: bytes, servo_ids: tuple[int, ...]) -> tuple[bytes | None, float]:
        delay = 0.0
        for fault in list(self._faults):
            if fault.servo_id is not None and fault.servo_id not in servo_ids:
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            if fault.kind == "drop":
                self._stats.replies_dropped += 1
                return None, 0.0
            if fault.kind == "corrupt":
                self._stats.replies_corrupted += 1
                packet = packet[:-1] + bytes((packet[-1] ^ 0x5A,))
            elif fault.kind == "delay":
                self._stats.replies_delayed += 1
                delay += fault.delay_s
            break  # one fault per reply
        if self._random_faults:
            r = self._rng.random()
            if r < self._random_faults.get("drop", 0.0):
                self._stats.replies_dropped += 1
                return None, 0.0
            if r < self._random_faults.get("drop", 0.0) + self._random_faults.get("corrupt", 0.0):
                self._stats.replies_corrupted += 1
                packet = packet[:-1] + bytes((packet[-1] ^ 0x5A,))
        return packet, delay

    # -- instructions --
    def _ping(self, p: Packet, t: float) -> None:
        def params(s: EmulatedServo) -> bytes:
            return le_bytes(s.get("Model_Number"), 2) + bytes((s.get("Firmware_Version"),))

        if p.servo_id == BROADCAST_ID:
            for s in sorted(self.servos, key=lambda s: s.servo_id):
                if self._alive(s, t):
                    t = self._reply(s, t, ErrorNumber.NONE, params(s), level=0)
            return
        primary, _ = self._addressed(p.servo_id, t)
        if primary is not None:  # ping to a Secondary_ID gets no answer (rule 4)
            self._reply(primary, t, ErrorNumber.NONE, params(primary), level=0)

    def _read(self, p: Packet, t: float) -> None:
        if len(p.params) != 4:
            self._reply_if(p.servo_id, t, ErrorNumber.DATA_LENGTH)
            return
        address, length = from_le(p.params[0:2]), from_le(p.params[2:4])
        primary, _ = self._addressed(p.servo_id, t)
        if primary is None or p.servo_id == BROADCAST_ID:
            return
        err, data = primary.read(address, length)
        self._reply(primary, t, err, data, level=1)

    def _write(self, p: Packet, t: float) -> None:
        if len(p.params) < 3:
            self._reply_if(p.servo_id, t, ErrorNumber.DATA_LENGTH)
            return
        address, data = from_le(p.params[0:2]), p.params[2:]
        if p.servo_id == BROADCAST_ID:
            for s in self.servos:
                if self._alive(s, t):
                    s.write(address, data)
            return
        primary, shadows = self._addressed(p.servo_id, t)
        for s in shadows:
            s.write(address, data, via_secondary=True)
        if primary is not None:
            err = primary.write(address, data)
            self._reply(primary, t, err)

    def _reg_write(self, p: Packet, t: float) -> None:
        address, data = from_le(p.params[0:2]), p.params[2:]
        targets = [s for s in self.servos if self._alive(s, t)] if p.servo_id == BROADCAST_ID else None
        if targets is not None:
            for s in targets:
                s.register_write(address, data)
            return
        primary, shadows = self._addressed(p.servo_id, t)
        for s in shadows:
            s.register_write(address, data)
        if primary is not None:
            self._reply(primary, t, primary.register_write(address, data))

    def _action(self, p: Packet, t: float) -> None:
        if p.servo_id == BROADCAST_ID:
            for s in self.servos:
                if self._alive(s, t) and s._registered is not None:
                    s.action()
            return
        primary, shadows = self._addressed(p.servo_id, t)
        for s in shadows:
            s.action()
        if primary is not None:
            self._reply(primary, t, primary.action())

    def _reboot(self, p: Packet, t: float) -> None:
        targets = (
            [s for s in self.servos if self._alive(s, t)]
            if p.servo_id == BROADCAST_ID
            else [s for s in [self._addressed(p.servo_id, t)[0]] if s is not None]
        )
        for s in targets:
            if p.servo_id != BROADCAST_ID:
                self._reply(s, t, ErrorNumber.NONE)
            s.reboot(time.monotonic(), self._reboot_s)

    def _factory_reset(self, p: Packet, t: float) -> None:
        option = p.params[0] if p.params else 0xFF
        if p.servo_id == BROADCAST_ID:
            if option == 0xFF:
                return  # refused by firmware 42+: it would give every servo ID 1
            for s in self.servos:
                if self._alive(s, t) and not s.torque_on:
                    s.factory_reset(option)
            return
        primary, _ = self._addressed(p.servo_id, t)
        if primary is None:
            return
        if primary.torque_on:
            self._reply(primary, t, ErrorNumber.ACCESS)
            return
        self._reply(primary, t, ErrorNumber.NONE)
        primary.factory_reset(option)

    def _clear(self, p: Packet, t: float) -> None:
        primary, _ = self._addressed(p.servo_id, t)
        if primary is None or p.servo_id == BROADCAST_ID:
            return
        if p.params[:5] != bytes((0x01, 0x44, 0x58, 0x4C, 0x22)):
            self._reply(primary, t, ErrorNumber.DATA_RANGE)
            return
        if primary.get("Moving"):
            self._reply(primary, t, ErrorNumber.RESULT_FAIL)
            return
        primary.pos_pulses = primary.pos_pulses % ct.PULSES_PER_REV
        primary._refresh_present()
        self._reply(primary, t, ErrorNumber.NONE)

    def _sync_read(self, p: Packet, t: float, fast: bool = False) -> None:
        if p.servo_id != BROADCAST_ID or len(p.params) < 5:
            return
        address, length = from_le(p.params[0:2]), from_le(p.params[2:4])
        ids = list(p.params[4:])
        blocks: list[tuple[int, int, bytes]] = []
        for sid in ids:
            primary, _ = self._addressed(sid, t)
            if primary is None:
                if fast:
                    break  # the chain stops: later servos wait for a block that never comes
                continue
            err, data = primary.read(address, length)
            if fast:
                if primary.get("Firmware_Version") < ct.FAST_SYNC_READ_MIN_FIRMWARE or primary.get("Status_Return_Level") < 1:
                    break  # old firmware treats 0x8A as unknown and never joins the chain
                blocks.append((sid, primary.status_error(err), data if not err else bytes(length)))
            else:
                t = self._reply(primary, t, err, data, level=1)
        if fast and blocks:
            delay = sum(self.servo(sid).return_delay_s for sid, _, _ in blocks)
            # Servos after a missing one never transmit: the packet ends short of its LEN.
            packet = fast_sync_read_reply(blocks, expected_blocks=len(ids))
            self._queue(packet, tuple(sid for sid, _, _ in blocks), t + delay)

    def _fast_sync_read(self, p: Packet, t: float) -> None:
        self._sync_read(p, t, fast=True)

    def _sync_write(self, p: Packet, t: float) -> None:
        if p.servo_id != BROADCAST_ID or len(p.params) < 5:
            return
        address, length = from_le(p.params[0:2]), from_le(p.params[2:4])
        body = p.params[4:]
        if length <= 0 or len(body) % (length + 1):
            return
        for i in range(0, len(body), length + 1):
            sid, data = body[i], body[i + 1 : i + 1 + length]
            primary, shadows = self._addressed(sid, t)
            if primary is not None:
                primary.write(address, data)
            for s in shadows:
                s.write(address, data, via_secondary=True)

    def _bulk_read(self, p: Packet, t: float) -> None:
        if p.servo_id != BROADCAST_ID or len(p.params) % 5:
            return
        for i in range(0, len(p.params), 5):
            sid = p.params[i]
            address, length = from_le(p.params[i + 1 : i + 3]), from_le(p.params[i + 3 : i + 5])
            primary, _ = self._addressed(sid, t)
            if primary is None:
                continue
            err, data = primary.read(address, length)
            t = self._reply(primary, t, err, data, level=1)

    def _bulk_write(self, p: Packet, t: float) -> None:
        if p.servo_id != BROADCAST_ID:
            return
        body = p.params
        i = 0
        while i + 5 <= len(body):
            sid = body[i]
            address, length = from_le(body[i + 1 : i + 3]), from_le(body[i + 3 : i + 5])
            data = body[i + 5 : i + 5 + length]
            i += 5 + length
            primary, shadows = self._addressed(sid, t)
            if primary is not None:
                primary.write(address, data)
            for s in shadows:
                s.write(address, data, via_secondary=True)

    def _reply_if(self, servo_id: int, t: float, error: int) -> None:
        if servo_id != BROADCAST_ID:
            primary, _ = self._addressed(servo_id, t)
            if primary is not None:
                self._reply(primary, t, error)


_HANDLERS: Mapping[int, Callable[[ServoBusEmulator, Packet, float], None]] = {
    Instruction.PING: ServoBusEmulator._ping,
    Instruction.READ: ServoBusEmulator._read,
    Instruction.WRITE: ServoBusEmulator._write,
    Instruction.REG_WRITE: ServoBusEmulator._reg_write,
    Instruction.ACTION: ServoBusEmulator._action,
    Instruction.FACTORY_RESET: ServoBusEmulator._factory_reset,
    Instruction.REBOOT: ServoBusEmulator._reboot,
    Instruction.CLEAR: ServoBusEmulator._clear,
    Instruction.SYNC_READ: ServoBusEmulator._sync_read,
    Instruction.FAST_SYNC_READ: ServoBusEmulator._fast_sync_read,
    Instruction.SYNC_WRITE: ServoBusEmulator._sync_write,
    Instruction.BULK_READ: ServoBusEmulator._bulk_read,
    Instruction.BULK_WRITE: ServoBusEmulator._bulk_write,
}


# --- ALOHA arms -------------------------------------------------------------------------------
def arm_servos(
    layout: ArmLayout,
    joint_pos_rad: Iterable[float] | None = None,
    *,
    baud_rate: int = 1_000_000,
    firmware_version: int = 46,
) -> list[EmulatedServo]:
    """Emulated servos for one arm as it leaves the factory set-up: ids, models, shadow links
    (Secondary_ID of each shadow = its primary's id), joints at `joint_pos_rad` (default 0)."""
    q = list(joint_pos_rad) if joint_pos_rad is not None else [0.0] * len(layout.joints)
    if len(q) != len(layout.joints):
        raise ValueError(f"{layout.name}: need {len(layout.joints)} joint positions, got {len(q)}")
    servos = []
    for joint, pos in zip(layout.joints, q):
        servos.append(EmulatedServo(joint.model, joint.servo_id, position_rad=pos, baud_rate=baud_rate,
                                    firmware_version=firmware_version))
        for sid in joint.shadow_ids:
            servos.append(EmulatedServo(joint.model, sid, secondary_id=joint.servo_id, position_rad=pos,
                                        baud_rate=baud_rate, firmware_version=firmware_version))
    return servos


def leader_motions(
    layout: ArmLayout,
    *,
    gripper_closed_rad: float = -0.6842,
    amplitude_rad: float = 0.15,
    period_s: float = 4.0,
    squeeze_every_s: float | None = 3.0,
) -> dict[int, JointMotion]:
    """A gentle scripted operator for one leader arm: each joint sways around where it was
    released (phases staggered), the gripper handle is squeezed (every `squeeze_every_s`, or
    once and held when None)."""
    motions: dict[int, JointMotion] = {}
    for k, joint in enumerate(layout.joints):
        if joint.name == "gripper":
            motions[joint.servo_id] = Squeeze(closed_rad=gripper_closed_rad, repeat_s=squeeze_every_s,
                                              hold_s=1.0 if squeeze_every_s else 0.0)
        else:
            motions[joint.servo_id] = Sinusoid(amplitude_rad, period_s, phase_rad=0.9 * k)
    return motions


def aloha_buses(
    *,
    baud_rate: int = 1_000_000,
    start_pose_rad: Iterable[float] | None = None,
    usb_latency_ms: float = 0.0,
) -> dict[str, ServoBusEmulator]:
    """The four buses of a bimanual ALOHA rig (not started): leader_left/right (WidowX 250 with
    scripted hands attached) and follower_left/right (ViperX 300)."""
    pose = list(start_pose_rad) if start_pose_rad is not None else None
    buses = {}
    for side in ("left", "right"):
        leader = ServoBusEmulator(arm_servos(WIDOWX_250_LEADER, pose, baud_rate=baud_rate),
                                  name=f"leader_{side}", usb_latency_ms=usb_latency_ms)
        for sid, motion in leader_motions(WIDOWX_250_LEADER).items():
            leader.attach_motion(sid, motion)
        buses[f"leader_{side}"] = leader
        buses[f"follower_{side}"] = ServoBusEmulator(arm_servos(VIPERX_300_FOLLOWER, pose, baud_rate=baud_rate),
                                                     name=f"follower_{side}", usb_latency_ms=usb_latency_ms)
    return buses


def main(argv: list[str] | None = None) -> int:
    """`python -m robot.dynamixel.emulator`: serve the four ALOHA buses until stdin closes or
    SIGTERM; prints {"leader_left": "/dev/pts/N", ...} as one JSON line once they are up."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--baud", type=int, default=1_000_000)
    ap.add_argument("--usb-latency-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    buses = aloha_buses(baud_rate=args.baud, usb_latency_ms=args.usb_latency_ms)
    for bus in buses.values():
        bus.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    sys.stdout.write(json.dumps({name: bus.port_name for name, bus in buses.items()}) + "\n")
    sys.stdout.flush()
    waiter = threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True)
    waiter.start()
    done.wait()
    for bus in buses.values():
        bus.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
