"""`SimRig`: the simulated bimanual rig - gym-aloha's ViperX arms in MuJoCo with a cloth towel.

What one control tick does (`command(action)`, control thread):
  action (14,) ALOHA convention -> arm joint position targets (clamped to the actuators' ranges)
  and finger slide targets (gripper normalised -> follower finger position, ALOHA.md, clamped to
  gym-aloha's 0.021..0.057 m) -> grasp-model release -> `substeps` physics steps of
  `physics_timestep_s` (cloth table friction refreshed before each) -> grasp-model catch. Simulated
  time advances by exactly one control period (kept as an integer tick count, so it never drifts).

`read()` returns the state in the same convention: arm joints (rad), gripper = follower finger
position normalised; velocities likewise (gripper in normalised units/s); effort = actuator force
(N*m for joints, N for the finger). A camera frame is due at `camera_fps` of *simulated* time
(when sim time reaches the next multiple of 1/fps). How it is rendered (`render_thread`):
- True (default, the studio): at a due tick `read()` only copies qpos, with its sim and host time,
  to `CameraRenderThread`, which renders on its own thread and GL context; `read()` returns the
  latest finished frames without waiting (except for the first frame after connect()/
  reset_episode(), which it waits for so no observation lacks an image). Frames are stamped
  with the host time of their state copy and lag the arm by about one render (~24 ms idle);
  when the renderer falls behind it skips to the newest state. Like a real camera.
- False: rendered inside `read()` on the calling thread; each frame carries the host time of
  its render and is exactly the state at its due tick, so recordings are reproducible from the
  seed whatever the CPU load (`run.py demos`, unpaced stepping: `set_render_thread(False)`).

Physics choices (measured on the shared 2-core CPU this was built on, llvmpipe rendering;
benchmarks/sim_demonstrator.py prints the numbers with the load average they were taken at):
- 2 ms step (gym-aloha's), implicitfast integrator, CG solver on the sparse Jacobian: ~0.6 ms a
  step with the 20x20 towel on an idle core, so command() (10 steps, grasp model, friction) is
  ~7 ms idle and ~11 ms p50 with neighbours loading the CPU.
- Cloth: flexcomp grid with membrane+bending elasticity (passive forces; per-edge equality
  constraints cost ~60 ms a tick). It rests on the table through its vertices' z-slide limits
  with Coulomb friction switched per vertex (`scene.update_cloth_table_friction`) instead of
  element contacts, which cost ~28 ms a tick at rest and are capped at 50 per body (the towel
  sagged through between them). Cloth collides with the arm links (not the fingers, see
  `robot.sim.grasp`) and not with itself. Its stiffness is bounded by the step (SimRigConfig).
- Rendering: no shadows, no MSAA, one `mujoco.Renderer` per image size, created on the thread
  that renders (GL contexts belong to a thread). Three 240x320 cameras take ~24 ms idle
  (~44 ms p50 under load), hence the default 25 fps: every 2nd tick. MuJoCo's bindings release
  the GIL while rendering, so the render thread runs beside the control thread on the 2nd core.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time

import mujoco
import numpy as np

from robot.aloha import ALOHA_GRIPPERS, START_ARM_POSE_RAD, START_FINGER_POS_M, GripperCalibration
from robot.capabilities import EvaluatesTask, Resettable, Simulation
from robot.rig import Rig, RigError
from robot.sim import gl
from robot.sim.camera_render_thread import CameraRenderThread, RendererFactory, RenderStats, make_camera_renderer
from robot.sim.config import SimRigConfig
from robot.sim.grasp import GraspModel
from robot.sim.scene import FINGER_RANGE_M, SceneModel, build_scene, update_cloth_table_friction
from robot.sim.towel_task import TowelFoldResult, TowelTask
from robot.types import (
    ARM_NAMES,
    GRIPPER_INDICES,
    JOINTS_PER_ARM,
    STATE_DIM,
    JointLimits,
    Observation,
    RigMessage,
    RigStatus,
)

log = logging.getLogger(__name__)

#: Ticks over which the real-time factor and camera rates are measured.
STATUS_WINDOW_TICKS = 50
#: How long `read()` waits for the render thread's first frame of an episode (seconds): far
#: above a render under load (~0.1 s), so only a stuck or starved renderer trips it.
FIRST_FRAME_TIMEOUT_S = 20.0


class SimRig(Rig, Resettable, EvaluatesTask, Simulation):
    """The MuJoCo rig. `read()`/`command()` and the extras that touch the simulation
    (`reset_episode`, `towel_vertices_m`, `gripper_poses`, `evaluate_task`) belong to the control
    thread; `status()`, `render_stats()` and `sim_time_s` may be read from any thread. With
    `render_thread` the cameras render on a thread of their own (`CameraRenderThread`).

    renderer_factory: builds each `mujoco.Renderer` as (model, height, width) (default
    `mujoco.Renderer`); a test hook to inject GL failures at the real seam.
    """

    simulated = True

    def __init__(
        self,
        config: SimRigConfig | None = None,
        grippers: GripperCalibration = ALOHA_GRIPPERS,
        renderer_factory: RendererFactory | None = None,
    ) -> None:
        self.config = config or SimRigConfig()
        self.name = self.config.name
        self.camera_names = tuple(self.config.camera_names)
        self.control_rate_hz = float(self.config.control_rate_hz)
        self._grippers = grippers
        self._scene: SceneModel | None = None
        self._model: mujoco.MjModel | None = None
        self._data: mujoco.MjData | None = None
        self._grasp: GraspModel | None = None
        self._task: TowelTask | None = None
        self._ticks = 0
        self._episode_seed = self.config.seed
        self._towel_pose = (np.zeros(2), 0.0)
        self._renderer_factory = renderer_factory
        self._renderer: mujoco.Renderer | None = None
        self._renderer_thread: int | None = None
        self._render_thread: CameraRenderThread | None = None
        # Episode counter stamped on snapshots: frames of an earlier episode are never handed out.
        self._episode = 0
        self._snapshot_episode = -1
        self._image_sim_time_s: float | None = None
        self._images: dict[str, np.ndarray] = {}
        self._image_times_s: dict[str, float] = {}
        self._next_frame_index = 0
        self._lock = threading.Lock()  # guards the status windows
        self._tick_wall_s: collections.deque[float] = collections.deque(maxlen=STATUS_WINDOW_TICKS)
        self._frame_wall_s: collections.deque[float] = collections.deque(maxlen=STATUS_WINDOW_TICKS)
        self._messages: tuple[RigMessage, ...] = ()

    # -- lifecycle --------------------------------------------------------------------------------

    def connect(self) -> None:
        if self._data is not None:
            return
        started = time.monotonic()
        if self.config.physics_timestep_s > SimRigConfig.TUNED_TIMESTEP_S + 1e-12:
            message = (
                f"physics_timestep_s = {self.config.physics_timestep_s} s is above the "
                f"{SimRigConfig.TUNED_TIMESTEP_S} s the simulation is tuned for: the towel is stretchier, "
                "the scripted fold less reliable and the arms can go unstable. Set physics_timestep_s = "
                "0.002 in the [sim] section of the rig file."
            )
            log.warning(message)
            self._messages = (RigMessage("renderer", message),)
        scene = build_scene(self.config)
        self._scene = scene
        self._model = scene.model
        self._data = mujoco.MjData(self._model)
        self._grasp = GraspModel(self._model, scene, self.config.grasp_close_threshold)
        self._task = TowelTask(
            scene.towel_corner_ids,
            towel_size_m=self.config.towel_size_m,
            success_distance_m=self.config.success_corner_distance_m,
            settled_speed_m_s=self.config.settled_speed_m_s,
            text=self.config.task,
        )
        self.reset_episode(self.config.seed)
        try:
            self._start_render_thread()
        except RigError:
            self.disconnect()
            raise
        log.info(
            "Simulated rig %r ready in %.2f s (%d cloth vertices, %d dofs, GL backend %s, cameras rendered %s)",
            self.name,
            time.monotonic() - started,
            len(scene.towel_vertex_body_ids),
            self._model.nv,
            gl.backend_in_use(),
            "on their own thread" if self._render_thread is not None else "inside read()",
        )

    def disconnect(self) -> None:
        self._stop_render_thread()
        self._close_renderer()
        self._data = None
        self._model = None
        self._scene = None
        self._grasp = None

    # -- episode ----------------------------------------------------------------------------------

    def reset_episode(self, seed: int | None = None) -> int:
        """Start a new episode: arms to the ALOHA start pose, towel flat at a pose drawn from `seed`
        (the next seed after the last episode's when None). Returns the seed used.
        """
        model, data, scene = self._require()
        if seed is None:
            seed = self._episode_seed + 1
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self._episode_seed = int(seed)
        rng = np.random.default_rng(self._episode_seed)
        cfg = self.config
        offset = rng.uniform(-cfg.towel_position_jitter_m, cfg.towel_position_jitter_m, size=2)
        yaw = float(rng.uniform(-cfg.towel_rotation_jitter_rad, cfg.towel_rotation_jitter_rad))
        center = np.asarray(cfg.towel_center_m, dtype=np.float64) + offset

        mujoco.mj_resetData(model, data)
        for arm in ARM_NAMES:
            data.qpos[scene.arm_qpos_adr[arm]] = START_ARM_POSE_RAD
            data.ctrl[scene.arm_actuator_ids[arm]] = START_ARM_POSE_RAD
            left, right = scene.finger_qpos_adr[arm]
            data.qpos[left], data.qpos[right] = START_FINGER_POS_M, -START_FINGER_POS_M
            left_act, right_act = scene.finger_actuator_ids[arm]
            data.ctrl[left_act], data.ctrl[right_act] = START_FINGER_POS_M, -START_FINGER_POS_M
        cos, sin = np.cos(yaw), np.sin(yaw)
        rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
        vertices = scene.towel_rest_m @ rotation.T
        vertices[:, :2] += center
        data.qpos[scene.towel_vertex_qpos_adr] = vertices - model.body_pos[scene.towel_vertex_body_ids]
        self._grasp.reset(data)
        self._towel_pose = (center, yaw)
        self._ticks = 0
        data.time = 0.0
        update_cloth_table_friction(model, data, scene)
        mujoco.mj_forward(model, data)
        self._next_frame_index = 0
        self._images = {}
        self._image_times_s = {}
        self._episode += 1
        self._image_sim_time_s = None
        with self._lock:
            self._tick_wall_s.clear()
            self._frame_wall_s.clear()
        log.info("Episode reset: seed %d, towel at (%.3f, %.3f) m, yaw %.1f deg", seed, *center, np.degrees(yaw))
        return self._episode_seed

    @property
    def episode_seed(self) -> int:
        return self._episode_seed

    @property
    def task(self) -> TowelTask:
        self._require()
        return self._task

    def towel_pose(self) -> tuple[np.ndarray, float]:
        """The towel's pose at the last reset: ((x, y) centre in m, yaw in rad)."""
        center, yaw = self._towel_pose
        return center.copy(), yaw

    # -- Rig interface ----------------------------------------------------------------------------

    def read(self) -> Observation:
        model, data, scene = self._require()
        if self._render_thread is not None:
            images, image_times_s = self._latest_threaded_frames()
        else:
            self._render_if_due()
            images, image_times_s = dict(self._images), dict(self._image_times_s)
        time_s = time.monotonic()
        qpos = np.zeros(STATE_DIM, dtype=np.float32)
        qvel = np.zeros(STATE_DIM, dtype=np.float32)
        effort = np.zeros(STATE_DIM, dtype=np.float32)
        finger_span = self._grippers.follower_finger_m.open - self._grippers.follower_finger_m.close
        for k, arm in enumerate(ARM_NAMES):
            base = k * JOINTS_PER_ARM
            qpos[base : base + 6] = data.qpos[scene.arm_qpos_adr[arm]]
            qvel[base : base + 6] = data.qvel[scene.arm_dof_adr[arm]]
            effort[base : base + 6] = data.actuator_force[scene.arm_actuator_ids[arm]]
            finger_q = data.qpos[scene.finger_qpos_adr[arm][0]]
            qpos[base + 6] = self._grippers.observation_from_follower_finger(finger_q)
            qvel[base + 6] = data.qvel[scene.finger_dof_adr[arm][0]] / finger_span
            effort[base + 6] = data.actuator_force[scene.finger_actuator_ids[arm][0]]
        return Observation(
            qpos=qpos,
            qvel=qvel,
            effort=effort,
            images=images,
            image_times_s=image_times_s,
            time_s=time_s,
            task=self.config.task,
        )

    def command(self, action: np.ndarray) -> None:
        """Apply a (14,) action and advance the simulation by exactly one control period."""
        model, data, scene = self._require()
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (STATE_DIM,):
            raise ValueError(f"action must have shape ({STATE_DIM},) in the ALOHA convention, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError("action contains NaN or infinity; the simulation was not advanced")
        for k, arm in enumerate(ARM_NAMES):
            base = k * JOINTS_PER_ARM
            act_ids = scene.arm_actuator_ids[arm]
            low, high = model.actuator_ctrlrange[act_ids, 0], model.actuator_ctrlrange[act_ids, 1]
            data.ctrl[act_ids] = np.clip(action[base : base + 6], low, high)
            finger_m = float(
                np.clip(self._grippers.follower_finger_m.unnormalize(action[base + 6]), *FINGER_RANGE_M)
            )
            left_act, right_act = scene.finger_actuator_ids[arm]
            data.ctrl[left_act], data.ctrl[right_act] = finger_m, -finger_m
            self._grasp.before_step(data, arm, float(action[base + 6]))

        unstable_before = self._instability_count(data)
        for _ in range(self.config.substeps):
            update_cloth_table_friction(model, data, scene)
            mujoco.mj_step(model, data)
        self._ticks += 1
        data.time = self._ticks * self.config.control_period_s
        # Bring body, geom and site positions up to the state after the last step. Flex vertices
        # and camera poses stay as of the last substep's forward pass (2 ms earlier), which is what
        # synchronous rendering shows; the render thread computes them afresh (mj_flex, mj_camlight).
        mujoco.mj_kinematics(model, data)
        if self._instability_count(data) != unstable_before:
            seed = self._episode_seed
            self.reset_episode(seed)
            raise RigError(
                "The simulation became numerically unstable (MuJoCo reset it), so the episode was "
                f"restarted from seed {seed}. If it repeats, lower towel_young_pa (or leave it out) "
                "or physics_timestep_s in the [sim] section of the rig file."
            )
        for k, arm in enumerate(ARM_NAMES):
            self._grasp.after_step(data, arm, float(action[k * JOINTS_PER_ARM + 6]))
        with self._lock:
            self._tick_wall_s.append(time.monotonic())

    @staticmethod
    def _instability_count(data: mujoco.MjData) -> int:
        """MuJoCo's count of NaN/huge states; each time, it has reset the data."""
        return sum(
            int(data.warning[w].number)
            for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL, mujoco.mjtWarning.mjWARN_BADQACC)
        )

    def joint_limits(self) -> JointLimits:
        model, _, scene = self._require()
        low = np.zeros(STATE_DIM)
        high = np.ones(STATE_DIM)
        max_step = np.full(STATE_DIM, self.config.max_joint_speed_rad_s / self.control_rate_hz)
        for k, arm in enumerate(ARM_NAMES):
            base = k * JOINTS_PER_ARM
            joint_ids = model.actuator_trnid[scene.arm_actuator_ids[arm], 0]
            low[base : base + 6] = model.jnt_range[joint_ids, 0]
            high[base : base + 6] = model.jnt_range[joint_ids, 1]
        max_step[list(GRIPPER_INDICES)] = self.config.max_gripper_speed_per_s / self.control_rate_hz
        return JointLimits(low=low, high=high, max_step=max_step)

    def status(self) -> RigStatus:
        with self._lock:
            ticks = list(self._tick_wall_s)
            frames = list(self._frame_wall_s)
            messages = self._messages
        rtf = None
        if len(ticks) >= 2 and ticks[-1] > ticks[0]:
            rtf = (len(ticks) - 1) * self.config.control_period_s / (ticks[-1] - ticks[0])
        fps = 0.0
        render_thread = self._render_thread
        if render_thread is not None:
            fps = render_thread.stats().render_fps
        elif len(frames) >= 2 and frames[-1] > frames[0]:
            fps = (len(frames) - 1) / (frames[-1] - frames[0])
        return RigStatus(
            name=self.name,
            real_time_factor=rtf,
            camera_fps={name: fps for name in self.camera_names},
            messages=messages,
        )

    # -- extras -----------------------------------------------------------------------------------

    @property
    def sim_time_s(self) -> float:
        """Simulated seconds since the episode reset (exact multiple of the control period)."""
        return self._ticks * self.config.control_period_s

    @property
    def tick_count(self) -> int:
        return self._ticks

    def towel_vertices_m(self) -> np.ndarray:
        """(N, 3) world positions of the towel's vertices (m), current."""
        model, data, scene = self._require()
        return model.body_pos[scene.towel_vertex_body_ids] + data.qpos[scene.towel_vertex_qpos_adr]

    def towel_vertex_velocities_m_s(self) -> np.ndarray:
        """(N, 3) world velocities of the towel's vertices (m/s)."""
        _, data, scene = self._require()
        return data.qvel[scene.towel_vertex_dof_adr].copy()

    def gripper_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{"left"/"right": (grasp point (3,) m, rotation (3, 3))} in the world frame, current."""
        _, data, scene = self._require()
        return {
            arm: (data.site_xpos[scene.grasp_site_id[arm]].copy(), data.site_xmat[scene.grasp_site_id[arm]].reshape(3, 3).copy())
            for arm in ARM_NAMES
        }

    def held_vertices(self, arm: str) -> np.ndarray:
        """Towel vertex indices the grasp model attaches to `arm`'s gripper now."""
        self._require()
        return self._grasp.held_vertices(arm)

    @property
    def task_name(self) -> str:
        return self.config.task

    def evaluate_task(self) -> TowelFoldResult:
        """The towel-fold measure of the current cloth state."""
        self._require()
        return self._task.evaluate(self.towel_vertices_m(), self.towel_vertex_velocities_m_s())

    @property
    def model(self) -> mujoco.MjModel:
        """The compiled MuJoCo model (read-only use: viewers, tests)."""
        return self._require()[0]

    @property
    def data(self) -> mujoco.MjData:
        """The live MjData; control thread only."""
        return self._require()[1]

    @property
    def image_sim_time_s(self) -> float | None:
        """Simulated time (s) of the state the latest images show; None before the first frame."""
        return self._image_sim_time_s

    # -- rendering --------------------------------------------------------------------------------

    @property
    def render_thread_enabled(self) -> bool:
        return self.config.render_thread

    def set_render_thread(self, enabled: bool) -> None:
        """Render the cameras on their own thread (True) or inside `read()` (False: every frame
        is the state at its due tick, reproducible from the seed - what unpaced stepping and
        scripted data collection need). Control thread (or before connect); takes effect at the
        next `read()`, which then waits for (or renders) a fresh frame.
        """
        if not isinstance(enabled, bool):
            raise ValueError(f"set_render_thread takes True or False, got {enabled!r}")
        if enabled == self.config.render_thread:
            return
        self.config = dataclasses.replace(self.config, render_thread=enabled)
        if self._data is None:
            return
        self._stop_render_thread()
        self._close_renderer()
        self._images, self._image_times_s = {}, {}
        self._image_sim_time_s = None
        self._start_render_thread()
        log.info("Simulated cameras now render %s", "on their own thread" if enabled else "inside read()")

    def render_stats(self) -> RenderStats | None:
        """The render thread's rate and dropped snapshots; None when rendering inside `read()`."""
        render_thread = self._render_thread
        return None if render_thread is None else render_thread.stats()

    def _start_render_thread(self) -> None:
        if not self.config.render_thread or not self.camera_names:
            return
        render_thread = CameraRenderThread(
            self._require()[0],
            self.camera_names,
            self.config.image_height,
            self.config.image_width,
            self._renderer_factory,
        )
        render_thread.start()
        self._render_thread = render_thread
        self._snapshot_episode = -1

    def _stop_render_thread(self) -> None:
        render_thread, self._render_thread = self._render_thread, None
        if render_thread is not None:
            render_thread.stop()

    def _due_frame_index(self) -> int:
        """Index of the newest frame due by now (frame k is due at sim time k / camera_fps)."""
        return int(np.floor(self._ticks * self.config.camera_fps / self.control_rate_hz + 1e-9))

    def _latest_threaded_frames(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Threaded mode: hand the render thread the state when a frame is due, return the newest
        published frames (waiting only for an episode's first)."""
        render_thread = self._render_thread
        due_index = self._due_frame_index()
        if self._snapshot_episode != self._episode or due_index >= self._next_frame_index:
            render_thread.submit(self._data.qpos, self.sim_time_s, time.monotonic(), self._episode)
            self._snapshot_episode = self._episode
            self._next_frame_index = due_index + 1
        frames = render_thread.latest()
        if frames is None or frames.episode != self._episode:
            frames = render_thread.wait_for_frames(self._episode, FIRST_FRAME_TIMEOUT_S)
        self._image_sim_time_s = frames.sim_time_s
        return dict(frames.images), {name: frames.capture_time_s for name in frames.images}

    def _render_if_due(self) -> None:
        if not self.camera_names:
            return
        due_index = self._due_frame_index()
        if self._images and due_index < self._next_frame_index:
            return
        renderer = self._renderer_for_this_thread()
        _, data, _ = self._require()
        for name in self.camera_names:
            try:
                renderer.update_scene(data, camera=name)
                image = renderer.render()
            except Exception as exc:  # mujoco raises plain exceptions for GL failures
                raise RigError(
                    f"Rendering camera {name} failed ({exc}); {gl.gl_help()}"
                ) from exc
            self._images[name] = image
            self._image_times_s[name] = time.monotonic()
        self._next_frame_index = due_index + 1
        self._image_sim_time_s = self.sim_time_s
        with self._lock:
            self._frame_wall_s.append(time.monotonic())

    def _renderer_for_this_thread(self) -> mujoco.Renderer:
        thread = threading.get_ident()
        if self._renderer is not None and self._renderer_thread == thread:
            return self._renderer
        self._close_renderer()
        model = self._require()[0]
        renderer = make_camera_renderer(model, self.config.image_height, self.config.image_width, self._renderer_factory)
        self._renderer = renderer
        self._renderer_thread = thread
        return renderer

    def _close_renderer(self) -> None:
        if self._renderer is None:
            return
        try:
            self._renderer.close()
        except Exception:  # a context made on another thread may refuse to be freed here
            log.warning("Could not free the simulated cameras' GL context cleanly", exc_info=True)
        self._renderer = None
        self._renderer_thread = None

    def _require(self) -> tuple[mujoco.MjModel, mujoco.MjData, SceneModel]:
        if self._data is None:
            raise RigError("The simulated rig is not connected; call connect() (or use it as a context manager) first.")
        return self._model, self._data, self._scene
