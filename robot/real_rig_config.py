"""The real ALOHA rig's configuration, as its rig file gives it: the `[aloha]` table
(`AlohaSettings`), one `ArmEntry` per `[[arms]]` table and the whole `AlohaRigConfig`, each checking
its own values on construction (ValueError says the fix), plus the readers that build them from a
`RigFile` with line-numbered errors.

`AlohaRig` (robot.real_rig) is built from an `AlohaRigConfig`; the sim-leaders rig
(robot.sim_leaders) reads the same `[aloha]` and `[[arms]]` tables for its leader arms.

Threads: plain frozen values; built by whoever opens the rig file (the owner), read from any thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from robot.aloha import CONTROL_RATE_HZ, GripperCalibration, GripperRange
from robot.cameras.base import CameraConfig
from robot.cameras.registry import camera_config_from_table
from robot.dynamixel.arm import ArmRole
from robot.dynamixel.bus import BusConfig
from robot.dynamixel.layout import LAYOUTS
from robot.dynamixel.leader_follow import LeaderFollowConfig
from robot.dynamixel.safe_start import SafeStartConfig
from robot.rig_config import RigFile

ARM_IDS: tuple[str, ...] = ("follower_left", "follower_right", "leader_left", "leader_right")
#: ViperX 300 joint ranges (rad), as in the Interbotix description and gym-aloha's MJCF.
VX300_LOW_RAD = (-3.14158, -1.85005, -1.76278, -3.14158, -1.8675, -3.14158)
VX300_HIGH_RAD = (3.14158, 1.25664, 1.6057, 3.14158, 2.23402, 3.14158)


@dataclass(frozen=True)
class AlohaSettings:
    """The `[aloha]` table. Every number that differs between rigs is here (defaults: ALOHA and
    Trossen's advice, see ALOHA.md); the units are in the names.

    calibration_dir: per-arm calibration JSON (relative to the rig file's folder in the file).
    require_calibration: refuse to connect an arm with no calibration file (else the factory
      assumption, 2048 pulses = 0 rad, is used and the status bar says so).
    """

    calibration_dir: Path = Path("../calibration")
    require_calibration: bool = False
    baud_rate: int = 1_000_000
    latency_timer_ms: float = 1.0
    retries: int = 2
    call_budget_ms: float = 12.0
    fast_sync_read: str = "auto"
    velocity_limit: int = 131
    gripper_current_limit: int = 300
    bus_watchdog_ms: int = 100
    torque_watchdog_ms: float = 200.0
    health_period_s: float = 1.0
    arm_ramp_s: float = 1.5
    gripper_ramp_s: float = 0.5
    squeeze_below_rad: float = -0.3
    handover_max_step_rad: float = 0.02
    leader_gripper_open_rad: float = 0.3083
    leader_gripper_close_rad: float = -0.6842
    follower_gripper_open_rad: float = 1.4910
    follower_gripper_close_rad: float = -0.6213
    follower_finger_open_m: float = 0.05800
    follower_finger_close_m: float = 0.01844
    gripper_horn_radius_m: float = 0.022
    gripper_arm_length_m: float = 0.036
    joint_low_rad: tuple[float, ...] = VX300_LOW_RAD
    joint_high_rad: tuple[float, ...] = VX300_HIGH_RAD
    max_joint_speed_rad_s: float = 3.0
    max_gripper_speed_per_s: float = 5.0
    max_temperature_c: float = 65.0
    leader_follow_p_gain: int = 200
    leader_push_threshold_rad: float = 0.15
    leader_push_ticks: int = 3
    leader_follow_grace_s: float = 0.5

    def __post_init__(self) -> None:
        if len(self.joint_low_rad) != 6 or len(self.joint_high_rad) != 6:
            raise ValueError("joint_low_rad and joint_high_rad need the 6 arm joints each (waist .. wrist_rotate)")
        if any(lo >= hi for lo, hi in zip(self.joint_low_rad, self.joint_high_rad)):
            raise ValueError("joint_low_rad must be below joint_high_rad for every joint")
        if self.health_period_s <= 0 or self.torque_watchdog_ms <= 0 or self.handover_max_step_rad <= 0:
            raise ValueError("health_period_s, torque_watchdog_ms and handover_max_step_rad must be > 0")
        if self.max_joint_speed_rad_s <= 0 or self.max_gripper_speed_per_s <= 0:
            raise ValueError("max_joint_speed_rad_s and max_gripper_speed_per_s must be > 0 (ALOHA-like: 3.0 and 5.0)")
        self.grippers()  # GripperRange / SafeStartConfig check the gripper numbers
        self.safe_start_config()
        self.leader_follow_config()

    def grippers(self) -> GripperCalibration:
        defaults = GripperCalibration()
        return GripperCalibration(
            leader_finger_m=defaults.leader_finger_m,
            follower_finger_m=GripperRange(self.follower_finger_open_m, self.follower_finger_close_m),
            leader_joint_rad=GripperRange(self.leader_gripper_open_rad, self.leader_gripper_close_rad),
            follower_joint_rad=GripperRange(self.follower_gripper_open_rad, self.follower_gripper_close_rad),
        )

    def safe_start_config(self) -> SafeStartConfig:
        return SafeStartConfig(arm_ramp_s=self.arm_ramp_s, gripper_ramp_s=self.gripper_ramp_s,
                               squeeze_below_rad=self.squeeze_below_rad, grippers=self.grippers())

    def leader_follow_config(self) -> LeaderFollowConfig:
        """How the leaders follow the followers while a policy drives (robot.dynamixel.leader_follow)."""
        return LeaderFollowConfig(p_gain=self.leader_follow_p_gain, max_step_rad=self.handover_max_step_rad,
                                  push_threshold_rad=self.leader_push_threshold_rad,
                                  push_ticks=self.leader_push_ticks, grace_s=self.leader_follow_grace_s)

    def bus_config(self, port: str) -> BusConfig:
        return BusConfig(port, baud_rate=self.baud_rate, latency_timer_ms=self.latency_timer_ms, retries=self.retries,
                         call_budget_ms=self.call_budget_ms, fast_sync_read=self.fast_sync_read)


@dataclass(frozen=True)
class ArmEntry:
    """One `[[arms]]` table: which arm (follower_left, follower_right, leader_left, leader_right),
    its serial port (udev symlinks such as /dev/ttyDXL_puppet_left) and optionally its layout."""

    name: str
    port: str = ""
    layout: str = ""

    def __post_init__(self) -> None:
        if self.name not in ARM_IDS:
            raise ValueError(f"name must be one of {', '.join(ARM_IDS)}, got {self.name!r}")
        if self.layout and self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")

    @property
    def role(self) -> ArmRole:
        return ArmRole.FOLLOWER if self.name.startswith("follower") else ArmRole.LEADER


@dataclass(frozen=True)
class AlohaRigConfig:
    """The whole rig: its name, the `[aloha]` settings, the four arms (exactly one entry per id in
    ARM_IDS; each needs a port unless `emulate`), the cameras and the control rate (Hz, from
    `[control] rate_hz`). emulate: serve the buses from pty emulators instead of the ports."""

    name: str
    settings: AlohaSettings
    arms: tuple[ArmEntry, ...]
    cameras: tuple[CameraConfig, ...] = ()
    control_rate_hz: float = CONTROL_RATE_HZ
    emulate: bool = False

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        missing = [n for n in ARM_IDS if n not in names]
        if missing or len(names) != len(set(names)):
            raise ValueError(f"the rig needs exactly one [[arms]] table for each of {', '.join(ARM_IDS)}; "
                             f"missing: {', '.join(missing) or 'none'}, given: {', '.join(names)}")
        if not self.emulate:
            for a in self.arms:
                if not a.port:
                    raise ValueError(f"arm {a.name} has no port; add port = \"/dev/ttyDXL_...\" to its [[arms]] table")

    def arm(self, name: str) -> ArmEntry:
        return next(a for a in self.arms if a.name == name)


# --- rig files --------------------------------------------------------------------------------
def aloha_settings_from_rig_file(rig_file: RigFile) -> AlohaSettings:
    """The `[aloha]` table, with a relative calibration_dir taken from the rig file's folder."""
    settings = rig_file.section("aloha", AlohaSettings)
    if not settings.calibration_dir.is_absolute():
        settings = dataclasses.replace(settings, calibration_dir=(rig_file.path.parent / settings.calibration_dir).resolve())
    return settings


def aloha_rig_config_from_rig_file(rig_file: RigFile, *, emulate: bool = False) -> AlohaRigConfig:
    """The rig's configuration from a rig file's [aloha], [[arms]] and [[cameras]] tables."""
    settings = aloha_settings_from_rig_file(rig_file)
    arms = rig_file.array("arms", ArmEntry)
    cameras = []
    for i, table in enumerate(rig_file.data.get("cameras", [])):
        try:
            cameras.append(camera_config_from_table(table))
        except ValueError as exc:
            raise rig_file.error(str(exc), ("cameras", i)) from None
    try:
        return AlohaRigConfig(
            name=rig_file.rig.name or ("aloha-emulated" if emulate else "aloha"),
            settings=settings,
            arms=tuple(arms),
            cameras=tuple(cameras),
            control_rate_hz=rig_file.control.rate_hz,
            emulate=emulate,
        )
    except ValueError as exc:
        raise rig_file.error(str(exc), ("arms", 0) if rig_file.has("arms") else "aloha") from None
