"""Forward and inverse kinematics of the bimanual ViperX arms (gym-aloha's model), no rendering.

Positions are in the world frame of the simulated scene (metres; table top at z = 0, arm bases at
x = -/+0.469 m, y = 0.5 m, the left arm looking along +x). The "grasp point" of each gripper is the
point between the finger pads, `robot.sim.scene.GRASP_POINT_IN_GRIPPER_M` in the gripper-link frame,
whose x axis points along the fingers and whose y axis is the direction the fingers open.

IK is damped least squares on the MuJoCo model's joint axes (the Jacobian of the grasp point is
built from `xaxis`/`xanchor` of the six hinges, which equals `mj_jacSite` for hinge chains and
avoids a full `mj_comPos`), with joint limits from the model and a per-iteration step cap so a far
target is approached without overshoot.

Thread ownership: one instance holds one MjData; use it from one thread (the control thread).
"""

from __future__ import annotations

import logging

from robot.sim.gl import select_backend

select_backend()

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robot.sim.scene import arm_qpos_addresses, arms_spec, grasp_site_name, joint_name, ARM_JOINTS  # noqa: E402
from robot.types import ARM_NAMES, JOINTS_PER_ARM, STATE_DIM  # noqa: E402

log = logging.getLogger(__name__)

#: Indices of each arm's six joints in the 14-D ALOHA vector.
ARM_SLICE = {"left": slice(0, 6), "right": slice(JOINTS_PER_ARM, JOINTS_PER_ARM + 6)}


def rotation_error(target_rot: np.ndarray, current_rot: np.ndarray) -> np.ndarray:
    """(3,) world-frame rotation vector (axis * angle, rad) taking `current_rot` to `target_rot`."""
    quat_target = np.empty(4)
    quat_current = np.empty(4)
    mujoco.mju_mat2Quat(quat_target, np.ascontiguousarray(target_rot, dtype=np.float64).reshape(9))
    mujoco.mju_mat2Quat(quat_current, np.ascontiguousarray(current_rot, dtype=np.float64).reshape(9))
    quat_error = np.empty(4)
    quat_current_inv = np.empty(4)
    mujoco.mju_negQuat(quat_current_inv, quat_current)
    mujoco.mju_mulQuat(quat_error, quat_target, quat_current_inv)
    velocity = np.empty(3)
    mujoco.mju_quat2Vel(velocity, quat_error, 1.0)
    return velocity


