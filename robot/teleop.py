"""Teleoperation sources that a person drives from the keyboard or the mouse.

`EndEffectorJogSource` moves each gripper's grasp point (see `robot.kinematics`) at a commanded
Cartesian velocity and solves inverse kinematics every tick, so the operator thinks in "forward,
left, up" rather than in joint angles. It is an `ActionSource` (robot.types) of kind TELEOP.

Threads: the GUI thread calls the setters (`set_velocity`, `set_gripper`,
`set_gripper_velocity`, `stop_motion`) at any rate; they only store numbers under a lock. The
control thread calls `start()`, `next_action()` and `stop()`. Velocities stay in force until set
again (a key release or a mouse release sets zero); `JogConfig.velocity_timeout_s` adds a dead-man
timer for front ends that may miss a release (a keyboard over SSH).

Frames and units: velocities are in the scene's world frame (x forward along the left arm's
reach, y toward the robot's left, z up; metres per second, rad/s); grippers in normalised units
(0 closed, 1 open) and normalised units per second.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from robot.types import ARM_NAMES, GRIPPER_INDICES, JOINTS_PER_ARM, STATE_DIM, ControlSource, Observation

log = logging.getLogger(__name__)

_GRIPPER_INDEX = dict(zip(ARM_NAMES, GRIPPER_INDICES))
#: A bent-arm pose (ALOHA's start pose) whose grasp point is well off the waist axis.
_BENT_ARM_RAD = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0)
_FD_STEP_RAD = 1e-4  # finite-difference step for the Jacobian; far above float64 noise at 1 m


def _azimuth_rad(point_m: np.ndarray, centre_xy_m: np.ndarray) -> float:
    """Heading (rad, about world z) of `point_m` seen from the vertical axis at `centre_xy_m`."""
    return math.atan2(point_m[1] - centre_xy_m[1], point_m[0] - centre_xy_m[0])


def _rotation_about(axis_angle: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a rotation vector (axis * angle, rad) - Rodrigues' formula."""
    angle = float(np.linalg.norm(axis_angle))
    if angle < 1e-12:
        return np.eye(3)
    k = axis_angle / angle
    skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * skew + (1.0 - math.cos(angle)) * (skew @ skew)


@dataclass(frozen=True)
class JogConfig:
    """Limits of end-effector jogging.

    max_linear_mps: fastest grasp-point speed; 0.10 m/s crosses the towel in a few seconds and
    is slow enough to stop precisely by releasing a key.
    max_angular_rad_s: fastest gripper rotation (about 45 deg/s).
    gripper_speed_per_s: how fast `set_gripper` opens/closes (normalised units/s; 1.5 = 0.7 s).
    workspace_low_m / workspace_high_m: the box (world frame, m) the grasp points are kept in;
    z >= 0.015 keeps the fingers off the table top (z = 0), the x/y extent is the arms' reach.
    reach_tolerance_m: when IK ends farther than this from the target, the target is pulled back
    to where the gripper got, so holding a key against the edge of reach does not wind up a
    target the arm would later lunge toward.
    velocity_timeout_s: dead-man timer; a velocity not refreshed for this long counts as zero.
    None disables it (the GUI's jog pad sends only on change, so it cannot refresh).
    ik_iterations: IK iterations per tick; a tick moves the target by millimetres, so a few
    iterations from the previous solution converge.
    min_singular_value_m: a jog may not move an arm into a pose where the smallest singular
    value of its grasp point's position Jacobian (m/rad) is below this. A stretched-out arm
    approaches 0 there and IK can no longer pull it back (every Cartesian step needs huge joint
    steps); ordinary poses of the ViperX are 0.15..0.25, the last 3 cm before full stretch fall
    under 0.05.
    """

    max_linear_mps: float = 0.10
    max_angular_rad_s: float = 0.8
    gripper_speed_per_s: float = 1.5
    workspace_low_m: tuple[float, float, float] = (-0.70, 0.05, 0.015)
    workspace_high_m: tuple[float, float, float] = (0.70, 0.95, 0.60)
    reach_tolerance_m: float = 0.005
    velocity_timeout_s: float | None = None
    ik_iterations: int = 10
    min_singular_value_m: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_linear_mps", "max_angular_rad_s", "gripper_speed_per_s", "reach_tolerance_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"JogConfig.{name} must be a positive number, got {value!r}")
        low, high = np.asarray(self.workspace_low_m, float), np.asarray(self.workspace_high_m, float)
        if low.shape != (3,) or high.shape != (3,) or np.any(low >= high):
            raise ValueError(
                f"JogConfig workspace must be two (x, y, z) corners with low < high, got "
                f"{self.workspace_low_m} and {self.workspace_high_m}"
            )
        if self.velocity_timeout_s is not None and not self.velocity_timeout_s > 0:
            raise ValueError(f"JogConfig.velocity_timeout_s must be positive or None, got {self.velocity_timeout_s!r}")
        if not (isinstance(self.min_singular_value_m, (int, float)) and self.min_singular_value_m >= 0):
            raise ValueError(f"JogConfig.min_singular_value_m must be >= 0, got {self.min_singular_value_m!r}")
        if not (isinstance(self.ik_iterations, int) and self.ik_iterations >= 1):
            raise ValueError(f"JogConfig.ik_iterations must be a positive integer, got {self.ik_iterations!r}")


