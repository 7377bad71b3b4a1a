"""One ALOHA arm on its own Dynamixel bus: a follower (ViperX, position control, current-limited
gripper) or a leader (WidowX, torque off while a person moves it), plus the ALOHA mapping from
leader joints to follower commands and from follower readings to observations.

Per-arm vectors are (7,) in `robot.types.ARM_JOINT_NAMES` order, joints in radians after
calibration, the gripper as its joint angle in radians. Normalised grippers (the 14-D convention)
appear only in `TeleopMapping`.

Threads: an arm is used by whoever owns it (the control thread while the loop runs, the GUI's
worker while calibrating); its bus serialises calls, so a health poll from another thread is safe.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

import numpy as np

from robot.aloha import ALOHA_GRIPPERS, GripperCalibration
from robot.dynamixel import control_table as ct
from robot.dynamixel.bus import BusConfig, DynamixelBus, SdkLink
from robot.dynamixel.calibration import ArmCalibration
from robot.dynamixel.errors import BusWatchdogTripped, DynamixelError
from robot.dynamixel.control_table import OperatingMode
from robot.dynamixel.layout import VIPERX_300_FOLLOWER, WIDOWX_250_LEADER, ArmLayout
from robot.types import JOINTS_PER_ARM

log = logging.getLogger(__name__)

GRIPPER = JOINTS_PER_ARM - 1  # index of the gripper in a (7,) arm vector


class ArmRole(str, enum.Enum):
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(frozen=True)
class ArmConfig:
    """One arm as the rig file names it. Every constant here is a rig setting.

    velocity_limit: Velocity_Limit of the follower joints in 0.229 rpm units (Trossen: 131 = 30 rpm).
    gripper_current_limit: Current_Limit and Goal_Current of the follower gripper in 2.69 mA units
      (Trossen: 300 = 0.81 A); with current-based position control the gripper cannot crush.
    bus_watchdog_ms: the servos' own watchdog (Bus_Watchdog, 20 ms steps): a follower stops where it
      is when no packet reaches it for this long, even if this process hangs or dies; 0 disables it.
    watchdog_check_every: a stopped follower ignores goals without a word (sync writes get no
      reply), so every this many reads the follower also reads Bus_Watchdog (one 1-byte sync
      read) and raises BusWatchdogTripped. At 50 Hz, 5 = 100 ms.
    """

    arm_id: str
    role: ArmRole
    bus: BusConfig
    layout: ArmLayout | None = None
    velocity_limit: int = 131
    gripper_current_limit: int = 300
    bus_watchdog_ms: int = 100
    watchdog_check_every: int = 5

    def __post_init__(self) -> None:
        if not self.arm_id:
            raise ValueError("ArmConfig.arm_id is empty: name the arm, e.g. follower_left")
        object.__setattr__(self, "role", ArmRole(self.role))
        if self.layout is None:
            object.__setattr__(self, "layout",
                               VIPERX_300_FOLLOWER if self.role is ArmRole.FOLLOWER else WIDOWX_250_LEADER)
        if not 0 <= self.velocity_limit <= 1023:
            raise ValueError(f"{self.arm_id}: velocity_limit must be 0..1023 (0.229 rpm units), got {self.velocity_limit}; Trossen uses 131")
        gripper_model = self.layout.joints[GRIPPER].model
        if self.role is ArmRole.FOLLOWER:
            if not gripper_model.has_current_sensing:
                raise ValueError(f"{self.arm_id}: the follower gripper ({gripper_model.name}) has no current control; use an XM servo")
            if not 0 < self.gripper_current_limit <= gripper_model.max_current_limit:
                raise ValueError(
                    f"{self.arm_id}: gripper_current_limit must be 1..{gripper_model.max_current_limit} "
                    f"(2.69 mA units), got {self.gripper_current_limit}; Trossen uses 300"
                )
        if self.watchdog_check_every < 1:
            raise ValueError(f"{self.arm_id}: watchdog_check_every must be >= 1 (reads), got {self.watchdog_check_every}")
        if self.bus_watchdog_ms < 0 or self.bus_watchdog_ms > 127 * ct.MS_PER_WATCHDOG_UNIT or self.bus_watchdog_ms % ct.MS_PER_WATCHDOG_UNIT:
            raise ValueError(f"{self.arm_id}: bus_watchdog_ms must be a multiple of 20 up to 2540 (0 = off), got {self.bus_watchdog_ms}")


@dataclass(frozen=True)
class ArmReading:
    """One read of an arm. joint_pos_rad, joint_vel_rad_s: (7,) float64; effort: (7,) float64,
    mA on servos with current sensing, % of max load on the others; alerts: joint names whose
    servo has its hardware-alert bit set; time_s: host monotonic time of the reply."""

    joint_pos_rad: np.ndarray
    joint_vel_rad_s: np.ndarray
    effort: np.ndarray
    time_s: float
    alerts: tuple[str, ...] = ()


class DynamixelArm:
    """An arm on its bus. `connect()` checks the servos against the layout and the calibration,
    then configures them (`configure()`); `disconnect()` cuts the torque first."""

    def __init__(self, config: ArmConfig, calibration: ArmCalibration | None = None, *, link: SdkLink | None = None) -> None:
        self.config = config
        self.layout: ArmLayout = config.layout
        self.calibration = calibration or ArmCalibration.default(config.arm_id, self.layout)
        self.calibration.check_layout(self.layout, config.bus.port)
        servos = {sid: self.layout.model_of(sid) for sid in self.layout.all_ids}
        names = {}
        for j in self.layout.joints:
            names[j.servo_id] = j.name
            names.update({s: f"{j.name} shadow" for s in j.shadow_ids})
        self.bus = DynamixelBus(config.bus, servos, joint_names=names, link=link)
        self.ids = self.layout.primary_ids
        self._scale = np.array([j.model.current_ma_per_unit or ct.PERCENT_PER_LOAD_UNIT for j in self.layout.joints])
        self._clip_warned = False

    @property
    def arm_id(self) -> str:
        return self.config.arm_id

    @property
    def connected(self) -> bool:
        return self.bus.connected

    def connect(self) -> None:
        if self.bus.connected:
            return
        self.bus.connect()
        try:
            found = {sid: self.bus.servos[sid].model_number for sid in self.layout.all_ids}
            self.calibration.check_servos(found, self.bus.port)
            self.configure()
        except BaseException:
            self.bus.disconnect()
            raise

    def disconnect(self) -> None:
        """Torque off (best effort: the arm may already be unreachable), then close the port."""
        if not self.bus.connected:
            return
        try:
            self.bus.set_torque(self.ids, False)
        except Exception as exc:  # the port is closing anyway; say so, don't hide it
            log.warning("%s: torque off on disconnect failed: %s", self.arm_id, exc)
        self.bus.disconnect()

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # -- set-up --
    def configure(self) -> bool:
        """Write the role's settings (operating modes, limits, return delay, watchdog).

        Only EEPROM values that differ are written (EEPROM wears out, and writing it needs the
        torque off). If any had to be written the torque is now off and the arm limp: call
        `set_torque(True)` next. Returns whether that happened.
        """
        wanted: dict[str, dict[int, int]] = {}  # register -> {servo id: value}
        for joint in self.layout.joints:
            for sid in (joint.servo_id, *joint.shadow_ids):  # EEPROM can't be reached through Secondary_ID
                for register, value in self._eeprom_settings(joint.name, joint.model).items():
                    wanted.setdefault(register, {})[sid] = value
        todo = []
        for register, values in wanted.items():  # one sync read per register: a few ms per arm
            current = self.bus.sync_read(register, list(values))
            todo += [(sid, register, value) for sid, value in values.items() if current[sid] != value]
        if todo:
            self.bus.set_torque(self.ids, False)
            for sid, register, value in todo:
                self.bus.write(sid, register, value)  # acknowledged, one by one: these must not be lost
        self._configure_ram()
        return bool(todo)

    def _eeprom_settings(self, joint: str, model: ct.ServoModel) -> dict[str, int]:
        return {"Return_Delay_Time": 0, "Operating_Mode": int(OperatingMode.POSITION)}

    def _configure_ram(self) -> None:
        # A stopped watchdog (-1) is cleared by writing 0; the servo ignores goals until then.
        self.bus.sync_write("Bus_Watchdog", {sid: 0 for sid in self.ids})

    # -- reading --
    def read_pulses(self) -> np.ndarray:
        """(7,) raw present positions (calibration procedure)."""
        return self.bus.read_state(self.ids).position

    def read(self) -> ArmReading:
        r = self.bus.read_state(self.ids)
        sign = self.calibration.velocity_sign()
        return ArmReading(
            joint_pos_rad=self.calibration.pulses_to_rad(r.position),
            joint_vel_rad_s=sign * ct.velocity_to_rad_s(r.velocity),
            effort=r.current.astype(np.float64) * self._scale,
            time_s=r.time_s,
            alerts=tuple(self.layout.joints[self.ids.index(i)].name for i in r.alerts),
        )

    # -- torque --
    def set_torque(self, enabled: bool, joints: tuple[str, ...] | None = None) -> None:
        """Torque on/off for some joints (default all). Turning it on first sets each goal to the
        present position, so the arm holds where it is instead of jumping to an old goal."""
        ids = self._ids_of(joints)
        if enabled:
            pos = self.bus.sync_read("Present_Position", ids)
            self.bus.sync_write("Goal_Position", pos)
        self.bus.set_torque(ids, enabled)

    def torque_enabled(self) -> dict[str, bool]:
        on = self.bus.sync_read("Torque_Enable", self.ids)
        return {j.name: bool(on[j.servo_id]) for j in self.layout.joints}

    def command(self, joint_pos_rad) -> None:
        """Send (7,) goal positions (rad, gripper as its joint angle). One sync write, no reply."""
        q = np.asarray(joint_pos_rad, dtype=np.float64)
        if q.shape != (JOINTS_PER_ARM,) or not np.all(np.isfinite(q)):
            raise ValueError(f"{self.arm_id}: command needs 7 finite joint angles, got {q!r}")
        pulses = self.calibration.rad_to_pulses(q)
        clipped = np.clip(pulses, 0, ct.PULSES_PER_REV - 1)  # position mode refuses goals outside one turn
        if not self._clip_warned and np.any(clipped != pulses):
            log.warning("%s: goals beyond the servo range clipped (joints %s)", self.arm_id,
                        [self.layout.joints[i].name for i in np.flatnonzero(clipped != pulses)])
            self._clip_warned = True
        self.bus.sync_write("Goal_Position", dict(zip(self.ids, clipped.tolist())))

    def reboot(self, joints: tuple[str, ...]) -> None:
        """Reboot servos (clears hardware errors, e.g. an overloaded gripper); torque comes back off."""
        for j in self.layout.joints:
            if j.name in joints:
                for sid in (j.servo_id, *j.shadow_ids):
                    self.bus.reboot(sid)

    def _ids_of(self, joints: tuple[str, ...] | None) -> list[int]:
        if joints is None:
            return list(self.ids)
        by_name = {j.name: j.servo_id for j in self.layout.joints}
        unknown = [n for n in joints if n not in by_name]
        if unknown:
            raise KeyError(f"{self.arm_id} has no joints {unknown}; joints are {list(by_name)}")
        return [by_name[n] for n in joints]


class FollowerArm(DynamixelArm):
    """A ViperX follower: joints in position mode under Velocity_Limit, the gripper in current-based
    position mode under its current limit, Bus_Watchdog armed."""

    def __init__(self, config: ArmConfig, calibration: ArmCalibration | None = None, *, link: SdkLink | None = None) -> None:
        if config.role is not ArmRole.FOLLOWER:
            raise ValueError(f"{config.arm_id} is configured as a {config.role.value}, not a follower")
        super().__init__(config, calibration, link=link)
        self._reads = 0

    def _eeprom_settings(self, joint: str, model: ct.ServoModel) -> dict[str, int]:
        settings = {"Return_Delay_Time": 0, "Velocity_Limit": self.config.velocity_limit}
        if joint == "gripper":
            settings["Operating_Mode"] = int(OperatingMode.CURRENT_BASED_POSITION)
            settings["Current_Limit"] = self.config.gripper_current_limit
        else:
            settings["Operating_Mode"] = int(OperatingMode.POSITION)
        return settings

    def _configure_ram(self) -> None:
        super()._configure_ram()
        gripper = self.layout.joints[GRIPPER].servo_id
        self.bus.sync_write("Goal_Current", {gripper: self.config.gripper_current_limit})
        units = self.config.bus_watchdog_ms // ct.MS_PER_WATCHDOG_UNIT
        if units:
            self.bus.sync_write("Bus_Watchdog", {sid: units for sid in self.ids})
        # Sync writes get no reply: read back what matters.
        armed = self.bus.sync_read("Bus_Watchdog", self.ids)
        current = self.bus.read(gripper, "Goal_Current")
        if any(v != units for v in armed.values()) or current != self.config.gripper_current_limit:
            raise DynamixelError(
                f"{self.arm_id}: the servos on {self.bus.port} did not take their settings (Bus_Watchdog "
                f"{sorted(set(armed.values()))}, gripper Goal_Current {current}). Reconnect the arm; if it "
                f"happens again, check the cable."
            )

    def read(self, check_watchdog: bool = True) -> ArmReading:
        """As `DynamixelArm.read`; every `watchdog_check_every` reads also checks Bus_Watchdog and
        raises BusWatchdogTripped if the servos stopped themselves (`check_watchdog=False`: the
        caller already knows the arm is not being driven)."""
        reading = super().read()
        if self.config.bus_watchdog_ms and check_watchdog:
            self._reads += 1
            if self._reads >= self.config.watchdog_check_every:
                self._reads = 0
                self.check_watchdog()
        return reading

    def check_watchdog(self) -> None:
        raw = self.bus.sync_read("Bus_Watchdog", self.ids)
        stopped = tuple(i for i in self.ids if raw[i] == -1)
        if stopped:
            names = tuple(self.layout.joints[self.ids.index(i)].name for i in stopped)
            raise BusWatchdogTripped(self.bus.port, stopped, self.config.bus_watchdog_ms, names)

    def watchdog_ms(self) -> dict[str, int]:
        """Bus_Watchdog as configured on each joint (ms; -1: it expired and stopped the servo)."""
        raw = self.bus.sync_read("Bus_Watchdog", self.ids)
        return {j.name: (raw[j.servo_id] * ct.MS_PER_WATCHDOG_UNIT if raw[j.servo_id] >= 0 else -1)
                for j in self.layout.joints}


class LeaderArm(DynamixelArm):
    """A WidowX leader: position mode while it is moved to a pose, torque off while a person
    teleoperates with it."""

    def __init__(self, config: ArmConfig, calibration: ArmCalibration | None = None, *, link: SdkLink | None = None) -> None:
        if config.role is not ArmRole.LEADER:
            raise ValueError(f"{config.arm_id} is configured as a {config.role.value}, not a leader")
        super().__init__(config, calibration, link=link)

    def release(self, joints: tuple[str, ...] | None = None) -> None:
        """Torque off so the operator can move it (all joints by default)."""
        self.set_torque(False, joints)


# --- the ALOHA mapping ----------------------------------------------------------------------------
@dataclass(frozen=True)
class GripperLinkage:
    """Follower gripper horn-and-link geometry: finger position from the gripper servo angle.

    finger_m = r sin(theta) + sqrt(L^2 - (r cos(theta))^2). With r = 0.022 m and L = 0.036 m it gives
    ALOHA's follower finger range (0.05800 m open at 1.4910 rad, 0.01844 m closed at -0.6213 rad)
    to within 0.2 mm; a rig with other fingers sets its own.
    """

    horn_radius_m: float = 0.022
    arm_length_m: float = 0.036

    def __post_init__(self) -> None:
        if not 0 < self.horn_radius_m < self.arm_length_m:
            raise ValueError("GripperLinkage needs 0 < horn_radius_m < arm_length_m")

    def finger_m(self, joint_rad):
        r, length = self.horn_radius_m, self.arm_length_m
        th = np.asarray(joint_rad, dtype=np.float64)
        return r * np.sin(th) + np.sqrt(length**2 - (r * np.cos(th)) ** 2)

    def finger_velocity_m_s(self, joint_rad, joint_vel_rad_s):
        r, length = self.horn_radius_m, self.arm_length_m
        th = np.asarray(joint_rad, dtype=np.float64)
        d = r * np.cos(th) + (r**2 * np.sin(th) * np.cos(th)) / np.sqrt(length**2 - (r * np.cos(th)) ** 2)
        return d * np.asarray(joint_vel_rad_s, dtype=np.float64)


@dataclass(frozen=True)
class TeleopMapping:
    """ALOHA's leader -> action -> follower -> observation conventions for one arm (ALOHA.md):
    action gripper = leader *joint* normalised; follower gripper command = follower joint
    unnormalised; observation gripper = follower *finger position* normalised."""

    grippers: GripperCalibration = ALOHA_GRIPPERS
    linkage: GripperLinkage = field(default_factory=GripperLinkage)

    def action_from_leader(self, leader_joint_rad) -> np.ndarray:
        """(7,) leader joints -> (7,) float32 action (gripper normalised)."""
        a = np.array(leader_joint_rad, dtype=np.float64)
        a[GRIPPER] = self.grippers.action_from_leader_joint(a[GRIPPER])
        return a.astype(np.float32)

    def follower_command(self, action) -> np.ndarray:
        """(7,) action -> (7,) follower joint goals in rad."""
        q = np.array(action, dtype=np.float64)
        q[GRIPPER] = self.grippers.follower_command_from_action(q[GRIPPER])
        return q

    def observation(self, reading: ArmReading) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Follower reading -> (qpos, qvel, effort), each (7,) float32, gripper normalised."""
        qpos = np.array(reading.joint_pos_rad, dtype=np.float64)
        qvel = np.array(reading.joint_vel_rad_s, dtype=np.float64)
        th, w = qpos[GRIPPER], qvel[GRIPPER]
        span = self.grippers.follower_finger_m.open - self.grippers.follower_finger_m.close
        qpos[GRIPPER] = self.grippers.observation_from_follower_finger(self.linkage.finger_m(th))
        qvel[GRIPPER] = self.linkage.finger_velocity_m_s(th, w) / span
        return qpos.astype(np.float32), qvel.astype(np.float32), np.asarray(reading.effort, dtype=np.float32)
