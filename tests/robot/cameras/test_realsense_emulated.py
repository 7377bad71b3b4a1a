"""The RealSense driver on librealsense's software device: frames, timestamps, faults, recovery.

Every test pushes frames through the real pyrealsense2 (software device + syncer) into the same
RealSenseCamera reader thread a real camera uses. Small images and short timeouts keep it fast.
"""

import threading
import time

import numpy as np
import pytest

from robot.cameras import (
    CameraDisconnected,
    CameraError,
    CameraNotConnected,
    CameraNotFound,
    CameraStale,
    CameraState,
    CameraUnplugged,
    CameraUsb2Link,
    EmulatedRealSenseCamera,
    EmulatedRealSenseConfig,
    make_camera,
)
from robot.cameras.realsense import wall_minus_monotonic_s
from robot.cameras.realsense_emulated import replay

W, H = 64, 48
FAST = dict(
    width=W,
    height=H,
    fps=60,
    read_timeout_ms=100.0,
    max_consecutive_failures=2,
    reconnect_backoff_ms=10.0,
    max_reconnect_attempts=3,
    hardware_reset_after_attempts=2,
    first_frame_timeout_ms=3000.0,
)


def fast_config(name: str, **overrides) -> EmulatedRealSenseConfig:
    return EmulatedRealSenseConfig(name=name, serial=f"EMU-{name}", **{**FAST, **overrides})


