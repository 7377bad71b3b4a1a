"""`CameraRenderThread`: the simulated cameras, rendered on their own thread like real cameras.

A real camera never blocks the control loop: it exposes on its own clock and the loop takes the
latest frame. The sim's equivalent: when a frame is due, the control thread copies the state
the cameras need (qpos: a few kB, microseconds) into a one-slot mailbox with its simulated and
host time and goes on; this thread copies it into its own `MjData`, runs the position stages
rendering reads and renders every camera, then publishes the images as the latest frames.

What rendering needs from the state (MuJoCo 3.8, checked against a full `mj_forward` to the
pixel): `mj_kinematics` (bodies, geoms, sites), `mj_comPos` + `mj_camlight` (camera and light
poses) and `mj_flex` (the towel's vertex positions - `mj_kinematics` does not compute
`flexvert_xpos`). The scene has no mocap bodies, and velocities, actuation and constraint state
do not show.

Threads: `start()`, `submit()`, `latest()`, `wait_for_frames()` and `stop()` are called from the
rig's owner/control thread; everything GL (context creation, rendering, freeing) happens on the
render thread, which also owns its `MjModel` copy (the control thread writes grasp anchors and
friction into the live model every tick) and its `MjData`. Shared state sits under one condition
variable, held only to swap references.

Falling behind: the mailbox holds one snapshot; a newer one replaces an unrendered older one
(counted in `RenderStats.snapshots_dropped`), so the thread always renders the newest state.

Failure: an exception on the render thread (a GL error) ends it; the next `latest()` or
`wait_for_frames()` raises `RigError` saying what happened and what to do.
"""

from __future__ import annotations

import collections
import copy
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import mujoco
import numpy as np

from robot.rig import RigError
from robot.sim import gl

log = logging.getLogger(__name__)

#: Builds one renderer: (model, height, width) -> mujoco.Renderer. The default is
#: `mujoco.Renderer`; tests pass a factory whose renderer fails on demand to exercise the error
#: path (the seam where a real GL failure surfaces).
RendererFactory = Callable[[mujoco.MjModel, int, int], mujoco.Renderer]

#: Frames over which the render rate is measured.
FPS_WINDOW_FRAMES = 50
#: How long `start()` waits for the GL context to be made on the render thread (seconds).
START_TIMEOUT_S = 30.0
#: How long `stop()` waits for the render thread to finish the frame it is on (seconds).
STOP_TIMEOUT_S = 10.0


def make_camera_renderer(model: mujoco.MjModel, height: int, width: int, factory: RendererFactory | None = None) -> mujoco.Renderer:
    """A renderer for the sim's cameras, made on (and owned by) the calling thread.

    Only what the cameras should see: no shadows or reflections (their cost on llvmpipe buys
    nothing the policy needs). Raises RigError (with the packages to install) when no offscreen
    GL context can be made.
    """
    try:
        renderer = (factory or mujoco.Renderer)(model, height, width)
    except Exception as exc:  # mujoco raises plain/Fatal errors when no GL platform loads
        raise RigError(
            f"Could not create an offscreen OpenGL context for the simulated cameras with "
            f"MUJOCO_GL={gl.backend_in_use()} ({exc}); {gl.gl_help()}"
        ) from exc
    flags = renderer.scene.flags
    flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    return renderer


@dataclass(frozen=True)
class CameraFrames:
    """One published set of camera images, all of the same state.

    images: camera name -> (H, W, 3) uint8 RGB, a fresh array per frame (never written again).
    capture_time_s: host monotonic time at which the state was copied (the "exposure").
    sim_time_s: simulated time of that state (s since the episode reset).
    episode: the rig's episode counter when the state was copied (frames of an earlier episode
    are never handed out after a reset).
    """

    images: Mapping[str, np.ndarray]
    capture_time_s: float
    sim_time_s: float
    episode: int


@dataclass(frozen=True)
class RenderStats:
    """How the render thread keeps up (any thread may read it).

    render_fps: frames published per wall second over the last `FPS_WINDOW_FRAMES` frames;
    frames_rendered / snapshots_dropped: since `start()` (a dropped snapshot was replaced by a
    newer one before the thread got to it); last_render_ms: wall time of the last frame (all
    cameras, kinematics included).
    """

    render_fps: float
    frames_rendered: int
    snapshots_dropped: int
    last_render_ms: float


@dataclass(frozen=True)
class _Snapshot:
    qpos: np.ndarray
    sim_time_s: float
    host_time_s: float
    episode: int


