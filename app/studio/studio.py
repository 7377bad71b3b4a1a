"""The bridge between the window and the robot: owns the rig, the control loop, the jog source,
the episode writer and their lifecycles. No Qt here, so it runs the same under a window, a test
or a script.

Threads
-------
- The GUI thread (or any caller) calls the public methods. They never wait on a device or a file:
  requests to the loop are queued by the loop itself (`estop`, `select_source`, jogging), and
  everything slow (opening and connecting the rig, starting/stopping a recording, resetting the
  towel, shutting down) runs on the bridge's one worker thread, in the order asked.
- The control thread (owned by `robot.control_loop.ControlLoop`) calls the subscribers: the
  writer's `on_tick` and the plot history's `on_tick`; both only copy or enqueue.
- A monitor thread refreshes, once a second, what costs a system call: free disk of the store,
  the episode count, the rig's status and (real rigs) the servo health the rig keeps; ten times a
  second it copies the arms' start state (`started`, `start_prompt`: lock-guarded reads the rig
  allows from any thread).

A real rig (`robot.real_rig.AlohaRig`) adds the opening ceremony and calibration:
- `start_arms()` asks the rig to start (`begin_start()`, any thread by design); the control thread
  carries the ceremony out inside its reads. The loop is put in IDLE first, so it commands nothing
  and, once the arms are started, a source blends in from where the arms are (no jump).
- Calibration runs on the worker thread while the control loop keeps running (E-stop, cameras
  and the other arms stay live): the bus serialises whole transactions under its lock, and the
  arm being calibrated is neither driven nor torqued, because calibration is refused while the
  arms are started or starting, and Start arms is refused while a calibration is open.
- `snapshot()` is cheap (a few short locks) and is what the window paints, at <= 30 Hz.

Everything that goes wrong becomes a `StudioEvent` (what happened, what to do) in `events`.
"""

from __future__ import annotations

import enum
import logging
import re
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from app.studio.events import EventLog, Severity
from app.studio.history import HistoryWindow, TickHistory
from app.studio.paths import DEFAULT_RIG_FILE
from recordings.errors import FramesDropped, RecordingError
from recordings.metadata import EpisodeMetadata
from recordings.schema import Label
from recordings.store import EpisodeStore
from recordings.writer import EpisodeWriter, WriterState, WriterStatus
from robot.dynamixel.calibration import CalibrationError, CalibrationProcedure, CalibrationStep, CalibrationStore
from robot.dynamixel.errors import DynamixelError
from robot.dynamixel.health import HealthReport, HealthThresholds
from robot.control_loop import ControlLoop, EventLevel, LoopConfig, LoopSnapshot
from robot.rig import Rig, RigError
from robot.rig_config import RigFile, RigFileError
from robot.rigs import open_rig
from robot.types import ActionSource, ControlSource, Mode, RigStatus, TickRecord

log = logging.getLogger(__name__)

LOOP_STATS_INTERVAL_S = 0.25
#: Below this much free space in the store the user is warned (a minute of 3 cameras at
#: 640x480 JPEG q90 is a few hundred MB).
LOW_DISK_BYTES = 1 * 1024**3
ARM_STATE_INTERVAL_S = 0.1  # the start prompt changes within a ceremony of a few seconds


class Phase(str, enum.Enum):
    STARTING = "starting"  # opening and connecting the rig (worker thread)
    RUNNING = "running"
    FAILED = "failed"  # the rig could not be opened; the events say why and what to do
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SourceOption:
    """One entry of the source selector. name: stable id ("keyboard", "demo", "hold");
    label: for messages; button: short text for the selector button."""

    name: str
    label: str
    kind: ControlSource
    button: str


SOURCE_OPTIONS: tuple[SourceOption, ...] = (
    SourceOption("keyboard", "Keyboard / mouse", ControlSource.TELEOP, "Jog"),
    SourceOption("leaders", "Leader arms", ControlSource.TELEOP, "Leaders"),
    SourceOption("demo", "Scripted demo", ControlSource.SCRIPTED, "Demo"),
    SourceOption("hold", "Hold", ControlSource.HOLD, "Hold"),
)
_SOURCE_BY_NAME = {s.name: s for s in SOURCE_OPTIONS}


@dataclass(frozen=True)
class RecordingStatus:
    """What the recording panel shows.

    active: ticks are being recorded; failed: the writer stopped on an error and the episode
    waits for Stop (keeps the frames written) or Discard; busy: a start, save, discard or towel reset is in progress
    (text says which); elapsed_s: host time covered by the recorded ticks; frames: ticks received.
    """

    active: bool = False
    failed: bool = False  # the writer stopped on an error: Stop keeps what was written, Discard drops it
    busy: str = ""
    elapsed_s: float = 0.0
    frames: int = 0
    frames_dropped: int = 0
    episode_count: int | None = None
    last_saved: str = ""


@dataclass(frozen=True)
class ArmsState:
    """The arms of a real rig, as the window shows them (None in the snapshot on the sim).

    started: the opening ceremony finished and the followers may be driven; starting: Start arms
    was pressed and the ceremony has not finished (nor been stopped by an E-stop); prompt: what the
    rig asks of the operator now; not_answering: the latest failed read (names the servo), empty
    while the rig reads fine; health: the latest report per arm (ARM order), time_s on the
    monotonic clock of the control thread's read.
    """

    started: bool = False
    starting: bool = False
    prompt: str = ""
    not_answering: str = ""
    health: tuple[HealthReport, ...] = ()
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    arm_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CalibrationStatus:
    """The open calibration (see `StudioBridge.begin_calibration`). step: a CalibrationStep value;
    live_rad: the arm's joints under the calibration measured so far (None before the first
    reading); error: why the last Next was refused (the procedure stays on its step); saved_path:
    where the result went, once saved."""

    arm_id: str
    step: str
    prompt: str
    joint_names: tuple[str, ...]
    live_rad: tuple[float, ...] | None = None
    error: str = ""
    saved_path: str = ""

    @property
    def closed(self) -> bool:
        return self.step == CalibrationStep.CANCELLED.value or bool(self.saved_path)


