"""Intel RealSense cameras (D405/D435 on ALOHA rigs) by serial number, through pyrealsense2.

The driver reads framesets from a `FramesetSource`: a `PipelineSource` on a real device, or the
software device + syncer of `realsense_emulated` in tests and on the demo rig. Everything after the
frameset - alignment, copying, timestamps, drop counting, stale detection, reconnects - is the same
code for both.

Host capture time. RealSense frames carry a timestamp in one of three domains:
- global_time (the default on D400 since librealsense 2.30): the device clock mapped onto the host's
  system clock (epoch ms) by librealsense, so it marks the moment of capture in host time;
- system_time: the host's system clock when the driver received the frame;
- hardware_clock: the device's own clock, with an unknown offset to ours.
For the first two we subtract the current (wall - monotonic) offset, sampled at the arrival
(`wall_minus_monotonic_s`), to get a monotonic capture time. For hardware_clock, and whenever the
result is implausible (after arrival, or more than `MAX_PLAUSIBLE_LATENCY_S` before it - a stepped
wall clock, or global time not yet converged), we stamp the frame with its arrival time instead.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pyrealsense2 as rs

from robot.cameras.base import CameraConfig, Frame
from robot.cameras.errors import CameraError, CameraModeUnsupported, CameraNotFound, CameraUsb2Link
from robot.cameras.registry import register_camera
from robot.cameras.threaded import StreamInfo, ThreadedCamera

logger = logging.getLogger(__name__)

# A frame whose converted capture time lies further back than this is not trusted (see above).
MAX_PLAUSIBLE_LATENCY_S = 0.5
_HOST_CLOCK_DOMAINS = (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time)


@dataclass(frozen=True)
class RealSenseConfig(CameraConfig):
    """A RealSense camera in a rig file: `kind = "realsense"`, addressed by its serial number."""

    kind: ClassVar[str] = "realsense"

    # As printed on the camera or by `rs-enumerate-devices`; a string, since serials may start with 0.
    serial: str = ""
    use_depth: bool = False
    # Depth reprojected onto the colour image, so depth[v, u] belongs to image[v, u].
    align_depth_to_color: bool = True
    # True: refuse a USB 2 link (connect() raises); False: stream anyway and warn in status().
    require_usb3: bool = False
    # Turn off auto-exposure priority so the frame rate stays constant in dim light (the sensor
    # would otherwise stretch frames to expose longer, and the recording would stutter).
    constant_fps: bool = True
    # After a hardware reset the camera leaves USB and re-enumerates; wait this long for it.
    hardware_reset_wait_ms: float = 5000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.serial, str):
            raise ValueError(
                f"camera '{self.name}': serial must be text - write serial = \"{self.serial}\" in quotes "
                "(as a number, leading zeros of the serial are lost)"
            )
        if not self.serial.strip():
            raise ValueError(
                f"camera '{self.name}': serial is missing - add serial = \"...\" (printed on the camera, or "
                "listed by `rs-enumerate-devices -s`)"
            )
        for field_name in ("use_depth", "align_depth_to_color", "require_usb3", "constant_fps"):
            if not isinstance(getattr(self, field_name), bool):
                raise ValueError(
                    f"camera '{self.name}': {field_name} must be true or false, got {getattr(self, field_name)!r}"
                )
        if not isinstance(self.hardware_reset_wait_ms, (int, float)) or not self.hardware_reset_wait_ms >= 0:
            raise ValueError(
                f"camera '{self.name}': hardware_reset_wait_ms must be >= 0 ms, got {self.hardware_reset_wait_ms!r}"
            )


@dataclass(frozen=True)
class RealSenseDevice:
    """What a source found and started: the device's name, serial and USB type, and the colour mode."""

    name: str
    serial: str
    usb_type: str | None  # camera_info.usb_type_descriptor, e.g. "3.2" or "2.1"; None if not reported
    width: int
    height: int
    fps: int


class FramesetSource(Protocol):
    """Where a RealSense camera's framesets come from. Used by the camera's reader thread only."""

    def open(self) -> RealSenseDevice:
        """Find the device, start its streams. Raises `CameraNotFound` (listing what is connected),
        `CameraModeUnsupported` or another `CameraError`."""

    def wait_for_frameset(self, timeout_ms: float) -> rs.composite_frame | None:
        """The next frameset, or None after `timeout_ms`. Raises RuntimeError on a device fault."""

    def close(self) -> None:
        """Stop the streams and release the device; tolerates a closed or vanished device."""

    def hardware_reset(self, stop: threading.Event) -> bool:
        """Reset the device and wait (until `stop` is set) for it to return. True if reset."""


