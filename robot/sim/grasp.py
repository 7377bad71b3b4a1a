"""The sim grasp model: how the simulated grippers hold cloth.

Cloth pinched between two parallel fingers is fragile in MuJoCo: a pinch is held by friction at a
few element contacts, which slip or explode at the step sizes a real-time rig can afford. So the
sim replaces the pinch with a documented, deterministic model that every action source shares
(teleop, the scripted demonstrator and the policy all go through `SimRig.command`):

1. Each gripper has a *finger gap region*, a box in its gripper-link frame: along the fingers
   from `GAP_X_RANGE_M[0]` to `GAP_X_RANGE_M[1]` (the finger pads, plus 1 cm past the tips so
   cloth lying under the tips on the table is caught), across the fingers between their inner
   faces (+ the cloth radius), and `PAD_HALF_WIDTH_M` either side of the finger plane.
2. A grasp is *armed* while the action gripper is at or above the rig's close threshold (open).
3. When the action gripper drops below the threshold on an armed gripper, the fingers start to
   close. Once their gap has closed to `CATCH_GAP_M`, every cloth vertex inside the gap region is
   attached to the gripper link by an equality (connect) constraint, at its current position
   across the pads clamped to the pinch plane (within the cloth radius), so pinched cloth gathers
   between the pads. The attempt is made once per closing: a gripper that closed on nothing does
   not pick cloth up by later touching it.
4. When the action gripper rises to or above the threshold, all of that gripper's constraints
   switch off (release) and the grasp is armed again.

The constraints are predefined (one inactive `connect` per vertex and gripper, built with the
scene); switching one on sets its anchors (`eq_data`) and `eq_active`. The fingers themselves do
not collide with cloth (their collision bits exclude it), so finger contacts never fight the
constraints; the rest of each arm does collide with the cloth.
"""

from __future__ import annotations

import logging

import mujoco
import numpy as np

from robot.sim.scene import (
    CLOTH_RADIUS_M,
    FINGER_RANGE_M,
    SceneModel,
    gripper_body_name,
)
from robot.types import ARM_NAMES

log = logging.getLogger(__name__)

#: Along the fingers (gripper-link x, m): the pads end at the tips at 0.154 m.
GAP_X_RANGE_M = (0.095, 0.165)
#: Either side of the finger plane (gripper-link z, m): the pads' width.
PAD_HALF_WIDTH_M = 0.016
#: Distance between the fingers' inner faces (m) at which the closing fingers catch the cloth.
CATCH_GAP_M = 0.02


def finger_inner_face_offset_m(model: mujoco.MjModel, arm: str) -> float:
    """Where the left finger's inner face is (gripper-link y, m) relative to its slide position.

    Measured from the finger mesh rather than hard-coded, so a changed finger model still works:
    inner face y = finger slide qpos + offset (the right finger mirrors it).
    """
    data = mujoco.MjData(model)
    prefix = gripper_body_name(arm).split("/")[0]
    finger_q = FINGER_RANGE_M[1]
    data.qpos[model.jnt_qposadr[model.joint(f"{prefix}/left_finger").id]] = finger_q
    mujoco.mj_kinematics(model, data)
    geom = model.geom(f"{prefix}/10_left_gripper_finger").id
    mesh = model.geom_dataid[geom]
    verts = model.mesh_vert[model.mesh_vertadr[mesh] : model.mesh_vertadr[mesh] + model.mesh_vertnum[mesh]]
    world = data.geom_xpos[geom] + verts @ data.geom_xmat[geom].reshape(3, 3).T
    body = model.body(gripper_body_name(arm)).id
    local = (world - data.xpos[body]) @ data.xmat[body].reshape(3, 3)
    pads = local[(local[:, 0] >= GAP_X_RANGE_M[0]) & (local[:, 0] <= GAP_X_RANGE_M[1])]
    return float(pads[:, 1].min() - finger_q)


