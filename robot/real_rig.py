"""The real ALOHA rig (and its emulated twin): four Dynamixel arms on their own buses plus cameras,
behind the `Rig` interface the control loop drives. This module holds `AlohaRig` (lifecycle, the
opening ceremony, reads and commands, E-stop, status, health, calibration) and its builders for
`robot.rigs`; its configuration and rig-file reading are in `robot.real_rig_config`, opening the
arms, the bus emulators and the leader-arm action source (shared with the sim-leaders rig) in
`robot.aloha_arms`.

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
`robot.rigs` lists both, with `build_aloha` and `build_aloha_emulated` below as their builders.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from robot.aloha_arms import LeaderArmsSource, open_arm, start_emulated_buses
from robot.cameras.base import Camera
from robot.cameras.errors import CameraError
from robot.cameras.registry import make_camera
from robot.capabilities import START_PROMPT_KEY, Calibratable, HasLeaders, LeadersFollow, ReportsHealth, Startable
from robot.dynamixel.arm import GRIPPER, ArmRole, DynamixelArm, FollowerArm, GripperLinkage, LeaderArm, TeleopMapping
from robot.dynamixel.calibration import ArmCalibration, CalibrationProcedure, CalibrationStore
from robot.dynamixel.errors import BusWatchdogTripped
from robot.dynamixel.health import HealthReport, HealthThresholds, bus_error_messages, read_health
from robot.dynamixel.leader_follow import LeaderFollowing
from robot.dynamixel.safe_start import ExitGuard, HandoverFilter, SafeStart, SafeStartState, TorqueWatchdog, cut_torque
from robot.real_rig_config import ARM_IDS, AlohaRigConfig, aloha_rig_config_from_rig_file
from robot.rig import Rig, RigError
from robot.rig_config import RigFile
from robot.types import ARM_NAMES, JOINTS_PER_ARM, STATE_DIM, JointLimits, Observation, RigMessage, RigStatus, Severity

log = logging.getLogger(__name__)

#: Where the emulated arms rest before the first start: folded down, grippers at 0 rad.
EMULATED_REST_RAD = (0.0, -1.8, 1.55, 0.0, 0.6, 0.0, 0.0)


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

    def leader_source(self) -> LeaderArmsSource:
        return LeaderArmsSource(self)

    def leader_action(self) -> np.ndarray:
        """(14,) float32 action from the two leader arms (control thread)."""
        parts = [self._mapping.action_from_leader(arm.read().joint_pos_rad) for arm in self.leaders]
        return np.concatenate(parts).astype(np.float32)


# --- rig files --------------------------------------------------------------------------------
def build_aloha(rig_file: RigFile, *, emulate: bool = False) -> AlohaRig:
    """Build the rig from a rig file's [aloha], [[arms]] and [[cameras]] tables."""
    return AlohaRig(aloha_rig_config_from_rig_file(rig_file, emulate=emulate))


def build_aloha_emulated(rig_file: RigFile) -> AlohaRig:
    return build_aloha(rig_file, emulate=True)
