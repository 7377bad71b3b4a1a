"""The control tables: e-manual facts per model and unit conversions."""

import math

import numpy as np
import pytest

from robot.dynamixel import control_table as ct
from robot.dynamixel.control_table import HardwareError, OperatingMode


def test_model_numbers_and_current_sensing_per_model():
    assert {m.name: m.model_number for m in ct.MODELS.values()} == {
        "XM540-W270": 1120, "XM430-W350": 1020, "XL430-W250": 1060, "XC430-W150": 1070}
    for name in ("XM540-W270", "XM430-W350"):
        m = ct.MODELS[name]
        assert m.current_ma_per_unit == pytest.approx(2.69)
        assert m.register("Present_Current").address == 126 and m.has("Goal_Current")
        assert m.modes == frozenset(OperatingMode)
    for name in ("XL430-W250", "XC430-W150"):
        m = ct.MODELS[name]
        assert not m.has("Current_Limit") and not m.has("Goal_Current")
        assert m.register("Present_Load").address == 126
        assert OperatingMode.CURRENT_BASED_POSITION not in m.modes and OperatingMode.PWM in m.modes
    assert ct.MODELS["XM430-W350"].register("Current_Limit").high == 1193
    assert ct.MODELS["XM540-W270"].defaults["Velocity_Limit"] == 128


def test_x_series_addresses_and_eeprom_boundary():
    m = ct.XM430_W350
    expect = {"Operating_Mode": (11, 1), "Secondary_ID": (12, 1), "Torque_Enable": (64, 1), "Hardware_Error_Status": (70, 1),
              "Bus_Watchdog": (98, 1), "Goal_Position": (116, 4), "Present_Velocity": (128, 4),
              "Present_Position": (132, 4), "Present_Input_Voltage": (144, 2), "Present_Temperature": (146, 1)}
    assert {n: (m.register(n).address, m.register(n).size) for n in expect} == expect
    assert m.register("Velocity_Limit").area is ct.Area.EEPROM and m.register("Torque_Enable").area is ct.Area.RAM
    assert ct.STATE_BLOCK_ADDRESS + ct.STATE_BLOCK_SIZE == m.register("Present_Position").end


def test_position_units_center_and_round_trip():
    assert ct.RAD_PER_PULSE == pytest.approx(math.radians(0.088), rel=2e-3)
    assert ct.pulses_to_rad(2048) == 0.0
    q = np.array([-3.0, -0.96, 0.0, 1.16, 3.0])
    assert np.all(np.abs(ct.pulses_to_rad(ct.rad_to_pulses(q)) - q) <= ct.RAD_PER_PULSE / 2)
    assert ct.velocity_to_rad_s(1) == pytest.approx(0.229 * 2 * math.pi / 60)


def test_signed_registers_and_hardware_error_text():
    assert ct.to_signed(0xFFFFFFFF, 4) == -1 and ct.to_signed(0xFF, 1) == -1 and ct.to_signed(5, 2) == 5
    bits = HardwareError.OVERLOAD | HardwareError.OVERHEATING
    assert bits.describe() == "overheating, overload"
    assert HardwareError(52) == HardwareError.OVERHEATING | HardwareError.ELECTRICAL_SHOCK | HardwareError.OVERLOAD


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="XM430-W350"):
        ct.model_named("MX-28")
