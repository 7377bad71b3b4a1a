"""Control tables of the X-series servos on an ALOHA rig: the one source of truth for addresses,
sizes, access, defaults and units, used by both the bus and the emulator.

Facts from the ROBOTIS e-manual (docs/en/dxl/x/<model>.md, Protocol 2.0 tables):
- XM540-W270 (1120) and XM430-W350 (1020) have current sensing: Current_Limit(38), Goal_Current(102)
  and Present_Current(126) in units of 2.69 mA, and all six operating modes.
- XL430-W250 (1060) and XC430-W150 (1070) have no current sensing: no Current_Limit or
  Goal_Current; address 126 is Present_Load in 0.1 % of the maximum; no current (0) or
  current-based position (5) mode.
- Position: 4096 pulses per turn (0.088 deg/pulse), 2048 is the middle of the range (our 0 rad).
- Velocity: 0.229 rev/min per unit. Voltage: 0.1 V. Temperature: 1 degC.
- Bus_Watchdog(98): 1..127 x 20 ms; the servo stops when no instruction packet arrives within
  that time while torque is on, and the register then reads -1 until 0 is written.
- EEPROM (addresses < 64) can only be written with Torque_Enable(64) = 0.

Fast Sync Read (0x8A) needs X-series firmware 45 or newer; the bus checks the firmware version
that ping returns rather than the model.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

# --- units -------------------------------------------------------------------------------------
PULSES_PER_REV = 4096
CENTER_PULSE = 2048  # the servo's middle position; our joint angle 0 before calibration
RAD_PER_PULSE = 2.0 * math.pi / PULSES_PER_REV  # 0.088 deg
RPM_PER_VELOCITY_UNIT = 0.229
RAD_S_PER_VELOCITY_UNIT = RPM_PER_VELOCITY_UNIT * 2.0 * math.pi / 60.0
VOLT_PER_UNIT = 0.1
PERCENT_PER_LOAD_UNIT = 0.1
MS_PER_WATCHDOG_UNIT = 20
US_PER_RETURN_DELAY_UNIT = 2
FAST_SYNC_READ_MIN_FIRMWARE = 45

#: Baud_Rate(8) register value -> bits per second.
BAUD_RATE_CODES: Mapping[int, int] = MappingProxyType(
    {0: 9_600, 1: 57_600, 2: 115_200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000, 6: 4_000_000, 7: 4_500_000}
)


class OperatingMode(enum.IntEnum):
    """Operating_Mode(11) values (ALOHA.md)."""

    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


class HardwareError(enum.IntFlag):
    """Hardware_Error_Status(70) bits; the same bits select the Shutdown(63) conditions."""

    NONE = 0
    INPUT_VOLTAGE = 0x01
    OVERHEATING = 0x04
    MOTOR_ENCODER = 0x08
    ELECTRICAL_SHOCK = 0x10
    OVERLOAD = 0x20

    def describe(self) -> str:
        if not self:
            return "no hardware error"
        return ", ".join(f.name.lower().replace("_", " ") for f in HardwareError if f and f in self)


class Area(str, enum.Enum):
    EEPROM = "eeprom"  # persistent; writable only with torque off
    RAM = "ram"


@dataclass(frozen=True)
class Register:
    """One control-table item. `low`/`high` bound what a write accepts (None: unchecked)."""

    name: str
    address: int
    size: int
    writable: bool
    signed: bool = False
    low: int | None = None
    high: int | None = None

    @property
    def area(self) -> Area:
        return Area.EEPROM if self.address < 64 else Area.RAM

    @property
    def end(self) -> int:
        return self.address + self.size


def _r(name, address, size, writable=False, signed=False, low=None, high=None) -> Register:
    return Register(name, address, size, writable, signed, low, high)


# Registers every X-series model here shares (address, size, access, write range).
_COMMON: tuple[Register, ...] = (
    _r("Model_Number", 0, 2),
    _r("Model_Information", 2, 4),
    _r("Firmware_Version", 6, 1),
    _r("ID", 7, 1, True, low=0, high=252),
    _r("Baud_Rate", 8, 1, True, low=0, high=7),
    _r("Return_Delay_Time", 9, 1, True, low=0, high=254),
    _r("Drive_Mode", 10, 1, True, low=0, high=13),
    _r("Operating_Mode", 11, 1, True, low=0, high=16),
    _r("Secondary_ID", 12, 1, True, low=0, high=255),
    _r("Protocol_Type", 13, 1, True, low=1, high=2),
    _r("Homing_Offset", 20, 4, True, signed=True, low=-1_044_479, high=1_044_479),
    _r("Moving_Threshold", 24, 4, True, low=0, high=1023),
    _r("Temperature_Limit", 31, 1, True, low=0, high=100),
    _r("Max_Voltage_Limit", 32, 2, True),
    _r("Min_Voltage_Limit", 34, 2, True),
    _r("PWM_Limit", 36, 2, True, low=0, high=885),
    _r("Velocity_Limit", 44, 4, True, low=0, high=1023),
    _r("Max_Position_Limit", 48, 4, True, low=0, high=4095),
    _r("Min_Position_Limit", 52, 4, True, low=0, high=4095),
    _r("Startup_Configuration", 60, 1, True, low=0, high=3),
    _r("Shutdown", 63, 1, True, low=0, high=255),
    _r("Torque_Enable", 64, 1, True, low=0, high=1),
    _r("LED", 65, 1, True, low=0, high=1),
    _r("Status_Return_Level", 68, 1, True, low=0, high=2),
    _r("Registered_Instruction", 69, 1),
    _r("Hardware_Error_Status", 70, 1),
    _r("Velocity_I_Gain", 76, 2, True, low=0, high=16383),
    _r("Velocity_P_Gain", 78, 2, True, low=0, high=16383),
    _r("Position_D_Gain", 80, 2, True, low=0, high=16383),
    _r("Position_I_Gain", 82, 2, True, low=0, high=16383),
    _r("Position_P_Gain", 84, 2, True, low=0, high=16383),
    _r("Feedforward_2nd_Gain", 88, 2, True, low=0, high=16383),
    _r("Feedforward_1st_Gain", 90, 2, True, low=0, high=16383),
    _r("Bus_Watchdog", 98, 1, True, signed=True, low=0, high=127),
    _r("Goal_PWM", 100, 2, True, signed=True),
    _r("Goal_Velocity", 104, 4, True, signed=True),
    _r("Profile_Acceleration", 108, 4, True, low=0, high=32767),
    _r("Profile_Velocity", 112, 4, True, low=0, high=32767),
    _r("Goal_Position", 116, 4, True, signed=True),
    _r("Realtime_Tick", 120, 2),
    _r("Moving", 122, 1),
    _r("Moving_Status", 123, 1),
    _r("Present_PWM", 124, 2, signed=True),
    _r("Present_Velocity", 128, 4, signed=True),
    _r("Present_Position", 132, 4, signed=True),
    _r("Velocity_Trajectory", 136, 4, signed=True),
    _r("Position_Trajectory", 140, 4, signed=True),
    _r("Present_Input_Voltage", 144, 2),
    _r("Present_Temperature", 146, 1),
)

_CURRENT_SENSING: tuple[Register, ...] = (
    _r("Current_Limit", 38, 2, True, low=0),  # high is per model
    _r("Goal_Current", 102, 2, True, signed=True),
    _r("Present_Current", 126, 2, signed=True),
)
_LOAD_SENSING: tuple[Register, ...] = (_r("Present_Load", 126, 2, signed=True),)

#: The contiguous block the control loop reads every tick: current/load, velocity, position.
STATE_BLOCK_ADDRESS = 126
STATE_BLOCK_SIZE = 10  # 126..135


@dataclass(frozen=True)
class ServoModel:
    """One servo model: its control table, factory defaults and physical ratings.

    current_ma_per_unit: None when the model has no current sensing (126 is Present_Load then).
    no_load_speed_rad_s: used by the emulator when Profile_Velocity is 0 ("as fast as it can").
    """

    name: str
    model_number: int
    registers: Mapping[str, Register]
    defaults: Mapping[str, int]
    modes: frozenset[OperatingMode]
    current_ma_per_unit: float | None
    max_current_limit: int | None
    no_load_speed_rad_s: float
    stall_current_ma: float | None

    def register(self, name: str) -> Register:
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"{self.name} has no register {name!r}") from None

    def has(self, name: str) -> bool:
        return name in self.registers

    def register_at(self, address: int) -> Register | None:
        return self._by_address().get(address)

    def _by_address(self) -> Mapping[int, Register]:
        cached = self.__dict__.get("_addr_cache")
        if cached is None:
            cached = {r.address: r for r in self.registers.values()}
            object.__setattr__(self, "_addr_cache", cached)
        return cached

    @property
    def table_size(self) -> int:
        return max(r.end for r in self.registers.values())

    @property
    def has_current_sensing(self) -> bool:
        return self.current_ma_per_unit is not None


def _model(
    name: str,
    model_number: int,
    *,
    current: bool,
    defaults: dict[str, int],
    max_current_limit: int | None,
    no_load_rpm: float,
    stall_current_ma: float | None,
) -> ServoModel:
    regs = {r.name: r for r in _COMMON}
    if current:
        for r in _CURRENT_SENSING:
            if r.name == "Current_Limit":
                r = Register(r.name, r.address, r.size, True, False, 0, max_current_limit)
            regs[r.name] = r
        modes = frozenset(OperatingMode)
    else:
        regs.update({r.name: r for r in _LOAD_SENSING})
        modes = frozenset(
            {OperatingMode.VELOCITY, OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION, OperatingMode.PWM}
        )
    base = {
        "Model_Number": model_number,
        "Firmware_Version": 46,
        "ID": 1,
        "Baud_Rate": 1,
        "Return_Delay_Time": 250,
        "Operating_Mode": int(OperatingMode.POSITION),
        "Secondary_ID": 255,
        "Protocol_Type": 2,
        "Moving_Threshold": 10,
        "PWM_Limit": 885,
        "Max_Position_Limit": 4095,
        "Min_Position_Limit": 0,
        "Shutdown": int(HardwareError.OVERHEATING | HardwareError.ELECTRICAL_SHOCK | HardwareError.OVERLOAD),  # 52
        "Status_Return_Level": 2,
        "Velocity_I_Gain": 1920,
        "Velocity_P_Gain": 100,
        "Position_P_Gain": 800,
    }
    base.update(defaults)
    return ServoModel(
        name=name,
        model_number=model_number,
        registers=MappingProxyType(regs),
        defaults=MappingProxyType(base),
        modes=modes,
        current_ma_per_unit=2.69 if current else None,
        max_current_limit=max_current_limit,
        no_load_speed_rad_s=no_load_rpm * 2.0 * math.pi / 60.0,
        stall_current_ma=stall_current_ma,
    )


XM540_W270 = _model(
    "XM540-W270",
    1120,
    current=True,
    defaults={"Temperature_Limit": 80, "Max_Voltage_Limit": 160, "Min_Voltage_Limit": 95,
              "Current_Limit": 2047, "Velocity_Limit": 128},
    max_current_limit=2047,
    no_load_rpm=30.0,
    stall_current_ma=4400.0,
)
XM430_W350 = _model(
    "XM430-W350",
    1020,
    current=True,
    defaults={"Temperature_Limit": 80, "Max_Voltage_Limit": 160, "Min_Voltage_Limit": 95,
              "Current_Limit": 1193, "Velocity_Limit": 200},
    max_current_limit=1193,
    no_load_rpm=46.0,
    stall_current_ma=2300.0,
)
XL430_W250 = _model(
    "XL430-W250",
    1060,
    current=False,
    defaults={"Temperature_Limit": 72, "Max_Voltage_Limit": 140, "Min_Voltage_Limit": 60,
              "Velocity_Limit": 265, "Velocity_I_Gain": 1000, "Position_D_Gain": 4000, "Position_P_Gain": 640},
    max_current_limit=None,
    no_load_rpm=61.0,
    stall_current_ma=None,
)
XC430_W150 = _model(
    "XC430-W150",
    1070,
    current=False,
    defaults={"Temperature_Limit": 80, "Max_Voltage_Limit": 160, "Min_Voltage_Limit": 60,
              "Velocity_Limit": 460, "Moving_Threshold": 20, "Position_P_Gain": 460},
    max_current_limit=None,
    no_load_rpm=106.0,
    stall_current_ma=None,
)

MODELS: Mapping[str, ServoModel] = MappingProxyType({m.name: m for m in (XM540_W270, XM430_W350, XL430_W250, XC430_W150)})
MODELS_BY_NUMBER: Mapping[int, ServoModel] = MappingProxyType({m.model_number: m for m in MODELS.values()})


def model_named(name: str) -> ServoModel:
    """Look a model up by its name (e.g. "XM430-W350"), with the known names in the error."""
    try:
        return MODELS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown servo model {name!r}; known models: {', '.join(MODELS)}") from None


# --- conversions (vectorised; raw values are ints or int arrays) --------------------------------
def pulses_to_rad(pulses) -> np.ndarray:
    """Present/Goal_Position pulses -> radians, 2048 = 0 rad."""
    return (np.asarray(pulses, dtype=np.float64) - CENTER_PULSE) * RAD_PER_PULSE


def rad_to_pulses(rad) -> np.ndarray:
    """Radians -> nearest position pulse (int64), 0 rad = 2048."""
    return np.rint(np.asarray(rad, dtype=np.float64) / RAD_PER_PULSE + CENTER_PULSE).astype(np.int64)


def velocity_to_rad_s(raw) -> np.ndarray:
    return np.asarray(raw, dtype=np.float64) * RAD_S_PER_VELOCITY_UNIT


def rad_s_to_velocity(rad_s) -> np.ndarray:
    return np.rint(np.asarray(rad_s, dtype=np.float64) / RAD_S_PER_VELOCITY_UNIT).astype(np.int64)


def to_signed(value: int, size: int) -> int:
    """A register's raw unsigned value -> signed (two's complement of `size` bytes)."""
    bits = 8 * size
    value &= (1 << bits) - 1
    return value - (1 << bits) if value & (1 << (bits - 1)) else value
