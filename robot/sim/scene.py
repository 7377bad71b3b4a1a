"""Build the MuJoCo scene from gym-aloha's ViperX bimanual model (referenced, never copied).

`arms_spec()` is the two arms with their position actuators and the table (used by
`robot.kinematics`); `build_scene()` adds what the towel task needs (see its docstring).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from robot.sim.gl import select_backend

select_backend()

import mujoco  # noqa: E402  (after the GL backend is chosen)
import numpy as np  # noqa: E402

from robot.rig import RigError  # noqa: E402
from robot.types import ARM_NAMES  # noqa: E402

#: gym-aloha's model whose arms and actuators we reuse; its red box and keyframe are removed.
ALOHA_MODEL_FILE = "bimanual_viperx_transfer_cube.xml"
ARM_PREFIX = {"left": "vx300s_left", "right": "vx300s_right"}
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
#: The grasp point in each `gripper_link` frame (x points along the fingers): between the finger
#: pads, 1.9 cm short of the finger tips (which end at x = 0.154 m).
GRASP_POINT_IN_GRIPPER_M = (0.135, 0.0, 0.0)
#: Finger slide joint range of gym-aloha's model (each finger, m); actuator ctrlrange equals it.
FINGER_RANGE_M = (0.021, 0.057)


def aloha_assets_dir() -> Path:
    """The installed gym-aloha package's MJCF/mesh folder."""
    try:
        root = importlib.resources.files("gym_aloha")
    except ModuleNotFoundError as exc:
        raise RigError(
            "The simulated rig needs the gym-aloha package (it carries the ViperX arm model). "
            "Install it with `pip install gym-aloha` and start again."
        ) from exc
    path = Path(str(root)) / "assets"
    if not (path / ALOHA_MODEL_FILE).is_file():
        raise RigError(
            f"gym-aloha is installed but {path / ALOHA_MODEL_FILE} is missing; reinstall it with "
            "`pip install --force-reinstall gym-aloha`."
        )
    return path


def joint_name(arm: str, joint: str) -> str:
    return f"{ARM_PREFIX[arm]}/{joint}"


def grasp_site_name(arm: str) -> str:
    return f"{ARM_PREFIX[arm]}/grasp"


def gripper_body_name(arm: str) -> str:
    return f"{ARM_PREFIX[arm]}/gripper_link"


def arms_spec() -> mujoco.MjSpec:
    """gym-aloha's two ViperX arms, actuators and table, plus a grasp site on each gripper.

    The transfer-cube task's box and its keyframe are deleted (the keyframe includes the box).
    """
    path = aloha_assets_dir() / ALOHA_MODEL_FILE
    try:
        spec = mujoco.MjSpec.from_file(str(path))
    except Exception as exc:  # mujoco raises ValueError for XML/mesh problems
        raise RigError(f"Could not load gym-aloha's arm model {path}: {exc}. Reinstall gym-aloha.") from exc
    box = spec.body("box")
    if box is not None:
        spec.delete(box)
    for key in list(spec.keys):
        spec.delete(key)
    for arm in ARM_NAMES:
        gripper = spec.body(gripper_body_name(arm))
        gripper.add_site(
            name=grasp_site_name(arm),
            pos=list(GRASP_POINT_IN_GRIPPER_M),
            size=[0.005, 0.005, 0.005],
            rgba=[1, 0, 0, 0],
        )
    return spec


def arm_qpos_addresses(model: mujoco.MjModel, arm: str) -> np.ndarray:
    """(6,) qpos addresses of an arm's joints, in ALOHA order."""
    return np.array([model.jnt_qposadr[model.joint(joint_name(arm, j)).id] for j in ARM_JOINTS])


def arm_dof_addresses(model: mujoco.MjModel, arm: str) -> np.ndarray:
    """(6,) dof (qvel) addresses of an arm's joints, in ALOHA order."""
    return np.array([model.jnt_dofadr[model.joint(joint_name(arm, j)).id] for j in ARM_JOINTS])


# ------------------------------------------------------------------------------------------------
# The towel scene
# ------------------------------------------------------------------------------------------------

