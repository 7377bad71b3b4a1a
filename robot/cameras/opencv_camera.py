"""A plain UVC webcam (or a video file) through `cv2.VideoCapture`, behind the same `Camera` interface.

`source` is a device index (0), a device path (/dev/video0, /dev/v4l/by-id/...) or a video file.
A video file plays at its own frame rate, as a camera would deliver it, and through the same reader
code, so tests and demos run the device path without a device.

Capture time: a V4L2 buffer timestamp (`CAP_PROP_POS_MSEC`) is taken on CLOCK_MONOTONIC, the clock
behind `time.monotonic()` on Linux, so a device frame is stamped with it when it is plausible (at or
before arrival, by less than `MAX_PLAUSIBLE_LATENCY_S`); otherwise, and always for files (whose
timestamps are media time), with its arrival time.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from robot.cameras.base import CameraConfig, Frame
from robot.cameras.errors import CameraEndOfStream, CameraError, CameraNotFound
from robot.cameras.registry import register_camera
from robot.cameras.threaded import StreamInfo, ThreadedCamera

logger = logging.getLogger(__name__)

MAX_PLAUSIBLE_LATENCY_S = 0.5
_BACKENDS = {"auto": cv2.CAP_ANY, "v4l2": cv2.CAP_V4L2, "ffmpeg": cv2.CAP_FFMPEG}


@dataclass(frozen=True)
class OpenCVCameraConfig(CameraConfig):
    """A UVC webcam or a video file (`kind = "opencv"`)."""

    kind: ClassVar[str] = "opencv"

    source: int | str = 0  # device index, device path, or video file path
    # Most UVC webcams reach 30 fps at 640x480 and above only in MJPG (raw YUYV saturates USB 2).
    # "" leaves the camera's own default. Ignored for video files.
    fourcc: str = "MJPG"
    backend: str = "auto"  # "auto", "v4l2" or "ffmpeg"
    loop: bool = False  # video files only: start again at the end instead of ending the stream

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.source, bool) or not isinstance(self.source, (int, str)):
            raise ValueError(
                f"camera '{self.name}': source must be a device index (0), a device path (\"/dev/video0\") or "
                f"a video file path, got {self.source!r}"
            )
        if isinstance(self.source, int) and self.source < 0:
            raise ValueError(f"camera '{self.name}': device index must be >= 0, got {self.source}")
        if isinstance(self.source, str) and not self.source.strip():
            raise ValueError(f"camera '{self.name}': source is empty; give a device index, device path or video file")
        if not isinstance(self.fourcc, str) or len(self.fourcc) not in (0, 4):
            raise ValueError(
                f"camera '{self.name}': fourcc must be four characters such as \"MJPG\" or \"YUYV\", or \"\" "
                f"for the camera's default, got {self.fourcc!r}"
            )
        if self.backend not in _BACKENDS:
            raise ValueError(
                f"camera '{self.name}': backend must be one of {', '.join(_BACKENDS)}, got {self.backend!r}"
            )
        if not isinstance(self.loop, bool):
            raise ValueError(f"camera '{self.name}': loop must be true or false, got {self.loop!r}")

    @property
    def is_file(self) -> bool:
        """True when `source` names a video file rather than a device."""
        return isinstance(self.source, str) and not self.source.startswith("/dev/")


def connected_video_devices() -> list[str]:
    """Video devices present on this machine (Linux), stable by-id names first; [] elsewhere."""
    return sorted(glob.glob("/dev/v4l/by-id/*")) + sorted(glob.glob("/dev/video*"))


def _fourcc_text(code: float) -> str:
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00")


@register_camera(OpenCVCameraConfig)
class OpenCVCamera(ThreadedCamera):
    """A camera read with `cv2.VideoCapture` on its reader thread.

    Frame.image: (H, W, 3) uint8 RGB (converted from OpenCV's BGR) at whatever size the device
    actually delivers (status() warns when that differs from the config); Frame.frame_index counts
    frames read this session; Frame.device_timestamp_ms is `CAP_PROP_POS_MSEC`.
    """

    def __init__(self, config: OpenCVCameraConfig) -> None:
        super().__init__(config)
        self.config: OpenCVCameraConfig = config
        self._capture: cv2.VideoCapture | None = None
        self._period_s = 1.0 / config.fps
        self._next_due_s: float | None = None
        self._frames_read = 0

    @property
    def device_label(self) -> str:
        return f"video file {self.config.source}" if self.config.is_file else f"UVC camera {self.config.source}"

    def _open(self) -> StreamInfo:
        config = self.config
        if config.is_file and not os.path.isfile(str(config.source)):
            raise CameraError(
                config.name,
                f"Camera '{config.name}': the video file {config.source} does not exist. "
                "Correct `source` in the rig file.",
            )
        params = []
        if not config.is_file:
            # Bound the driver's own waits by ours, where the backend supports it (others ignore these).
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(config.first_frame_timeout_ms),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(config.read_timeout_ms),
            ]  # fmt: skip
        capture = cv2.VideoCapture(config.source, _BACKENDS[config.backend], params)
        if not capture.isOpened():
            capture.release()
            if config.is_file:
                raise CameraError(
                    config.name,
                    f"Camera '{config.name}': OpenCV cannot decode the video file {config.source}. Convert it "
                    "(e.g. to MJPG .avi or H.264 .mp4) or pick another file.",
                )
            raise CameraNotFound(config.name, f"{config.source}", connected_video_devices(), kind="video device")
        self._capture = capture
        if not config.is_file:
            # FOURCC first: many UVC drivers only offer the larger sizes once MJPG is selected.
            if config.fourcc:
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*config.fourcc))
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
            capture.set(cv2.CAP_PROP_FPS, config.fps)
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or float(config.fps)  # 0 when the source does not say
        warnings = []
        if (width, height) != (config.width, config.height):
            warnings.append(f"delivers {width}x{height} instead of the configured {config.width}x{config.height}")
        if abs(fps - config.fps) > 0.5:
            warnings.append(f"runs at {fps:g} fps instead of the configured {config.fps}")
        if not config.is_file and config.fourcc:
            got = _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
            if got and got != config.fourcc:
                warnings.append(f"streams {got} instead of {config.fourcc}")
        # A file plays at its own rate; a device paces itself.
        self._period_s = 1.0 / fps
        self._next_due_s = None
        self._frames_read = 0
        link = "video file" if config.is_file else f"UVC {config.source}"
        return StreamInfo(link=link, width=width, height=height, fps=fps, warnings=tuple(warnings))

    def _grab(self, timeout_ms: float) -> Frame | None:
        capture = self._capture
        if capture is None:
            raise RuntimeError("the capture is not open")
        if self.config.is_file:
            if not self._wait_for_file_frame():
                return None
        ok, bgr = capture.read()
        if not ok and self.config.is_file:
            if not self.config.loop or self._frames_read == 0:
                raise CameraEndOfStream(self.name, str(self.config.source), self._frames_read)
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = capture.read()
        arrival_s = time.monotonic()
        if not ok or bgr is None:
            raise CameraError(
                self.name,
                f"Camera '{self.name}' ({self.device_label}): reading a frame failed (unplugged, or in use by "
                "another program?)",
            )
        device_ms = float(capture.get(cv2.CAP_PROP_POS_MSEC))
        capture_s = arrival_s
        if not self.config.is_file and arrival_s - MAX_PLAUSIBLE_LATENCY_S <= device_ms / 1000.0 <= arrival_s:
            capture_s = device_ms / 1000.0
        frame = Frame(
            image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
            capture_time_s=capture_s,
            arrival_time_s=arrival_s,
            frame_index=self._frames_read,
            device_timestamp_ms=device_ms,
        )
        self._frames_read += 1
        return frame

    def _wait_for_file_frame(self) -> bool:
        """Pace a file at its frame rate, like a device; False if stopping meanwhile."""
        now = time.monotonic()
        if self._next_due_s is None or self._next_due_s < now - self._period_s:
            self._next_due_s = now  # first frame, or fell behind: do not burst to catch up
        stopping = self._stop.wait(max(0.0, self._next_due_s - now))
        self._next_due_s += self._period_s
        return not stopping

    def _dropped_between(self, previous: Frame | None, frame: Frame) -> int:
        # A UVC device has no frame counter OpenCV exposes: estimate losses from the time gap.
        if previous is None or self.config.is_file:
            return 0
        gap_s = frame.capture_time_s - previous.capture_time_s
        return max(0, round(gap_s / self._period_s) - 1)

    def _close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
