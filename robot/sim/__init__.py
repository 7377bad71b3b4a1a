"""The simulated rig: gym-aloha's ViperX bimanual model in MuJoCo, a cloth towel, a grasp model,
the towel-fold task and a scripted demonstrator.

Importing this package chooses the offscreen GL backend (see `robot.sim.gl`) before mujoco is
imported. The heavy modules load lazily, so `robot.kinematics` can use the scene builder without
pulling in rendering.
"""

from __future__ import annotations

import importlib

from robot.sim.gl import select_backend

select_backend()

_EXPORTS = {
    "SimRig": "robot.sim.sim_rig",
    "SimRigConfig": "robot.sim.config",
    "TowelTask": "robot.sim.towel_task",
    "TowelFoldResult": "robot.sim.towel_task",
    "ScriptedFoldDemonstrator": "robot.sim.demonstrator",
    "DemonstratorConfig": "robot.sim.demonstrator",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'robot.sim' has no attribute {name!r}")