def wall_minus_monotonic_s() -> float:
    """`time.time() - time.monotonic()` now, robust to a thread switch between the two reads.

    Each try brackets the wall-clock read between two monotonic reads; the tightest bracket wins,
    so a GIL switch (5 ms by default) inside one try does not skew the offset.
    """
    best_gap_s, best_s = math.inf, 0.0
    for _ in range(3):
        before_s = time.monotonic()
        wall_s = time.time()
        after_s = time.monotonic()
        if after_s - before_s < best_gap_s:
            best_gap_s, best_s = after_s - before_s, wall_s - (before_s + after_s) / 2.0
    return best_s


def host_capture_time_s(
    device_timestamp_ms: float,
    domain: rs.timestamp_domain,
    arrival_time_s: float,
    clock_offset_s: float,
) -> float:
    """Monotonic capture time of a frame (see the module docstring for the rule).

    arrival_time_s: `time.monotonic()` when the frame arrived; clock_offset_s: wall minus monotonic
    time (`wall_minus_monotonic_s()`) sampled right after it.
    """
    if domain not in _HOST_CLOCK_DOMAINS:
        return arrival_time_s
    capture_s = device_timestamp_ms / 1000.0 - clock_offset_s
    if capture_s > arrival_time_s or capture_s < arrival_time_s - MAX_PLAUSIBLE_LATENCY_S:
        return arrival_time_s
    return capture_s


def _device_info(device: rs.device, info: rs.camera_info) -> str | None:
    return device.get_info(info) if device.supports(info) else None


def _describe(device: rs.device) -> str:
    name = _device_info(device, rs.camera_info.name) or "RealSense"
    return f"{_device_info(device, rs.camera_info.serial_number)} ({name})"


def _colour_modes(device: rs.device) -> list[str]:
    """The RGB8 colour modes a device offers, as "WxH@fps"."""
    modes = set()
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() == rs.stream.color and profile.format() == rs.format.rgb8:
                video = profile.as_video_stream_profile()
                modes.add((video.width(), video.height(), video.fps()))
    return [f"{w}x{h}@{fps}" for w, h, fps in sorted(modes)]


class PipelineSource:
    """A real RealSense, found by serial in `rs.context().query_devices()` and run by an `rs.pipeline`.

    The devices are queried first because `pipeline.start()` with the camera absent blocks ~15 s
    before failing; the query answers at once and tells which serials *are* there.
    """

    def __init__(self, config: RealSenseConfig) -> None:
        self._config = config
        self._pipeline: rs.pipeline | None = None

    def _find(self, context: rs.context) -> rs.device:
        connected, found = [], None
        for device in context.query_devices():
            connected.append(_describe(device))
            if _device_info(device, rs.camera_info.serial_number) == self._config.serial:
                found = device
        if found is None:
            raise CameraNotFound(self._config.name, f"serial {self._config.serial}", connected, kind="RealSense camera")
        return found

    def open(self) -> RealSenseDevice:
        config = self._config
        context = rs.context()
        device = self._find(context)
        pipeline = rs.pipeline(context)
        request = rs.config()
        request.enable_device(config.serial)
        request.enable_stream(rs.stream.color, config.width, config.height, rs.format.rgb8, config.fps)
        if config.use_depth:
            request.enable_stream(rs.stream.depth, config.width, config.height, rs.format.z16, config.fps)
        if not request.can_resolve(rs.pipeline_wrapper(pipeline)):
            wanted = f"{config.width}x{config.height}@{config.fps} RGB" + (" with depth" if config.use_depth else "")
            raise CameraModeUnsupported(config.name, f"RealSense {config.serial}", wanted, _colour_modes(device))
        try:
            profile = pipeline.start(request)
        except RuntimeError as exc:  # e.g. "Device or resource busy": another program holds it
            raise CameraError(
                config.name,
                f"Camera '{config.name}' (RealSense {config.serial}) could not start streaming: {exc}. Close "
                "other programs using it (realsense-viewer, another studio window), replug it, and connect again.",
            ) from exc
        self._pipeline = pipeline
        self._configure_sensors(profile.get_device())
        colour = profile.get_stream(rs.stream.color).as_video_stream_profile()
        return RealSenseDevice(
            name=_device_info(device, rs.camera_info.name) or "RealSense",
            serial=config.serial,
            usb_type=_device_info(device, rs.camera_info.usb_type_descriptor),
            width=colour.width(),
            height=colour.height(),
            fps=colour.fps(),
        )

    def _configure_sensors(self, device: rs.device) -> None:
        wanted = [(rs.option.global_time_enabled, 1.0)]  # timestamps in host time (host_capture_time_s)
        if self._config.constant_fps:
            wanted.append((rs.option.auto_exposure_priority, 0.0))
        for sensor in device.query_sensors():
            for option, value in wanted:
                if not sensor.supports(option):
                    continue
                try:
                    sensor.set_option(option, value)
                except RuntimeError as exc:  # some firmware refuses an option while streaming
                    logger.warning("camera %s: could not set %s: %s", self._config.name, option, exc)

    def wait_for_frameset(self, timeout_ms: float) -> rs.composite_frame | None:
        if self._pipeline is None:
            raise RuntimeError("the pipeline is not started")
        ok, frameset = self._pipeline.try_wait_for_frames(max(1, int(timeout_ms)))
        return frameset if ok else None

    def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.stop()

    def hardware_reset(self, stop: threading.Event) -> bool:
        try:
            device = self._find(rs.context())
        except CameraNotFound:
            return False  # gone from USB: nothing to reset; reopening will report it
        device.hardware_reset()
        # The camera first drops off USB, then re-enumerates; give it a moment before polling.
        deadline = time.monotonic() + self._config.hardware_reset_wait_ms / 1000.0
        if stop.wait(min(1.0, self._config.hardware_reset_wait_ms / 1000.0)):
            return True
        while time.monotonic() < deadline and not stop.is_set():
            try:
                self._find(rs.context())
                return True
            except CameraNotFound:
                stop.wait(0.2)
        return True