@dataclass
class _ArmCommand:
    """What the GUI asked of one arm (guarded by the source's lock)."""

    linear_mps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    angular_rad_s: np.ndarray = field(default_factory=lambda: np.zeros(3))
    velocity_time_s: float = 0.0
    gripper_goal: float | None = None  # set_gripper: move toward this value
    gripper_rate_per_s: float = 0.0  # set_gripper_velocity: move at this rate


class EndEffectorJogSource:
    """Cartesian jogging of both grippers by IK; an `ActionSource` of kind TELEOP.

    kinematics: a `robot.kinematics.BimanualKinematics` (or anything with the same `forward` and
    `solve`); it is used on the control thread only. control_rate_hz: the loop's rate; each
    tick integrates the velocity over 1/control_rate_hz (simulated time on a sim rig, so
    jogging speed stays right even when the simulation runs slower than real time).
    """

    kind = ControlSource.TELEOP

    def __init__(
        self,
        kinematics,
        control_rate_hz: float = 50.0,
        config: JogConfig | None = None,
        name: str = "keyboard/mouse jog",
    ) -> None:
        if not control_rate_hz > 0:
            raise ValueError(f"control_rate_hz must be positive, got {control_rate_hz!r}")
        self.name = name
        self.config = config or JogConfig()
        self._kinematics = kinematics
        self._dt_s = 1.0 / control_rate_hz
        self._lock = threading.Lock()
        self._commands = {arm: _ArmCommand() for arm in ARM_NAMES}
        self._waist_centre_xy = {arm: self._waist_axis_xy(arm) for arm in ARM_NAMES}
        # Control-thread state, set by start().
        self._joints: np.ndarray | None = None  # (14,) the last action this source produced
        self._targets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._sigma: dict[str, float] = {}  # smallest singular value at each arm's current joints

    # ---------------------------------------------------------------- GUI thread: setters

    def set_velocity(self, arm: str, linear_mps, angular_rad_s=(0.0, 0.0, 0.0)) -> None:
        """Jog `arm`'s grasp point at `linear_mps` (3,) and rotate it at `angular_rad_s` (3,),
        world frame. Magnitudes above the configured maxima are scaled down (direction kept)."""
        linear = self._vector(linear_mps, "linear_mps", self.config.max_linear_mps)
        angular = self._vector(angular_rad_s, "angular_rad_s", self.config.max_angular_rad_s)
        with self._lock:
            command = self._command(arm)
            command.linear_mps = linear
            command.angular_rad_s = angular
            command.velocity_time_s = time.monotonic()

    def set_gripper(self, arm: str, open: bool) -> None:  # noqa: A002 - the natural word here
        """Open (True) or close (False) `arm`'s gripper at the configured speed."""
        with self._lock:
            command = self._command(arm)
            command.gripper_goal = 1.0 if open else 0.0
            command.gripper_rate_per_s = 0.0

    def set_gripper_velocity(self, arm: str, rate_per_s: float) -> None:
        """Move `arm`'s gripper at `rate_per_s` (normalised units/s, + opens); 0 stops it."""
        rate = float(rate_per_s)
        if not math.isfinite(rate):
            raise ValueError(f"gripper rate must be a finite number, got {rate_per_s!r}")
        limit = self.config.gripper_speed_per_s
        with self._lock:
            command = self._command(arm)
            command.gripper_rate_per_s = max(-limit, min(limit, rate))
            command.gripper_goal = None

    def stop_motion(self) -> None:
        """Zero every velocity (both arms, grippers included): the arm stops where it is."""
        with self._lock:
            self._commands = {arm: _ArmCommand() for arm in ARM_NAMES}

    def _command(self, arm: str) -> _ArmCommand:
        if arm not in self._commands:
            raise ValueError(f"arm must be one of {ARM_NAMES}, got {arm!r}")
        return self._commands[arm]

    @staticmethod
    def _vector(value, name: str, limit: float) -> np.ndarray:
        vector = np.asarray(value, dtype=np.float64)
        if vector.shape != (3,) or not np.all(np.isfinite(vector)):
            raise ValueError(f"{name} must be three finite numbers (x, y, z), got {value!r}")
        norm = float(np.linalg.norm(vector))
        return vector * (limit / norm) if norm > limit else vector.copy()

    # ---------------------------------------------------------------- control thread: ActionSource

    @property
    def finished(self) -> bool:
        return False  # a person decides when jogging is over

    def start(self, observation: Observation) -> None:
        """Begin from the arm's current pose: targets are the grasp points where they are now."""
        qpos = np.asarray(observation.qpos, dtype=np.float64)
        if qpos.shape != (STATE_DIM,) or not np.all(np.isfinite(qpos)):
            raise ValueError(f"cannot start jogging from an observation with qpos {qpos!r}")
        self._joints = qpos.copy()
        for index in GRIPPER_INDICES:
            self._joints[index] = min(1.0, max(0.0, self._joints[index]))
        self._targets = {arm: (pos.copy(), rot.copy()) for arm, (pos, rot) in self._kinematics.forward(self._joints).items()}
        self._sigma = {}

    def next_action(self, observation: Observation) -> np.ndarray | None:
        """The (14,) action: each moving arm's joints from IK on its integrated target.

        Integrates from the previous action rather than the reading, so tracking lag of the
        followers does not make the target creep.
        """
        if self._joints is None:
            raise RuntimeError("next_action() before start(): the control loop starts a source first")
        now = time.monotonic()
        timeout = self.config.velocity_timeout_s
        with self._lock:
            commands = {
                arm: (
                    c.linear_mps.copy(),
                    c.angular_rad_s.copy(),
                    timeout is not None and now - c.velocity_time_s > timeout,
                    c.gripper_goal,
                    c.gripper_rate_per_s,
                )
                for arm, c in self._commands.items()
            }
        low = np.asarray(self.config.workspace_low_m)
        high = np.asarray(self.config.workspace_high_m)
        joints = self._joints
        for arm, (linear, angular, expired, goal, rate) in commands.items():
            if not expired and (np.any(linear) or np.any(angular)):
                pos, rot = self._targets[arm]
                new_pos = np.clip(pos + linear * self._dt_s, low, high)
                # The gripper's heading turns with the waist (its azimuth about the waist axis),
                # as the arm does by itself: keeping a fixed world heading while moving sideways
                # would need the near-singular wrist joints to counter-rotate at full speed.
                centre = self._waist_centre_xy[arm]
                turn = _azimuth_rad(new_pos, centre) - _azimuth_rad(pos, centre)
                new_rot = _rotation_about(angular * self._dt_s) @ _rotation_about(np.array([0.0, 0.0, turn])) @ rot
                solved = self._kinematics.solve(
                    arm, joints, new_pos, new_rot, max_iterations=self.config.ik_iterations, tolerance_m=1e-4
                )
                reached_pos, reached_rot = self._kinematics.forward(solved)[arm]
                if np.linalg.norm(reached_pos - new_pos) > self.config.reach_tolerance_m and not np.any(angular):
                    # Translating only, and the kept orientation blocks the way (the wrist cannot
                    # stay level near the table): let the wrist tilt, and keep the new orientation.
                    free = self._kinematics.solve(
                        arm, joints, new_pos, None, max_iterations=self.config.ik_iterations, tolerance_m=1e-4
                    )
                    free_pos, free_rot = self._kinematics.forward(free)[arm]
                    if np.linalg.norm(free_pos - new_pos) < np.linalg.norm(reached_pos - new_pos):
                        solved, reached_pos, reached_rot = free, free_pos, free_rot
                        new_rot = free_rot
                limit = self.config.min_singular_value_m
                if limit:
                    sigma = self._smallest_singular_value(arm, solved)
                    current = self._sigma.get(arm)
                    if current is None:
                        current = self._smallest_singular_value(arm, joints)
                    if sigma < min(limit, current):
                        # Heading into the stretched-out singularity: stay where the arm is.
                        solved, sigma = joints, current
                        reached_pos, reached_rot = self._kinematics.forward(joints)[arm]
                    self._sigma[arm] = sigma
                if np.linalg.norm(reached_pos - new_pos) > self.config.reach_tolerance_m:
                    # Out of reach (or a joint limit): keep the target where the gripper got.
                    new_pos, new_rot = reached_pos, reached_rot
                joints = solved
                self._targets[arm] = (new_pos, new_rot)
            index = _GRIPPER_INDEX[arm]
            step = self.config.gripper_speed_per_s * self._dt_s
            if goal is not None:
                joints[index] += max(-step, min(step, goal - joints[index]))
            elif rate:
                joints[index] = min(1.0, max(0.0, joints[index] + rate * self._dt_s))
        self._joints = joints
        return joints.astype(np.float32)

    def _waist_axis_xy(self, arm: str) -> np.ndarray:
        """(2,) world x, y (m) of `arm`'s vertical waist axis: the centre of the circle its grasp
        point draws when only the waist turns (from three forward-kinematics poses)."""
        waist = ARM_NAMES.index(arm) * JOINTS_PER_ARM
        points = []
        for angle in (-0.5, 0.0, 0.5):
            pose = np.zeros(STATE_DIM)
            pose[waist : waist + 6] = _BENT_ARM_RAD
            pose[waist] = angle
            points.append(self._kinematics.forward(pose)[arm][0][:2])
        (ax, ay), (bx, by), (cx, cy) = points
        d = 2.0 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
        uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
        return np.array([ux, uy])

    def _smallest_singular_value(self, arm: str, joints: np.ndarray) -> float:
        """Smallest singular value (m/rad) of the (3, 6) position Jacobian of `arm`'s grasp
        point, by finite differences of forward kinematics (six extra FK calls, ~0.1 ms)."""
        offset = ARM_NAMES.index(arm) * JOINTS_PER_ARM
        base = self._kinematics.forward(joints)[arm][0]
        columns = []
        for j in range(JOINTS_PER_ARM - 1):
            moved = joints.copy()
            moved[offset + j] += _FD_STEP_RAD
            columns.append((self._kinematics.forward(moved)[arm][0] - base) / _FD_STEP_RAD)
        return float(np.linalg.svd(np.array(columns).T, compute_uv=False)[-1])

    def stop(self) -> None:
        """Forget the velocities (a later start() begins from the arm's pose again)."""
        with self._lock:
            self._commands = {arm: _ArmCommand() for arm in ARM_NAMES}

    def targets(self) -> dict[str, np.ndarray]:
        """The current grasp-point targets {"left"/"right": (3,) m} (control thread; for tests and overlays)."""
        return {arm: pos.copy() for arm, (pos, _) in self._targets.items()}
