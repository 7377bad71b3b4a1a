"""Building cameras from config dataclasses and from rig-file tables, by kind."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from robot.cameras import (
    EmulatedRealSenseCamera,
    EmulatedRealSenseConfig,
    OpenCVCamera,
    OpenCVCameraConfig,
    RealSenseCamera,
    RealSenseConfig,
    camera_config_from_table,
    camera_kinds,
    config_class_for,
    make_camera,
)


def test_every_builtin_kind_is_registered():
    assert set(camera_kinds()) >= {"realsense", "realsense-emulated", "opencv"}
    assert config_class_for("realsense") is RealSenseConfig
    assert config_class_for("realsense-emulated") is EmulatedRealSenseConfig
    assert config_class_for("opencv") is OpenCVCameraConfig


def test_make_camera_picks_the_driver_of_the_config_type():
    assert type(make_camera(RealSenseConfig(name="cam_high", serial="1"))) is RealSenseCamera
    assert type(make_camera(EmulatedRealSenseConfig(name="cam_low"))) is EmulatedRealSenseCamera
    assert type(make_camera(OpenCVCameraConfig(name="cam_usb", source=0))) is OpenCVCamera


def test_a_table_becomes_the_config_of_its_kind():
    config = camera_config_from_table(
        {"kind": "realsense", "name": "cam_high", "serial": "018322070394", "fps": 60, "use_depth": True}
    )
    assert config == RealSenseConfig(name="cam_high", serial="018322070394", fps=60, use_depth=True)
    emulated = camera_config_from_table({"kind": "realsense-emulated", "name": "cam_low", "usb_type": "2.1"})
    assert emulated.serial == "emulated-cam_low" and emulated.usb_type == "2.1"


def test_table_mistakes_name_the_fix():
    with pytest.raises(ValueError, match="no `kind`"):
        camera_config_from_table({"name": "cam_high"})
    with pytest.raises(ValueError, match="unknown camera kind 'kinect'.*realsense"):
        camera_config_from_table({"kind": "kinect", "name": "cam_high"})
    with pytest.raises(ValueError, match="unknown setting.*serail.*serial"):
        camera_config_from_table({"kind": "realsense", "name": "cam_high", "serail": "1"})
    with pytest.raises(ValueError, match="unknown setting.*frame_fn"):
        camera_config_from_table({"kind": "realsense-emulated", "name": "cam_high", "frame_fn": "render"})
    with pytest.raises(ValueError, match="has no `name`"):
        camera_config_from_table({"kind": "opencv", "source": 0})
    with pytest.raises(ValueError, match="in quotes"):
        camera_config_from_table({"kind": "realsense", "name": "cam_high", "serial": 18322070394})


def test_an_unregistered_config_type_is_refused():
    @dataclass(frozen=True)
    class ThermalConfig(RealSenseConfig):
        kind: ClassVar[str] = "thermal"

    with pytest.raises(ValueError, match="no camera driver is registered for ThermalConfig"):
        make_camera(ThermalConfig(name="cam_heat", serial="1"))
