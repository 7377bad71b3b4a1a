"""Choose MuJoCo's offscreen OpenGL backend before `mujoco` is imported.

MuJoCo's Python bindings pick their GL context class (EGL, OSMesa, GLFW) from the `MUJOCO_GL`
environment variable once, when `mujoco` is first imported; it cannot be changed afterwards. So
every module of ours that imports mujoco imports this one first and calls `select_backend()`.

Policy: a `MUJOCO_GL` the user set is respected. Otherwise EGL is used when libEGL loads and a
display initialises (hardware GL or Mesa's llvmpipe), else OSMesa when libOSMesa loads. When
neither works the variable is left at "egl" and creating a renderer later fails; the rig turns
that into a `RigError` naming the apt packages (`gl_help()`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

EGL_PACKAGES = "libegl1 libegl-mesa0"
OSMESA_PACKAGES = "libosmesa6"


EGL_PLATFORM_DEVICE_EXT = 0x313F


def _egl_works() -> bool:
    """True when libEGL loads and a display initialises, through the EGL device platform that
    mujoco.egl uses (headless: no X or Wayland) or else the default display. No context is made."""
    name = ctypes.util.find_library("EGL") or "libEGL.so.1"
    try:
        egl = ctypes.CDLL(name)
    except OSError:
        return False
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    egl.eglInitialize.restype = ctypes.c_uint
    egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    query_devices_ptr = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
    platform_display_ptr = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
    if query_devices_ptr and platform_display_ptr:
        query_devices = ctypes.CFUNCTYPE(
            ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int)
        )(query_devices_ptr)
        platform_display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)(
            platform_display_ptr
        )
        devices = (ctypes.c_void_p * 8)()
        count = ctypes.c_int(0)
        if query_devices(8, devices, ctypes.byref(count)):
            for device in devices[: count.value]:
                display = platform_display(EGL_PLATFORM_DEVICE_EXT, device, None)
                if display and egl.eglInitialize(ctypes.c_void_p(display), None, None):
                    return True
    egl.eglGetDisplay.restype = ctypes.c_void_p
    egl.eglGetDisplay.argtypes = [ctypes.c_void_p]
    display = egl.eglGetDisplay(None)  # EGL_DEFAULT_DISPLAY
    return bool(display) and bool(egl.eglInitialize(ctypes.c_void_p(display), None, None))


def _osmesa_works() -> bool:
    name = ctypes.util.find_library("OSMesa") or "libOSMesa.so.8"
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def select_backend() -> str:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM to match) unless already decided; return the backend.

    Safe to call many times. If mujoco is already imported the choice is already made and only
    reported.
    """
    current = os.environ.get("MUJOCO_GL", "").strip().lower()
    if current or "mujoco" in sys.modules:
        return current or "glfw"
    if _egl_works():
        backend = "egl"
    elif _osmesa_works():
        backend = "osmesa"
        log.warning("EGL is not available; rendering the simulation with OSMesa (slow, CPU only)")
    else:
        backend = "egl"
        log.error("Neither EGL nor OSMesa could be loaded; %s", gl_help())
    os.environ["MUJOCO_GL"] = backend
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def gl_help() -> str:
    """What the user should do when no offscreen GL context can be made."""
    return (
        f"install EGL (`sudo apt-get install {EGL_PACKAGES}`) or OSMesa "
        f"(`sudo apt-get install {OSMESA_PACKAGES}`, then set MUJOCO_GL=osmesa), and restart the app"
    )


def backend_in_use() -> str:
    """The backend mujoco was (or will be) imported with."""
    return os.environ.get("MUJOCO_GL", "").strip().lower() or "glfw"
