"""Open a rig from its rig file: a small registry of rig kinds.

    rig, rig_file = open_rig("configs/sim.toml")
    rig.connect()            # the caller connects (building the sim or opening ports takes time)
    loop = ControlLoop(rig, rig_file.control)

Each kind names the tables it reads besides [rig], [control] and [recording] and a builder
`build(rig_file) -> Rig`. Builders are given as "module:function" strings and imported only when
that kind is opened, so listing kinds (or opening the sim) never imports a hardware SDK.

Adding a kind (the Dynamixel/RealSense rig, say): write `build_aloha(rig_file)` in its own module,
reading its tables with `rig_file.section("...", Config)` / `rig_file.array("arms", ArmConfig)`
(which give line-numbered errors), and add a `RigKind` to `RIG_KINDS` below - or call
`register_rig_kind()` at start-up.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robot.rig import Rig
from robot.rig_config import COMMON_SECTIONS, RigFile, RigFileError, did_you_mean, load_rig_file


@dataclass(frozen=True)
class RigKind:
    """name: the `[rig] kind` value; sections: the extra tables it reads; builder: a function
    taking a RigFile and returning an unconnected Rig, or its "module:function" name (imported
    only when the kind is opened)."""

    name: str
    sections: tuple[str, ...]
    builder: str | Callable[[RigFile], Rig]
    description: str = ""

    def build(self, rig_file: RigFile) -> Rig:
        function = self.builder
        if isinstance(function, str):
            module_name, _, function_name = function.partition(":")
            function = getattr(importlib.import_module(module_name), function_name)
        return function(rig_file)


RIG_KINDS: dict[str, RigKind] = {}


def register_rig_kind(kind: RigKind) -> None:
    """Add (or replace) a rig kind."""
    if not kind.name or not (callable(kind.builder) or ":" in kind.builder):
        raise ValueError(f"a rig kind needs a name and a 'module:function' builder, got {kind!r}")
    RIG_KINDS[kind.name] = kind


def rig_kinds() -> tuple[str, ...]:
    return tuple(sorted(RIG_KINDS))


def open_rig(path: Path | str) -> tuple[Rig, RigFile]:
    """Read the rig file at `path` and build its rig (not connected).

    Raises RigFileError (file, line, key, and the fix) for any mistake in the file; errors of
    the rig itself while building (a missing package) come as RigError.
    """
    rig_file = load_rig_file(path)
    kind = RIG_KINDS.get(rig_file.rig.kind)
    if kind is None:
        raise rig_file.error(
            f"{rig_file.rig.kind!r} is not a rig kind.{did_you_mean(rig_file.rig.kind, RIG_KINDS)} "
            f"Kinds: {', '.join(rig_kinds())}.",
            "rig",
            "kind",
        )
    rig_file.check_sections(COMMON_SECTIONS + kind.sections, kind.name)
    return kind.build(rig_file), rig_file


# ---------------------------------------------------------------------------------- the sim kind


def build_sim(rig_file: RigFile) -> Rig:
    """The MuJoCo rig from `[sim]` (fields of `robot.sim.SimRigConfig`).

    The control rate and the name have one home each - [control] rate_hz and [rig] name - so
    they cannot disagree; the task defaults to [recording] task.
    """
    from robot.sim import SimRig, SimRigConfig  # mujoco loads only when a sim rig is opened
    from robot.types import DEFAULT_CAMERA_NAMES

    defaults = {
        "control_rate_hz": rig_file.control.rate_hz,
        "task": rig_file.recording.task,
    }
    if rig_file.rig.name:
        defaults["name"] = rig_file.rig.name
    config = rig_file.section(
        "sim",
        SimRigConfig,
        defaults=defaults,
        forbidden={"control_rate_hz": "[control] rate_hz", "name": "[rig] name"},
        origins={"control_rate_hz": (("control",), "rate_hz")},
    )
    if not config.camera_names:
        # SimRigConfig allows no cameras (fast arm-only tests build it directly); a rig file is
        # what the studio records from, and every episode needs at least one camera.
        raise rig_file.error(
            "is empty, but every episode records at least one camera; list one or more of "
            + ", ".join(f'"{name}"' for name in DEFAULT_CAMERA_NAMES),
            "sim",
            "camera_names",
        )
    return SimRig(config)


#: The kinds this package knows. Each builder is imported only when its kind is opened.
BUILTIN_RIG_KINDS: tuple[RigKind, ...] = (
    RigKind("sim", ("sim",), "robot.rigs:build_sim",
            "gym-aloha's ViperX bimanual model in MuJoCo with the towel task"),
    # The real ALOHA and its emulated twin (pty servo buses, RealSense software devices): the same
    # drivers either way. See robot/real_rig.py.
    RigKind("aloha", ("aloha", "arms", "cameras"), "robot.real_rig:build_aloha",
            "ALOHA on Dynamixel servos and RealSense cameras"),
    RigKind("aloha-emulated", ("aloha", "arms", "cameras"), "robot.real_rig:build_aloha_emulated",
            "ALOHA with emulated servo buses (pty) and emulated cameras"),
    # Real (or emulated) ALOHA leader arms driving the simulated followers. See robot/sim_leaders.py.
    RigKind("sim-leaders", ("sim", "aloha", "arms"), "robot.sim_leaders:build_sim_leaders",
            "ALOHA leader arms on Dynamixel driving the MuJoCo followers"),
    RigKind("sim-leaders-emulated", ("sim", "aloha", "arms"), "robot.sim_leaders:build_sim_leaders_emulated",
            "emulated leader arms (pty servo buses, scripted hands) driving the MuJoCo followers"),
)
for _kind in BUILTIN_RIG_KINDS:
    register_rig_kind(_kind)

__all__ = ["RigKind", "RIG_KINDS", "RigFileError", "open_rig", "register_rig_kind", "rig_kinds", "build_sim"]
