"""The reader thread every driver shares: latest frame under a lock, staleness, reconnects, fps.

A driver subclasses `ThreadedCamera` and implements four hooks that run on the reader thread only:
`_open()`, `_grab(timeout_ms)`, `_close()` and optionally `_hardware_reset()`. Everything else -
when a camera counts as failed, how it reconnects, when it gives up, what `read_latest()` raises,
how fps and drops are measured - lives here once, so the emulated RealSense in the tests exercises
exactly the code that runs against a real one.

Thread ownership: the reader thread opens, reads and closes the device; nobody else touches it.
`connect()`/`disconnect()` run on the owner's thread and only start, await and stop the reader.
`read_latest()`/`status()` take the lock briefly and never wait on the device.
"""

from __future__ import annotations

import abc
import collections
import logging
import math
import threading
import time
from dataclasses import dataclass

from robot.cameras.base import Camera, CameraConfig, CameraState, CameraStatus, Frame
from robot.cameras.errors import (
    CameraDisconnected,
    CameraError,
    CameraNoFrames,
    CameraNotConnected,
    CameraNotFound,
    CameraStale,
    CameraUnplugged,
)

logger = logging.getLogger(__name__)

FPS_WINDOW_S = 2.0  # fps is measured over this trailing window
_JOIN_MARGIN_S = 2.0  # disconnect() waits this much beyond one read timeout for the reader to end


@dataclass(frozen=True)
class StreamInfo:
    """What the device agreed to when it opened (driver -> `ThreadedCamera`).

    link: how it is attached, shown in status ("USB 3.2", "UVC /dev/video0", "video file").
    width/height/fps: what it actually streams, which may differ from the config.
    warnings: conditions worth showing that do not stop the camera (USB 2 link, other resolution).
    """

    link: str
    width: int
    height: int
    fps: float
    warnings: tuple[str, ...] = ()