class BimanualKinematics:
    """FK/IK of both arms' grasp points in the 14-D ALOHA action convention.

    Only the arm joints matter; gripper entries are carried through untouched.
    """

    #: Rotation counts as reached below this angle (rad) when a target rotation is given.
    ROT_TOLERANCE_RAD = 1e-2
    #: Metres of position error that weigh as much as one radian of rotation error: the grasp
    #: point must be right; a couple of degrees of wrist tilt matter less.
    ROT_WEIGHT_M_PER_RAD = 0.15
    #: Damping (m) of the least-squares step; keeps steps bounded near singular poses (arm stretched).
    DAMPING = 0.01
    #: Largest joint change per iteration (rad), so far targets are approached, not overshot.
    MAX_STEP_RAD = 0.25

    def __init__(self) -> None:
        self._model = arms_spec().compile()
        self._data = mujoco.MjData(self._model)
        self._qpos_adr = {arm: arm_qpos_addresses(self._model, arm) for arm in ARM_NAMES}
        self._site_id = {arm: self._model.site(grasp_site_name(arm)).id for arm in ARM_NAMES}
        self._joint_id = {
            arm: np.array([self._model.joint(joint_name(arm, j)).id for j in ARM_JOINTS]) for arm in ARM_NAMES
        }
        self._low = {arm: self._model.jnt_range[ids, 0].copy() for arm, ids in self._joint_id.items()}
        self._high = {arm: self._model.jnt_range[ids, 1].copy() for arm, ids in self._joint_id.items()}

    def joint_range(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """(low (6,), high (6,)) joint limits of an arm (rad), from the model."""
        return self._low[arm].copy(), self._high[arm].copy()

    def _set_arm(self, arm: str, joints_rad: np.ndarray) -> None:
        self._data.qpos[self._qpos_adr[arm]] = joints_rad

    def _set_all(self, qpos: np.ndarray) -> None:
        for arm in ARM_NAMES:
            self._set_arm(arm, qpos[ARM_SLICE[arm]])
        mujoco.mj_kinematics(self._model, self._data)

    def forward(self, qpos: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """qpos (14,) in the action convention -> {"left"/"right": (pos_m (3,), rot (3, 3))}.

        rot's columns are the gripper frame's axes in the world (x along the fingers).
        """
        qpos = self._checked(qpos)
        self._set_all(qpos)
        return {
            arm: (
                self._data.site_xpos[self._site_id[arm]].copy(),
                self._data.site_xmat[self._site_id[arm]].reshape(3, 3).copy(),
            )
            for arm in ARM_NAMES
        }

    def _arm_jacobian(self, arm: str, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(3, 6) position and (3, 6) rotation Jacobians of `point` (on the gripper) w.r.t. the arm joints."""
        ids = self._joint_id[arm]
        axes = self._data.xaxis[ids]  # (6, 3) world-frame hinge axes
        anchors = self._data.xanchor[ids]  # (6, 3)
        jac_pos = np.cross(axes, point - anchors).T
        return jac_pos, axes.T

    def solve(
        self,
        arm: str,
        qpos: np.ndarray,
        target_pos_m: np.ndarray,
        target_rot: np.ndarray | None = None,
        max_iterations: int = 50,
        tolerance_m: float = 1e-3,
    ) -> np.ndarray:
        """Move `arm`'s six joints toward putting its grasp point at `target_pos_m` (world, m).

        target_rot: optional (3, 3) gripper orientation (columns = gripper axes in the world).
        Returns a (14,) float64 copy of qpos with only that arm's joints changed, within the
        model's joint limits. An unreachable target is not an error: the best pose found (lowest
        weighted error) is returned.
        """
        if arm not in ARM_SLICE:
            raise ValueError(f"arm must be one of {ARM_NAMES}, got {arm!r}")
        qpos = self._checked(qpos)
        target = np.asarray(target_pos_m, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(target)):
            raise ValueError(f"target_pos_m must be finite, got {target}")
        rot = None if target_rot is None else np.asarray(target_rot, dtype=np.float64).reshape(3, 3)
        result = qpos.copy()
        joints = np.clip(qpos[ARM_SLICE[arm]], self._low[arm], self._high[arm])
        self._set_all(qpos)
        site = self._site_id[arm]
        best_joints, best_cost = joints.copy(), np.inf
        damping_sq = self.DAMPING**2
        for _ in range(max(1, max_iterations)):
            self._set_arm(arm, joints)
            mujoco.mj_kinematics(self._model, self._data)
            pos = self._data.site_xpos[site]
            err_pos = target - pos
            jac_pos, jac_rot = self._arm_jacobian(arm, pos)
            if rot is None:
                err = err_pos
                jac = jac_pos
                err_rot_norm = 0.0
            else:
                err_rot = rotation_error(rot, self._data.site_xmat[site].reshape(3, 3))
                err_rot_norm = float(np.linalg.norm(err_rot))
                err = np.concatenate([err_pos, self.ROT_WEIGHT_M_PER_RAD * err_rot])
                jac = np.vstack([jac_pos, self.ROT_WEIGHT_M_PER_RAD * jac_rot])
            err_pos_norm = float(np.linalg.norm(err_pos))
            cost = err_pos_norm + self.ROT_WEIGHT_M_PER_RAD * err_rot_norm
            if cost < best_cost:
                best_cost, best_joints = cost, joints.copy()
            if err_pos_norm < tolerance_m and err_rot_norm < self.ROT_TOLERANCE_RAD:
                break
            # dq = J^T (J J^T + lambda^2 I)^-1 e: the rows are few (3 or 6), so solve in task space.
            step = jac.T @ np.linalg.solve(jac @ jac.T + damping_sq * np.eye(jac.shape[0]), err)
            largest = float(np.max(np.abs(step)))
            if largest > self.MAX_STEP_RAD:
                step *= self.MAX_STEP_RAD / largest
            joints = np.clip(joints + step, self._low[arm], self._high[arm])
        else:
            # Loop ran out: evaluate the last step too, it may be the best.
            self._set_arm(arm, joints)
            mujoco.mj_kinematics(self._model, self._data)
            pos = self._data.site_xpos[site]
            cost = float(np.linalg.norm(target - pos))
            if rot is not None:
                cost += self.ROT_WEIGHT_M_PER_RAD * float(
                    np.linalg.norm(rotation_error(rot, self._data.site_xmat[site].reshape(3, 3)))
                )
            if cost < best_cost:
                best_joints = joints.copy()
        result[ARM_SLICE[arm]] = best_joints
        return result

    @staticmethod
    def _checked(qpos: np.ndarray) -> np.ndarray:
        array = np.asarray(qpos, dtype=np.float64)
        if array.shape != (STATE_DIM,):
            raise ValueError(f"qpos must have shape ({STATE_DIM},) in the ALOHA convention, got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError("qpos contains NaN or infinity")
        return array.copy()