def wait_until(predicate, timeout_s: float = 3.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def fresh_frame_after(camera, t_s: float, timeout_s: float = 3.0):
    """Wait for a frame captured after monotonic time t_s."""

    def newer():
        try:
            frame = camera.read_latest(max_age_ms=1e9)
        except CameraStale:
            return None
        return frame if frame.capture_time_s > t_s else None

    return wait_until(newer, timeout_s, "a fresh frame")


@pytest.fixture
def camera_factory():
    cameras = []

    def build(name: str, **overrides) -> EmulatedRealSenseCamera:
        camera = make_camera(fast_config(name, **overrides))
        cameras.append(camera)
        return camera

    yield build
    for camera in cameras:
        camera.disconnect()


def test_frames_pushed_through_the_software_device_arrive_intact_and_timestamped(camera_factory):
    produced = {}  # frame index -> monotonic time at which the "sensor" rendered it

    def frame_fn(index: int, capture_time_s: float) -> np.ndarray:
        produced[index] = capture_time_s
        image = np.empty((H, W, 3), np.uint8)
        image[..., 0] = index % 256
        image[..., 1] = 255 - index % 256
        image[..., 2] = np.arange(W, dtype=np.uint8)[None, :]  # varies along x: catches transposes
        return image

    # 30 ms between capture and arrival, as exposure readout and USB add on a real camera: the
    # capture time must come from the frame's timestamp, not from when it arrived.
    camera = camera_factory("cam_high", frame_fn=frame_fn, transfer_latency_ms=30.0)
    assert isinstance(camera, EmulatedRealSenseCamera)
    camera.connect()
    frames = {}
    deadline = time.monotonic() + 3.0
    while len(frames) < 8 and time.monotonic() < deadline:
        frame = camera.read_latest(max_age_ms=500)
        frames[frame.frame_index] = frame
        time.sleep(0.004)
    assert len(frames) >= 8
    for index, frame in frames.items():
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        assert np.all(frame.image[..., 0] == index % 256)
        assert np.all(frame.image[..., 1] == 255 - index % 256)
        assert np.array_equal(frame.image[3, :, 2], np.arange(W, dtype=np.uint8))
        assert not frame.image.flags.writeable  # shared by every consumer
        assert frame.depth is None
        rendered_s = produced[index]
        # The device stamps global time (host epoch ms); the driver converts it back to monotonic.
        assert frame.device_timestamp_ms == pytest.approx((rendered_s + wall_minus_monotonic_s()) * 1e3, abs=3.0)
        assert frame.capture_time_s == pytest.approx(rendered_s, abs=0.003)
        assert frame.arrival_time_s - frame.capture_time_s >= 0.029  # never earlier than the transfer
    indices = sorted(frames)
    assert indices == sorted(set(indices)) and indices[-1] > indices[0]
    status = camera.status()
    assert status.state is CameraState.STREAMING
    assert status.link == "USB 3.2" and status.resolution == (W, H)
    assert status.device == "RealSense EMU-cam_high"
    assert status.frames_dropped == 0 and status.warnings == ()


def test_replayed_images_come_out_in_order(camera_factory):
    rng = np.random.default_rng(0)
    episode = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    camera = camera_factory("cam_high", frame_fn=replay(episode))
    camera.connect()
    for _ in range(4):
        frame = camera.read_latest()
        assert np.array_equal(frame.image, episode[frame.frame_index % 3])
        time.sleep(0.02)


def test_depth_arrives_aligned_to_the_colour_frame_of_the_same_index(camera_factory):
    camera = camera_factory(
        "cam_low",
        use_depth=True,
        depth_fn=lambda index, t: np.full((H, W), 500 + index, np.uint16),
    )
    camera.connect()
    for _ in range(3):
        frame = camera.read_latest(max_age_ms=500)
        assert frame.depth.shape == (H, W) and frame.depth.dtype == np.uint16
        valid = frame.depth[frame.depth > 0]
        # rs.align reprojects depth onto the colour image; only its border may stay empty.
        assert valid.size >= 0.9 * H * W
        assert np.all(valid == 500 + frame.frame_index)
        assert frame.depth_units_m == pytest.approx(0.001)
        time.sleep(0.03)


def test_a_camera_that_stops_producing_raises_stale_with_the_age_and_recovers(camera_factory):
    camera = camera_factory("cam_left_wrist", max_reconnect_attempts=50)
    camera.connect()
    camera.read_latest(max_age_ms=200)
    camera.pause()
    time.sleep(0.25)
    with pytest.raises(CameraStale) as stale:
        camera.read_latest(max_age_ms=100)
    assert 100 < stale.value.age_ms < 5000
    assert stale.value.camera == "cam_left_wrist" and stale.value.max_age_ms == 100
    assert "cam_left_wrist" in str(stale.value) and "ms old" in str(stale.value)
    assert isinstance(stale.value, CameraError)
    status = wait_until(lambda: (s := camera.status()).reconnects >= 1 and s, what="a reconnect attempt")
    assert status.last_error
    resumed_at = time.monotonic()
    camera.resume()
    fresh_frame_after(camera, resumed_at)
    assert camera.read_latest(max_age_ms=200)
    assert camera.status().state is CameraState.STREAMING


def test_reader_reconnects_then_hardware_resets_a_hung_camera(camera_factory):
    camera = camera_factory("cam_right_wrist")
    camera.connect()
    camera.hang_until_reset()
    hung_at = time.monotonic()
    # Reopening alone does not help a hung camera; the second attempt resets it first (config: 2).
    fresh_frame_after(camera, hung_at + 0.05)
    status = camera.status()
    assert status.hardware_resets == 1  # only from the second attempt on, which then recovered
    assert status.reconnects >= 2
    assert status.state is CameraState.STREAMING


def test_unplugged_camera_fails_with_a_clear_error_after_its_retries(camera_factory):
    camera = camera_factory("cam_high")
    camera.connect()
    camera.unplug()
    wait_until(lambda: camera.status().state is CameraState.FAILED, what="the reader to give up")
    with pytest.raises(CameraUnplugged) as unplugged:
        camera.read_latest()
    message = str(unplugged.value)
    assert "cam_high" in message and "EMU-cam_high" in message and "Plug it back in" in message
    assert isinstance(unplugged.value, CameraDisconnected)
    assert unplugged.value.attempts == FAST["max_reconnect_attempts"]
    status = camera.status()
    assert status.last_error == message
    assert status.reconnects >= FAST["max_reconnect_attempts"]
    # The owner reconnects once the cable is back.
    camera.replug()
    camera.connect()
    assert camera.read_latest(max_age_ms=500).image.shape == (H, W, 3)


def test_a_camera_replugged_while_the_reader_retries_comes_back(camera_factory):
    camera = camera_factory("cam_high", max_reconnect_attempts=100, reconnect_backoff_ms=20.0)
    camera.connect()
    camera.unplug()
    wait_until(lambda: "was not found" in (camera.status().last_error or ""), what="a failed reopen")
    replugged_at = time.monotonic()
    camera.replug()
    fresh_frame_after(camera, replugged_at)
    assert camera.status().state is CameraState.STREAMING


def test_connect_to_an_absent_camera_lists_the_connected_ones(camera_factory):
    other = camera_factory("cam_other")
    camera = camera_factory("cam_high")
    camera.unplug()
    with pytest.raises(CameraNotFound) as not_found:
        camera.connect()
    assert "EMU-cam_other" in not_found.value.connected
    assert "EMU-cam_high" not in not_found.value.connected
    assert "EMU-cam_other" in str(not_found.value) and "EMU-cam_high" in str(not_found.value)
    assert not camera.is_connected
    with pytest.raises(CameraNotConnected):
        camera.read_latest()
    assert other.status().state is CameraState.DISCONNECTED


def test_usb2_link_is_a_warning_or_an_error_as_configured(camera_factory):
    camera = camera_factory("cam_high", usb_type="2.1")
    camera.connect()
    status = camera.status()
    assert status.link == "USB 2.1"
    assert any("USB 2.1" in warning and "USB 3" in warning for warning in status.warnings)

    strict = camera_factory("cam_low", usb_type="2.1", require_usb3=True)
    with pytest.raises(CameraUsb2Link) as usb2:
        strict.connect()
    assert "USB 3 port" in str(usb2.value)
    assert not strict.is_connected


def test_frames_lost_in_transfer_are_counted_as_dropped(camera_factory):
    camera = camera_factory("cam_high")
    camera.connect()
    camera.drop_frames(3)
    wait_until(lambda: camera.status().frames_dropped == 3, what="3 dropped frames")
    received = camera.status().frames_received
    wait_until(lambda: camera.status().frames_received > received + 3, what="more frames")
    assert camera.status().frames_dropped == 3


def test_status_measures_fps_and_warns_when_it_is_low(camera_factory):
    camera = camera_factory("cam_high", fps=30)
    camera.connect()
    time.sleep(0.6)
    assert 20.0 < camera.status().fps_measured < 34.0

    def slow_frame(index: int, t: float) -> np.ndarray:
        time.sleep(0.04)  # a sensor that can only manage ~25 of its 60 fps
        return np.zeros((H, W, 3), np.uint8)

    slow = camera_factory("cam_low", frame_fn=slow_frame)
    slow.connect()
    status = wait_until(
        lambda: (s := slow.status()).warnings and s, timeout_s=4.0, what="a low frame rate warning"
    )
    assert 5.0 < status.fps_measured < 0.8 * 60
    assert any("low frame rate" in warning for warning in status.warnings)


def test_a_broken_frame_source_is_reported_with_what_it_returned(camera_factory):
    camera = camera_factory("cam_high", frame_fn=lambda index, t: np.zeros((H, W), np.uint8))
    with pytest.raises(CameraDisconnected) as broken:
        camera.connect()
    assert "frame_fn returned (48, 64) uint8" in str(broken.value)
    assert "(48, 64, 3) uint8 RGB" in str(broken.value)


def test_context_manager_starts_and_stops_the_threads(camera_factory):
    config = fast_config("cam_ctx")
    with make_camera(config) as camera:
        assert camera.is_connected
        assert camera.read_latest().image.shape == (H, W, 3)
        names = {thread.name for thread in threading.enumerate()}
        assert "camera-cam_ctx" in names and "emulated-realsense-EMU-cam_ctx" in names
    assert not camera.is_connected
    names = {thread.name for thread in threading.enumerate()}
    assert "camera-cam_ctx" not in names and "emulated-realsense-EMU-cam_ctx" not in names
    status = camera.status()
    assert status.state is CameraState.DISCONNECTED and status.fps_measured == 0.0
    with pytest.raises(CameraNotConnected):
        camera.read_latest()
    camera.disconnect()  # idempotent
