"""The emulated ALOHA rig: arms of emulated servos as they leave the factory set-up, scripted
operators for the leader arms, and the four buses of a bimanual rig (used by the emulated rig
files through `robot.aloha_arms`, by the tests and by `python -m robot.dynamixel.emulator`)."""

from __future__ import annotations

from typing import Iterable

from robot.dynamixel.emulator.bus import ServoBusEmulator
from robot.dynamixel.emulator.motions import JointMotion, Sinusoid, Squeeze
from robot.dynamixel.emulator.servo import EmulatedServo
from robot.dynamixel.layout import VIPERX_300_FOLLOWER, WIDOWX_250_LEADER, ArmLayout


def arm_servos(
    layout: ArmLayout,
    joint_pos_rad: Iterable[float] | None = None,
    *,
    baud_rate: int = 1_000_000,
    firmware_version: int = 46,
) -> list[EmulatedServo]:
    """Emulated servos for one arm as it leaves the factory set-up: ids, models, shadow links
    (Secondary_ID of each shadow = its primary's id), joints at `joint_pos_rad` (default 0)."""
    q = list(joint_pos_rad) if joint_pos_rad is not None else [0.0] * len(layout.joints)
    if len(q) != len(layout.joints):
        raise ValueError(f"{layout.name}: need {len(layout.joints)} joint positions, got {len(q)}")
    servos = []
    for joint, pos in zip(layout.joints, q):
        servos.append(EmulatedServo(joint.model, joint.servo_id, position_rad=pos, baud_rate=baud_rate,
                                    firmware_version=firmware_version))
        for sid in joint.shadow_ids:
            servos.append(EmulatedServo(joint.model, sid, secondary_id=joint.servo_id, position_rad=pos,
                                        baud_rate=baud_rate, firmware_version=firmware_version))
    return servos


def leader_motions(
    layout: ArmLayout,
    *,
    gripper_closed_rad: float = -0.6842,
    amplitude_rad: float = 0.15,
    period_s: float = 4.0,
    squeeze_every_s: float | None = 3.0,
) -> dict[int, JointMotion]:
    """A gentle scripted operator for one leader arm: each joint sways around where it was
    released (phases staggered), the gripper handle is squeezed (every `squeeze_every_s`, or
    once and held when None)."""
    motions: dict[int, JointMotion] = {}
    for k, joint in enumerate(layout.joints):
        if joint.name == "gripper":
            motions[joint.servo_id] = Squeeze(closed_rad=gripper_closed_rad, repeat_s=squeeze_every_s,
                                              hold_s=1.0 if squeeze_every_s else 0.0)
        else:
            motions[joint.servo_id] = Sinusoid(amplitude_rad, period_s, phase_rad=0.9 * k)
    return motions


def aloha_buses(
    *,
    baud_rate: int = 1_000_000,
    start_pose_rad: Iterable[float] | None = None,
    usb_latency_ms: float = 0.0,
) -> dict[str, ServoBusEmulator]:
    """The four buses of a bimanual ALOHA rig (not started): leader_left/right (WidowX 250 with
    scripted hands attached) and follower_left/right (ViperX 300)."""
    pose = list(start_pose_rad) if start_pose_rad is not None else None
    buses = {}
    for side in ("left", "right"):
        leader = ServoBusEmulator(arm_servos(WIDOWX_250_LEADER, pose, baud_rate=baud_rate),
                                  name=f"leader_{side}", usb_latency_ms=usb_latency_ms)
        for sid, motion in leader_motions(WIDOWX_250_LEADER).items():
            leader.attach_motion(sid, motion)
        buses[f"leader_{side}"] = leader
        buses[f"follower_{side}"] = ServoBusEmulator(arm_servos(VIPERX_300_FOLLOWER, pose, baud_rate=baud_rate),
                                                     name=f"follower_{side}", usb_latency_ms=usb_latency_ms)
    return buses

