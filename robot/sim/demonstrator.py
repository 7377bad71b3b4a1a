"""Scripted bimanual towel fold for the simulated rig (an `ActionSource`, kind SCRIPTED).

Each arm takes the near corner on its side (left arm: near_left, right arm: near_right) and lays
it on the far corner of the same side: approach above the corner with the gripper pointing down
and open, descend, close (the sim grasp model catches the corner, see `robot.sim.grasp`), lift,
carry over the towel, lower onto the far corner, release, retreat, wait for the cloth to settle.

Phases are synchronous for both arms and timed in control ticks (simulated time), so a run is
deterministic. The approach moves in joint space from wherever the arms are to an IK solution
above the corners, on a minimum-jerk profile whose duration is stretched so no joint exceeds
`max_joint_speed_rad_s`; the first action is the current pose (no jump).
The later phases move the grasp point on minimum-jerk Cartesian segments, each tick's joint
targets from damped-least-squares IK (`robot.kinematics.BimanualKinematics`) warm-started at the
previous command, and every command is rate-limited to `max_joint_speed_rad_s` (and the rig's
per-tick step), so the control loop's safety filter never has to clip it.

The demonstrator is privileged: it reads the towel's vertices from the `SimRig` (which it must
share the control thread with) when it starts and when a corner has been grasped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from robot.kinematics import ARM_SLICE, BimanualKinematics
from robot.aloha import start_pose
from robot.sim.sim_rig import SimRig
from robot.types import ARM_NAMES, GRIPPER_INDICES, ControlSource, Observation, STATE_DIM

log = logging.getLogger(__name__)

GRIPPER_INDEX = dict(zip(ARM_NAMES, GRIPPER_INDICES))
CORNERS = {"left": ("near_left", "far_left"), "right": ("near_right", "far_right")}


@dataclass
class DemonstratorConfig:
    """Timing (s of simulated time) and geometry (m) of the scripted fold."""

    approach_s: float = 2.0
    descend_s: float = 0.8
    close_s: float = 0.4
    lift_s: float = 0.8
    carry_s: float = 2.2
    lower_s: float = 0.8
    release_s: float = 0.3
    retreat_s: float = 0.8
    settle_s: float = 1.0
    #: Height of the grasp point above the table before descending and while carrying.
    hover_height_m: float = 0.09
    #: Grasp point height when closing: finger tips ~6 mm above the table, the corner between the
    #: pads' ends (see robot.sim.grasp.GAP_X_RANGE_M).
    grasp_height_m: float = 0.025
    #: Aim this far inside the towel from the corner, along its diagonal, so the corner vertex and
    #: its neighbours are between the pads.
    grasp_inset_m: float = 0.008
    #: Highest point of the carry (grasp point), over the fold line.
    carry_height_m: float = 0.16
    #: Release with the held corner this high above the far corner. Low: a corner dropped from
    #: higher lets the fold's loop collapse and push it past the target (measured: +3 cm from 1.4 cm).
    place_height_m: float = 0.004
    #: Aim the placed corner this far back from the far corner (towards the fold).
    place_inset_m: float = 0.0
    #: Fastest joint speed the script commands (rad/s), also capped by the rig's own limit. The
    #: control loop's safety filter may be stricter than the rig (the studio's sim rig file allows
    #: 1.5 rad/s); staying below it means the filter never clips (and so never bends) the plan.
    max_joint_speed_rad_s: float = 1.2

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"DemonstratorConfig.{name} must be a finite non-negative number, got {value}")
        if self.max_joint_speed_rad_s <= 0:
            raise ValueError(f"max_joint_speed_rad_s must be positive (e.g. 1.2), got {self.max_joint_speed_rad_s}")
        if self.grasp_height_m >= self.hover_height_m:
            raise ValueError("grasp_height_m must be below hover_height_m (e.g. 0.025 and 0.09)")


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


def gripper_down_rotation(base_xy: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(3, 3) gripper orientation pointing straight down, the pads' width (gripper z) facing away
    from the arm base: the natural top-down grasp of a 6-DoF arm reaching forward."""
    radial = np.asarray(point[:2], dtype=np.float64) - base_xy
    radial = radial / max(np.linalg.norm(radial), 1e-9)
    x_axis = np.array([0.0, 0.0, -1.0])
    z_axis = np.array([radial[0], radial[1], 0.0])
    y_axis = np.cross(z_axis, x_axis)
    return np.column_stack([x_axis, y_axis, z_axis])


@dataclass
class _Phase:
    name: str
    duration_s: float
    gripper: float  # action gripper at the end of the phase (ramped from the start value)


