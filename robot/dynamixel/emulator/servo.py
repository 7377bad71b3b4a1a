"""One emulated Dynamixel servo: its control table, the rules the real device enforces, its physics.

Control table from `control_table` (the same one the bus uses): access rights, EEPROM locked while
torque is on, write ranges and limits, Secondary_ID shadows (a write through a Secondary_ID never
reaches EEPROM), Bus_Watchdog, Shutdown on hardware errors, reboot, factory reset, reg write/action.

Physics, advanced event by event (to the arrival time of each packet, and when a test inspects the
servo): goals are constant between packets, so one step per interval is exact for this motion model
and costs nothing while the bus is idle. In position modes the position moves to the goal at
Profile_Velocity (no acceleration ramp; 0 means the model's no-load speed), capped by
Velocity_Limit; velocity and PWM modes move at the commanded rate; the present current follows the
tracking error plus a holding load, capped by Goal_Current in current-based position mode;
temperature integrates I^2 and cools to ambient; voltage sags with current. With torque off the
servo is moved by its `JointMotion` (a hand on a leader arm), if any.

Thread ownership: the emulator thread of the `ServoBusEmulator` holding the servo, or a caller
holding that bus's lock.
"""

from __future__ import annotations

import logging
import math
import time

from robot.dynamixel import control_table as ct
from robot.dynamixel.control_table import HardwareError, OperatingMode, Register, ServoModel
from robot.dynamixel.emulator.motions import JointMotion, Push
from robot.dynamixel.protocol import ALERT_BIT, ErrorNumber, from_le

log = logging.getLogger(__name__)

AMBIENT_C = 28.0
NOMINAL_SUPPLY_V = 12.0
#: A hand overpowers a position-controlled servo whose Position_P_Gain is at most this (the
#: XL430's default is 640): a leader arm following the followers on soft gains yields to it.
HAND_BEATS_P_GAIN = 400
_PRESENT_BLOCK_ADDRESS = 120  # Realtime_Tick, the first register the physics keeps current
_GOAL_REGISTERS = ("Goal_PWM", "Goal_Current", "Goal_Velocity", "Goal_Position")
_PRESENT = frozenset({"Present_Position", "Present_Velocity", "Present_Current", "Present_Load", "Present_Input_Voltage",
                      "Present_Temperature", "Moving", "Realtime_Tick"})


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
        self.push: Push | None = None
        self._push_t0: float | None = None
        self._push_start_rad = 0.0
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
        if address + length > _PRESENT_BLOCK_ADDRESS:  # bring the Present_* block up to date from the physics
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

    def clear_multi_turn(self) -> int:
        """The Clear instruction's work: the position back into one turn; refused while moving."""
        if self.get("Moving"):
            return ErrorNumber.RESULT_FAIL
        self.pos_pulses = self.pos_pulses % ct.PULSES_PER_REV
        self._refresh_present()
        return ErrorNumber.NONE

    # -- set-up behind the bus's back (tests, scripted hands) --
    def place(self, position_rad: float) -> None:
        """Move the shaft to `position_rad` at once (test set-up)."""
        self.pos_pulses = float(ct.rad_to_pulses(position_rad))
        self._refresh_present()

    def attach_motion(self, motion: JointMotion | None) -> None:
        """A hand moving this servo whenever its torque is off; it takes over from where the joint is."""
        self.motion = motion
        self._motion_t0 = None

    def attach_push(self, push: Push | None) -> None:
        """A hand grabbing this joint whatever its torque (None: it lets go); it starts from where the
        joint is at the next physics step."""
        self.push = push
        self._push_t0 = None

    def set_temperature(self, temperature_c: float) -> None:
        self.temperature_c = temperature_c
        self._thermal(0.0)  # an overheated servo trips now, as the real one would within a tick

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
            if self.push is not None:
                self._pushed(now)
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

    def _pushed(self, now: float) -> None:
        """Torque on and a hand on the joint: a soft servo goes where the hand puts it, its current
        rising with the distance from its goal; a stiff one holds its own position."""
        if self._push_t0 is None:
            self._push_t0 = now
            self._push_start_rad = self.position_rad
        where = self.push.position_rad(now - self._push_t0, self._push_start_rad)
        if where is None:
            return
        if self.get("Position_P_Gain") <= HAND_BEATS_P_GAIN:
            self.pos_pulses = float(ct.rad_to_pulses(where))
            self.vel_pulses_s = 0.0
        error = abs(self.get("Goal_Position") - self.pos_pulses)
        stall = self.model.stall_current_ma or 1500.0
        self.current_ma = min(stall, self._holding_current_ma() + 4.0 * error)

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

