"""Real leader arms driving the simulated followers: the "sim-leaders" rig kind.

The world is the MuJoCo `SimRig` (towel, cameras, sim time; everything from the rig file's
`[sim]` table); the action source is the two Dynamixel leader arms of an ALOHA (`[[arms]]` with
leader_left and leader_right only, `[aloha]` for their bus and gripper settings). The leaders are
read with the same drivers, calibration store and ALOHA gripper mapping as the real rig
(`robot.aloha_arms.open_arm`, `TeleopMapping.action_from_leader`), so an episode recorded here has
the same action convention as one from the real rig.

    rig, rig_file = open_rig("configs/sim_leaders.toml")   # or configs/sim_leaders_emulated.toml
    rig.connect()                # opens the two leader buses (leaders limp), builds the simulation
    loop.set_source(rig.leader_source()); loop.request_mode(Mode.TELEOP)
    # the operator squeezes both leader grippers: the sim arms blend over to the leaders' pose

Safety and the start, decided for a simulation (nothing here can hurt anyone but the leaders are
real): the leaders are never powered - they are configured on connect and left limp (torque off),
so nothing real moves by itself and there is no ramp to the start pose (ALOHA ramps its leaders so
the followers need not jump; here the control loop blends the simulated arms from where they are
to the leaders' pose over [control] blend_s at the safety filter's speeds instead). What is kept
of ALOHA's opening ceremony is the hand-over: the leader source gives no action until the operator
has squeezed both leader grippers below `squeeze_below_rad` (proof that both hands are on the
handles), then the loop blends in. The squeeze is awaited from connect on (no "Start arms" needed);
`begin_start()` asks for it again (run.py record calls it), and an E-stop ends teleoperation
until the next squeeze after the E-stop is cleared. Leader torque is cut on E-stop and disconnect
(they should be limp already; a start or calibration elsewhere may have powered them).

Kinds: "sim-leaders" (ports from the rig file) and "sim-leaders-emulated" (each leader bus is a
protocol-level emulator on a pty with a scripted hand swaying the joints around the simulation's
start pose and squeezing the gripper every 3 s), registered in `robot.rigs`.

Threads: as `SimRig`: `connect()`/`disconnect()` by the owner; `read()`, `command()`, `on_estop*()`
and the leader source by the control thread; `begin_start()`, `started`, `start_prompt`,
`status()` and `health_reports()` from any thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from robot.aloha import START_ARM_POSE_RAD
from robot.aloha_arms import LeaderArmsSource, open_arm, start_emulated_buses
from robot.dynamixel.arm import GRIPPER, GripperLinkage, LeaderArm, TeleopMapping
from robot.dynamixel.calibration import CalibrationStore
from robot.dynamixel.health import HealthReport, HealthThresholds, bus_error_messages, read_health
from robot.dynamixel.safe_start import cut_torque
from robot.capabilities import START_PROMPT_KEY, HasLeaders, ReportsHealth, Startable
from robot.real_rig_config import AlohaSettings, ArmEntry, aloha_settings_from_rig_file
from robot.rig import RigError
from robot.sim.config import SimRigConfig
from robot.sim.sim_rig import SimRig
from robot.types import Observation, RigMessage, RigStatus, Severity

log = logging.getLogger(__name__)

LEADER_IDS: tuple[str, ...] = ("leader_left", "leader_right")
#: [aloha] settings that only concern real follower arms; refused in a sim-leaders rig file so
#: nobody expects them to do something (the simulated followers' limits are in [sim]).
FOLLOWER_ONLY_SETTINGS: tuple[str, ...] = (
    "velocity_limit", "gripper_current_limit", "bus_watchdog_ms", "torque_watchdog_ms", "arm_ramp_s",
    "gripper_ramp_s", "handover_max_step_rad", "follower_gripper_open_rad", "follower_gripper_close_rad",
    "follower_finger_open_m", "follower_finger_close_m", "gripper_horn_radius_m", "gripper_arm_length_m",
    "joint_low_rad", "joint_high_rad", "max_joint_speed_rad_s", "max_gripper_speed_per_s",
)

SQUEEZE_PROMPT = "Take both leader handles and squeeze both grippers to begin."
READY_PROMPT = "Leaders ready: the simulated arms follow the leaders (choose Leaders)."


@dataclass(frozen=True)
class SimLeadersConfig:
    """sim: the simulated world; settings: the `[aloha]` table (leader bus, gripper range,
    squeeze threshold, calibration_dir); leaders: one `ArmEntry` per leader arm; emulate: serve
    the leader buses from pty emulators instead of the ports."""

    sim: SimRigConfig
    settings: AlohaSettings
    leaders: tuple[ArmEntry, ...]
    emulate: bool = False

    def __post_init__(self) -> None:
        names = [a.name for a in self.leaders]
        followers = [n for n in names if not n.startswith("leader")]
        if followers:
            raise ValueError(f"a sim-leaders rig has no real followers (the simulation is the follower); remove the "
                             f"[[arms]] tables of {', '.join(followers)}")
        if sorted(names) != sorted(LEADER_IDS):
            raise ValueError(f"the rig needs one [[arms]] table for each of {', '.join(LEADER_IDS)}; given: "
                             f"{', '.join(names) or 'none'}")
        if not self.emulate:
            for a in self.leaders:
                if not a.port:
                    raise ValueError(f"arm {a.name} has no port; add port = \"/dev/ttyDXL_master_...\" to its [[arms]] table")

    def leader(self, name: str) -> ArmEntry:
        return next(a for a in self.leaders if a.name == name)


class SimLeadersRig(SimRig, Startable, HasLeaders, ReportsHealth):
    """The simulated rig with real (or emulated) leader arms as its teleoperation source.

    Everything of `SimRig` (reset_episode, evaluate_task, render thread, sim time) is unchanged;
    this adds the leaders, the squeeze hand-over and their servo health.
    """

    def __init__(self, config: SimLeadersConfig) -> None:
        super().__init__(config.sim)
        self.leaders_config = config
        s = config.settings
        # The leader half of ALOHA's mapping: action gripper = leader joint normalised over the
        # leader range of [aloha]; the sim maps the action to its fingers (ALOHA.md).
        self._mapping = TeleopMapping(s.grippers(), GripperLinkage(s.gripper_horn_radius_m, s.gripper_arm_length_m))
        self._thresholds = HealthThresholds(max_temperature_c=s.max_temperature_c)
        self._arm_lock = threading.Lock()  # guards the fields below that other threads read
        self._awaiting_squeeze = False
        self._started = False
        self._prompt = "Connect the rig."
        self._arm_messages: dict[str, str] = {}
        self._health: dict[str, HealthReport] = {}
        self.leaders: list[LeaderArm] = []
        self.emulators: dict = {}
        self._next_health_s = 0.0
        self._health_turn = 0

    # -- lifecycle (owner) ---------------------------------------------------------------------
    @property
    def arms(self) -> list[LeaderArm]:
        return list(self.leaders)

    def connect(self) -> None:
        if self.leaders:
            return
        config = self.leaders_config
        s = config.settings
        try:
            # Leaders first: a wrong port fails in a second instead of after the sim build.
            ports = {a.name: a.port for a in config.leaders}
            if config.emulate:
                # The scripted hands sway around where the leaders rest: the sim's start pose.
                pose = (*START_ARM_POSE_RAD, 0.5 * (s.leader_gripper_open_rad + s.leader_gripper_close_rad))
                self.emulators = start_emulated_buses(LEADER_IDS, s.baud_rate, pose)
                ports = {name: bus.port_name for name, bus in self.emulators.items()}
            store = CalibrationStore(s.calibration_dir)
            for name in LEADER_IDS:
                arm = open_arm(config.leader(name), ports[name], s, store, self._note)
                arm.release()  # limp: the operator moves it; nothing real moves by itself
                self.leaders.append(arm)
            super().connect()
        except BaseException:
            self.disconnect()
            raise
        with self._arm_lock:
            self._awaiting_squeeze, self._started, self._prompt = True, False, SQUEEZE_PROMPT
        log.info("%s connected: simulation with %d leader arms", self.name, len(self.leaders))

    def disconnect(self) -> None:
        """Torque off the leaders (best effort), close their ports, stop emulators, free the sim."""
        for arm in self.leaders:
            try:
                arm.disconnect()
            except Exception as exc:  # keep going: the other arm and the sim must still be released
                log.error("%s: disconnect failed: %s", arm.arm_id, exc)
        for bus in self.emulators.values():
            bus.stop()
        self.emulators = {}
        self.leaders = []
        with self._arm_lock:
            self._awaiting_squeeze = self._started = False
            self._prompt = "Connect the rig."
            self._health = {}
        super().disconnect()

    def _note(self, name: str, message: str) -> None:
        with self._arm_lock:
            self._arm_messages[f"calibration {name}"] = message

    # -- the hand-over (any thread asks, the control thread checks the grippers) -----------------
    def begin_start(self) -> None:
        """Wait for a new squeeze of both leader grippers before the leaders drive (any thread)."""
        with self._arm_lock:
            self._awaiting_squeeze, self._started, self._prompt = True, False, SQUEEZE_PROMPT

    @property
    def started(self) -> bool:
        with self._arm_lock:
            return self._started

    @property
    def start_prompt(self) -> str:
        with self._arm_lock:
            return self._prompt

    @property
    def starting(self) -> bool:
        """Waiting for the squeeze of both leader grippers (any thread)."""
        with self._arm_lock:
            return self._awaiting_squeeze

    def _check_squeeze(self) -> None:
        with self._arm_lock:
            if not self._awaiting_squeeze:
                return
        grips = [float(arm.read().joint_pos_rad[GRIPPER]) for arm in self.leaders]
        if all(g < self.leaders_config.settings.squeeze_below_rad for g in grips):
            with self._arm_lock:
                self._awaiting_squeeze, self._started, self._prompt = False, True, READY_PROMPT
            log.info("%s: both leader grippers squeezed (%s rad): leaders drive", self.name,
                     ", ".join(f"{g:.2f}" for g in grips))

    # -- control thread ------------------------------------------------------------------------
    def read(self) -> Observation:
        if not self.leaders:
            raise RigError(f"{self.name} is not connected. Connect the rig first.")
        observation = super().read()
        self._check_squeeze()
        self._poll_health()
        return observation

    def leader_action(self) -> np.ndarray:
        """(14,) float32 action from the two leader arms (control thread)."""
        parts = [self._mapping.action_from_leader(arm.read().joint_pos_rad) for arm in self.leaders]
        return np.concatenate(parts).astype(np.float32)

    def leader_source(self) -> "SimLeadersSource":
        return SimLeadersSource(self)

    def _poll_health(self) -> None:
        now = time.monotonic()
        if now < self._next_health_s:
            return
        # One arm per turn, so a tick carries at most three extra sync reads.
        arm = self.leaders[self._health_turn % len(self.leaders)]
        self._health_turn += 1
        self._next_health_s = now + self.leaders_config.settings.health_period_s / len(self.leaders)
        report = read_health(arm, self._thresholds)
        with self._arm_lock:
            self._health[arm.arm_id] = report
            if report.ok:
                self._arm_messages.pop(f"health {arm.arm_id}", None)
            else:
                self._arm_messages[f"health {arm.arm_id}"] = "; ".join(report.problems)

    def on_estop(self) -> None:
        # The leaders should be limp already; cut anyway (a calibration may have powered one).
        failed = cut_torque(self.leaders)
        message = "E-stop: the simulated arms hold. Clear the E-stop, then squeeze both leader grippers to go on."
        if failed:
            message += f" Torque could NOT be cut on {', '.join(failed)}: switch their power off."
        with self._arm_lock:
            self._awaiting_squeeze, self._started, self._prompt = False, False, message

    def on_estop_cleared(self) -> None:
        self.begin_start()

    # -- any thread ----------------------------------------------------------------------------
    def status(self) -> RigStatus:
        status = super().status()
        with self._arm_lock:
            messages = [RigMessage(key, text) for key, text in self._arm_messages.items()]
            if not self._started:
                messages.insert(0, RigMessage(START_PROMPT_KEY, self._prompt, Severity.INFO))
        messages += bus_error_messages(list(self.leaders))
        return dataclasses.replace(status, messages=(*status.messages, *messages))

    def health_reports(self) -> dict[str, HealthReport]:
        """The latest servo health of each leader (arm id -> report). Any thread: a copy."""
        with self._arm_lock:
            return dict(self._health)

    @property
    def health_thresholds(self) -> HealthThresholds:
        return self._thresholds

    @property
    def health_arm_ids(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.leaders_config.leaders)


class SimLeadersSource(LeaderArmsSource):
    """The leader arms as an `ActionSource` of kind TELEOP on the simulated rig. Unlike on the real
    rig it may be chosen before the squeeze: it has no action until both grippers were squeezed
    (the loop holds and says so), then the loop blends the simulated arms over. Control thread."""

    def start(self, observation: Observation) -> None:
        if not self._rig.started:
            log.info("%s: waiting for both leader grippers to be squeezed", self._rig.name)


# --- rig files --------------------------------------------------------------------------------
def build_sim_leaders(rig_file, *, emulate: bool = False) -> SimLeadersRig:
    """Build the rig from a rig file's [sim], [aloha] and [[arms]] tables (leaders only)."""
    from robot.rigs import build_sim  # [sim] is read exactly as for the "sim" kind

    table = rig_file.data.get("aloha", {})
    if isinstance(table, dict):
        for key in table:
            if key in FOLLOWER_ONLY_SETTINGS:
                raise rig_file.error("concerns real follower arms; here the followers are simulated (their limits "
                                     "are in [sim] and [control]): remove this line", "aloha", key)
    settings = aloha_settings_from_rig_file(rig_file)
    arms = rig_file.array("arms", ArmEntry)
    sim = build_sim(rig_file).config
    if not rig_file.rig.name:
        sim = dataclasses.replace(sim, name="sim-leaders-emulated" if emulate else "sim-leaders")
    try:
        config = SimLeadersConfig(sim=sim, settings=settings, leaders=tuple(arms), emulate=emulate)
    except ValueError as exc:
        raise rig_file.error(str(exc), ("arms", 0) if rig_file.has("arms") else "aloha") from None
    return SimLeadersRig(config)


def build_sim_leaders_emulated(rig_file) -> SimLeadersRig:
    return build_sim_leaders(rig_file, emulate=True)


__all__ = ["SimLeadersConfig", "SimLeadersRig", "SimLeadersSource", "build_sim_leaders", "build_sim_leaders_emulated"]
