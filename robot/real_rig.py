"""The real ALOHA rig (and its emulated twin): four Dynamixel arms on their own buses plus cameras,
behind the `Rig` interface the control loop drives.

    rig, rig_file = open_rig("configs/aloha.toml")     # or configs/emulated.toml
    rig.connect()                 # opens the four buses, checks servos against the calibrations
    rig.begin_start()             # GUI: "Start arms"; the control loop's reads step the ceremony
    rig.start_prompt              # GUI shows this until rig.started
    loop.set_source(rig.leader_source()); loop.request_mode(Mode.TELEOP)

Threads: `connect()`/`disconnect()` by the owner (the bridge's worker); `read()`, `command()`,
`on_estop*()` and the leader source by the control thread only; `begin_start()`, `start_prompt`,
`started` and `status()` from any thread.

Safety, in order of what can fail: commands are ignored until the opening ceremony (`SafeStart`)
has finished, and after it a hand-over filter walks the followers to whatever the loop asks at a
bounded step (no jump from a stale pose); a servo that stops answering raises from `read()` (the
loop holds and says which servo); a tripped Bus_Watchdog or an E-stop cuts torque and requires a
new start; a stalled control loop trips the torque watchdog thread; interpreter exit runs the exit
guard; a dead process leaves the followers' own Bus_Watchdog to stop them.

Kinds: "aloha" (ports from the rig file) and "aloha-emulated" (the rig starts a protocol-level
servo emulator per bus, with scripted hands on the leaders, and uses their pty ports).
`register()` adds both to `robot.rigs`; importing this module calls it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from robot.aloha import CONTROL_RATE_HZ, GripperCalibration, GripperRange
from robot.cameras.base import Camera, CameraConfig
from robot.cameras.errors import CameraError
from robot.cameras.registry import camera_config_from_table, make_camera
from robot.dynamixel.arm import (
    GRIPPER,
    ArmConfig,
    ArmRole,
    DynamixelArm,
    FollowerArm,
    GripperLinkage,
    LeaderArm,
    TeleopMapping,
)
from robot.dynamixel.bus import BusConfig
from robot.dynamixel.calibration import ArmCalibration, CalibrationProcedure, CalibrationStore
from robot.dynamixel.errors import BusWatchdogTripped
from robot.dynamixel.health import HealthReport, HealthThresholds, bus_error_messages, read_health
from robot.dynamixel.layout import LAYOUTS
from robot.dynamixel.leader_follow import LeaderFollowConfig, LeaderFollowing
from robot.dynamixel.safe_start import (
    ExitGuard,
    HandoverFilter,
    SafeStart,
    SafeStartConfig,
    SafeStartState,
    TorqueWatchdog,
    cut_torque,
)
from robot.capabilities import START_PROMPT_KEY, Calibratable, HasLeaders, LeadersFollow, ReportsHealth, Startable
from robot.rig import Rig, RigError
from robot.types import (
    ARM_NAMES,
    JOINTS_PER_ARM,
    STATE_DIM,
    ControlSource,
    JointLimits,
    Observation,
    RigMessage,
    RigStatus,
    Severity,
)

log = logging.getLogger(__name__)

ARM_IDS: tuple[str, ...] = ("follower_left", "follower_right", "leader_left", "leader_right")
#: ViperX 300 joint ranges (rad), as in the Interbotix description and gym-aloha's MJCF.
VX300_LOW_RAD = (-3.14158, -1.85005, -1.76278, -3.14158, -1.8675, -3.14158)
VX300_HIGH_RAD = (3.14158, 1.25664, 1.6057, 3.14158, 2.23402, 3.14158)
#: Where the emulated arms rest before the first start: folded down, grippers at 0 rad.
EMULATED_REST_RAD = (0.0, -1.8, 1.55, 0.0, 0.6, 0.0, 0.0)


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


def open_arm(entry: "ArmEntry", port: str, settings: "AlohaSettings", store: CalibrationStore,
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
    the arms in `names` (of ARM_IDS), all joints at `start_pose_rad` (7 values); returns
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


class AlohaRig(Rig, Startable, HasLeaders, LeadersFollow, ReportsHealth, Calibratable):
    """Bimanual ALOHA over Dynamixel: followers commanded, leaders read (or, while a policy drives,
    following the followers), cameras streamed."""

    simulated = False

    def __init__(self, config: AlohaRigConfig) -> None:
        self.config = config
        self.name = config.name
        self.control_rate_hz = config.control_rate_hz
        self.camera_names = tuple(c.name for c in config.cameras)
        s = config.settings
        self._mapping = TeleopMapping(s.grippers(), GripperLinkage(s.gripper_horn_radius_m, s.gripper_arm_length_m))
        self._thresholds = HealthThresholds(max_temperature_c=s.max_temperature_c)
        self._lock = threading.Lock()  # guards the fields other threads read or set (below)
        self._start_requested = False
        self._starting = False
        self._started = False
        self._prompt = "Connect the rig."
        self._messages: dict[str, str] = {}
        self._health: dict[str, HealthReport] = {}  # arm id -> latest report (under _lock)
        self.emulators: dict = {}
        self.followers: list[FollowerArm] = []
        self.leaders: list[LeaderArm] = []
        self.cameras: list[Camera] = []
        self._safe_start: SafeStart | None = None
        self._handover: list[HandoverFilter] | None = None
        self._following: LeaderFollowing | None = None
        self._watchdog: TorqueWatchdog | None = None
        self._exit_guard: ExitGuard | None = None
        self._estopped = False
        self._frames: dict[str, tuple[np.ndarray, float]] = {}
        self._next_health_s = 0.0
        self._health_turn = 0
        self._ignored_warned = False

    # -- lifecycle (owner) -----------------------------------------------------------------------
    @property
    def arms(self) -> list[DynamixelArm]:
        return [*self.followers, *self.leaders]

    def connect(self) -> None:
        if self.followers:
            return
        s = self.config.settings
        ports = {a.name: a.port for a in self.config.arms}
        try:
            if self.config.emulate:
                ports = self._start_emulators()
            store = CalibrationStore(s.calibration_dir)
            for name in ARM_IDS:
                entry = self.config.arm(name)
                arm = open_arm(entry, ports[name], s, store, self._note_uncalibrated)
                (self.followers if entry.role is ArmRole.FOLLOWER else self.leaders).append(arm)
            self._exit_guard = ExitGuard(self.arms)
            self._following = LeaderFollowing(self.leaders, self._mapping, s.leader_follow_config())
            for camera_config in self.config.cameras:
                camera = make_camera(camera_config)
                camera.connect()
                self.cameras.append(camera)
        except BaseException:
            self.disconnect()
            raise
        with self._lock:
            self._prompt = "Press Start arms to bring the arms to the start pose."
        log.info("%s connected: %d arms, %d cameras", self.name, len(self.arms), len(self.cameras))

    def _note_uncalibrated(self, name: str, message: str) -> None:
        with self._lock:
            self._messages[f"calibration {name}"] = message

    def _start_emulators(self) -> dict[str, str]:
        self.emulators = start_emulated_buses(ARM_IDS, self.config.settings.baud_rate, EMULATED_REST_RAD)
        return {name: bus.port_name for name, bus in self.emulators.items()}

    def disconnect(self) -> None:
        """Torque off on every arm, close cameras and ports. Idempotent, never raises for one
        device that is already gone (logged and shown instead)."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        for arm in self.arms:  # followers first: they carry weight
            try:
                arm.disconnect()
            except Exception as exc:  # keep going: the other arms must still be released
                log.error("%s: disconnect failed: %s", arm.arm_id, exc)
        for camera in self.cameras:
            try:
                camera.disconnect()
            except Exception as exc:
                log.error("camera %s: disconnect failed: %s", camera.name, exc)
        if self._exit_guard is not None:
            self._exit_guard.close()
            self._exit_guard = None
        for bus in self.emulators.values():
            bus.stop()
        self.emulators = {}
        self.followers, self.leaders, self.cameras = [], [], []
        self._following = None
        with self._lock:
            self._started = self._starting = self._start_requested = False
            self._prompt = "Connect the rig."
            self._health = {}
        self._safe_start = None
        self._handover = None

    # -- the opening ceremony (GUI asks, control thread steps) ------------------------------------
    def begin_start(self) -> None:
        """Ask for the opening ceremony; the next control ticks carry it out (any thread)."""
        with self._lock:
            self._start_requested = True
            self._starting = True
            self._started = False

    @property
    def started(self) -> bool:
        with self._lock:
            return self._started

    @property
    def starting(self) -> bool:
        """Start arms was asked and the ceremony has neither finished nor failed (any thread)."""
        with self._lock:
            return self._starting

    @property
    def start_prompt(self) -> str:
        with self._lock:
            return self._prompt

    def _step_start(self) -> None:
        with self._lock:
            requested, self._start_requested = self._start_requested, False
        if requested:
            self._estopped = False
            self._handover = None
            self._safe_start = SafeStart(self.followers, self.leaders, self.config.settings.safe_start_config())
            self._safe_start.begin()
        start = self._safe_start
        if start is None:
            return
        start.step()
        with self._lock:
            self._prompt = start.prompt
        if start.state is SafeStartState.READY:
            self._handover = start.handover(self.config.settings.handover_max_step_rad)
            self._safe_start = None
            with self._lock:
                self._started, self._starting = True, False
                self._prompt = "Arms ready: the followers follow the leaders (or the policy)."
                self._messages.pop("start", None)
        elif start.finished:  # failed or aborted
            self._safe_start = None
            with self._lock:
                self._starting = False
                self._messages["start"] = start.prompt

    # -- control thread ------------------------------------------------------------------------
    def read(self) -> Observation:
        if not self.followers:
            raise RigError(f"{self.name} is not connected. Connect the rig first.")
        if self._watchdog is not None and self._watchdog.tripped:
            self._watchdog.stop()  # it cut the torque once; a new one watches the resumed loop
            self._watchdog = None
        if self._watchdog is None:  # armed on the first tick: from now on the loop must keep ticking
            self._watchdog = TorqueWatchdog(self.arms, self.config.settings.torque_watchdog_ms,
                                            on_trip=self._on_watchdog_trip).start()
        self._watchdog.kick()
        try:
            self._step_start()
            # A tripped Bus_Watchdog matters while we drive; once stopped, reading goes on quietly.
            readings = [arm.read(check_watchdog=self._handover is not None) for arm in self.followers]
            self._poll_health()
        except BusWatchdogTripped as exc:
            self._stop_driving(str(exc))
            raise
        qpos, qvel, effort = zip(*(self._mapping.observation(r) for r in readings))
        images, times = self._read_cameras()
        return Observation(
            qpos=np.concatenate(qpos).astype(np.float32),
            qvel=np.concatenate(qvel).astype(np.float32),
            effort=np.concatenate(effort).astype(np.float32),
            images=images,
            image_times_s=times,
            time_s=max(r.time_s for r in readings),
        )

    def _read_cameras(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        for camera in self.cameras:
            try:
                frame = camera.read_latest()
                self._frames[camera.name] = (frame.image, frame.capture_time_s)
                with self._lock:
                    self._messages.pop(f"camera {camera.name}", None)
            except CameraError as exc:
                # The arm keeps going; the recording keeps the last frame with its old capture
                # time, so the gap is visible in the data, and the status bar says why.
                with self._lock:
                    self._messages[f"camera {camera.name}"] = str(exc)
                if camera.name not in self._frames:
                    raise
        return ({n: f[0] for n, f in self._frames.items()}, {n: f[1] for n, f in self._frames.items()})

    def _poll_health(self) -> None:
        now = time.monotonic()
        if now < self._next_health_s:
            return
        # One arm per turn: twelve sync reads at once would overrun a tick.
        arms = self.arms
        arm = arms[self._health_turn % len(arms)]
        self._health_turn += 1
        self._next_health_s = now + self.config.settings.health_period_s / len(arms)
        report = read_health(arm, self._thresholds)
        with self._lock:
            self._health[arm.arm_id] = report
            if report.ok:
                self._messages.pop(f"health {arm.arm_id}", None)
            else:
                self._messages[f"health {arm.arm_id}"] = "; ".join(report.problems)

    def command(self, action: np.ndarray) -> None:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (STATE_DIM,) or not np.all(np.isfinite(action)):
            raise RigError(f"{self.name}: an action must be {STATE_DIM} finite numbers, got shape {action.shape}")
        if self._estopped or self._handover is None:
            if not self._ignored_warned:
                log.warning("%s: commands ignored until the arms are started", self.name)
                self._ignored_warned = True
            return
        self._ignored_warned = False
        for k, (arm, handover) in enumerate(zip(self.followers, self._handover)):
            target = self._mapping.follower_command(action[k * JOINTS_PER_ARM : (k + 1) * JOINTS_PER_ARM])
            arm.command(handover(target))
        if self._following is not None:
            self._following.command(action)

    # -- leaders following the followers (LeadersFollow; control thread) ------------------------
    def set_leaders_follow(self, enabled: bool) -> None:
        following = self._following
        if following is None or (enabled and self._handover is None):
            return  # not connected, or not started: the leaders stay as the ceremony left them
        following.enable() if enabled else following.disable()

    def leaders_pushed(self) -> bool:
        following = self._following
        return following is not None and following.pushed()

    def joint_limits(self) -> JointLimits:
        s = self.config.settings
        low, high = np.zeros(STATE_DIM), np.ones(STATE_DIM)  # grippers: normalised 0..1
        step = np.full(STATE_DIM, s.max_joint_speed_rad_s / self.control_rate_hz)
        for k in range(len(ARM_NAMES)):
            base = k * JOINTS_PER_ARM
            low[base : base + 6] = s.joint_low_rad
            high[base : base + 6] = s.joint_high_rad
            step[base + GRIPPER] = s.max_gripper_speed_per_s / self.control_rate_hz
        return JointLimits(low=low, high=high, max_step=step)

    def on_estop(self) -> None:
        failed = cut_torque(self.arms)
        message = "E-stop: torque cut on all arms. Support the arms, clear the E-stop, then press Start arms."
        if failed:
            message += f" Torque could NOT be cut on {', '.join(failed)}: switch their power off now."
        self._stop_driving(message)
        self._estopped = True

    def on_estop_cleared(self) -> None:
        # Torque stays off: the arms may have sagged, so only a new opening ceremony drives them again.
        with self._lock:
            self._prompt = "E-stop cleared. Press Start arms to bring the arms back to the start pose."

    def _stop_driving(self, message: str) -> None:
        self._handover = None
        if self._following is not None:
            self._following.forget()  # the torque is off already
        self._safe_start = None
        with self._lock:
            self._started = self._starting = self._start_requested = False
            self._prompt = message
            self._messages["stopped"] = message

    def _on_watchdog_trip(self, message: str) -> None:  # watchdog thread
        self._handover = None
        if self._following is not None:
            self._following.forget()  # the watchdog cut every torque
        with self._lock:
            self._started = self._starting = False
            self._prompt = message
            self._messages["stopped"] = message

    def status(self) -> RigStatus:
        fps = {}
        for camera in list(self.cameras):
            try:
                fps[camera.name] = camera.status().fps_measured
            except Exception:  # a camera mid-reconnect: no number this time
                fps[camera.name] = 0.0
        with self._lock:
            messages = [RigMessage(key, text) for key, text in self._messages.items()]
            if not self._started:
                messages.insert(0, RigMessage(START_PROMPT_KEY, self._prompt, Severity.INFO))
        messages += bus_error_messages(self.arms)
        return RigStatus(name=self.name, camera_fps=fps, messages=tuple(messages))

    def health_reports(self) -> dict[str, HealthReport]:
        """The latest servo health of each arm (arm id -> report; each arm is read about once per
        `health_period_s` by the control thread). Any thread: a copy, no bus read."""
        with self._lock:
            return dict(self._health)

    @property
    def health_thresholds(self) -> HealthThresholds:
        return self._thresholds

    @property
    def health_arm_ids(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.config.arms)

    # -- calibration (owner thread; the studio refuses it while the arms are started) -------------
    @property
    def calibration_arm_ids(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.config.arms)

    def calibration_procedure(self, arm_id: str) -> CalibrationProcedure:
        arm = self._arm(arm_id)
        return CalibrationProcedure(arm_id, arm.layout, arm)

    def apply_calibration(self, result: ArmCalibration) -> Path:
        path = CalibrationStore(self.config.settings.calibration_dir).save(result)
        # In use at once: the control thread picks the new object up at its next read of this arm.
        self._arm(result.arm_id).calibration = result
        with self._lock:
            self._messages.pop(f"calibration {result.arm_id}", None)
        return path

    def _arm(self, arm_id: str) -> DynamixelArm:
        for arm in self.arms:
            if arm.arm_id == arm_id:
                return arm
        known = ", ".join(a.arm_id for a in self.arms) or "none (the rig is not connected)"
        raise ValueError(f"{self.name} has no arm {arm_id!r}; its arms: {known}")

    def leader_source(self) -> "LeaderArmsSource":
        return LeaderArmsSource(self)

    def leader_action(self) -> np.ndarray:
        """(14,) float32 action from the two leader arms (control thread)."""
        parts = [self._mapping.action_from_leader(arm.read().joint_pos_rad) for arm in self.leaders]
        return np.concatenate(parts).astype(np.float32)


class LeaderArmsSource:
    """The leader arms as an `ActionSource` (robot.types): the operator's hands drive the followers.
    Control thread only."""

    name = "leader arms"
    kind = ControlSource.TELEOP

    def __init__(self, rig: AlohaRig) -> None:
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


# --- rig files --------------------------------------------------------------------------------
def build_aloha(rig_file, *, emulate: bool = False) -> AlohaRig:
    """Build the rig from a rig file's [aloha], [[arms]] and [[cameras]] tables."""
    settings = rig_file.section("aloha", AlohaSettings)
    if not settings.calibration_dir.is_absolute():
        settings = dataclasses.replace(settings, calibration_dir=(rig_file.path.parent / settings.calibration_dir).resolve())
    arms = rig_file.array("arms", ArmEntry)
    cameras = []
    for i, table in enumerate(rig_file.data.get("cameras", [])):
        try:
            cameras.append(camera_config_from_table(table))
        except ValueError as exc:
            raise rig_file.error(str(exc), ("cameras", i)) from None
    try:
        config = AlohaRigConfig(
            name=rig_file.rig.name or ("aloha-emulated" if emulate else "aloha"),
            settings=settings,
            arms=tuple(arms),
            cameras=tuple(cameras),
            control_rate_hz=rig_file.control.rate_hz,
            emulate=emulate,
        )
    except ValueError as exc:
        raise rig_file.error(str(exc), ("arms", 0) if rig_file.has("arms") else "aloha") from None
    return AlohaRig(config)


def build_aloha_emulated(rig_file) -> AlohaRig:
    return build_aloha(rig_file, emulate=True)