@dataclass(frozen=True)
class StudioSnapshot:
    """Everything the window paints, copied at one moment (any thread may call `snapshot()`).

    loop: the control loop's own snapshot (latest tick, stats, mode); None before the rig is up.
    source: the selected entry of SOURCE_OPTIONS (the loop's actual source kind is in loop).
    disk_free_bytes: free space where episodes are written (None if unknown).
    seed / next_seed: towel seed of the current episode and of the next "New episode".
    """

    phase: Phase
    rig_name: str
    loop: LoopSnapshot | None
    source: SourceOption | None
    rig_status: RigStatus | None
    disk_free_bytes: int | None
    store_dir: Path | None
    recording: RecordingStatus
    seed: int | None
    next_seed: int
    camera_names: tuple[str, ...] = ()
    control_rate_hz: float = 50.0
    resettable: bool = False
    #: Real rigs only (None on the sim): start state, servo health, what fails to answer.
    arms: ArmsState | None = None
    calibration: CalibrationStatus | None = None
    #: A simulated world driven by real (or emulated) leader arms (robot.sim_leaders).
    sim_leaders: bool = False

    tick: TickRecord | None = None

    @property
    def available_sources(self) -> tuple[str, ...]:
        """Source names that make sense on this rig now: Demo on the sim only; on a real rig the
        driving sources (Jog, Leaders) only once the arms are started."""
        if self.arms is None:
            return tuple(s.name for s in SOURCE_OPTIONS if s.name != "leaders" or self.sim_leaders)
        driving = ("keyboard", "leaders") if self.arms.started else ()
        return (*driving, "hold")

    @property
    def mode(self) -> Mode:
        """The newest of the latest tick's mode and the loop's. The loop's snapshot is taken after
        its own tick was published, so for the same tick the loop's mode is the newer one (a read
        failure holds the arm while no new tick comes)."""
        loop_tick = self.loop.tick if self.loop is not None else None
        if self.tick is not None and (loop_tick is None or self.tick.index > loop_tick.index):
            return self.tick.mode
        return self.loop.mode if self.loop is not None else Mode.IDLE


@dataclass
class _Monitor:
    """Values the monitor thread refreshes (read under the bridge lock)."""

    disk_free_bytes: int | None = None
    episode_count: int | None = None
    rig_status: RigStatus | None = None
    started: bool = False
    start_prompt: str = ""
    health: tuple[HealthReport, ...] = ()
    rig_messages_seen: set = field(default_factory=set)
    low_disk_warned: bool = False