@register_camera(RealSenseConfig)
class RealSenseCamera(ThreadedCamera):
    """A RealSense camera streaming RGB (and optionally depth aligned to it) on its reader thread.

    Frame.image: (height, width, 3) uint8 RGB; Frame.depth: (height, width) uint16 in
    `depth_units_m` metres (1 mm on D400); Frame.frame_index: the device's frame counter, whose gaps
    count as dropped frames; Frame.device_timestamp_ms: the colour frame's timestamp in its domain.
    """

    def __init__(self, config: RealSenseConfig, source: FramesetSource | None = None) -> None:
        super().__init__(config)
        self.config: RealSenseConfig = config
        self._source = source if source is not None else PipelineSource(config)
        self._align: rs.align | None = None

    @property
    def device_label(self) -> str:
        return f"RealSense {self.config.serial}"

    def _open(self) -> StreamInfo:
        config = self.config
        device = self._source.open()
        warnings = []
        if device.usb_type is not None and device.usb_type.startswith("2"):
            if config.require_usb3:
                raise CameraUsb2Link(config.name, self.device_label, device.usb_type)
            warnings.append(
                f"connected over USB {device.usb_type}: frames may drop at {config.width}x{config.height}@"
                f"{config.fps}. Use a USB 3 port and cable."
            )
        if (device.width, device.height, device.fps) != (config.width, config.height, config.fps):
            warnings.append(
                f"streams {device.width}x{device.height}@{device.fps} instead of the configured "
                f"{config.width}x{config.height}@{config.fps}"
            )
        self._align = rs.align(rs.stream.color) if config.use_depth and config.align_depth_to_color else None
        link = f"USB {device.usb_type}" if device.usb_type else "USB (type not reported)"
        return StreamInfo(link=link, width=device.width, height=device.height, fps=device.fps, warnings=tuple(warnings))

    def _grab(self, timeout_ms: float) -> Frame | None:
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000.0
            if remaining_ms <= 0:
                return None
            frameset = self._source.wait_for_frameset(remaining_ms)
            arrival_s = time.monotonic()
            if frameset is None:
                return None
            frame = self._frame_from(frameset, arrival_s, wall_minus_monotonic_s())
            if frame is not None:
                return frame
            # A syncer matches streams only once it has seen each, so a session's first framesets
            # can hold one stream; wait for a complete one. If depth dies for good, this times out.

    def _frame_from(self, frameset: rs.composite_frame, arrival_s: float, clock_offset_s: float) -> Frame | None:
        colour = frameset.get_color_frame()
        depth = frameset.get_depth_frame() if self.config.use_depth else None
        if not colour or (self.config.use_depth and not depth):
            return None
        if self._align is not None:
            aligned = self._align.process(frameset)
            colour, depth = aligned.get_color_frame(), aligned.get_depth_frame()
        # Copy: librealsense recycles frame memory once the frame object is released.
        image = np.asanyarray(colour.get_data()).copy()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise CameraError(
                self.name, f"Camera '{self.name}' delivered an image of {image.shape} {image.dtype}, not RGB8"
            )
        depth_image, depth_units_m = None, None
        if depth:
            depth_image = np.asanyarray(depth.get_data()).copy()
            depth_units_m = float(depth.as_depth_frame().get_units())
        timestamp_ms = float(colour.get_timestamp())
        capture_s = host_capture_time_s(
            timestamp_ms, colour.get_frame_timestamp_domain(), arrival_s, clock_offset_s
        )
        return Frame(
            image=image,
            capture_time_s=capture_s,
            arrival_time_s=arrival_s,
            frame_index=int(colour.get_frame_number()),
            device_timestamp_ms=timestamp_ms,
            depth=depth_image,
            depth_units_m=depth_units_m,
        )

    def _close(self) -> None:
        self._source.close()

    def _hardware_reset(self) -> bool:
        return self._source.hardware_reset(self._stop)
