"""The OpenCV camera on a real video file: the same VideoCapture read path a UVC device takes."""

import time

import cv2
import numpy as np
import pytest

from robot.cameras import (
    CameraEndOfStream,
    CameraError,
    CameraNotFound,
    CameraState,
    OpenCVCamera,
    OpenCVCameraConfig,
    make_camera,
)
from robot.cameras.opencv_camera import connected_video_devices

W, H, FPS, FRAMES = 64, 48, 50, 12
FAST = dict(width=W, height=H, fps=FPS, read_timeout_ms=200.0, reconnect_backoff_ms=10.0, first_frame_timeout_ms=3000.0)


def blue_of(index: int) -> int:
    return 20 * index


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    """12 frames at 50 fps; frame i is red 200 with blue 20*i (written BGR, as OpenCV writes)."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for index in range(FRAMES):
        bgr = np.zeros((H, W, 3), np.uint8)
        bgr[..., 0] = blue_of(index)
        bgr[..., 2] = 200
        writer.write(bgr)
    writer.release()
    return path


def wait_until(predicate, timeout_s: float = 3.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.003)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def collect_until_end(camera) -> dict[int, object]:
    frames = {}

    def ended():
        try:
            frame = camera.read_latest(max_age_ms=1000)
        except CameraEndOfStream:
            return True
        frames[frame.frame_index] = frame
        return False

    wait_until(ended, what="the end of the video")
    return frames


def test_file_frames_arrive_as_rgb_in_order_then_the_stream_ends(video_path):
    camera = make_camera(OpenCVCameraConfig(name="cam_file", source=str(video_path), **FAST))
    assert isinstance(camera, OpenCVCamera)
    with camera:
        status = camera.status()
        assert status.link == "video file" and status.warnings == ()
        frames = collect_until_end(camera)
        assert len(frames) >= FRAMES // 2  # polled, so some are replaced before we look
        assert max(frames) == FRAMES - 1
        for index, frame in frames.items():
            assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
            red, green, blue = frame.image.reshape(-1, 3).mean(axis=0)
            # BGR -> RGB: red stays 200, blue encodes the index (MJPG is lossy: a few levels).
            assert red == pytest.approx(200, abs=6) and green < 8
            assert blue == pytest.approx(blue_of(index), abs=6)
            assert frame.device_timestamp_ms == pytest.approx(1000.0 * index / FPS, abs=1.0)
            assert frame.capture_time_s == frame.arrival_time_s  # a file's media time is not host time
        with pytest.raises(CameraEndOfStream) as ended:
            camera.read_latest()
        assert ended.value.frames == FRAMES
        assert "ended after 12 frame(s)" in str(ended.value) and "loop = true" in str(ended.value)
        status = camera.status()
        assert status.state is CameraState.FAILED
        assert status.frames_received == FRAMES and status.frames_dropped == 0
        assert status.reconnects == 0  # a file that ended is not reopened
        assert status.last_error == str(ended.value)


def test_file_plays_at_its_frame_rate_and_loops_when_asked(video_path):
    config = OpenCVCameraConfig(name="cam_loop", source=str(video_path), loop=True, **FAST)
    with make_camera(config) as camera:
        wait_until(lambda: camera.status().frames_received > FRAMES + 5, what="frames past the end")
        status = camera.status()
        assert status.state is CameraState.STREAMING
        assert 35.0 < status.fps_measured < 60.0  # paced at the file's 50 fps, not decoded flat out
        assert camera.read_latest().image.shape == (H, W, 3)


def test_status_reports_what_the_source_actually_delivers(video_path):
    settings = {**FAST, "width": 640, "height": 480, "fps": 30}
    config = OpenCVCameraConfig(name="cam_file", source=str(video_path), **settings)
    with make_camera(config) as camera:
        frame = camera.read_latest()
        status = camera.status()
    assert frame.image.shape == (H, W, 3)
    assert status.resolution == (W, H)
    assert any("delivers 64x48 instead of the configured 640x480" in w for w in status.warnings)
    assert any("runs at 50 fps instead of the configured 30" in w for w in status.warnings)


def test_missing_or_undecodable_files_say_so(tmp_path):
    missing = make_camera(OpenCVCameraConfig(name="cam_file", source=str(tmp_path / "nope.avi"), **FAST))
    with pytest.raises(CameraError, match="does not exist"):
        missing.connect()
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"this is not a video" * 100)
    broken = make_camera(OpenCVCameraConfig(name="cam_file", source=str(garbage), **FAST))
    with pytest.raises(CameraError, match="cannot decode"):
        broken.connect()
    assert not broken.is_connected


def test_absent_device_lists_the_video_devices_that_are_there():
    camera = make_camera(OpenCVCameraConfig(name="cam_usb", source=63, backend="v4l2", **FAST))
    with pytest.raises(CameraNotFound) as not_found:
        camera.connect()
    assert not_found.value.connected == tuple(connected_video_devices())
    assert "video device 63 was not found" in str(not_found.value)


@pytest.mark.parametrize(
    "changes, complaint",
    [
        ({"source": -1}, "device index must be >= 0"),
        ({"source": ""}, "source is empty"),
        ({"source": 1.5}, "source must be a device index"),
        ({"fourcc": "MJPEG"}, "fourcc must be four characters"),
        ({"backend": "gstreamer"}, "backend must be one of auto, v4l2, ffmpeg"),
        ({"fps": 0}, "fps must be a positive whole number"),
    ],
)
def test_config_refuses_bad_values_with_the_fix(changes, complaint):
    with pytest.raises(ValueError, match=complaint):
        OpenCVCameraConfig(name="cam_usb", **changes)


@pytest.mark.hardware
def test_a_connected_webcam_streams_rgb():
    devices = [path for path in connected_video_devices() if path.startswith("/dev/video")]
    if not devices:
        pytest.skip("no video device is connected")
    config = OpenCVCameraConfig(name="cam_hw", source=devices[0], width=640, height=480, fps=30)
    with make_camera(config) as camera:
        time.sleep(2.5)
        frame = camera.read_latest()
        status = camera.status()
    assert frame.image.ndim == 3 and frame.image.shape[2] == 3
    assert status.resolution == (frame.image.shape[1], frame.image.shape[0]) and status.fps_measured > 5.0