class ScriptedFoldDemonstrator:
    """Folds the towel in half, near edge onto far edge. Control thread only."""

    kind = ControlSource.SCRIPTED

    def __init__(
        self,
        rig: SimRig,
        kinematics: BimanualKinematics | None = None,
        config: DemonstratorConfig | None = None,
        name: str = "scripted fold",
    ) -> None:
        self.name = name
        self.config = config or DemonstratorConfig()
        self._rig = rig
        self._kinematics = kinematics or BimanualKinematics()
        self._dt = 1.0 / rig.control_rate_hz
        c = self.config
        self._phases = [
            _Phase("approach", c.approach_s, 1.0),
            _Phase("descend", c.descend_s, 1.0),
            _Phase("close", c.close_s, 0.0),
            _Phase("lift", c.lift_s, 0.0),
            _Phase("carry", c.carry_s, 0.0),
            _Phase("lower", c.lower_s, 0.0),
            _Phase("release", c.release_s, 1.0),
            _Phase("retreat", c.retreat_s, 1.0),
            _Phase("settle", c.settle_s, 1.0),
        ]
        self._active = False
        self._finished = False
        self._reset_state()

    # -- ActionSource ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def phase(self) -> str:
        """Name of the current phase ("idle" before start, "done" when finished)."""
        if self._finished:
            return "done"
        if not self._active:
            return "idle"
        return self._phases[self._phase_index].name

    def start(self, observation: Observation) -> None:
        """Plan from the arm's current pose and the towel's current corners."""
        qpos = np.asarray(observation.qpos, dtype=np.float64)
        if qpos.shape != (STATE_DIM,) or not np.all(np.isfinite(qpos)):
            raise ValueError(f"observation.qpos must be a finite ({STATE_DIM},) vector")
        self._reset_state()
        self._command = qpos.copy()
        corners = self._rig.task.corners(self._rig.towel_vertices_m())
        bases = self._arm_bases_xy()
        self._approach_from = qpos.copy()
        for arm in ARM_NAMES:
            near, far = (corners[n] for n in CORNERS[arm])
            other_near = corners[CORNERS["right" if arm == "left" else "left"][0]]
            # Inset along the diagonal towards the towel: away from both the far corner's and the
            # other near corner's edge.
            inward = (far - near) + (other_near - near)
            inward[2] = 0.0
            inward /= max(np.linalg.norm(inward), 1e-9)
            grasp_xy = near[:2] + self.config.grasp_inset_m * inward[:2]
            self._grasp_target[arm] = np.array([grasp_xy[0], grasp_xy[1], self.config.grasp_height_m])
            self._far_corner[arm] = far.copy()
            self._near_corner[arm] = near.copy()
            self._rot[arm] = gripper_down_rotation(bases[arm], self._grasp_target[arm])
        # Joint-space goal of the approach: IK from ALOHA's start pose (a consistent elbow-up
        # branch whatever pose the arms are in now).
        hover = start_pose().astype(np.float64)
        for arm in ARM_NAMES:
            above = self._grasp_target[arm] + np.array([0.0, 0.0, self.config.hover_height_m - self.config.grasp_height_m])
            hover = self._kinematics.solve(arm, hover, above, self._rot[arm], max_iterations=300)
        self._hover_qpos = hover
        max_step = self._rig.joint_limits().max_step.copy()
        arm_joints = [i for i in range(STATE_DIM) if i not in GRIPPER_INDICES]
        max_step[arm_joints] = np.minimum(max_step[arm_joints], self.config.max_joint_speed_rad_s * self._dt)
        self._max_step = max_step
        distance = np.abs(hover - qpos)[arm_joints]
        # A minimum-jerk move peaks at 1.875x its mean speed; 0.9 leaves room for the rate limit.
        speed = 0.9 * self.config.max_joint_speed_rad_s
        self._approach_s = max(self.config.approach_s, float(np.max(1.875 * distance / speed)))
        self._active = True
        log.info("Scripted fold starts (towel corners %s)", {k: np.round(v, 3).tolist() for k, v in corners.items()})

    def next_action(self, observation: Observation) -> np.ndarray | None:
        if not self._active:
            return None
        if self._finished:
            return self._command.astype(np.float32)
        phase = self._phases[self._phase_index]
        if self._tick_in_phase == 0:
            self._begin_phase(phase.name)
        ticks = self._phase_ticks(phase)
        s = _min_jerk((self._tick_in_phase + 1) / ticks)
        previous = self._command.copy()
        for arm in ARM_NAMES:
            if phase.name == "approach":
                joints = ARM_SLICE[arm]
                self._command[joints] = self._approach_from[joints] + s * (self._hover_qpos[joints] - self._approach_from[joints])
            else:
                start_pos, end_pos = self._segment[arm]
                if phase.name == "carry":
                    target = self._carry_point(arm, s)
                else:
                    target = start_pos + s * (end_pos - start_pos)
                self._command = self._kinematics.solve(arm, self._command, target, self._rot[arm], max_iterations=20)
            g0 = self._phase_gripper_start[arm]
            self._command[GRIPPER_INDEX[arm]] = g0 + min(1.0, (self._tick_in_phase + 1) / max(1, ticks // 2)) * (
                phase.gripper - g0
            )
        self._command = previous + np.clip(self._command - previous, -self._max_step, self._max_step)
        self._tick_in_phase += 1
        if self._tick_in_phase >= ticks:
            self._phase_index += 1
            self._tick_in_phase = 0
            if self._phase_index >= len(self._phases):
                self._finished = True
                log.info("Scripted fold finished after %.2f s", self._ticks_total() * self._dt)
        return self._command.astype(np.float32)

    def stop(self) -> None:
        self._active = False

    # -- planning ---------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._phase_index = 0
        self._tick_in_phase = 0
        self._finished = False
        self._command = np.zeros(STATE_DIM)
        self._grasp_target: dict[str, np.ndarray] = {}
        self._far_corner: dict[str, np.ndarray] = {}
        self._near_corner: dict[str, np.ndarray] = {}
        self._rot: dict[str, np.ndarray] = {}
        self._segment: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._phase_gripper_start: dict[str, float] = {}
        self._held_offset: dict[str, np.ndarray] = {}
        self._hover_qpos = np.zeros(STATE_DIM)
        self._approach_from = np.zeros(STATE_DIM)
        self._approach_s = self.config.approach_s
        self._max_step = np.full(STATE_DIM, np.inf)

    def _phase_ticks(self, phase: _Phase) -> int:
        duration = self._approach_s if phase.name == "approach" else phase.duration_s
        return max(1, int(round(duration / self._dt)))

    def _ticks_total(self) -> int:
        return sum(self._phase_ticks(p) for p in self._phases)

    def _arm_bases_xy(self) -> dict[str, np.ndarray]:
        model = self._rig.model
        return {arm: model.body(f"vx300s_{arm}").pos[:2].copy() for arm in ARM_NAMES}

    def _begin_phase(self, name: str) -> None:
        c = self.config
        poses = self._kinematics.forward(self._command)
        for arm in ARM_NAMES:
            here = poses[arm][0]
            self._phase_gripper_start[arm] = float(self._command[GRIPPER_INDEX[arm]])
            grasp = self._grasp_target[arm]
            if name == "approach":
                end = grasp + np.array([0.0, 0.0, c.hover_height_m - c.grasp_height_m])
            elif name == "descend":
                end = grasp.copy()
            elif name == "close":
                end = grasp.copy()
            elif name == "lift":
                self._held_offset[arm] = self._measure_held_offset(arm, here)
                end = here + np.array([0.0, 0.0, c.hover_height_m - here[2]])
            elif name == "carry":
                # The fingers finish closing a tick or two into the lift, so this is the first
                # phase at which an empty grip means the grasp really failed.
                if len(self._rig.held_vertices(arm)) == 0:
                    log.warning("Scripted fold: the %s gripper caught no cloth; carrying on with the plan", arm)
                end = self._place_target(arm) + np.array([0.0, 0.0, c.hover_height_m - c.place_height_m])
            elif name == "lower":
                end = self._place_target(arm)
            elif name in ("release", "settle"):
                end = here.copy()
            elif name == "retreat":
                end = here + np.array([0.0, 0.0, c.hover_height_m])
            else:  # pragma: no cover - the phase list is fixed above
                raise AssertionError(name)
            self._segment[arm] = (here.copy(), end)

    def _measure_held_offset(self, arm: str, grasp_point: np.ndarray) -> np.ndarray:
        """Grasp point minus the held corner's position: where the corner hangs from the gripper."""
        near_name = CORNERS[arm][0]
        corner = self._rig.task.corners(self._rig.towel_vertices_m())[near_name]
        return grasp_point - corner

    def _place_target(self, arm: str) -> np.ndarray:
        """Grasp-point target that puts the held corner just above (and slightly short of) the far corner."""
        c = self.config
        far = self._far_corner[arm]
        back = self._near_corner[arm] - far
        back[2] = 0.0
        back /= max(np.linalg.norm(back), 1e-9)
        corner_target = far + c.place_inset_m * back
        corner_target[2] = far[2] + c.place_height_m
        offset = self._held_offset.get(arm, np.zeros(3))
        return corner_target + offset

    def _carry_point(self, arm: str, s: float) -> np.ndarray:
        """Straight line in the plane, raised by a parabola peaking at carry_height over the middle."""
        start, end = self._segment[arm]
        point = start + s * (end - start)
        bump = 4.0 * s * (1.0 - s)
        point[2] = point[2] + bump * max(0.0, self.config.carry_height_m - max(start[2], end[2]))
        return point