class GraspModel:
    """Switches the vertex-to-gripper constraints of one scene. Owned by the control thread."""

    def __init__(self, model: mujoco.MjModel, index: SceneModel, close_threshold: float) -> None:
        self._model = model
        self._index = index
        self.close_threshold = float(close_threshold)
        self._inner_offset_m = {arm: finger_inner_face_offset_m(model, arm) for arm in ARM_NAMES}
        self._held: dict[str, np.ndarray] = {arm: np.zeros(0, dtype=int) for arm in ARM_NAMES}
        self._armed = {arm: False for arm in ARM_NAMES}

    def reset(self, data: mujoco.MjData) -> None:
        """Release everything; grippers arm on their first open command."""
        for arm in ARM_NAMES:
            self._release(data, arm)
            self._armed[arm] = False

    def held_vertices(self, arm: str) -> np.ndarray:
        """Indices of the towel vertices `arm` holds now."""
        return self._held[arm].copy()

    def finger_gap_m(self, data: mujoco.MjData, arm: str) -> float:
        """Distance between the finger pads' inner faces (m); <= 0 when shut."""
        finger_q = data.qpos[self._index.finger_qpos_adr[arm][0]]
        return 2.0 * (finger_q + self._inner_offset_m[arm])

    def before_step(self, data: mujoco.MjData, arm: str, action_gripper: float) -> None:
        """An open command releases at once (and arms the next grasp)."""
        if action_gripper >= self.close_threshold:
            if len(self._held[arm]):
                log.debug("%s gripper releases %d cloth vertices", arm, len(self._held[arm]))
            self._release(data, arm)
            self._armed[arm] = True

    def after_step(self, data: mujoco.MjData, arm: str, action_gripper: float) -> None:
        """A closing, armed gripper whose fingers reached the catch gap grasps what is between them."""
        if action_gripper >= self.close_threshold or not self._armed[arm]:
            return
        gap = self.finger_gap_m(data, arm)
        if gap > CATCH_GAP_M:
            return
        self._armed[arm] = False
        vertices = self._vertices_between_fingers(data, arm, max(gap, 0.0))
        if len(vertices):
            self._attach(data, arm, vertices)
            log.debug("%s gripper grasps cloth vertices %s", arm, vertices.tolist())

    def vertices_in_gap(self, data: mujoco.MjData, arm: str) -> np.ndarray:
        """Indices of towel vertices inside `arm`'s finger gap region at the current finger gap."""
        return self._vertices_between_fingers(data, arm, max(self.finger_gap_m(data, arm), 0.0))

    # -- internals --------------------------------------------------------------------------------

    def _local_vertices(self, data: mujoco.MjData, arm: str) -> np.ndarray:
        """(N, 3) towel vertices in the gripper-link frame (positions from qpos: always current)."""
        index = self._index
        body = index.gripper_body_id[arm]
        world = self._model.body_pos[index.towel_vertex_body_ids] + data.qpos[index.towel_vertex_qpos_adr]
        return (world - data.xpos[body]) @ data.xmat[body].reshape(3, 3)

    def _vertices_between_fingers(self, data: mujoco.MjData, arm: str, gap_m: float) -> np.ndarray:
        local = self._local_vertices(data, arm)
        half_width = 0.5 * gap_m + CLOTH_RADIUS_M
        inside = (
            (local[:, 0] >= GAP_X_RANGE_M[0])
            & (local[:, 0] <= GAP_X_RANGE_M[1])
            & (np.abs(local[:, 1]) <= half_width)
            & (np.abs(local[:, 2]) <= PAD_HALF_WIDTH_M)
        )
        return np.flatnonzero(inside)

    def _attach(self, data: mujoco.MjData, arm: str, vertices: np.ndarray) -> None:
        local = self._local_vertices(data, arm)[vertices]
        # Pinched cloth sits between the pads: pull it onto the pinch plane, within the cloth radius.
        local[:, 1] = np.clip(local[:, 1], -CLOTH_RADIUS_M, CLOTH_RADIUS_M)
        eq_ids = self._index.grasp_eq_ids[arm][vertices]
        self._model.eq_data[eq_ids, 0:3] = 0.0  # the vertex body's origin is the vertex
        self._model.eq_data[eq_ids, 3:6] = local
        data.eq_active[eq_ids] = 1
        self._held[arm] = np.union1d(self._held[arm], vertices)

    def _release(self, data: mujoco.MjData, arm: str) -> None:
        if len(self._held[arm]):
            data.eq_active[self._index.grasp_eq_ids[arm][self._held[arm]]] = 0
        self._held[arm] = np.zeros(0, dtype=int)
