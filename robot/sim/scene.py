"""Build the MuJoCo scene from gym-aloha's ViperX bimanual model (referenced, never copied).

`arms_spec()` is the two arms with their position actuators and the table (used by
`robot.kinematics`); `build_scene()` adds what the towel task needs (see its docstring).
"""

from __future__ import annotations

import importlib.resources
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
