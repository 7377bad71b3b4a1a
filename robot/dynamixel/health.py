"""Servo health: temperature, input voltage, current/load and hardware-error bits per servo,
checked against thresholds. Polled at a low rate (about 1 Hz) between control ticks; three sync
reads per arm.

A servo that stops answering raises `ServoNotResponding` naming it (from the bus); the rig then
holds the arm and keeps recording. Hardware errors are reported in the `HealthReport` and, with
`raise_for_hardware_errors`, as `ServoHardwareError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from robot.dynamixel import control_table as ct
from robot.dynamixel.arm import DynamixelArm
from robot.dynamixel.control_table import HardwareError
from robot.dynamixel.errors import ServoHardwareError
from robot.types import RigMessage


@dataclass(frozen=True)
class HealthThresholds:
    """When a reading becomes a problem. Defaults suit a 12 V ALOHA supply; warnings come before
    the servos' own limits (Temperature_Limit 72-80 degC) so the operator can pause first."""

    max_temperature_c: float = 65.0
    min_voltage_v: float = 10.5
    max_voltage_v: float = 13.5
    max_current_ma: float = 1800.0
    max_load_percent: float = 80.0

    def __post_init__(self) -> None:
        if self.min_voltage_v >= self.max_voltage_v:
            raise ValueError(f"HealthThresholds: min_voltage_v ({self.min_voltage_v}) must be below max_voltage_v ({self.max_voltage_v})")
        if not 0 < self.max_temperature_c < 100:
            raise ValueError(f"HealthThresholds.max_temperature_c must be in (0, 100) degC, got {self.max_temperature_c}")
        if self.max_current_ma <= 0 or not 0 < self.max_load_percent <= 100:
            raise ValueError("HealthThresholds: max_current_ma must be > 0 and max_load_percent in (0, 100]")


@dataclass(frozen=True)
class ServoHealth:
    servo_id: int
    joint: str
    temperature_c: float
    voltage_v: float
    current_ma: float | None  # None on servos without current sensing
    load_percent: float | None  # None on servos with current sensing
    hardware_error: HardwareError
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class HealthReport:
    arm_id: str
    port: str
    servos: tuple[ServoHealth, ...]
    time_s: float

    @property
    def ok(self) -> bool:
        return not any(s.problems for s in self.servos)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(f"{self.arm_id} {s.joint} (servo {s.servo_id}): {p}" for s in self.servos for p in s.problems)

    def raise_for_hardware_errors(self) -> None:
        for s in self.servos:
            if s.hardware_error:
                raise ServoHardwareError(self.port, s.servo_id, s.hardware_error, s.joint)


def read_health(arm: DynamixelArm, thresholds: HealthThresholds | None = None) -> HealthReport:
    """Read every servo of `arm` (shadows included: a hot shadow is as bad as a hot primary)."""
    th = thresholds or HealthThresholds()
    bus = arm.bus
    ids = list(arm.layout.all_ids)
    names = {sid: bus.joint_names.get(sid, str(sid)) for sid in ids}
    hw = bus.sync_read_block(70, 1, ids, "Hardware_Error_Status")
    load = bus.sync_read_block(126, 2, ids, "Present_Current")
    volt_temp = bus.sync_read_block(144, 3, ids, "Present_Input_Voltage")
    out = []
    for sid in ids:
        model = bus.servos[sid]
        bits = HardwareError(hw[sid][0])
        raw_load = int.from_bytes(load[sid], "little", signed=True)
        voltage = int.from_bytes(volt_temp[sid][:2], "little") * ct.VOLT_PER_UNIT
        temperature = float(volt_temp[sid][2])
        current = raw_load * model.current_ma_per_unit if model.has_current_sensing else None
        load_pct = None if model.has_current_sensing else raw_load * ct.PERCENT_PER_LOAD_UNIT
        problems = []
        if bits:
            problems.append(f"hardware error: {bits.describe()}")
        if temperature > th.max_temperature_c:
            problems.append(f"hot: {temperature:.0f} degC (limit {th.max_temperature_c:.0f}); let it cool down")
        if not th.min_voltage_v <= voltage <= th.max_voltage_v:
            problems.append(f"supply at {voltage:.1f} V, outside {th.min_voltage_v}-{th.max_voltage_v} V; check the power supply")
        if current is not None and abs(current) > th.max_current_ma:
            problems.append(f"drawing {abs(current):.0f} mA (limit {th.max_current_ma:.0f}); is the arm blocked?")
        if load_pct is not None and abs(load_pct) > th.max_load_percent:
            problems.append(f"load {abs(load_pct):.0f} % (limit {th.max_load_percent:.0f} %); is the arm blocked?")
        out.append(ServoHealth(sid, names[sid], temperature, voltage, current, load_pct, bits, tuple(problems)))
    return HealthReport(arm.arm_id, bus.port, tuple(out), time.monotonic())


#: Bus errors per second above which a rig reports its bus (a few per minute are normal noise).
BUS_ERRORS_PER_S_WARN = 1.0


def bus_error_messages(arms) -> list[RigMessage]:
    """One message per arm whose bus fails more than BUS_ERRORS_PER_S_WARN times a second (any
    thread: the bus keeps its rate under its own lock)."""
    messages = []
    for arm in arms:
        stats = arm.bus.stats
        if stats.errors_per_s > BUS_ERRORS_PER_S_WARN:
            messages.append(RigMessage(f"bus {arm.arm_id}", f"{arm.arm_id}: {stats.errors_per_s:.1f} bus errors/s ({stats.last_error})"))
    return messages
