"""Typed camera errors. Each message says what happened and what the user should do.

All derive from `CameraError`, itself a `RigError`, so a rig that catches `RigError` around its
cameras shows them like any other device fault. `recoverable` tells the reader thread whether a
reconnect can help (an unplugged camera may come back; a video file that ended will not).
"""

from __future__ import annotations

from typing import Sequence

from robot.rig import RigError


class CameraError(RigError):
    """A camera failed. `camera` is the camera's name in the rig file (e.g. "cam_high")."""

    recoverable = True

    def __init__(self, camera: str, message: str) -> None:
        super().__init__(message)
        self.camera = camera


class CameraNotConnected(CameraError):
    """The camera was used before `connect()` or after `disconnect()` (a programming error)."""

    def __init__(self, camera: str) -> None:
        super().__init__(
            camera, f"Camera '{camera}' is not connected: call connect() (or use it in a `with` block) first."
        )


class CameraStale(CameraError):
    """The newest frame is older than the caller accepts (or there is none yet).

    age_ms: age of the newest frame when the caller asked (inf when no frame has arrived yet);
    max_age_ms: the limit the caller asked for.
    """

    def __init__(self, camera: str, device: str, age_ms: float, max_age_ms: float) -> None:
        if age_ms == float("inf"):
            what = "has not delivered a frame yet"
        else:
            what = f"has no frame newer than {max_age_ms:.0f} ms (the newest is {age_ms:.0f} ms old)"
        super().__init__(
            camera,
            f"Camera '{camera}' ({device}) {what}. If this persists, check its cable and USB port, "
            "or lower its fps/resolution in the rig file; the camera reconnects by itself.",
        )
        self.device = device
        self.age_ms = age_ms
        self.max_age_ms = max_age_ms


class CameraNotFound(CameraError):
    """The configured device is not there. `connected` lists what is, so the user can fix the rig file."""

    def __init__(self, camera: str, wanted: str, connected: Sequence[str], kind: str = "camera") -> None:
        if connected:
            listing = f"Connected {kind}s: {', '.join(connected)}."
        else:
            listing = f"No {kind}s are connected at all."
        super().__init__(
            camera,
            f"Camera '{camera}': {kind} {wanted} was not found. {listing} "
            "Check that it is plugged in, or correct it in the rig file.",
        )
        self.wanted = wanted
        self.connected = tuple(connected)


class CameraModeUnsupported(CameraError):
    """The device cannot stream the configured resolution/fps/format."""

    recoverable = False

    def __init__(self, camera: str, device: str, wanted: str, supported: Sequence[str]) -> None:
        modes = ", ".join(supported) if supported else "none reported"
        super().__init__(
            camera,
            f"Camera '{camera}' ({device}) cannot stream {wanted}. It supports: {modes}. "
            "Pick one of these in the rig file.",
        )
        self.supported = tuple(supported)


class CameraUsb2Link(CameraError):
    """The camera enumerated on a USB 2 link and the rig file requires USB 3."""

    recoverable = False

    def __init__(self, camera: str, device: str, usb_type: str) -> None:
        super().__init__(
            camera,
            f"Camera '{camera}' ({device}) is connected over USB {usb_type}, which cannot carry its streams "
            "reliably. Plug it into a USB 3 port (usually blue) with a USB 3 cable, without a USB 2 hub in "
            "between, then reconnect. (Set require_usb3 = false in the rig file to run on USB 2 anyway.)",
        )
        self.usb_type = usb_type


class CameraNoFrames(CameraError):
    """The device opened but no frame arrived in time after connect()."""

    def __init__(self, camera: str, device: str, waited_ms: float, last_error: str | None) -> None:
        detail = f" (last error: {last_error})" if last_error else ""
        super().__init__(
            camera,
            f"Camera '{camera}' ({device}) opened but delivered no frame within {waited_ms:.0f} ms{detail}. "
            "Close any other program using it (e.g. realsense-viewer, another studio window), replug it, "
            "then connect again.",
        )
        self.device = device
        self.waited_ms = waited_ms


class CameraDisconnected(CameraError):
    """The camera stopped delivering frames and reconnecting did not bring it back; the reader stopped."""

    def __init__(self, camera: str, device: str, attempts: int, last_error: str) -> None:
        super().__init__(
            camera,
            f"Camera '{camera}' ({device}) stopped delivering frames and did not come back after "
            f"{attempts} reconnect attempt(s) (last error: {last_error}). Check its cable and USB port, "
            "then reconnect the rig.",
        )
        self.device = device
        self.attempts = attempts
        self.last_error = last_error


class CameraUnplugged(CameraDisconnected):
    """The camera vanished from the bus and did not reappear while the reader retried."""

    def __init__(self, camera: str, device: str, attempts: int, last_error: str) -> None:
        CameraError.__init__(
            self,
            camera,
            f"Camera '{camera}' ({device}) was unplugged or lost power: it is no longer on USB and did not "
            f"reappear after {attempts} reconnect attempt(s) ({last_error}). Plug it back in, then reconnect "
            "the rig.",
        )
        self.device = device
        self.attempts = attempts
        self.last_error = last_error


class CameraEndOfStream(CameraError):
    """A video-file source reached its end (a live camera never raises this)."""

    recoverable = False

    def __init__(self, camera: str, path: str, frames: int) -> None:
        super().__init__(
            camera,
            f"Camera '{camera}': the video file {path} ended after {frames} frame(s). Set loop = true for "
            "this camera in the rig file to replay it, or use a live camera.",
        )
        self.path = path
        self.frames = frames