TOWEL_NAME = "towel"
#: Collision bits. Arms keep gym-aloha's bit 0 (they meet the table plane and each other) and
#: gain bit 1; the cloth is type 4 with affinity 2, so it meets the arms and not the plane.
ARM_CONTYPE, ARM_CONAFFINITY = 3, 1
PLANE_CONTYPE, PLANE_CONAFFINITY = 1, 1
CLOTH_CONTYPE, CLOTH_CONAFFINITY = 4, 2
#: Radius of each cloth vertex (m): the cloth's half thickness for contacts with the arms and the
#: height of a vertex lying on the table.
CLOTH_RADIUS_M = 0.004
#: Coulomb friction of cloth on the table (terry cloth on laminate).
CLOTH_TABLE_FRICTION = 0.8
#: A vertex within this height above its resting height counts as lying on the table.
CLOTH_TABLE_CONTACT_BAND_M = 0.0015
CAMERA_FOVY_DEG = {"cam_high": 62.0, "cam_left_wrist": 75.0, "cam_right_wrist": 75.0}


@dataclass(frozen=True)
class SceneModel:
    """A compiled scene and the indices the rig needs (all read-only after build)."""

    model: mujoco.MjModel
    arm_qpos_adr: dict[str, np.ndarray]  # (6,) per arm
    arm_dof_adr: dict[str, np.ndarray]  # (6,) per arm
    arm_actuator_ids: dict[str, np.ndarray]  # (6,) per arm
    finger_qpos_adr: dict[str, tuple[int, int]]  # (left finger, right finger) per arm
    finger_dof_adr: dict[str, tuple[int, int]]
    finger_actuator_ids: dict[str, tuple[int, int]]
    gripper_body_id: dict[str, int]
    grasp_site_id: dict[str, int]
    towel_vertex_body_ids: np.ndarray  # (N,)
    towel_vertex_qpos_adr: np.ndarray  # (N, 3) slide-joint qpos addresses (x, y, z)
    towel_vertex_dof_adr: np.ndarray  # (N, 3)
    towel_rest_m: np.ndarray  # (N, 3) vertex positions of the flat towel centred at the origin
    towel_corner_ids: dict[str, int]  # near_left, near_right, far_left, far_right (towel frame)
    grasp_eq_ids: dict[str, np.ndarray]  # (N,) inactive connect constraints vertex -> gripper
    camera_names: tuple[str, ...]


def _add_cameras(spec: mujoco.MjSpec) -> None:
    """cam_high looks down at the table from the operator side (like ALOHA's overhead camera);
    each wrist camera sits above its gripper looking along the fingers, pitched 40 deg down, so
    the towel is in view at the start pose and the grasp area is in view when reaching down."""
    spec.worldbody.add_camera(
        name="cam_high",
        pos=[0.0, 0.0, 0.75],
        xyaxes=[1, 0, 0, 0, 0.848, 0.530],
        fovy=CAMERA_FOVY_DEG["cam_high"],
    )
    pitch = np.radians(40.0)
    for arm in ARM_NAMES:
        spec.body(gripper_body_name(arm)).add_camera(
            name=f"cam_{arm}_wrist",
            pos=[0.0, 0.0, 0.075],
            xyaxes=[0, -1, 0, float(np.sin(pitch)), 0, float(np.cos(pitch))],
            fovy=CAMERA_FOVY_DEG[f"cam_{arm}_wrist"],
        )


def _towel_xml(config) -> str:
    n = config.towel_grid
    spacing = config.towel_size_m / (n - 1)
    # Cloth model (numbers measured on this CPU; see robot.sim.sim_rig's docstring):
    # - membrane + bending elasticity as passive forces: per-edge equality constraints cost
    #   ~60 ms a tick for the ~1100 edges of a 20x20 grid;
    # - cloth-arm contacts only (collision bits above); the table holds the cloth through the
    #   vertices' z-slide limits plus friction, because MuJoCo collides cloth with geoms per
    #   element (~4.5 contacts per vertex, 28 ms a tick for a towel at rest) and keeps at most 50
    #   contacts per body-flex pair, through which a 400-vertex towel sags;
    # - no self-collision: a folded layer lies on the table with the layer below, which is what a
    #   fold looks like to the cameras, at a fraction of element-element collision's cost.
    return f"""
<mujoco>
  <asset>
    <texture name="towel_tex" type="2d" builtin="checker" width="64" height="64"
             rgb1="0.85 0.85 0.9" rgb2="0.2 0.45 0.8"/>
    <material name="towel_mat" texture="towel_tex" texrepeat="8 8" specular="0.1"/>
  </asset>
  <worldbody>
    <flexcomp name="{TOWEL_NAME}" type="grid" dim="2" count="{n} {n} 1"
              spacing="{spacing:.6f} {spacing:.6f} {spacing:.6f}" pos="0 0 {CLOTH_RADIUS_M}" radius="{CLOTH_RADIUS_M}"
              mass="{config.towel_mass_kg}" material="towel_mat">
      <contact condim="3" solref="0.01 1" solimp="0.95 0.99 0.001" friction="0.8"
               selfcollide="none" internal="false"
               contype="{CLOTH_CONTYPE}" conaffinity="{CLOTH_CONAFFINITY}"/>
      <elasticity young="{config.towel_young_effective_pa:.1f}" poisson="0.2" thickness="{config.towel_thickness_m}"
                  damping="0.001" elastic2d="both"/>
    </flexcomp>
  </worldbody>
</mujoco>"""


