"""An emulated RealSense: synthetic frames pushed through librealsense's own software device.

`rs.software_device` is a device made in software; its sensors accept frames we push
(`on_video_frame`) and deliver them, timestamped, through an `rs.syncer` as real framesets. A
pipeline cannot open it, so `SoftwareDeviceSource` plays the part `PipelineSource` plays for a real
camera, and `EmulatedRealSenseCamera` is a `RealSenseCamera` with that source: the reader thread,
alignment, timestamp conversion, drop counting, stale detection and reconnects under test are the
ones that run on the rig.

A producer thread (the "camera hardware") renders frames from a callable at the configured fps:
`frame_fn(frame_index, capture_time_s) -> (H, W, 3) uint8 RGB` (a moving test pattern by default,
or images the rig supplies, such as a replayed episode). Faults can be injected while it runs:
`pause()`/`resume()` (frames stop: the camera goes stale), `unplug()`/`replug()` (the device leaves
the emulated USB bus and reads raise), `hang_until_reset()` (frames stop until the driver resets
the device) and `drop_frames(n)` (frames lost in transfer: gaps in the frame counter).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import numpy as np
import pyrealsense2 as rs

from robot.cameras.errors import CameraNotFound
from robot.cameras.realsense import RealSenseCamera, RealSenseConfig, RealSenseDevice, wall_minus_monotonic_s
from robot.cameras.registry import register_camera

logger = logging.getLogger(__name__)

# (frame_index, capture_time_s host monotonic) -> (H, W, 3) uint8 RGB image / (H, W) uint16 depth
FrameFn = Callable[[int, float], np.ndarray]
DepthFn = Callable[[int, float], np.ndarray]

DEPTH_UNITS_M = 0.001  # what a D400 reports: depth in millimetres


def moving_bar(width: int, height: int) -> FrameFn:
    """A test pattern: a colour gradient with a white bar moving 4 px per frame.

    Motion makes a frozen image visible at a glance; the gradient makes swapped R/B channels visible.
    """
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    base = np.empty((height, width, 3), dtype=np.uint8)
    base[..., 0] = x[None, :].astype(np.uint8)  # red grows to the right
    base[..., 1] = y[:, None].astype(np.uint8)  # green grows downwards
    base[..., 2] = 64
    bar_px = max(1, width // 32)

    def render(frame_index: int, capture_time_s: float) -> np.ndarray:
        image = base.copy()
        left = (frame_index * 4) % width
        image[:, left : left + bar_px] = 255
        return image

    return render


def checkerboard(width: int, height: int) -> FrameFn:
    """A checkerboard scrolling 2 px per frame (good for judging focus-like sharpness in previews)."""
    square_px = max(2, min(width, height) // 12)

    def render(frame_index: int, capture_time_s: float) -> np.ndarray:
        u = (np.arange(width) + 2 * frame_index) // square_px
        v = np.arange(height) // square_px
        light = ((u[None, :] + v[:, None]) % 2).astype(bool)
        image = np.full((height, width, 3), 40, dtype=np.uint8)
        image[light] = (220, 220, 220)
        return image

    return render


def replay(images: Sequence[np.ndarray]) -> FrameFn:
    """Play given RGB images (e.g. one camera of a recorded episode) in a loop, one per frame."""
    if len(images) == 0:
        raise ValueError("replay() needs at least one image")
    frames = [np.ascontiguousarray(image) for image in images]

    def render(frame_index: int, capture_time_s: float) -> np.ndarray:
        return frames[frame_index % len(frames)]

    return render


PATTERNS: dict[str, Callable[[int, int], FrameFn]] = {"moving-bar": moving_bar, "checkerboard": checkerboard}


def tilted_plane_depth(width: int, height: int) -> DepthFn:
    """Depth of a table seen at an angle: 600 mm at the top row to 1000 mm at the bottom."""
    plane = np.repeat(np.linspace(600, 1000, height, dtype=np.uint16)[:, None], width, axis=1)

    def render(frame_index: int, capture_time_s: float) -> np.ndarray:
        return plane

    return render


@dataclass(frozen=True)
class EmulatedRealSenseConfig(RealSenseConfig):
    """An emulated RealSense (`kind = "realsense-emulated"`): same settings as a real one, plus
    what the emulation renders and reports. `frame_fn`/`depth_fn` are set from code (the rig),
    never from a rig file."""

    kind: ClassVar[str] = "realsense-emulated"

    pattern: str = "moving-bar"  # used when frame_fn is None; see PATTERNS
    # The USB type the emulated device reports ("2.1" to rehearse a USB 2 link).
    usb_type: str = "3.2"
    # Delay between capture and arrival (exposure readout + USB); a real D405 shows ~30-60 ms.
    transfer_latency_ms: float = 0.0
    frame_fn: FrameFn | None = field(default=None, compare=False, repr=False)
    depth_fn: DepthFn | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.serial == "" and isinstance(self.name, str):
            # An emulated camera needs no real serial; derive a stable one so rig files may omit it.
            object.__setattr__(self, "serial", f"emulated-{self.name}")
        super().__post_init__()
        if self.frame_fn is None and self.pattern not in PATTERNS:
            raise ValueError(
                f"camera '{self.name}': unknown pattern {self.pattern!r}; use one of {', '.join(PATTERNS)}"
            )
        if not isinstance(self.usb_type, str) or not self.usb_type[:1].isdigit():
            raise ValueError(f"camera '{self.name}': usb_type must look like \"3.2\" or \"2.1\", got {self.usb_type!r}")
        if not isinstance(self.transfer_latency_ms, (int, float)) or not 0 <= self.transfer_latency_ms <= 1000:
            raise ValueError(
                f"camera '{self.name}': transfer_latency_ms must lie in [0, 1000] ms, got {self.transfer_latency_ms!r}"
            )
        for field_name in ("frame_fn", "depth_fn"):
            value = getattr(self, field_name)
            if value is not None and not callable(value):
                raise ValueError(
                    f"camera '{self.name}': {field_name} must be a function (frame_index, time_s) -> array"
                )


class _EmulatedUsbBus:
    """Which emulated cameras are plugged in, so 'not found' can list them like a real query does.

    A serial belongs to the emulated camera created (or replugged) last, as a device can be in one
    place only: building the rig again takes the serials over from the old, discarded cameras.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plugged: weakref.WeakValueDictionary[str, SoftwareDeviceSource] = weakref.WeakValueDictionary()

    def plug(self, source: "SoftwareDeviceSource") -> None:
        with self._lock:
            self._plugged[source.serial] = source

    def unplug(self, source: "SoftwareDeviceSource") -> None:
        with self._lock:
            if self._plugged.get(source.serial) is source:
                del self._plugged[source.serial]

    def is_plugged(self, source: "SoftwareDeviceSource") -> bool:
        with self._lock:
            return self._plugged.get(source.serial) is source

    def serials(self) -> list[str]:
        with self._lock:
            return sorted(self._plugged)


