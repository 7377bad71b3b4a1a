"""Cameras for the real rig: RealSense (real or emulated) and plain OpenCV/UVC, one interface.

    config = camera_config_from_table({"kind": "realsense", "name": "cam_high", "serial": "018322070394"})
    with make_camera(config) as camera:          # connect(): opens, starts the reader thread
        frame = camera.read_latest()              # never waits; raises CameraStale when too old
        camera.status()                           # fps measured, drops, link, last error, warnings
"""

from robot.cameras.base import Camera, CameraConfig, CameraState, CameraStatus, Frame
from robot.cameras.errors import (
    CameraDisconnected,
    CameraEndOfStream,
    CameraError,
    CameraModeUnsupported,
    CameraNoFrames,
    CameraNotConnected,
    CameraNotFound,
    CameraStale,
    CameraUnplugged,
    CameraUsb2Link,
)
from robot.cameras.opencv_camera import OpenCVCamera, OpenCVCameraConfig
from robot.cameras.realsense import RealSenseCamera, RealSenseConfig
from robot.cameras.realsense_emulated import EmulatedRealSenseCamera, EmulatedRealSenseConfig
from robot.cameras.registry import (
    camera_config_from_table,
    camera_kinds,
    config_class_for,
    make_camera,
    register_camera,
)

__all__ = [
    "Camera",
    "CameraConfig",
    "CameraDisconnected",
    "CameraEndOfStream",
    "CameraError",
    "CameraModeUnsupported",
    "CameraNoFrames",
    "CameraNotConnected",
    "CameraNotFound",
    "CameraStale",
    "CameraState",
    "CameraStatus",
    "CameraUnplugged",
    "CameraUsb2Link",
    "EmulatedRealSenseCamera",
    "EmulatedRealSenseConfig",
    "Frame",
    "OpenCVCamera",
    "OpenCVCameraConfig",
    "RealSenseCamera",
    "RealSenseConfig",
    "camera_config_from_table",
    "camera_kinds",
    "config_class_for",
    "make_camera",
    "register_camera",
]