class CameraRenderThread:
    """Renders `camera_names` of `model` at height x width on one dedicated thread."""

    def __init__(
        self,
        model: mujoco.MjModel,
        camera_names: tuple[str, ...],
        height: int,
        width: int,
        renderer_factory: RendererFactory | None = None,
    ) -> None:
        if not camera_names:
            raise ValueError("CameraRenderThread needs at least one camera name")
        # A private copy: the control thread writes eq_data and dof_frictionloss into the live
        # model every tick, and rendering must not read a model that is being written.
        self._model = copy.copy(model)
        self.camera_names = tuple(camera_names)
        self._height, self._width = int(height), int(width)
        self._factory = renderer_factory
        self._cond = threading.Condition()
        self._pending: _Snapshot | None = None
        self._latest: CameraFrames | None = None
        self._error: RigError | None = None
        self._stopping = False
        self._ready = False
        self._thread: threading.Thread | None = None
        self._published_wall_s: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW_FRAMES)
        self._frames_rendered = 0
        self._snapshots_dropped = 0
        self._last_render_s = 0.0

    # -- owner's thread ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread and wait until it has made its GL context. Raises RigError if it could not."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sim-cameras", daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._error is not None, timeout=START_TIMEOUT_S)
            error, ready = self._error, self._ready
        if ready and error is None:
            return
        self.stop()
        if error is not None:
            raise error
        raise RigError(
            f"The simulated cameras' render thread did not start within {START_TIMEOUT_S:.0f} s; "
            "the computer may be overloaded. Close other programs and reconnect the rig."
        )

    def submit(self, qpos: np.ndarray, sim_time_s: float, host_time_s: float, episode: int) -> None:
        """Hand the renderer a copy of `qpos` (model.nq,) taken at `host_time_s`. Never waits
        for rendering; replaces (and counts) a snapshot the thread has not started on yet."""
        snapshot = _Snapshot(np.array(qpos, dtype=np.float64, copy=True), float(sim_time_s), float(host_time_s), int(episode))
        with self._cond:
            if self._pending is not None:
                self._snapshots_dropped += 1
            self._pending = snapshot
            self._cond.notify_all()

    def latest(self) -> CameraFrames | None:
        """The newest published frames (None before the first). Raises RigError if the thread failed."""
        with self._cond:
            self._raise_if_failed()
            return self._latest

    def wait_for_frames(self, episode: int, timeout_s: float) -> CameraFrames:
        """Wait until frames of `episode` are published and return the newest. Raises RigError if
        the thread fails, stops, or nothing arrives within `timeout_s`."""
        def arrived() -> bool:
            latest = self._latest
            return (
                self._error is not None
                or self._stopping
                or (latest is not None and latest.episode == episode)
            )

        with self._cond:
            arrived_in_time = self._cond.wait_for(arrived, timeout=timeout_s)
            self._raise_if_failed()
            if self._stopping:
                raise RigError("The simulated cameras were stopped (the rig is disconnecting); reconnect the rig.")
            if not arrived_in_time:
                raise RigError(
                    f"The simulated cameras rendered no frame within {timeout_s:.0f} s; the computer "
                    "may be overloaded. Close other programs, or set render_thread = false in the "
                    "[sim] section of the rig file, and reconnect the rig."
                )
            return self._latest

    def stats(self) -> RenderStats:
        with self._cond:
            times = list(self._published_wall_s)
            rendered, dropped, last_s = self._frames_rendered, self._snapshots_dropped, self._last_render_s
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else 0.0
        return RenderStats(render_fps=fps, frames_rendered=rendered, snapshots_dropped=dropped, last_render_ms=last_s * 1e3)

    def stop(self) -> None:
        """Stop the thread and wait for it; it frees its GL context itself. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            # A render stuck in the GL driver; the daemon thread frees its context if it returns.
            log.warning("The simulated cameras' render thread did not stop within %.0f s", STOP_TIMEOUT_S)
        self._thread = None

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            # A new exception per call: re-raising one object would grow its traceback each tick.
            raise RigError(str(self._error)) from (self._error.__cause__ or self._error)

    # -- render thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        renderer = None
        try:
            renderer = make_camera_renderer(self._model, self._height, self._width, self._factory)
            data = mujoco.MjData(self._model)
            with self._cond:
                self._ready = True
                self._cond.notify_all()
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping or self._pending is not None)
                    if self._stopping:
                        return
                    snapshot, self._pending = self._pending, None
                started = time.monotonic()
                images = self._render(renderer, data, snapshot)
                finished = time.monotonic()
                frames = CameraFrames(images, snapshot.host_time_s, snapshot.sim_time_s, snapshot.episode)
                with self._cond:
                    self._latest = frames
                    self._frames_rendered += 1
                    self._last_render_s = finished - started
                    self._published_wall_s.append(finished)
                    self._cond.notify_all()
        except RigError as exc:
            self._fail(exc)
        except Exception as exc:  # a GL failure mid-run: mujoco raises plain or Fatal errors
            log.exception("Rendering the simulated cameras failed")
            error = RigError(
                f"Rendering the simulated cameras failed ({type(exc).__name__}: {exc}). Reconnect the "
                f"rig; if it happens again, {gl.gl_help()}, or set render_thread = false in the [sim] "
                "section of the rig file."
            )
            error.__cause__ = exc
            self._fail(error)
        finally:
            if renderer is not None:
                try:
                    renderer.close()  # on this thread: the context is current here
                except Exception:
                    log.warning("Could not free the simulated cameras' GL context cleanly", exc_info=True)

    def _render(self, renderer: mujoco.Renderer, data: mujoco.MjData, snapshot: _Snapshot) -> dict[str, np.ndarray]:
        model = self._model
        data.qpos[:] = snapshot.qpos
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_camlight(model, data)
        mujoco.mj_flex(model, data)
        images = {}
        for name in self.camera_names:
            renderer.update_scene(data, camera=name)
            images[name] = renderer.render()  # a new array each call: safe to hand out as is
        return images

    def _fail(self, error: RigError) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()
