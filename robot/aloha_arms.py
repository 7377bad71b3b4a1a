"""The Dynamixel arms of an ALOHA rig file as both rigs that drive them open them: `open_arm`
(one `[[arms]]` entry -> a connected FollowerArm or LeaderArm with its calibration),
`start_emulated_buses` (the pty servo emulators the emulated kinds use instead of ports) and
`LeaderArmsSource` (the leader arms as the operator's `ActionSource`).

Used by `AlohaRig` (robot.real_rig) and `SimLeadersRig` (robot.sim_leaders), so the leaders are
read with the same drivers, calibration store and gripper mapping on either.

Threads: `open_arm` and `start_emulated_buses` by the rig's owner (its `connect()`); the
`LeaderArmsSource` by the control thread only.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from robot.dynamixel.arm import ArmConfig, ArmRole, DynamixelArm, FollowerArm, LeaderArm
from robot.dynamixel.calibration import ArmCalibration, CalibrationStore
from robot.dynamixel.layout import LAYOUTS
from robot.real_rig_config import AlohaSettings, ArmEntry
from robot.rig import RigError
from robot.types import ControlSource, Observation


def open_arm(entry: ArmEntry, port: str, settings: AlohaSettings, store: CalibrationStore,
             note_uncalibrated: Callable[[str, str], None]) -> DynamixelArm:
    """Build and connect the arm of one `[[arms]]` entry on `port`: a FollowerArm or LeaderArm
    with its calibration from `store` (shared by AlohaRig and the sim-leaders rig).

    An arm without a calibration file raises RigError when `settings.require_calibration`, else
    gets the factory zero and `note_uncalibrated(name, message)` is called (for the status bar).
    Owner thread (connect)."""
    s = settings
    arm_config = ArmConfig(
        entry.name, entry.role, s.bus_config(port),
        layout=LAYOUTS[entry.layout] if entry.layout else None,
        velocity_limit=s.velocity_limit, gripper_current_limit=s.gripper_current_limit,
        bus_watchdog_ms=s.bus_watchdog_ms,
    )
    if store.exists(entry.name):
        calibration = store.load(entry.name)
    elif s.require_calibration:
        raise RigError(f"Arm {entry.name} has no calibration in {store.directory}. Calibrate it from the rig panel first.")
    else:
        note_uncalibrated(entry.name, f"{entry.name} is not calibrated (factory zero assumed); "
                                      "calibrate it before recording data to keep.")
        calibration = ArmCalibration.default(entry.name, arm_config.layout)
    cls = FollowerArm if entry.role is ArmRole.FOLLOWER else LeaderArm
    arm = cls(arm_config, calibration)
    arm.connect()
    return arm


def start_emulated_buses(names: Iterable[str], baud_rate: int, start_pose_rad: Sequence[float]) -> dict:
    """Start the protocol-level servo emulators (pty ports, scripted hands on the leaders) for
    the arms in `names` (of `robot.real_rig_config.ARM_IDS`), all joints at `start_pose_rad` (7 values); returns
    {name: ServoBusEmulator}, started. Stop each with `.stop()`."""
    from robot.dynamixel.emulator import aloha_buses  # only the emulated kinds need it

    buses = {name: bus for name, bus in aloha_buses(baud_rate=baud_rate, start_pose_rad=start_pose_rad).items()
             if name in names}
    started = {}
    try:
        for name, bus in buses.items():
            started[name] = bus.start()
    except BaseException:
        for bus in started.values():
            bus.stop()
        raise
    return started


class LeaderDrivenRig(Protocol):
    """What `LeaderArmsSource` needs of its rig (AlohaRig, SimLeadersRig)."""

    name: str

    @property
    def started(self) -> bool: ...

    def leader_action(self) -> np.ndarray: ...


class LeaderArmsSource:
    """The leader arms as an `ActionSource` (robot.types): the operator's hands drive the followers.
    Control thread only."""

    name = "leader arms"
    kind = ControlSource.TELEOP

    def __init__(self, rig: LeaderDrivenRig) -> None:
        self._rig = rig

    def start(self, observation: Observation) -> None:
        if not self._rig.started:
            raise RigError("The arms are not started. Press Start arms and squeeze both leader grippers first.")

    def next_action(self, observation: Observation) -> np.ndarray | None:
        if not self._rig.started:
            return None  # the loop holds and says the source ran dry
        return self._rig.leader_action()

    def stop(self) -> None:
        pass  # the leaders stay limp for the operator

    @property
    def finished(self) -> bool:
        return False