# The emulated USB bus is process-wide, as the real one is.
EMULATED_USB = _EmulatedUsbBus()


class SoftwareDeviceSource:
    """Framesets from an `rs.software_device` fed by a producer thread at the configured fps.

    Thread ownership: `open`/`wait_for_frameset`/`close`/`hardware_reset` belong to the camera's
    reader thread; the fault-injection methods may be called from any thread; the producer thread
    is started by `open` and stopped by `close`.
    """

    def __init__(self, config: EmulatedRealSenseConfig) -> None:
        self._config = config
        self.serial = config.serial
        self._frame_fn = config.frame_fn or PATTERNS[config.pattern](config.width, config.height)
        self._depth_fn = config.depth_fn or tilted_plane_depth(config.width, config.height)
        self._faults = threading.Lock()
        self._paused = False
        self._hung = False
        self._drops_pending = 0
        self._producer_error: BaseException | None = None
        self._producer: threading.Thread | None = None
        self._producer_stop = threading.Event()
        self._device: rs.software_device | None = None
        self._sensors: list[rs.software_sensor] = []
        self._profiles: dict[rs.stream, rs.video_stream_profile] = {}
        self._syncer: rs.syncer | None = None
        EMULATED_USB.plug(self)

    # ---- fault injection (any thread) ------------------------------------------------------

    def pause(self) -> None:
        with self._faults:
            self._paused = True

    def resume(self) -> None:
        with self._faults:
            self._paused = False

    def unplug(self) -> None:
        EMULATED_USB.unplug(self)

    def replug(self) -> None:
        EMULATED_USB.plug(self)

    def hang_until_reset(self) -> None:
        with self._faults:
            self._hung = True

    def drop_frames(self, count: int) -> None:
        with self._faults:
            self._drops_pending += count

    # ---- FramesetSource (reader thread) ----------------------------------------------------

    def open(self) -> RealSenseDevice:
        config = self._config
        if not EMULATED_USB.is_plugged(self):
            raise CameraNotFound(
                config.name, f"serial {config.serial}", EMULATED_USB.serials(), kind="emulated RealSense"
            )
        device = rs.software_device()
        device.register_info(rs.camera_info.name, "Intel RealSense D405 (emulated)")
        device.register_info(rs.camera_info.serial_number, config.serial)
        device.register_info(rs.camera_info.usb_type_descriptor, config.usb_type)
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = config.width, config.height
        intrinsics.fx = intrinsics.fy = 0.9 * config.width  # ~58 deg horizontal field of view
        intrinsics.ppx, intrinsics.ppy = config.width / 2, config.height / 2
        intrinsics.model = rs.distortion.none
        intrinsics.coeffs = [0.0] * 5
        colour_sensor = device.add_sensor("RGB Camera")
        colour_profile = rs.video_stream_profile(
            colour_sensor.add_video_stream(self._stream(rs.stream.color, 0, 3, rs.format.rgb8, intrinsics))
        )
        self._sensors = [colour_sensor]
        self._profiles = {rs.stream.color: colour_profile}
        if config.use_depth:
            depth_sensor = device.add_sensor("Stereo Module")
            depth_profile = rs.video_stream_profile(
                depth_sensor.add_video_stream(self._stream(rs.stream.depth, 1, 2, rs.format.z16, intrinsics))
            )
            depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS_M)
            # rs.align needs the pose between the streams; here they share one viewpoint.
            identity = rs.extrinsics()
            identity.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            identity.translation = [0.0, 0.0, 0.0]
            depth_profile.register_extrinsics_to(colour_profile, identity)
            self._sensors.append(depth_sensor)
            self._profiles[rs.stream.depth] = depth_profile
        device.create_matcher(rs.matchers.default)  # match colour and depth by timestamp
        # Room for ~1/4 s of framesets, so a reader thread delayed by a busy machine catches up
        # instead of losing frames in the emulation (losses are injected with drop_frames()).
        syncer = rs.syncer(max(2, config.fps // 4))
        for sensor, profile in zip(self._sensors, self._profiles.values()):
            sensor.open(profile)
            sensor.start(syncer)
        self._device, self._syncer = device, syncer
        self._producer_error = None
        self._producer_stop.clear()
        self._producer = threading.Thread(target=self._produce, name=f"emulated-realsense-{config.serial}", daemon=True)
        self._producer.start()
        return RealSenseDevice(
            name=device.get_info(rs.camera_info.name),
            serial=device.get_info(rs.camera_info.serial_number),
            usb_type=device.get_info(rs.camera_info.usb_type_descriptor),
            width=colour_profile.width(),
            height=colour_profile.height(),
            fps=colour_profile.fps(),
        )

    def _stream(
        self, kind: rs.stream, uid: int, bytes_per_pixel: int, fmt: rs.format, intrinsics: rs.intrinsics
    ) -> rs.video_stream:
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height, stream.fps = self._config.width, self._config.height, self._config.fps
        stream.bpp, stream.fmt, stream.intrinsics = bytes_per_pixel, fmt, intrinsics
        return stream

    def wait_for_frameset(self, timeout_ms: float) -> rs.composite_frame | None:
        if not EMULATED_USB.is_plugged(self):
            # What a vanished device looks like to the reader: the read fails.
            raise RuntimeError(f"emulated RealSense {self.serial} was unplugged")
        if self._producer_error is not None:
            raise RuntimeError(f"emulated RealSense {self.serial}: frame source failed: {self._producer_error}")
        if self._syncer is None:
            raise RuntimeError("the emulated device is not open")
        ok, frameset = self._syncer.try_wait_for_frames(max(1, int(timeout_ms)))
        return frameset if ok else None

    def close(self) -> None:
        self._producer_stop.set()
        if self._producer is not None:
            self._producer.join(timeout=2.0)
            if self._producer.is_alive():  # a frame_fn that blocks; the thread ends when it returns
                logger.warning("emulated RealSense %s: frame_fn did not return within 2 s", self.serial)
            self._producer = None
        for sensor in self._sensors:
            try:
                sensor.stop()
                sensor.close()
            except RuntimeError as exc:  # stopping a sensor that never started
                logger.debug("emulated RealSense %s: %s", self.serial, exc)
        self._sensors, self._profiles, self._syncer, self._device = [], {}, None, None

    def hardware_reset(self, stop: threading.Event) -> bool:
        if not EMULATED_USB.is_plugged(self):
            return False
        with self._faults:
            self._hung = False
        return True

    # ---- the "camera hardware" (producer thread) -------------------------------------------

    def _produce(self) -> None:
        config = self._config
        period_s = 1.0 / config.fps
        latency_s = config.transfer_latency_ms / 1000.0
        frame_number = 0
        next_capture_s = time.monotonic()
        # Frames rendered but still "on the wire": (due_s, frame_number, image, depth, timestamp_ms).
        in_flight: collections.deque[tuple[float, int, np.ndarray, np.ndarray | None, float]] = collections.deque()
        while True:
            wake_s = min(next_capture_s, in_flight[0][0]) if in_flight else next_capture_s
            if self._producer_stop.wait(max(0.0, wake_s - time.monotonic())):
                return
            now = time.monotonic()
            while in_flight and in_flight[0][0] <= now:
                _, number, image, depth, timestamp_ms = in_flight.popleft()
                if EMULATED_USB.is_plugged(self):
                    self._send(number, image, depth, timestamp_ms)
            if now < next_capture_s:
                continue
            next_capture_s = max(next_capture_s + period_s, now)  # fell behind: skip ahead, no burst
            with self._faults:
                silent = self._paused or self._hung or not EMULATED_USB.is_plugged(self)
                dropped = not silent and self._drops_pending > 0
                if dropped:
                    self._drops_pending -= 1
            if silent:
                continue
            if dropped:
                frame_number += 1  # the sensor took it; it never arrived
                continue
            # The timestamp is global time (host epoch ms) of the capture, as a D400 reports it.
            capture_s = time.monotonic()
            timestamp_ms = (capture_s + wall_minus_monotonic_s()) * 1000.0
            try:
                image, depth = self._render(frame_number, capture_s)
            except Exception as exc:  # a broken frame_fn: the reader reports it and reconnects
                logger.error("emulated RealSense %s: frame source failed: %s", self.serial, exc)
                self._producer_error = exc
                return
            in_flight.append((capture_s + latency_s, frame_number, image, depth, timestamp_ms))
            frame_number += 1

    def _render(self, frame_number: int, capture_s: float) -> tuple[np.ndarray, np.ndarray | None]:
        config = self._config
        image = np.ascontiguousarray(self._frame_fn(frame_number, capture_s))
        if image.shape != (config.height, config.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"frame_fn returned {image.shape} {image.dtype}; camera '{config.name}' needs "
                f"({config.height}, {config.width}, 3) uint8 RGB"
            )
        if not config.use_depth:
            return image, None
        depth = np.ascontiguousarray(self._depth_fn(frame_number, capture_s))
        if depth.shape != (config.height, config.width) or depth.dtype != np.uint16:
            raise ValueError(
                f"depth_fn returned {depth.shape} {depth.dtype}; camera '{config.name}' needs "
                f"({config.height}, {config.width}) uint16"
            )
        return image, depth

    def _send(self, frame_number: int, image: np.ndarray, depth: np.ndarray | None, timestamp_ms: float) -> None:
        self._sensors[0].on_video_frame(self._software_frame(rs.stream.color, image, 3, frame_number, timestamp_ms))
        if depth is not None:
            self._sensors[1].on_video_frame(self._software_frame(rs.stream.depth, depth, 2, frame_number, timestamp_ms))

    def _software_frame(
        self, kind: rs.stream, pixels: np.ndarray, bytes_per_pixel: int, frame_number: int, timestamp_ms: float
    ) -> rs.software_video_frame:
        frame = rs.software_video_frame()
        frame.pixels = pixels.tobytes()
        frame.bpp = bytes_per_pixel
        frame.stride = self._config.width * bytes_per_pixel
        frame.timestamp = timestamp_ms
        frame.domain = rs.timestamp_domain.global_time
        frame.frame_number = frame_number
        frame.profile = self._profiles[kind]
        return frame


@register_camera(EmulatedRealSenseConfig)
class EmulatedRealSenseCamera(RealSenseCamera):
    """A `RealSenseCamera` on a `SoftwareDeviceSource`, with the source's fault injection exposed."""

    def __init__(self, config: EmulatedRealSenseConfig) -> None:
        self.emulator = SoftwareDeviceSource(config)
        super().__init__(config, source=self.emulator)

    def pause(self) -> None:
        """Stop producing frames (the camera goes stale) until `resume()`."""
        self.emulator.pause()

    def resume(self) -> None:
        self.emulator.resume()

    def unplug(self) -> None:
        """Leave the emulated USB bus: reads raise, reopening reports the camera not found."""
        self.emulator.unplug()

    def replug(self) -> None:
        self.emulator.replug()

    def hang_until_reset(self) -> None:
        """Stop producing until the driver hardware-resets the device (a firmware hang)."""
        self.emulator.hang_until_reset()

    def drop_frames(self, count: int) -> None:
        """Lose the next `count` frames in transfer (the frame counter skips them)."""
        self.emulator.drop_frames(count)
