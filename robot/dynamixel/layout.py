"""Which servo drives which joint: the ALOHA arm layouts (ids, models, shadow motors).

A layout is a rig setting (a rig file may name another); these are the defaults for the arms of
ALOHA.md. Joint order is `robot.types.ARM_JOINT_NAMES`.

Shadow motors: the ViperX/WidowX shoulder and elbow are driven by two servos. The second one has
its own ID (for ping and diagnostics) and Secondary_ID set to the first one's ID, so it obeys every
RAM write sent to the first one without answering. Only the primary ID is ever commanded or read
in the control loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from robot.dynamixel.control_table import ServoModel, model_named
from robot.types import ARM_JOINT_NAMES


@dataclass(frozen=True)
class JointSpec:
    """One joint: its primary servo and any shadow servos mirroring it."""

    name: str
    servo_id: int
    model_name: str
    shadow_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.servo_id <= 252:
            raise ValueError(f"joint {self.name}: servo id must be 0..252, got {self.servo_id}")
        for sid in self.shadow_ids:
            if not 0 <= sid <= 252 or sid == self.servo_id:
                raise ValueError(
                    f"joint {self.name}: shadow id {sid} must be 0..252 and differ from the primary id {self.servo_id}"
                )
        model_named(self.model_name)  # raises with the known names

    @property
    def model(self) -> ServoModel:
        return model_named(self.model_name)


@dataclass(frozen=True)
class ArmLayout:
    """The seven joints of one arm, in ARM_JOINT_NAMES order."""

    name: str
    joints: tuple[JointSpec, ...]

    def __post_init__(self) -> None:
        names = tuple(j.name for j in self.joints)
        if names != ARM_JOINT_NAMES:
            raise ValueError(f"layout {self.name}: joints must be {ARM_JOINT_NAMES} in that order, got {names}")
        ids = [i for j in self.joints for i in (j.servo_id, *j.shadow_ids)]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"layout {self.name}: servo ids {dupes} are used twice; every servo on a bus needs its own id")

    @property
    def primary_ids(self) -> tuple[int, ...]:
        return tuple(j.servo_id for j in self.joints)

    @property
    def all_ids(self) -> tuple[int, ...]:
        return tuple(i for j in self.joints for i in (j.servo_id, *j.shadow_ids))

    def shadow_of(self) -> dict[int, int]:
        """shadow id -> primary id."""
        return {s: j.servo_id for j in self.joints for s in j.shadow_ids}

    def model_of(self, servo_id: int) -> ServoModel:
        for j in self.joints:
            if servo_id == j.servo_id or servo_id in j.shadow_ids:
                return j.model
        raise KeyError(f"servo id {servo_id} is not part of layout {self.name}")


def _arm(name: str, models: tuple[str, ...]) -> ArmLayout:
    # Interbotix numbering: 1 waist, 2 shoulder (+3 shadow), 4 elbow (+5 shadow), 6..9 the rest.
    ids = (1, 2, 4, 6, 7, 8, 9)
    shadows = {2: (3,), 4: (5,)}
    return ArmLayout(
        name,
        tuple(JointSpec(n, i, m, shadows.get(i, ())) for n, i, m in zip(ARM_JOINT_NAMES, ids, models)),
    )


#: ViperX 300 6-DoF follower: XM540-W270 from waist to wrist angle, XM430-W350 wrist rotate and
#: gripper (Trossen's bill of materials).
VIPERX_300_FOLLOWER = _arm(
    "viperx_300_follower",
    ("XM540-W270", "XM540-W270", "XM540-W270", "XM540-W270", "XM540-W270", "XM430-W350", "XM430-W350"),
)

#: WidowX 250 leader as ALOHA builds it: XM430-W350 joints, XL430 wrist rotate, XC430-W150 handle.
WIDOWX_250_LEADER = _arm(
    "widowx_250_leader",
    ("XM430-W350", "XM430-W350", "XM430-W350", "XM430-W350", "XM430-W350", "XL430-W250", "XC430-W150"),
)

LAYOUTS = {layout.name: layout for layout in (VIPERX_300_FOLLOWER, WIDOWX_250_LEADER)}