class ThreadedCamera(Camera):
    """`Camera` with one reader thread per device. Subclasses implement the hooks below."""

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()  # first frame, open failure or fatal error
        self._thread: threading.Thread | None = None
        self._reset_counters()

    # ---- driver hooks (reader thread only) -------------------------------------------------

    @property
    @abc.abstractmethod
    def device_label(self) -> str:
        """How messages name the device, e.g. "RealSense 018322070394" or "/dev/video0"."""

    @abc.abstractmethod
    def _open(self) -> StreamInfo:
        """Open the device and start it streaming. Raise a `CameraError` that says what to fix."""

    @abc.abstractmethod
    def _grab(self, timeout_ms: float) -> Frame | None:
        """Wait at most `timeout_ms` for the next frame; None on timeout. Raise on a device error."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Stop the device and release it. Must tolerate a half-open or already closed device."""

    def _hardware_reset(self) -> bool:
        """Reset the device if it can be (power-cycle over USB); True if a reset was done."""
        return False

    def _dropped_between(self, previous: Frame | None, frame: Frame) -> int:
        """Frames lost between two consecutive frames of one session: gaps in the frame counter."""
        if previous is None:
            return 0
        return max(0, frame.frame_index - previous.frame_index - 1)

    # ---- lifecycle (owner's thread) --------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._thread is not None

    def connect(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if self._thread is not None:  # the reader gave up earlier: start afresh
            self.disconnect()
        self._reset_counters()
        self._stop.clear()
        self._ready.clear()
        with self._lock:
            self._state = CameraState.CONNECTING
        self._thread = threading.Thread(target=self._reader_main, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        waited_ms = self.config.first_frame_timeout_ms
        self._ready.wait(waited_ms / 1000.0)
        with self._lock:
            open_error, fatal, last_error = self._open_error, self._fatal, self._last_error
            got_frame = self._latest is not None
        if got_frame:
            logger.info("camera %s (%s) streaming", self.name, self.device_label)
            return
        self.disconnect()
        if open_error is not None:
            raise open_error
        if fatal is not None:
            raise fatal.with_traceback(None)
        raise CameraNoFrames(self.name, self.device_label, waited_ms, last_error)

    def disconnect(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(self.config.read_timeout_ms / 1000.0 + _JOIN_MARGIN_S)
        if thread.is_alive():
            # A driver call that ignores its timeout (some V4L2 reads block ~10 s); the daemon thread
            # closes the device when that call returns, and nobody reads from it meanwhile.
            logger.warning(
                "camera %s: reader thread did not stop in time; it will close the device on its own", self.name
            )
        self._thread = None
        with self._lock:
            self._state = CameraState.DISCONNECTED
            self._latest = None
            self._opened_at = None
            self._arrivals.clear()

    # ---- any thread ------------------------------------------------------------------------

    def read_latest(self, max_age_ms: float | None = None) -> Frame:
        limit_ms = self.config.max_frame_age_ms if max_age_ms is None else max_age_ms
        with self._lock:
            frame, fatal, connected = self._latest, self._fatal, self._thread is not None
        if not connected:
            raise CameraNotConnected(self.name)
        if fatal is not None:
            # Raise a fresh traceback each time: re-raising one instance at 50 Hz would grow it forever.
            raise fatal.with_traceback(None)
        age_ms = math.inf if frame is None else (time.monotonic() - frame.capture_time_s) * 1000.0
        if age_ms > limit_ms:
            raise CameraStale(self.name, self.device_label, age_ms, limit_ms)
        return frame

    def status(self) -> CameraStatus:
        now = time.monotonic()
        with self._lock:
            self._prune_arrivals(now)
            if self._opened_at is None:
                fps = 0.0
            else:
                fps = len(self._arrivals) / max(min(FPS_WINDOW_S, now - self._opened_at), 1e-3)
            warnings = list(self._stream.warnings) if self._stream else []
            if (
                self._state is CameraState.STREAMING
                and self._opened_at is not None
                and now - self._opened_at >= FPS_WINDOW_S
                and fps < self.config.low_fps_ratio * self.config.fps
            ):
                warnings.append(
                    f"low frame rate: {fps:.1f} fps measured, {self.config.fps} configured. Check the USB "
                    "link and the lighting (in dim light auto-exposure lengthens frames), or lower the "
                    "resolution/fps."
                )
            latest = self._latest
            return CameraStatus(
                name=self.name,
                device=self.device_label,
                state=self._state,
                fps_configured=float(self.config.fps),
                fps_measured=fps,
                frames_received=self._frames_received,
                frames_dropped=self._frames_dropped,
                reconnects=self._reconnects,
                hardware_resets=self._hardware_resets,
                link=self._stream.link if self._stream else "",
                resolution=None if latest is None else (latest.image.shape[1], latest.image.shape[0]),
                last_frame_age_ms=None if latest is None else (now - latest.capture_time_s) * 1000.0,
                last_error=self._last_error,
                warnings=tuple(warnings),
            )

    # ---- reader thread ---------------------------------------------------------------------

    def _reset_counters(self) -> None:
        with self._lock:
            self._state = CameraState.DISCONNECTED
            self._latest: Frame | None = None
            self._previous: Frame | None = None  # last frame of the current session (drop counting)
            self._fatal: CameraError | None = None
            self._open_error: CameraError | None = None
            self._last_error: str | None = None
            self._stream: StreamInfo | None = None
            self._opened_at: float | None = None
            self._arrivals: collections.deque[float] = collections.deque()
            self._frames_received = 0
            self._frames_dropped = 0
            self._reconnects = 0
            self._hardware_resets = 0
            self._attempts_without_frame = 0

    def _reader_main(self) -> None:
        try:
            try:
                info = self._open()
            except Exception as exc:  # first open: no retries, the user has something to fix
                error = self._as_camera_error(exc, "could not be opened")
                logger.error("camera %s: %s", self.name, error)
                with self._lock:
                    self._open_error = error
                    self._last_error = str(error)
                    self._state = CameraState.FAILED
                return
            self._opened(info)
            self._stream_frames()
        except Exception as exc:  # a bug in a driver must not die silently on a background thread
            logger.exception("camera %s: reader thread crashed", self.name)
            self._give_up(self._as_camera_error(exc, "failed unexpectedly"))
        finally:
            self._close_quietly()
            self._ready.set()

    def _stream_frames(self) -> None:
        failures = 0
        timeout_ms = self.config.read_timeout_ms
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                frame = self._grab(timeout_ms)
                problem = None if frame is not None else f"no frame within {timeout_ms:.0f} ms"
            except CameraError as exc:
                if not exc.recoverable:
                    self._give_up(exc)
                    return
                frame, problem = None, str(exc)
            except Exception as exc:  # the SDKs raise bare RuntimeErrors for device faults
                frame, problem = None, f"{type(exc).__name__}: {exc}"
            if frame is not None:
                self._publish(frame)
                failures = 0
                continue
            failures += 1
            with self._lock:
                self._last_error = problem
            if failures == 1:
                logger.warning("camera %s (%s): %s", self.name, self.device_label, problem)
            if failures < self.config.max_consecutive_failures:
                # A read that failed at once (an error, not a timeout) would spin; wait one period.
                self._stop.wait(max(0.0, 1.0 / self.config.fps - (time.monotonic() - started)))
                continue
            failures = 0
            if not self._reconnect():
                return

    def _reconnect(self) -> bool:
        """Close and reopen until the device opens, giving up after `max_reconnect_attempts`."""
        last_open_error: Exception | None = None
        while not self._stop.is_set():
            with self._lock:
                self._attempts_without_frame += 1
                attempt = self._attempts_without_frame
                last_error = self._last_error or "unknown"
            if attempt > self.config.max_reconnect_attempts:
                kind = CameraUnplugged if isinstance(last_open_error, CameraNotFound) else CameraDisconnected
                self._give_up(kind(self.name, self.device_label, attempt - 1, last_error))
                return False
            with self._lock:
                self._state = CameraState.RECONNECTING
                self._reconnects += 1
            logger.warning("camera %s (%s): reconnecting (attempt %d)", self.name, self.device_label, attempt)
            self._close_quietly()
            reset_from = self.config.hardware_reset_after_attempts
            if reset_from and attempt >= reset_from:
                try:
                    if self._hardware_reset():
                        with self._lock:
                            self._hardware_resets += 1
                        logger.warning("camera %s (%s): hardware reset done", self.name, self.device_label)
                except Exception as exc:
                    logger.warning("camera %s: hardware reset failed: %s", self.name, exc)
            if self._stop.wait(self.config.reconnect_backoff_ms / 1000.0):
                return False
            try:
                info = self._open()
            except Exception as exc:
                error = self._as_camera_error(exc, "could not be reopened")
                if not error.recoverable:
                    self._give_up(error)
                    return False
                last_open_error = error
                with self._lock:
                    self._last_error = str(error)
                logger.warning("camera %s: reopening failed: %s", self.name, error)
                continue
            self._opened(info)
            return True
        return False

    def _opened(self, info: StreamInfo) -> None:
        for warning in info.warnings:
            logger.warning("camera %s (%s): %s", self.name, self.device_label, warning)
        with self._lock:
            self._stream = info
            self._opened_at = time.monotonic()
            self._arrivals.clear()
            self._previous = None  # frame counters restart with each session

    def _publish(self, frame: Frame) -> None:
        frame.image.flags.writeable = False
        if frame.depth is not None:
            frame.depth.flags.writeable = False
        with self._lock:
            recovered = self._state is CameraState.RECONNECTING
            self._frames_dropped += self._dropped_between(self._previous, frame)
            self._previous = frame
            self._latest = frame
            self._frames_received += 1
            self._attempts_without_frame = 0
            self._arrivals.append(frame.arrival_time_s)
            self._prune_arrivals(frame.arrival_time_s)
            self._state = CameraState.STREAMING
        if recovered:
            logger.info("camera %s (%s): frames are back", self.name, self.device_label)
        self._ready.set()

    def _give_up(self, error: CameraError) -> None:
        logger.error("camera %s: %s", self.name, error)
        with self._lock:
            self._fatal = error
            self._last_error = str(error)
            self._state = CameraState.FAILED
        self._ready.set()

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception as exc:  # closing a device that already vanished fails; nothing to do
            logger.debug("camera %s: closing raised %s", self.name, exc)

    def _prune_arrivals(self, now: float) -> None:
        while self._arrivals and self._arrivals[0] <= now - FPS_WINDOW_S:
            self._arrivals.popleft()

    def _as_camera_error(self, exc: Exception, what: str) -> CameraError:
        if isinstance(exc, CameraError):
            return exc
        return CameraError(
            self.name,
            f"Camera '{self.name}' ({self.device_label}) {what}: {type(exc).__name__}: {exc}. "
            "Replug it and connect again; if it persists, check the rig file's settings for it.",
        )
