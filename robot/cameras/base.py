"""The camera interface every driver implements, and the values it hands out.

A camera streams on its own reader thread and keeps only its newest frame. The control thread calls
`read_latest()`, which never waits on the device: it returns the newest frame or raises
`CameraStale` when that frame is too old. Anything may call `status()`. `connect()`/`disconnect()`
belong to whoever owns the camera (the rig).

Times are host monotonic seconds (`time.monotonic()`), as everywhere in `robot.types`.
"""

from __future__ import annotations

import abc
import enum
import math
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

# Camera names become HDF5 dataset names (/observations/images/<name>) and TOML keys.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class CameraConfig:
    """Settings every camera kind shares; each driver's config extends it.

    `kind` names the driver in the registry and in a rig file's `[[cameras]]` table.
    """

    kind: ClassVar[str] = ""

    name: str
    width: int = 640  # ALOHA records 640x480
    height: int = 480
    fps: int = 30
    # Default limit of read_latest(): a RealSense frame is already ~40-70 ms old on arrival (exposure
    # plus USB transfer) and up to one period more by the time the control loop asks, so 250 ms
    # flags a camera that has stopped, not one that is merely late.
    max_frame_age_ms: float = 250.0
    # One wait for a frame. Several periods, so a slow frame is not a failure.
    read_timeout_ms: float = 1000.0
    # connect() waits this long for the first frame (a RealSense takes ~1 s to start streaming).
    first_frame_timeout_ms: float = 5000.0
    # This many failed reads in a row close and reopen the device.
    max_consecutive_failures: int = 3
    # Reopen attempts without a frame in between before the reader gives up with an error.
    max_reconnect_attempts: int = 5
    # From this reopen attempt on, reset the device first (RealSense `hardware_reset()`); 0 = never.
    hardware_reset_after_attempts: int = 2
    # Pause before each reopen, so an unplugged camera is not hammered.
    reconnect_backoff_ms: float = 500.0
    # status() warns when the measured frame rate stays below this fraction of `fps`.
    low_fps_ratio: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"camera name {self.name!r} is not usable: use letters, digits, '_' or '-' only "
                "(it becomes an HDF5 dataset name), e.g. name = \"cam_high\""
            )
        for field_name in ("width", "height", "fps", "max_consecutive_failures"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"camera '{self.name}': {field_name} must be a positive whole number, got {value!r}"
                )
        for field_name in ("max_reconnect_attempts", "hardware_reset_after_attempts"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"camera '{self.name}': {field_name} must be a whole number >= 0, got {value!r}"
                )
        for field_name in ("max_frame_age_ms", "read_timeout_ms", "first_frame_timeout_ms"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ValueError(
                    f"camera '{self.name}': {field_name} must be a positive number of milliseconds, got {value!r}"
                )
        backoff = self.reconnect_backoff_ms
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff < math.inf:
            raise ValueError(
                f"camera '{self.name}': reconnect_backoff_ms must be >= 0 ms, got {self.reconnect_backoff_ms!r}"
            )
        if not isinstance(self.low_fps_ratio, (int, float)) or not 0 <= self.low_fps_ratio <= 1:
            raise ValueError(
                f"camera '{self.name}': low_fps_ratio must lie in [0, 1] (0.8 warns below 80 % of fps), "
                f"got {self.low_fps_ratio!r}"
            )


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame as the reader thread kept it. The arrays are read-only: every consumer shares them.

    image: (H, W, 3) uint8 RGB.
    capture_time_s: host monotonic time at which the image was taken, as well as the driver can tell
        (see each driver for how it converts device time).
    arrival_time_s: host monotonic time at which the reader thread received it (>= capture_time_s).
    frame_index: the device's frame counter where it has one, else a count of frames read.
    device_timestamp_ms: the device's own timestamp of the frame (its clock, its domain), or None.
    depth: (H, W) uint16 depth aligned to `image`, in units of `depth_units_m` metres, or None.
    """

    image: np.ndarray
    capture_time_s: float
    arrival_time_s: float
    frame_index: int
    device_timestamp_ms: float | None = None
    depth: np.ndarray | None = None
    depth_units_m: float | None = None


class CameraState(str, enum.Enum):
    DISCONNECTED = "disconnected"  # not connected, or disconnected by its owner
    CONNECTING = "connecting"  # connect() is opening the device
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"  # frames stopped; the reader is reopening the device
    FAILED = "failed"  # the reader gave up; `last_error` says why and what to do


@dataclass(frozen=True)
class CameraStatus:
    """A health snapshot for the status bar (any thread).

    fps_measured: frames received per second over the last ~2 s (0 when none arrived).
    frames_dropped: frames the device produced that never reached us (gaps in its frame counter).
    link: how the camera is attached ("USB 3.2", "USB 2.1", "UVC /dev/video0", "video file", ...).
    resolution: (width, height) actually delivered, None before the first frame.
    last_frame_age_ms: age of the newest frame now, None before the first frame.
    warnings: conditions that do not stop the camera but hurt the data (USB 2 link, low fps, ...).
    """

    name: str
    device: str
    state: CameraState
    fps_configured: float
    fps_measured: float
    frames_received: int
    frames_dropped: int
    reconnects: int
    hardware_resets: int
    link: str
    resolution: tuple[int, int] | None
    last_frame_age_ms: float | None
    last_error: str | None
    warnings: tuple[str, ...] = ()


class Camera(abc.ABC):
    """A colour (optionally depth) camera streaming on its own reader thread.

    Lifecycle: `connect()` opens the device, starts the reader thread and waits for the first frame;
    `disconnect()` stops the thread and releases the device. Both are idempotent and belong to the
    owner's thread; `read_latest()` and `status()` may be called from any thread.
    """

    config: CameraConfig

    @property
    def name(self) -> str:
        return self.config.name

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the device and start streaming. Raises a `CameraError` that says what to fix."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Stop streaming and release the device."""

    @abc.abstractmethod
    def read_latest(self, max_age_ms: float | None = None) -> Frame:
        """The newest frame, without waiting for the device.

        Raises `CameraStale` when the newest frame is older than `max_age_ms` (default: the config's
        `max_frame_age_ms`) or none has arrived, the reader's fatal `CameraError` once it has given
        up, and `CameraNotConnected` before `connect()`.
        """

    @abc.abstractmethod
    def status(self) -> CameraStatus:
        """A health snapshot (any thread)."""

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool:
        """True between connect() and disconnect() (also while reconnecting or failed)."""

    def __enter__(self) -> "Camera":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
