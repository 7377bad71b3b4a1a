"""The rig interface: what the control loop needs from a simulated or a real bimanual arm.

A rig is used by one thread at a time: `connect()` and `disconnect()` by whoever owns it,
`read()` and `command()` by the control thread only. Cameras run their own threads inside the
rig; `read()` returns the latest frame of each with its capture time.
"""

from __future__ import annotations

import abc

import numpy as np

from robot.types import JointLimits, Observation, RigStatus


class RigError(RuntimeError):
    """A rig failed in a way the user must act on. The message says what happened and what to do."""


class Rig(abc.ABC):
    """A bimanual ALOHA-style rig speaking the 14-D convention of `robot.types`."""

    name: str
    camera_names: tuple[str, ...]
    control_rate_hz: float
    #: True when a control tick advances simulated time (the loop then never skips a tick).
    simulated: bool = False

    @abc.abstractmethod
    def connect(self) -> None:
        """Open devices (or build the simulation). Idempotent."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Leave the rig safe (torque off on hardware) and release devices. Idempotent."""

    @abc.abstractmethod
    def read(self) -> Observation:
        """Read the current state and the latest camera frames (control thread)."""

    @abc.abstractmethod
    def command(self, action: np.ndarray) -> None:
        """Send a (14,) action (already through the safety filter) to the followers.

        On a simulated rig this also advances the simulation by one control period.
        """

    @abc.abstractmethod
    def joint_limits(self) -> JointLimits:
        """Position limits and the largest allowed change per tick, in the action convention."""

    def on_estop(self) -> None:
        """Called once on the control thread when the E-stop latches. The loop keeps commanding
        the hold pose while latched; a hardware rig may cut torque here (and ignore commands
        until `on_estop_cleared`). Default: nothing."""

    def on_estop_cleared(self) -> None:
        """Called once on the control thread when the E-stop is cleared (the loop then holds)."""

    def status(self) -> RigStatus:
        """A health summary for the status bar; any thread may call it."""
        return RigStatus(name=self.name)

    def __enter__(self) -> "Rig":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