class StudioBridge:
    """Owns rig + loop + writer. Public methods are safe to call from the GUI thread.

    rig_path: a rig file (TOML, see configs/); store_dir: where episodes go (default: the rig
    file's [recording] store_dir). Call `start()` once, `shutdown()` once.
    """

    def __init__(
        self,
        rig_path: Path | str = DEFAULT_RIG_FILE,
        store_dir: Path | str | None = None,
        *,
        history_capacity: int = 750,
        rig_opener: Callable[[Path], tuple[Rig, RigFile]] = open_rig,
    ) -> None:
        self.rig_path = Path(rig_path)
        self._store_override = Path(store_dir) if store_dir is not None else None
        self._rig_opener = rig_opener
        self.events = EventLog()
        self.history = TickHistory(history_capacity)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-bridge")
        self._lock = threading.Lock()
        self._phase = Phase.STARTING
        self._busy = ""
        self._rig: Rig | None = None
        self._rig_file: RigFile | None = None
        self._loop: ControlLoop | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._writer: EpisodeWriter | None = None
        self._store: EpisodeStore | None = None
        self._jog = None  # robot.teleop.EndEffectorJogSource, once the rig is up
        self._demo_kinematics = None  # robot.kinematics.BimanualKinematics, built at the first demo
        self._source: SourceOption | None = None
        self._pending_estop: str | None = None
        self._loop_event_cursor: tuple[ControlLoop | None, int] = (None, 0)
        self._monitor = _Monitor()
        self._monitor_stop = threading.Event()
        self._monitor_thread: threading.Thread | None = None
        self._seed: int | None = None
        self._next_seed = 0
        self._last_saved = ""
        self._writer_error_seen: object = None
        self._dropped_reported = 0
        self._jog_hint_time_s = -1e9
        self._loop_dead_reported = False
        self._cached_loop_snapshot: tuple[LoopSnapshot | None, float, ControlLoop | None] = (None, 0.0, None)
        # Real rigs: a Start arms not yet finished; the failed read the loop last reported.
        self._start_pending = False
        self._not_answering = ""
        # The open calibration: the procedure belongs to the worker thread; the GUI reads the status.
        self._calibration: CalibrationProcedure | None = None
        self._calibration_status: CalibrationStatus | None = None
        self._calibration_refreshing = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Future:
        """Open and connect the rig and start the loop, on the worker thread. Returns at once;
        the future resolves to True when the rig runs (False: see `events`)."""
        return self._worker.submit(self._open)

    def wait_until_running(self, timeout_s: float = 60.0) -> bool:
        """Block until the rig runs or failed (scripts and tests; never the GUI thread)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                phase = self._phase
            if phase is Phase.RUNNING:
                return True
            if phase in (Phase.FAILED, Phase.STOPPED):
                return False
            time.sleep(0.02)
        return False

    def shutdown(self, recording_label: Label | str | None = Label.UNKNOWN, timeout_s: float = 30.0) -> None:
        """Stop cleanly: finish (or, with label None, discard) a recording in progress, stop the
        loop, disconnect the rig. Blocks up to `timeout_s`; call `shutdown_async` from a GUI."""
        self.shutdown_async(recording_label).result(timeout_s)
        self._worker.shutdown(wait=False)

    def shutdown_async(self, recording_label: Label | str | None = Label.UNKNOWN) -> Future:
        """Queue the shutdown on the worker thread (after whatever it is doing)."""
        with self._lock:
            if self._phase not in (Phase.STOPPING, Phase.STOPPED):
                self._phase = Phase.STOPPING
        self._monitor_stop.set()
        # The jog source stops at once: no key held down may move the arm while we wind down.
        if self._jog is not None:
            self._jog.stop_motion()
        return self._worker.submit(self._close, recording_label)

    # ------------------------------------------------------------------ requests (any thread)

    def estop(self, reason: str = "E-stop pressed in the studio") -> None:
        """Latch the E-stop at the next tick (<= one period). Works before the loop runs, too."""
        if self._jog is not None:
            self._jog.stop_motion()
        loop = self._loop
        if loop is None:
            self._pending_estop = reason
            self.events.add(Severity.ERROR, "loop", f"{reason}; it latches as soon as the rig is up.", "Clear it once the rig runs.")
            return
        loop.estop(reason)

    def clear_estop(self) -> None:
        self._pending_estop = None
        loop = self._loop
        if loop is not None:
            loop.clear_estop()

    def select_source(self, name: str) -> None:
        """Make `name` ("keyboard", "leaders", "demo", "hold") drive the arm. The loop refuses
        while the E-stop is latched and says so in the events; on a real rig the driving sources
        wait for Start arms (the rig ignores commands until its opening ceremony is over)."""
        option = _SOURCE_BY_NAME.get(name)
        if option is None:
            raise ValueError(f"unknown source {name!r}; choose one of {', '.join(_SOURCE_BY_NAME)}")
        loop = self._loop
        if loop is None:
            self.events.add(Severity.WARNING, "studio", f"{option.label} was not selected: the rig is not running yet.",
                            "Wait for the rig to come up (see the status bar), then choose again.")
            return
        if loop.snapshot(max_events=0).mode is Mode.ESTOP:
            self.events.add(Severity.WARNING, "loop", f"{option.label} was refused: the E-stop is latched.",
                            "Make the workspace safe, then press Clear E-stop and choose the source again.")
            return
        real = self._is_real_rig()
        if name == "leaders" and not (real or self._has_sim_leaders()):
            self.events.add(Severity.WARNING, "studio", "Leaders needs a rig with leader arms; this simulation has none.",
                            "Use Jog or Demo here, or open the studio with --rig configs/aloha.toml "
                            "(or configs/sim_leaders.toml: your leader arms driving the simulation).")
            return
        if name == "leaders" and not real and not self._rig.started:
            # The simulated followers wait for the operator's squeeze by themselves (robot.sim_leaders).
            self.events.add(Severity.INFO, "rig", self._rig.start_prompt,
                            "The simulated arms hold until both leader grippers are squeezed, then follow the leaders.")
        if real and name != "hold" and not self._arms_started():
            self.events.add(Severity.WARNING, "studio", f"{option.label} was not selected: the arms are not started.",
                            "Press Start arms, wait for the followers to reach the start pose, squeeze both leader grippers, then choose again.")
            return
        if name == "hold":
            loop.request_mode(Mode.HOLD)
        else:
            try:
                if name == "keyboard":
                    source = self._jog
                elif name == "leaders":
                    source = self._rig.leader_source()  # builds a small object; no device is touched here
                else:
                    source = self._new_demonstrator()
            except Exception as exc:  # a demonstrator that cannot start must not take the studio down
                log.exception("could not create the %s source", name)
                self.events.add(Severity.ERROR, "studio", f"{option.label} could not start: {exc}",
                                "The arm holds. Choose another source; report the log if it persists.")
                return
            if self._jog is not None:
                self._jog.stop_motion()
            loop.set_source(source)
            loop.request_mode(Mode.TELEOP)
        with self._lock:
            self._source = option

    def start_arms(self) -> bool:
        """Real rigs: begin the opening ceremony (followers ramp to the start pose, then the
        operator squeezes both leader grippers). The loop goes IDLE first, so it commands nothing
        meanwhile and a source chosen afterwards blends in from the start pose. Refused (with an
        event saying why) on the sim, while the E-stop is latched and while a calibration is open.
        Returns whether the start was asked for."""
        rig, loop = self._rig, self._loop
        if rig is None or loop is None or not self._is_real_rig():
            self.events.add(Severity.WARNING, "rig", "Start arms is for a real rig; the simulation needs no start.",
                            "Choose a source (Jog, Demo) to move the simulated arms.")
            return False
        if self._calibration_status is not None and not self._calibration_status.closed:
            self.events.add(Severity.WARNING, "rig", f"Start arms refused: {self._calibration_status.arm_id} is being calibrated.",
                            "Save or cancel the calibration first.")
            return False
        if self._loop_snapshot(loop).mode is Mode.ESTOP:
            self.events.add(Severity.WARNING, "rig", "Start arms refused: the E-stop is latched.",
                            "Make the workspace safe, press Clear E-stop, then Start arms.")
            return False
        if self._jog is not None:
            self._jog.stop_motion()
        loop.request_mode(Mode.IDLE)
        rig.begin_start()  # thread-safe by design: sets a flag the control thread acts on
        with self._lock:
            self._start_pending = True
            self._monitor.started = False
            self._source = None
        self.refresh_loop_snapshot()
        self.events.add(Severity.INFO, "rig", "Starting the arms: the followers move to the start pose. Keep clear of the arms.",
                        "Then take both leader handles and squeeze both grippers.")
        return True

    # ------------------------------------------------------------------ calibration (real rigs)

    def begin_calibration(self, arm_id: str) -> Future:
        """Open the step-by-step calibration of `arm_id` (follower_left, ..., leader_right). The
        procedure runs on the worker thread; `snapshot().calibration` shows its prompt and live
        reading. Refused while the arms are started or starting, while recording, or with another
        calibration open. The future resolves to True when it opened."""
        rig = self._rig
        if rig is None or not self._is_real_rig():
            self.events.add(Severity.WARNING, "rig", "Calibration is for a real rig's Dynamixel arms.",
                            "Open the studio with a real (or emulated) rig file.")
            return _done(False)
        arm_ids = self._arm_ids()
        if arm_id not in arm_ids:
            raise ValueError(f"unknown arm {arm_id!r}; choose one of {', '.join(arm_ids)}")
        with self._lock:
            started, pending = self._monitor.started, self._start_pending
        if started or pending:
            self.events.add(Severity.WARNING, "rig", "Calibration refused: the arms are powered (started or starting).",
                            "Support the follower arms, press E-stop (it cuts the torque), then Calibrate.")
            return _done(False)
        if self._writer is not None and self._writer.status().state in (WriterState.RECORDING, WriterState.FINISHING):
            self.events.add(Severity.WARNING, "rig", "Calibration refused while recording.", "Stop or discard the recording first.")
            return _done(False)
        current = self._calibration_status
        if current is not None and not current.closed:
            self.events.add(Severity.WARNING, "rig", f"{current.arm_id} is being calibrated already.",
                            "Save or cancel that calibration first.")
            return _done(False)
        return self._worker.submit(self._open_calibration, arm_id)

    def calibration_next(self) -> Future:
        """Take the reading for this step and go to the next (a refused step sets `error`)."""
        return self._worker.submit(self._calibration_call, lambda proc: proc.advance())

    def calibration_back(self) -> Future:
        return self._worker.submit(self._calibration_call, lambda proc: proc.back())

    def calibration_cancel(self) -> Future:
        """Close the calibration without saving; the calibration in use stays."""
        return self._worker.submit(self._calibration_call, self._cancel_calibration)

    def calibration_save(self) -> Future:
        """Write the result to the rig's calibration folder (CalibrationStore) and put it in use."""
        return self._worker.submit(self._calibration_call, self._save_calibration)

    def calibration_refresh(self) -> None:
        """Ask for a fresh live reading (one sync read on the worker); skipped while one is under
        way, so a GUI timer may call it at any rate."""
        with self._lock:
            if self._calibration is None or self._calibration_refreshing:
                return
            self._calibration_refreshing = True

        self._worker.submit(self._calibration_call, lambda proc: proc.step(), True)

    def calibration_status(self) -> CalibrationStatus | None:
        with self._lock:
            return self._calibration_status

    def jog(self, arm: str, direction_xyz, fine: bool = False) -> None:
        """Jog `arm` ("left"/"right") along (x forward, y left, z up) in [-1, 1] per axis, as a
        fraction of the jog source's top speed (15 % of it when `fine`). Zero stops it."""
        jog = self._jog
        if jog is None:
            return
        direction = np.clip(np.asarray(direction_xyz, dtype=np.float64), -1.0, 1.0)
        speed = jog.config.max_linear_mps * (0.15 if fine else 1.0)
        jog.set_velocity(arm, direction * speed)
        if np.any(direction):
            self._hint_if_not_jogging()

    def jog_gripper(self, arm: str, direction: float, fine: bool = False) -> None:
        """Open (+1) or close (-1) `arm`'s gripper while held; 0 stops it."""
        jog = self._jog
        if jog is None:
            return
        jog.set_gripper_velocity(arm, float(direction) * jog.config.gripper_speed_per_s * (0.3 if fine else 1.0))
        if direction:
            self._hint_if_not_jogging()

    def stop_jogging(self) -> None:
        """Zero every jog velocity (the window calls it when it loses focus)."""
        if self._jog is not None:
            self._jog.stop_motion()

    def start_recording(self, task: str, operator: str = "") -> Future:
        """Begin an episode with this task/operator; the result (or error) lands in `events`."""
        task = task.strip()
        if not task:
            self.events.add(Severity.WARNING, "recorder", "Recording did not start: the task is empty.",
                            "Type what the demonstration does in the Task field (e.g. 'fold the towel'), then start again.")
            return _done(False)
        return self._submit("starting the recording…", self._start_recording, task, operator.strip())

    def stop_recording(self, success: bool, notes: str | None = None) -> Future:
        """Stop, label success/failure, save. The future resolves to the episode path (or None)."""
        label = Label.SUCCESS if success else Label.FAILURE
        return self._submit("saving the episode…", self._stop_recording, label, notes)

    def discard_recording(self) -> Future:
        return self._submit("discarding the recording…", self._discard_recording)

    def new_episode(self, seed: int) -> Future:
        """Reset the towel (and the arms) with `seed`. Refused while recording or E-stopped."""
        return self._submit(f"resetting the towel (seed {seed})…", self._reset_episode, int(seed))

    # ------------------------------------------------------------------ reading (any thread)

    def snapshot(self) -> StudioSnapshot:
        loop = self._loop
        loop_snapshot = self._loop_snapshot(loop)
        if loop is not None:
            self._pull_loop_events(loop, loop_snapshot)
        writer_status = self._writer.status() if self._writer is not None else None
        if writer_status is not None:
            self._report_writer_problems(writer_status)
        with self._lock:
            monitor = self._monitor
            busy = self._busy
            recording = RecordingStatus(
                active=writer_status is not None and writer_status.recording,
                failed=writer_status is not None and writer_status.state is WriterState.ERROR,
                busy=busy or ("saving the episode…" if writer_status is not None and writer_status.state is WriterState.FINISHING else ""),
                elapsed_s=writer_status.duration_s if writer_status is not None and writer_status.recording else 0.0,
                frames=writer_status.frames_received if writer_status is not None else 0,
                frames_dropped=writer_status.frames_dropped if writer_status is not None else 0,
                episode_count=monitor.episode_count,
                last_saved=self._last_saved,
            )
            rig = self._rig
            arms = None
            if self._is_real_rig():
                arms = ArmsState(
                    started=monitor.started,
                    starting=self._start_pending and not monitor.started,
                    prompt=monitor.start_prompt,
                    not_answering=self._not_answering,
                    health=monitor.health,
                    thresholds=getattr(rig, "health_thresholds", HealthThresholds()),
                    arm_ids=self._arm_ids(),
                )
            return StudioSnapshot(
                phase=self._phase,
                rig_name=rig.name if rig is not None else self.rig_path.stem,
                loop=loop_snapshot,
                source=self._source,
                rig_status=monitor.rig_status,
                disk_free_bytes=monitor.disk_free_bytes,
                store_dir=self._store.root if self._store is not None else None,
                recording=recording,
                seed=self._seed,
                next_seed=self._next_seed,
                camera_names=tuple(rig.camera_names) if rig is not None else (),
                control_rate_hz=self._rig_file.control.rate_hz if self._rig_file is not None else 50.0,
                resettable=rig is not None and hasattr(rig, "reset_episode"),
                arms=arms,
                calibration=self._calibration_status,
                sim_leaders=self._has_sim_leaders(),
                tick=self.history.latest,
            )

    def _loop_snapshot(self, loop: ControlLoop | None) -> LoopSnapshot | None:
        """The loop's snapshot, at most LOOP_STATS_INTERVAL_S old: it computes percentiles over
        the stats window (~2 ms of GIL), too dear at 30 Hz when the latest tick comes for free."""
        if loop is None:
            return None
        now = time.monotonic()
        with self._lock:
            cached, when, owner = self._cached_loop_snapshot
        if cached is not None and owner is loop and now - when < LOOP_STATS_INTERVAL_S:
            return cached
        fresh = loop.snapshot(max_events=0)
        with self._lock:
            self._cached_loop_snapshot = (fresh, now, loop)
        return fresh

    def refresh_loop_snapshot(self) -> None:
        """Make the next `snapshot()` ask the loop afresh (after a request the caller waits on)."""
        with self._lock:
            self._cached_loop_snapshot = (None, 0.0, None)

    def history_window(self, span_s: float | None = 10.0) -> HistoryWindow:
        return self.history.window(span_s)

    @property
    def source_options(self) -> tuple[SourceOption, ...]:
        return SOURCE_OPTIONS

    @property
    def rig(self) -> Rig | None:
        """The rig, for tests and scripts; the GUI thread must not call into it."""
        return self._rig

    @property
    def loop(self) -> ControlLoop | None:
        return self._loop

    @property
    def store_dir(self) -> Path | None:
        return self._store.root if self._store is not None else None

    # ------------------------------------------------------------------ worker thread

    def _submit(self, busy: str, function, *args) -> Future:
        with self._lock:
            if self._phase is not Phase.RUNNING:
                phase = self._phase
            else:
                phase = None
                self._busy = busy
        if phase is not None:
            self.events.add(Severity.WARNING, "studio", f"Not now: the rig is {phase.value}.",
                            "Wait until the status bar shows the loop running.")
            return _done(None)

        def run():
            try:
                return function(*args)
            finally:
                with self._lock:
                    self._busy = ""

        return self._worker.submit(run)

    def _open(self) -> bool:
        try:
            rig, rig_file = self._rig_opener(self.rig_path)
        except RigFileError as exc:
            return self._fail(f"The rig file cannot be used: {exc}", "Fix the rig file (the message names the line), then start the studio again.")
        except (RigError, OSError, ImportError) as exc:
            return self._fail(f"The rig could not be built from {self.rig_path}: {exc}",
                              "Check the rig file and that its packages are installed (./studio.sh setup).")
        store_dir = self._store_override or rig_file.recording.store_dir
        try:
            store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return self._fail(f"The episode store {store_dir} cannot be created: {exc}",
                              "Choose a writable folder with --store DIR, or fix the folder's permissions.")
        self.events.add(Severity.INFO, "rig", f"Connecting {rig.name} ({rig_file.rig.kind})…")
        try:
            rig.connect()
        except Exception as exc:  # any driver failure: the user must see it, the studio stays up
            log.exception("rig.connect failed")
            return self._fail(f"Connecting the rig {rig.name!r} failed: {exc}",
                              "Check power and cables (hardware) or the graphics set-up (sim: MUJOCO_GL), then restart the studio.")
        try:
            loop = ControlLoop(rig, rig_file.control)
            jog = self._make_jog_source(rig_file.control)
            writer = EpisodeWriter(
                store_dir,
                rig.camera_names,
                image_format=rig_file.recording.image_format,
                jpeg_quality=rig_file.recording.jpeg_quality,
            )
        except Exception as exc:
            log.exception("building the control loop failed")
            rig.disconnect()
            return self._fail(f"The control loop could not be set up: {exc}", "Check the [control] table of the rig file.")
        config = getattr(rig, "config", None)
        with self._lock:
            self._rig, self._rig_file, self._writer, self._jog = rig, rig_file, writer, jog
            self._store = EpisodeStore(store_dir)
            self._seed = getattr(rig, "episode_seed", getattr(config, "seed", None))
            self._next_seed = (self._seed + 1) if isinstance(self._seed, int) else 0
        self._start_loop(loop)
        with self._lock:
            if self._phase is Phase.STARTING:
                self._phase = Phase.RUNNING
        self.events.add(Severity.INFO, "rig", f"{rig.name} is running at {rig_file.control.rate_hz:g} Hz; episodes go to {store_dir}.")
        self._report_unfinished_recordings()
        self._monitor_thread = threading.Thread(target=self._monitor_run, name="studio-monitor", daemon=True)
        self._monitor_thread.start()
        return True

    # ------------------------------------------------------------------ worker thread: calibration

    def _open_calibration(self, arm_id: str) -> bool:
        rig = self._rig
        with self._lock:
            started, pending = self._monitor.started, self._start_pending
        if rig is None or started or pending or rig.started:
            self.events.add(Severity.WARNING, "rig", "Calibration refused: the arms are powered (started or starting).",
                            "Support the follower arms, press E-stop (it cuts the torque), then Calibrate.")
            return False
        arm = next(a for a in rig.arms if a.arm_id == arm_id)
        procedure = CalibrationProcedure(arm_id, arm.layout, arm)
        with self._lock:
            self._calibration = procedure
        self._publish_calibration(procedure)
        self.events.add(Severity.INFO, "rig", f"Calibrating {arm_id}: follow the steps in the calibration window.")
        return True

    def _calibration_call(self, function, refresh: bool = False) -> bool:
        """Run `function(procedure)` here (the worker thread, the only caller of the procedure)
        and publish its status. A refused step keeps the procedure on that step with the reason;
        a live-reading refresh keeps the last refusal on screen unless it fails itself."""
        try:
            procedure = self._calibration
            if procedure is None:
                return False
            previous = self._calibration_status
            error = ""
            try:
                function(procedure)
            except CalibrationError as exc:
                error = str(exc)
            except (DynamixelError, RigError, OSError) as exc:
                log.warning("calibration of %s: %s", procedure.arm_id, exc)
                error = f"The arm did not answer: {exc}. Check its power and cable, then try again."
            if refresh and not error and previous is not None:
                error = previous.error
            if self._calibration is procedure:
                self._publish_calibration(procedure, error)
            return not error
        finally:
            if refresh:
                with self._lock:
                    self._calibration_refreshing = False

    def _publish_calibration(self, procedure: CalibrationProcedure, error: str = "", saved_path: str = "") -> None:
        live = procedure.live_rad
        status = CalibrationStatus(
            arm_id=procedure.arm_id,
            step=procedure.state.value,
            prompt=procedure.prompt,
            joint_names=tuple(j.name for j in procedure.layout.joints),
            live_rad=None if live is None else tuple(float(v) for v in live),
            error=error,
            saved_path=saved_path,
        )
        with self._lock:
            self._calibration_status = status

    def _cancel_calibration(self, procedure: CalibrationProcedure) -> None:
        procedure.cancel()
        self._publish_calibration(procedure)
        with self._lock:
            self._calibration = None
        self.events.add(Severity.INFO, "rig", procedure.prompt)

    def _save_calibration(self, procedure: CalibrationProcedure) -> None:
        result = procedure.result
        if result is None:
            raise CalibrationError("Nothing to save yet: go through the steps until the last one says the arm is calibrated.")
        rig = self._rig
        store = CalibrationStore(rig.config.settings.calibration_dir)
        path = store.save(result)
        # In use at once: the arm is neither started nor driven (see begin_calibration), and the
        # control thread picks the new object up at its next read of this arm.
        arm = next(a for a in rig.arms if a.arm_id == result.arm_id)
        arm.calibration = result
        self._publish_calibration(procedure, saved_path=str(path))
        with self._lock:
            self._calibration = None
        gripper = ""
        if result.gripper_open_rad is not None and result.gripper_closed_rad is not None:
            gripper = f" Gripper range measured: open {result.gripper_open_rad:.3f} rad, closed {result.gripper_closed_rad:.3f} rad."
        self.events.add(Severity.INFO, "rig", f"Saved the calibration of {result.arm_id} to {path}; it is in use now.{gripper}")

    def _is_real_rig(self) -> bool:
        rig = self._rig
        return rig is not None and not rig.simulated and hasattr(rig, "begin_start")

    def _has_sim_leaders(self) -> bool:
        rig = self._rig
        return rig is not None and rig.simulated and hasattr(rig, "leader_source")

    def _arms_started(self) -> bool:
        with self._lock:
            return self._monitor.started

    def _arm_ids(self) -> tuple[str, ...]:
        rig = self._rig
        config = getattr(rig, "config", None)
        return tuple(a.name for a in getattr(config, "arms", ()))

    def _make_jog_source(self, control: LoopConfig):
        # Kinematics of gym-aloha's ViperX model; one MjData, used on the control thread only.
        from robot.kinematics import BimanualKinematics
        from robot.teleop import EndEffectorJogSource, JogConfig

        # A dead-man timer: a key release lost by the window system must not jog forever. The
        # window refreshes held keys faster than this (see app.ui.main_window JOG_REFRESH_MS).
        # The demonstrator gets its own kinematics, built here (worker thread, ~0.2 s) so that
        # choosing it in the GUI costs nothing; both are used on the control thread only.
        self._demo_kinematics = BimanualKinematics()
        return EndEffectorJogSource(BimanualKinematics(), control.rate_hz, JogConfig(velocity_timeout_s=0.5))

    def _new_demonstrator(self) -> ActionSource:
        from robot.sim import ScriptedFoldDemonstrator

        rig = self._rig
        if rig is None or not rig.simulated:
            raise RigError("the scripted demonstrator needs the simulated rig (configs/sim.toml)")
        return ScriptedFoldDemonstrator(rig, kinematics=self._demo_kinematics)

    def _start_loop(self, loop: ControlLoop) -> None:
        self._unsubscribe = [loop.subscribe(self.history.on_tick), loop.subscribe(self._writer.on_tick)]
        loop.start()
        real = self._is_real_rig()
        # Start holding: nothing moves until the user picks a source. A real rig stays IDLE
        # (commands nothing: its torque is off until Start arms), so that holding, when chosen,
        # starts from where the arms are then and not from where they were at connection.
        if not real:
            loop.request_mode(Mode.HOLD)
        if self._pending_estop is not None:
            loop.estop(self._pending_estop)
            self._pending_estop = None
        self._loop = loop
        with self._lock:
            self._source = None if real else _SOURCE_BY_NAME["hold"]

    def _fail(self, message: str, what_to_do: str) -> bool:
        self.events.add(Severity.ERROR, "rig", message, what_to_do)
        with self._lock:
            self._phase = Phase.FAILED
        return False

    def _start_recording(self, task: str, operator: str) -> bool:
        rig, writer, rig_file = self._rig, self._writer, self._rig_file
        notes = f"seed={self._seed}" if self._seed is not None else ""
        metadata = EpisodeMetadata(
            task=task,
            operator=operator,
            rig=rig.name,
            sim=rig.simulated,
            notes=notes,
            control_rate_hz=rig_file.control.rate_hz,
        )
        try:
            path = writer.start(metadata)
        except (RecordingError, OSError) as exc:
            self.events.add(Severity.ERROR, "recorder", f"Recording did not start: {exc}",
                            "Check that the store folder exists, is writable and has free space.")
            return False
        self._writer_error_seen = None
        self._dropped_reported = 0
        self.events.add(Severity.INFO, "recorder", f"Recording {path.name} (task: {task}).")
        return True

    def _stop_recording(self, label: Label, notes: str | None) -> Path | None:
        writer = self._writer
        status = writer.status()
        if status.state not in (WriterState.RECORDING, WriterState.FINISHING, WriterState.ERROR):
            self.events.add(Severity.WARNING, "recorder", "Nothing to stop: no episode is being recorded.", "Start a recording first.")
            return None
        try:
            path = writer.stop(label, notes)
        except RecordingError as exc:
            self.events.add(Severity.ERROR, "recorder", f"The episode was not saved: {exc}", "")
            return None
        final = writer.status()
        text = f"Saved {path.name}: {label.value}, {final.frames_written} steps, {final.duration_s:.1f} s."
        with self._lock:
            self._last_saved = text
        self.events.add(Severity.INFO, "recorder", text)
        self._refresh_store()
        return path

    def _discard_recording(self) -> bool:
        try:
            self._writer.discard()
        except RecordingError as exc:
            self.events.add(Severity.ERROR, "recorder", f"Discarding failed: {exc}", "")
            return False
        self.events.add(Severity.INFO, "recorder", "The recording was discarded; nothing was saved.")
        return True

    def _reset_episode(self, seed: int) -> bool:
        rig, loop = self._rig, self._loop
        reset = getattr(rig, "reset_episode", None)
        if reset is None:
            self.events.add(Severity.WARNING, "rig", f"{rig.name} cannot reset a towel (it is not a simulation).",
                            "Lay the towel out by hand for the next episode.")
            return False
        if self._writer.status().state in (WriterState.RECORDING, WriterState.FINISHING):
            self.events.add(Severity.WARNING, "studio", "New episode refused while recording.", "Stop or discard the recording first.")
            return False
        snap = loop.snapshot(max_events=0)
        if snap.mode is Mode.ESTOP:
            self.events.add(Severity.WARNING, "studio", "New episode refused: the E-stop is latched.",
                            "Clear the E-stop first (the reset moves the arms back to the start pose).")
            return False
        previous = self._source
        driving = snap.mode in (Mode.TELEOP, Mode.POLICY)
        # The sim belongs to the control thread while the loop runs; stop the loop, reset on this
        # thread, then run a fresh loop whose hold pose is read from the reset arms (a loop kept
        # alive would hold - and pull the arms back to - the pose from before the reset).
        self._stop_loop(loop)
        try:
            reset(seed)
        except Exception as exc:
            log.exception("reset_episode failed")
            self.events.add(Severity.ERROR, "rig", f"Resetting the towel with seed {seed} failed: {exc}",
                            "Try another seed; if it persists restart the studio.")
        else:
            with self._lock:
                self._seed = seed
                self._next_seed = seed + 1
            self.events.add(Severity.INFO, "rig", f"New episode: towel reset with seed {seed}.")
        self.history.clear()  # simulated time restarts at 0: old ticks would plot in the future
        self._start_loop(ControlLoop(rig, self._rig_file.control))
        if driving and previous is not None and previous.name != "hold":
            self.select_source(previous.name)
        return True

    def _stop_loop(self, loop: ControlLoop) -> None:
        self._pull_loop_events(loop, None)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        loop.stop()

    def _close(self, recording_label: Label | str | None) -> None:
        writer, loop, rig = self._writer, self._loop, self._rig
        if writer is not None and writer.status().state in (WriterState.RECORDING, WriterState.FINISHING, WriterState.ERROR):
            try:
                if recording_label is None:
                    writer.discard()
                    self.events.add(Severity.INFO, "recorder", "The recording was discarded on closing.")
                else:
                    path = writer.stop(recording_label)
                    self.events.add(Severity.INFO, "recorder", f"Saved {path.name} on closing.")
            except RecordingError as exc:
                self.events.add(Severity.ERROR, "recorder", f"On closing: {exc}", "")
        if loop is not None:
            self._stop_loop(loop)
        if rig is not None:
            try:
                rig.disconnect()
            except Exception:
                log.exception("rig.disconnect failed")
        if self._monitor_thread is not None:
            self._monitor_thread.join(2.0)
        with self._lock:
            self._phase = Phase.STOPPED
        log.info("studio bridge stopped")

    # ------------------------------------------------------------------ monitoring

    def _monitor_run(self) -> None:
        next_slow_s = 0.0
        while not self._monitor_stop.is_set():
            self._refresh_arms()
            if time.monotonic() < next_slow_s:
                self._monitor_stop.wait(ARM_STATE_INTERVAL_S)
                continue
            next_slow_s = time.monotonic() + 1.0
            self._refresh_store()
            rig = self._rig
            health_reports = getattr(rig, "health_reports", None)
            if health_reports is not None:
                try:
                    reports = health_reports()
                except Exception:
                    log.exception("rig.health_reports failed")
                    reports = {}
                order = {name: k for k, name in enumerate(self._arm_ids())}
                with self._lock:
                    self._monitor.health = tuple(sorted(reports.values(), key=lambda r: order.get(r.arm_id, 99)))
            if rig is not None:
                try:
                    status = rig.status()
                except Exception as exc:
                    log.exception("rig.status failed")
                    status = RigStatus(name=rig.name, messages=(f"status unavailable: {exc}",))
                with self._lock:
                    self._monitor.rig_status = status
                prompts = {self._monitor.start_prompt, getattr(rig, "start_prompt", None)}
                # One event when a message appears, and again only after it went away: messages
                # carry live numbers ("31.5 bus errors/s") that must not become an event a second.
                present = set()
                for message in status.messages:
                    key = re.sub(r"\d+(\.\d+)?", "#", message)
                    present.add(key)
                    # The start prompt has its own place in the window (the arms panel).
                    if key not in self._monitor.rig_messages_seen and message not in prompts:
                        self.events.add(Severity.WARNING, "rig", message)
                self._monitor.rig_messages_seen = present
            self._monitor_stop.wait(ARM_STATE_INTERVAL_S)

    def _refresh_arms(self) -> None:
        """Copy the real rig's start state (lock-guarded reads, allowed from any thread)."""
        rig = self._rig
        if rig is None or not self._is_real_rig():
            return
        started, prompt = rig.started, rig.start_prompt
        loop = self._loop
        estopped = loop is not None and self._loop_snapshot(loop).mode is Mode.ESTOP
        with self._lock:
            was_started = self._monitor.started
            self._monitor.started, self._monitor.start_prompt = started, prompt
            if started or estopped:
                self._start_pending = False  # done, or the E-stop ended the ceremony (torque cut)
        if started and not was_started:
            self.events.add(Severity.INFO, "rig", "The arms are started.", "Choose Leaders (F3) to teleoperate, or Jog.")

    def _refresh_store(self) -> None:
        store = self._store
        if store is None:
            return
        try:
            free = shutil.disk_usage(store.root).free
            count = len(store.episode_paths())
        except OSError as exc:
            free, count = None, None
            log.warning("episode store %s unreadable: %s", store.root, exc)
        with self._lock:
            self._monitor.disk_free_bytes = free
            self._monitor.episode_count = count
            warn = free is not None and free < LOW_DISK_BYTES and not self._monitor.low_disk_warned
            if free is not None:
                # Warn again only after the space has come back (hysteresis of 2x).
                self._monitor.low_disk_warned = free < LOW_DISK_BYTES or (self._monitor.low_disk_warned and free < 2 * LOW_DISK_BYTES)
        if warn:
            self.events.add(Severity.WARNING, "recorder",
                            f"Only {free / 1024**3:.1f} GB free where episodes are saved ({store.root}).",
                            "Free some space or choose another store (--store DIR): a recording stops when the disk is full.")

    def _report_unfinished_recordings(self) -> None:
        partials = self._store.partial_paths()
        if partials:
            names = ", ".join(p.name for p in partials[:3]) + ("…" if len(partials) > 3 else "")
            self.events.add(Severity.WARNING, "recorder",
                            f"{len(partials)} unfinished recording(s) from an earlier session: {names}.",
                            "Run `python run.py episodes recover` to turn them into episodes.")

    def _pull_loop_events(self, loop: ControlLoop, snapshot: LoopSnapshot | None) -> None:
        with self._lock:
            # Event numbers restart with each loop (a towel reset runs a fresh one): the cursor
            # belongs to one loop, and a caller still holding the previous loop reads nothing.
            cursor_loop, seq = self._loop_event_cursor
            if cursor_loop is not loop:
                if loop is not self._loop:
                    return
                seq = 0
            new = loop.events_since(seq)
            self._loop_event_cursor = (loop, new[-1].seq if new else seq)
        severity = {EventLevel.INFO: Severity.INFO, EventLevel.WARNING: Severity.WARNING, EventLevel.ERROR: Severity.ERROR}
        for event in new:
            self.events.add(severity[event.level], "loop", event.message, event.what_to_do)
            if event.code == "rig_read":
                # A failed read names the servo; the rig panel shows it until reading resumes.
                with self._lock:
                    self._not_answering = event.message if event.level is EventLevel.ERROR else ""
        if snapshot is not None and not snapshot.running and not self._loop_dead_reported:
            with self._lock:
                phase = self._phase
            if phase is Phase.RUNNING and self._busy == "":
                self._loop_dead_reported = True
                self.events.add(Severity.ERROR, "loop", "The control loop is not running.",
                                "Save your work and restart the studio; report the log file.")

    def _report_writer_problems(self, status: WriterStatus) -> None:
        error = status.last_error
        if error is None:
            return
        if isinstance(error, FramesDropped):
            # Report when drops first appear and then on each further 50, not every frame.
            if status.frames_dropped >= self._dropped_reported + (1 if self._dropped_reported == 0 else 50):
                self._dropped_reported = status.frames_dropped
                self.events.add(Severity.WARNING, "recorder", str(error))
            return
        if error is not self._writer_error_seen:
            self._writer_error_seen = error
            self.events.add(Severity.ERROR, "recorder", str(error),
                            "Press Stop to keep the frames written so far, or Discard.")

    def _hint_if_not_jogging(self) -> None:
        now = time.monotonic()
        with self._lock:
            source = self._source
        if (source is None or source.name != "keyboard") and now - self._jog_hint_time_s > 5.0:
            self._jog_hint_time_s = now
            self.events.add(Severity.INFO, "studio", "Jog keys and pads move the arm only with the Jog source.",
                            "Press F2 (or the Jog button) to jog.")


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
