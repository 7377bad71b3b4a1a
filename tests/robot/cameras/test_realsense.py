"""The real-device side of the RealSense driver: device lookup through librealsense, timestamps, config."""

import time

import pyrealsense2 as rs
import pytest

from robot.cameras import CameraNotFound, RealSenseCamera, RealSenseConfig, make_camera
from robot.cameras.realsense import MAX_PLAUSIBLE_LATENCY_S, host_capture_time_s

ARRIVAL_S = 1000.0
WALL_MINUS_MONO_S = 1.7e9  # time.time() - time.monotonic()


def test_an_absent_serial_is_reported_from_the_device_query_with_what_is_connected():
    # Runs the real PipelineSource against this machine's USB: the query answers at once (no 15 s
    # pipeline.start() timeout) and the error lists whatever RealSense cameras are present.
    config = RealSenseConfig(name="cam_high", serial="000000000000", first_frame_timeout_ms=3000.0)
    camera = make_camera(config)
    assert type(camera) is RealSenseCamera
    connected = [device.get_info(rs.camera_info.serial_number) for device in rs.context().query_devices()]
    with pytest.raises(CameraNotFound) as not_found:
        camera.connect()
    assert [entry.split(" ")[0] for entry in not_found.value.connected] == connected
    message = str(not_found.value)
    assert "cam_high" in message and "serial 000000000000 was not found" in message
    if not connected:
        assert "No RealSense cameras are connected at all" in message
    assert not camera.is_connected


def test_global_and_system_time_convert_to_the_monotonic_capture_time():
    for domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
        captured_s = ARRIVAL_S - 0.045  # 45 ms of exposure readout and USB transfer
        timestamp_ms = (captured_s + WALL_MINUS_MONO_S) * 1000.0
        converted_s = host_capture_time_s(timestamp_ms, domain, ARRIVAL_S, WALL_MINUS_MONO_S)
        assert converted_s == pytest.approx(captured_s, abs=1e-6)


def test_device_clock_and_implausible_times_fall_back_to_the_arrival_time():
    hardware = host_capture_time_s(123456.0, rs.timestamp_domain.hardware_clock, ARRIVAL_S, WALL_MINUS_MONO_S)
    assert hardware == ARRIVAL_S
    global_time = rs.timestamp_domain.global_time
    future_ms = (ARRIVAL_S + 0.010 + WALL_MINUS_MONO_S) * 1000.0  # a wall clock stepped back
    assert host_capture_time_s(future_ms, global_time, ARRIVAL_S, WALL_MINUS_MONO_S) == ARRIVAL_S
    ancient_ms = (ARRIVAL_S - MAX_PLAUSIBLE_LATENCY_S - 0.1 + WALL_MINUS_MONO_S) * 1000.0
    assert host_capture_time_s(ancient_ms, global_time, ARRIVAL_S, WALL_MINUS_MONO_S) == ARRIVAL_S


@pytest.mark.parametrize(
    "changes, complaint",
    [
        ({"serial": 18322070394}, 'write serial = "18322070394" in quotes'),
        ({"serial": ""}, "serial is missing"),
        ({"use_depth": "yes"}, "use_depth must be true or false"),
        ({"name": "cam/high"}, "letters, digits"),
        ({"width": 0}, "width must be a positive whole number"),
        ({"max_frame_age_ms": -5}, "max_frame_age_ms must be a positive number"),
        ({"low_fps_ratio": 2.0}, r"low_fps_ratio must lie in \[0, 1\]"),
    ],
)
def test_config_refuses_bad_values_with_the_fix(changes, complaint):
    values = {"name": "cam_high", "serial": "018322070394", **changes}
    with pytest.raises(ValueError, match=complaint):
        RealSenseConfig(**values)


@pytest.mark.hardware
def test_a_connected_realsense_streams_timestamped_rgb():
    devices = list(rs.context().query_devices())
    if not devices:
        pytest.skip("no RealSense camera is connected")
    serial = devices[0].get_info(rs.camera_info.serial_number)
    config = RealSenseConfig(name="cam_hw", serial=serial, width=640, height=480, fps=30)
    with make_camera(config) as camera:
        time.sleep(2.5)
        frame = camera.read_latest()
        status = camera.status()
    assert frame.image.shape == (480, 640, 3) and frame.image.dtype.name == "uint8"
    assert 0.0 <= frame.arrival_time_s - frame.capture_time_s < 0.2
    assert status.link.startswith("USB") and status.fps_measured > 20.0