def build_scene(config) -> SceneModel:
    """gym-aloha's arms, the table with a collision plane, the towel
    (flat, centred at the origin; the rig places it per episode), three cameras and the
    grasp-model equality constraints (all inactive)."""
    spec = arms_spec()
    spec.modelname = "fastwam_towel_fold"

    # Physics options: the implicit integrator damps the stiff cloth and the position servos at
    # a 4 ms step; CG on the sparse Jacobian is the cheap solver for ~1200 cloth dofs whose
    # constraints (contacts, grasp welds) are few.
    spec.option.timestep = config.physics_timestep_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.solver = mujoco.mjtSolver.mjSOL_CG
    spec.option.jacobian = mujoco.mjtJacobian.mjJAC_SPARSE
    spec.option.iterations = 30
    spec.option.ls_iterations = 10
    spec.option.tolerance = 1e-6
    spec.option.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL

    # Rendering: no shadows (each shadow map is a second pass per light on llvmpipe), no MSAA.
    spec.visual.quality.shadowsize = 256
    spec.visual.quality.offsamples = 0
    spec.visual.global_.offwidth = max(640, config.image_width)
    spec.visual.global_.offheight = max(480, config.image_height)
    for light in spec.lights:
        light.castshadow = False

    # Collision: the table mesh becomes visual only; a plane holds the arms. The cloth lies on the
    # table through joint limits (see `update_cloth_table_friction`), not through contacts.
    table = spec.geom("table")
    table.contype, table.conaffinity = 0, 0
    for geom in spec.geoms:
        if geom.name.startswith("vx300s_") and (geom.contype or geom.conaffinity):
            # The fingers keep bit 0 only: cloth between them is held by the grasp model (see
            # robot.sim.grasp), and contacts fighting its constraints would make it jitter.
            if not geom.name.endswith("gripper_finger"):
                geom.contype, geom.conaffinity = ARM_CONTYPE, ARM_CONAFFINITY
    spec.worldbody.add_geom(
        name="table_plane",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[0.61, 0.381, 0.01],
        pos=[0.0, 0.6, 0.0],
        rgba=[0, 0, 0, 0],
        contype=PLANE_CONTYPE,
        conaffinity=PLANE_CONAFFINITY,
    )

    _add_cameras(spec)

    towel = mujoco.MjSpec.from_string(_towel_xml(config))
    spec.attach(towel, frame=spec.worldbody.add_frame(), prefix="")

    # The grasp model's constraints are added after the flex exists (they name its vertex bodies).
    # Compile once to learn the vertex bodies, then add the constraints and compile again.
    model = spec.compile()
    flex_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_FLEX, TOWEL_NAME)
    vert_adr, vert_num = model.flex_vertadr[flex_id], model.flex_vertnum[flex_id]
    vertex_bodies = model.flex_vertbodyid[vert_adr : vert_adr + vert_num].copy()
    vertex_body_names = [model.body(b).name for b in vertex_bodies]
    for body_name in vertex_body_names:
        # The z slide's lower limit is the table top: a vertex rests at its radius above it.
        z_slide = spec.body(body_name).joints[2]
        z_slide.limited = mujoco.mjtLimited.mjLIMITED_TRUE
        z_slide.range = [0.0, 1.0]
    grasp_eq_names: dict[str, list[str]] = {arm: [] for arm in ARM_NAMES}
    for arm in ARM_NAMES:
        for vertex, body_name in enumerate(vertex_body_names):
            name = f"grasp_{arm}_{vertex}"
            spec.add_equality(
                name=name,
                type=mujoco.mjtEq.mjEQ_CONNECT,
                objtype=mujoco.mjtObj.mjOBJ_BODY,
                name1=body_name,
                name2=gripper_body_name(arm),
                active=False,
                # Stiff enough to carry a corner at arm speed, soft enough not to jerk the cloth.
                solref=[0.01, 1.0],
                solimp=[0.95, 0.99, 0.001, 0.5, 2.0],
            )
            grasp_eq_names[arm].append(name)
    try:
        model = spec.compile()
    except ValueError as exc:
        raise RigError(f"Could not build the simulated scene: {exc}") from exc

    vertex_bodies = np.array([model.body(n).id for n in vertex_body_names])
    qpos_adr = np.zeros((len(vertex_bodies), 3), dtype=int)
    dof_adr = np.zeros((len(vertex_bodies), 3), dtype=int)
    for k, body in enumerate(vertex_bodies):
        jnt_adr, jnt_num = model.body_jntadr[body], model.body_jntnum[body]
        if jnt_num != 3:
            raise RigError(f"towel vertex body {model.body(body).name} has {jnt_num} joints, expected 3 slides")
        for axis in range(3):
            joint = jnt_adr + axis
            qpos_adr[k, axis] = model.jnt_qposadr[joint]
            dof_adr[k, axis] = model.jnt_dofadr[joint]
    rest = model.body_pos[vertex_bodies].copy()
    rest[:, :2] -= rest[:, :2].mean(axis=0)
    corners = _corner_ids(rest)

    actuators = {model.actuator(i).trnid[0]: i for i in range(model.nu)}
    index = SceneModel(
        model=model,
        arm_qpos_adr={arm: arm_qpos_addresses(model, arm) for arm in ARM_NAMES},
        arm_dof_adr={arm: arm_dof_addresses(model, arm) for arm in ARM_NAMES},
        arm_actuator_ids={
            arm: np.array([actuators[model.joint(joint_name(arm, j)).id] for j in ARM_JOINTS]) for arm in ARM_NAMES
        },
        finger_qpos_adr={
            arm: tuple(int(model.jnt_qposadr[model.joint(joint_name(arm, f)).id]) for f in ("left_finger", "right_finger"))
            for arm in ARM_NAMES
        },
        finger_dof_adr={
            arm: tuple(int(model.jnt_dofadr[model.joint(joint_name(arm, f)).id]) for f in ("left_finger", "right_finger"))
            for arm in ARM_NAMES
        },
        finger_actuator_ids={
            arm: tuple(int(actuators[model.joint(joint_name(arm, f)).id]) for f in ("left_finger", "right_finger"))
            for arm in ARM_NAMES
        },
        gripper_body_id={arm: model.body(gripper_body_name(arm)).id for arm in ARM_NAMES},
        grasp_site_id={arm: model.site(grasp_site_name(arm)).id for arm in ARM_NAMES},
        towel_vertex_body_ids=vertex_bodies,
        towel_vertex_qpos_adr=qpos_adr,
        towel_vertex_dof_adr=dof_adr,
        towel_rest_m=rest,
        towel_corner_ids=corners,
        grasp_eq_ids={arm: np.array([model.equality(n).id for n in names]) for arm, names in grasp_eq_names.items()},
        camera_names=tuple(c for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")),
    )
    return index


def _corner_ids(rest_m: np.ndarray) -> dict[str, int]:
    """The four corner vertices of a flat towel: near = low y (operator side), left = low x."""
    xy = rest_m[:, :2]
    return {
        "near_left": int(np.argmin(xy[:, 0] + xy[:, 1])),
        "near_right": int(np.argmin(-xy[:, 0] + xy[:, 1])),
        "far_left": int(np.argmin(xy[:, 0] - xy[:, 1])),
        "far_right": int(np.argmax(xy[:, 0] + xy[:, 1])),
    }


def cloth_xy_dofs(index: SceneModel) -> np.ndarray:
    """(N, 2) dof addresses of the towel vertices' x and y slides."""
    return index.towel_vertex_dof_adr[:, :2]


def update_cloth_table_friction(model: mujoco.MjModel, data: mujoco.MjData, index: SceneModel) -> None:
    """Table friction of the cloth, set before each physics step.

    A vertex lying on the table (within `CLOTH_TABLE_CONTACT_BAND_M` of its z-slide limit) gets
    dry friction on its x/y slides of mu * m * g (its weight; what presses a cloth vertex onto a
    table is its own weight, the arms press through contacts of their own); a lifted vertex gets
    none. MuJoCo solves `frictionloss` as a one-row constraint per dof, so this is Coulomb
    friction at the cost of two single-entry constraint rows per resting vertex.
    """
    z_rel = data.qpos[index.towel_vertex_qpos_adr[:, 2]]
    on_table = z_rel < CLOTH_TABLE_CONTACT_BAND_M
    weight_n = model.body_mass[index.towel_vertex_body_ids] * -model.opt.gravity[2]
    friction_n = np.where(on_table, CLOTH_TABLE_FRICTION * weight_n, 0.0)
    model.dof_frictionloss[index.towel_vertex_dof_adr[:, 0]] = friction_n
    model.dof_frictionloss[index.towel_vertex_dof_adr[:, 1]] = friction_n
