"""The studio: one rig session driven by requests from the window (or a test, or a script), read
through immutable snapshots. No Qt here.

    studio = Studio("configs/sim.toml", store_dir)
    studio.start()                          # opens the rig on the worker thread
    studio.select_source("keyboard"); studio.jog("left", (1, 0, 0))
    studio.start_recording("fold the towel", "ana"); studio.stop_recording(success=True)
    snap = studio.snapshot()                # StudioSnapshot: what the window paints
    studio.shutdown()

Threads
-------
- Any thread (the GUI thread) calls the public methods; none waits on a device or a file.
  Requests to the loop are queued by the loop itself (`estop`, `select_source`, jogging);
  everything slow (opening the rig, starting/stopping a recording, resetting the towel,
  calibration steps, shutting down) runs on the studio's one worker thread, in the order asked.
- The control thread (`robot.control_loop.ControlLoop`) calls the session's subscribers (writer,
  plot history: both only copy or enqueue) and its event listener (appends to `events`).
- The monitor thread (`app.studio.monitor`) refreshes what costs a system call or a computation.
- `snapshot()` copies values under short locks and changes nothing.

The parts: `session` (rig + loop + writer + history, wired in `open_session`), `sources` (what
can drive the arm), `recording`, `calibration`, `monitor`, `events`, `snapshot`.

A rig with real follower arms (`Capabilities.real_arms`) adds the opening ceremony: `start_arms()`
puts the loop in IDLE (it commands nothing) and asks the rig to start (`Startable.begin_start`,
any thread by design); the control thread carries the ceremony out inside its reads; a source
chosen afterwards blends in from where the arms are (no jump).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from app.studio.autonomy import AutonomyControl, AutonomySettings
from app.studio.calibration import CalibrationControl
from app.studio.events import EventLog, Severity
from app.studio.history import HistoryWindow, TickHistory
from app.studio.monitor import MonitorReadings, RigMonitor
from app.studio.paths import DEFAULT_RIG_FILE
from app.studio.recording import RecordingControl
from app.studio.session import RigOpener, Session, SessionError, open_session
from app.studio.snapshot import (
    SOURCE_BY_NAME,
    SOURCE_OPTIONS,
    ArmsState,
    AutonomyStatus,
    CalibrationStatus,
    Phase,
    RecordingStatus,
    SourceOption,
    StudioSnapshot,
)
from app.studio.sources import SourceFactory, refuse_source
from recordings.schema import Label
from robot.capabilities import Calibratable, Resettable, Startable
from robot.control_loop import ControlLoop
from robot.rigs import open_rig
from robot.types import LoopEvent, Mode

log = logging.getLogger(__name__)

#: Events a snapshot carries (the window shows those newer than the last it showed; at 30 Hz
#: paints this is far more than ever arrive between two).
SNAPSHOT_EVENTS = 100

__all__ = ["Phase", "SOURCE_OPTIONS", "Studio", "StudioSnapshot"]


class Studio:
    """Owns one rig session. Public methods are safe to call from the GUI thread.

    rig_path: a rig file (TOML, see configs/); store_dir: where episodes go (default: the rig
    file's [recording] store_dir). Call `start()` once, `shutdown()` once.
    """

    def __init__(
        self,
        rig_path: Path | str = DEFAULT_RIG_FILE,
        store_dir: Path | str | None = None,
        *,
        history_capacity: int = 750,
        rig_opener: RigOpener = open_rig,
    ) -> None:
        self.rig_path = Path(rig_path)
        self._store_override = Path(store_dir) if store_dir is not None else None
        self._rig_opener = rig_opener
        self._history_capacity = history_capacity
        self.events = EventLog()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-worker")
        self._lock = threading.Lock()
        self._phase = Phase.STARTING
        self._busy = ""
        # Set once on the worker thread when the rig is up; read by any thread afterwards.
        self._session: Session | None = None
        self._sources: SourceFactory | None = None
        self._recording: RecordingControl | None = None
        self._calibration: CalibrationControl | None = None
        self._monitor: RigMonitor | None = None
        self._autonomy: AutonomyControl | None = None
        # Under _lock.
        self._source: SourceOption | None = None
        self._pending_estop: str | None = None
        self._seed: int | None = None
        self._next_seed = 0
        self._not_answering = ""  # the failed read the loop last reported
        self._jog_hint_time_s = -1e9

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Future:
        """Open and connect the rig and start the loop, on the worker thread. Returns at once;
        the future resolves to True when the rig runs (False: see `events`)."""
        return self._worker.submit(self._open)

    def wait_until_running(self, timeout_s: float = 60.0) -> bool:
        """Block until the rig runs or failed (scripts and tests; never the GUI thread)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            phase = self.phase
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
        # The jog source stops at once: no key held down may move the arm while we wind down.
        self.stop_jogging()
        return self._worker.submit(self._close, recording_label)

    # ------------------------------------------------------------------ reading (any thread)

    @property
    def phase(self) -> Phase:
        with self._lock:
            return self._phase

    @property
    def session(self) -> Session | None:
        """The rig session, for tests and scripts; the GUI thread must not call into its rig."""
        return self._session

    @property
    def rig(self):
        session = self._session
        return session.rig if session is not None else None

    @property
    def loop(self) -> ControlLoop | None:
        session = self._session
        return session.loop if session is not None else None

    @property
    def history(self) -> TickHistory | None:
        session = self._session
        return session.history if session is not None else None

    @property
    def store_dir(self) -> Path | None:
        session = self._session
        return session.store.root if session is not None and session.store is not None else None

    @property
    def source_options(self) -> tuple[SourceOption, ...]:
        return SOURCE_OPTIONS

    def history_window(self, span_s: float | None = 10.0) -> HistoryWindow | None:
        history = self.history
        return history.window(span_s) if history is not None else None

    @property
    def autonomy(self) -> AutonomyControl | None:
        """The policy's control (None before the rig runs): its runner for scripts and benchmarks;
        the window uses the requests below and `snapshot().autonomy`."""
        return self._autonomy

    @property
    def calibration(self) -> CalibrationControl | None:
        """The calibration of a Calibratable rig (None otherwise): its steps (`next`, `back`,
        `save`, `cancel`, `refresh`) are queued on the studio's worker thread."""
        return self._calibration

    def calibration_status(self) -> CalibrationStatus | None:
        return self._calibration.status() if self._calibration is not None else None

    def snapshot(self) -> StudioSnapshot:
        """Everything the window paints, copied now. Changes nothing."""
        session = self._session
        with self._lock:
            phase, busy, source = self._phase, self._busy, self._source
            seed, next_seed = self._seed, self._next_seed
            not_answering = self._not_answering
        events = self.events.recent(SNAPSHOT_EVENTS)
        if session is None:
            return StudioSnapshot(phase=phase, rig_name=self.rig_path.stem, source=source, seed=seed,
                                  next_seed=next_seed, events=events)
        autonomy = self._autonomy
        # The tick before the loop's state: the state is then at least as new as the tick.
        tick = session.history.latest
        loop_state = session.loop.state()
        readings = self._monitor.readings if self._monitor is not None else MonitorReadings()
        recording = (self._recording.snapshot(busy, readings.episode_count) if self._recording is not None
                     else RecordingStatus(busy=busy, episode_count=readings.episode_count))
        caps = session.capabilities
        arms = None
        if caps.real_arms:
            rig = session.rig
            started = rig.started  # Startable: a lock-guarded read, any thread
            arms = ArmsState(
                started=started,
                starting=rig.starting and not started,
                prompt=rig.start_prompt,
                not_answering=not_answering,
                health=readings.health,
                thresholds=rig.health_thresholds,
                arm_ids=rig.calibration_arm_ids if isinstance(rig, Calibratable) else rig.health_arm_ids,
            )
        return StudioSnapshot(
            phase=phase,
            rig_name=session.rig.name,
            loop=loop_state,
            loop_stats=readings.loop_stats,
            source=source,
            rig_status=readings.rig_status,
            disk_free_bytes=readings.disk_free_bytes,
            store_dir=session.store.root if session.store is not None else None,
            recording=recording,
            seed=seed,
            next_seed=next_seed,
            camera_names=tuple(session.rig.camera_names),
            control_rate_hz=session.rig_file.control.rate_hz,
            capabilities=caps,
            arms=arms,
            calibration=self.calibration_status(),
            tick=tick,
            events=events,
            autonomy=autonomy.status(loop_state) if autonomy is not None else AutonomyStatus(),
        )

    # ------------------------------------------------------------------ requests (any thread)

    def estop(self, reason: str = "E-stop pressed in the studio") -> None:
        """Latch the E-stop at the next tick (<= one period). Works before the loop runs, too."""
        self.stop_jogging()
        loop = self.loop
        if loop is None:
            with self._lock:
                self._pending_estop = reason
            self.events.add(Severity.ERROR, "loop", f"{reason}; it latches as soon as the rig is up.", "Clear it once the rig runs.")
            return
        loop.estop(reason)

    def clear_estop(self) -> None:
        with self._lock:
            self._pending_estop = None
        loop = self.loop
        if loop is not None:
            loop.clear_estop()

    def select_source(self, name: str) -> None:
        """Make `name` ("keyboard", "leaders", "demo", "hold") drive the arm. Refused, with an
        event saying why, while the E-stop is latched, when the rig has no such source, and on
        real follower arms until Start arms has finished."""
        option = SOURCE_BY_NAME.get(name)
        if option is None:
            raise ValueError(f"unknown source {name!r}; choose one of {', '.join(SOURCE_BY_NAME)}")
        session, sources = self._session, self._sources
        if session is None or sources is None:
            self.events.add(Severity.WARNING, "studio", f"{option.label} was not selected: the rig is not running yet.",
                            "Wait for the rig to come up (see the status bar), then choose again.")
            return
        loop, rig, caps = session.loop, session.rig, session.capabilities
        refusal = refuse_source(option, caps, loop.state().mode, isinstance(rig, Startable) and rig.started)
        if refusal is not None:
            self.events.add(Severity.WARNING, refusal.origin, refusal.message, refusal.what_to_do)
            return
        if name == "leaders" and not caps.real_arms and isinstance(rig, Startable) and not rig.started:
            # The simulated followers wait for the operator's squeeze by themselves (robot.sim_leaders).
            self.events.add(Severity.INFO, "rig", rig.start_prompt,
                            "The simulated arms hold until both leader grippers are squeezed, then follow the leaders.")
        if name == "hold":
            loop.request_mode(Mode.HOLD)
        else:
            try:
                source = sources.make(name)  # builds a small object; no device is touched here
            except Exception as exc:  # a source that cannot start must not take the studio down
                log.exception("could not create the %s source", name)
                self.events.add(Severity.ERROR, "studio", f"{option.label} could not start: {exc}",
                                "The arm holds. Choose another source; report the log if it persists.")
                return
            sources.jog.stop_motion()
            loop.set_source(source)
            loop.request_mode(Mode.TELEOP)
        with self._lock:
            self._source = option

    def start_arms(self) -> bool:
        """Real follower arms: begin the opening ceremony (followers ramp to the start pose, then
        the operator squeezes both leader grippers). Refused (with an event saying why) on a
        simulation, while the E-stop is latched and while a calibration is open. Returns whether
        the start was asked for."""
        session = self._session
        if session is None or not session.capabilities.real_arms:
            self.events.add(Severity.WARNING, "rig", "Start arms is for a real rig; the simulation needs no start.",
                            "Choose a source (Jog, Demo) to move the simulated arms.")
            return False
        if self._calibration is not None and self._calibration.open:
            self.events.add(Severity.WARNING, "rig", f"Start arms refused: {self._calibration.status().arm_id} is being calibrated.",
                            "Save or cancel the calibration first.")
            return False
        if session.loop.state().mode is Mode.ESTOP:
            self.events.add(Severity.WARNING, "rig", "Start arms refused: the E-stop is latched.",
                            "Make the workspace safe, press Clear E-stop, then Start arms.")
            return False
        if session.rig.started:
            self.events.add(Severity.WARNING, "rig", "Start arms refused: the arms are started already.",
                            "To bring them back to the start pose, press E-stop, clear it, then Start arms.")
            return False
        self.stop_jogging()
        session.loop.request_mode(Mode.IDLE)
        session.rig.begin_start()  # thread-safe by design: sets a flag the control thread acts on
        with self._lock:
            self._source = None
        self.events.add(Severity.INFO, "rig", "Starting the arms: the followers move to the start pose. Keep clear of the arms.",
                        "Then take both leader handles and squeeze both grippers.")
        return True

    def jog(self, arm: str, direction_xyz, fine: bool = False) -> None:
        """Jog `arm` ("left"/"right") along (x forward, y left, z up) in [-1, 1] per axis, as a
        fraction of the jog source's top speed (15 % of it when `fine`). Zero stops it."""
        sources = self._sources
        if sources is None:
            return
        jog = sources.jog
        direction = np.clip(np.asarray(direction_xyz, dtype=np.float64), -1.0, 1.0)
        jog.set_velocity(arm, direction * jog.config.max_linear_mps * (0.15 if fine else 1.0))
        if np.any(direction):
            self._hint_if_not_jogging()

    def jog_gripper(self, arm: str, direction: float, fine: bool = False) -> None:
        """Open (+1) or close (-1) `arm`'s gripper while held; 0 stops it."""
        sources = self._sources
        if sources is None:
            return
        jog = sources.jog
        jog.set_gripper_velocity(arm, float(direction) * jog.config.gripper_speed_per_s * (0.3 if fine else 1.0))
        if direction:
            self._hint_if_not_jogging()

    def stop_jogging(self) -> None:
        """Zero every jog velocity (the window calls it when it loses focus)."""
        if self._sources is not None:
            self._sources.jog.stop_motion()

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
        return self._submit("discarding the recording…", lambda: self._recording.discard())

    def new_episode(self, seed: int) -> Future:
        """Reset the towel (and the arms) with `seed`. Refused while recording or E-stopped."""
        return self._submit(f"resetting the towel (seed {seed})…", self._reset_episode, int(seed))

    # ------------------------------------------------------------------ autonomy (any thread)

    def load_policy(self, path: str | Path, settings: AutonomySettings | None = None) -> Future:
        """Load a checkpoint (or a run folder: its best) on the worker thread, checked against the
        rig; `snapshot().autonomy` shows LOADING, then READY or why not. The future resolves to
        whether it is ready."""
        autonomy = self._autonomy
        if autonomy is None:
            self.events.add(Severity.WARNING, "policy", "The policy cannot be loaded before the rig runs.",
                            "Wait for the rig to come up (see the status bar), then load it again.")
            return _done(False)
        return self._worker.submit(autonomy.load, path, settings or AutonomySettings())

    def start_autonomy(self) -> bool:
        """Hand the arm to the loaded policy (refused, with an event, when it cannot drive now)."""
        autonomy = self._autonomy
        if autonomy is None or not autonomy.start():
            return False
        self.stop_jogging()
        with self._lock:
            self._source = None  # the policy is no entry of the source selector
        return True

    def stop_autonomy(self) -> None:
        """The policy lets go; the arm holds where it is."""
        if self._autonomy is not None:
            self._autonomy.stop()

    def take_over(self) -> bool:
        """The person drives: the leader arms on a rig whose leaders follow, else keyboard jogging."""
        if self._autonomy is None:
            return False
        self.stop_jogging()  # jogging starts from rest, not from a key held before
        return self._autonomy.take_over()

    def hand_back(self) -> bool:
        """The policy drives again, from where the arm is."""
        if self._autonomy is None:
            return False
        self.stop_jogging()
        return self._autonomy.hand_back()

    # ------------------------------------------------------------------ calibration (any thread)

    def begin_calibration(self, arm_id: str) -> Future:
        """Open the step-by-step calibration of `arm_id` (follower_left, ..., leader_right). The
        procedure runs on the worker thread; `snapshot().calibration` shows its prompt and live
        reading. Refused while the arms are started or starting, while recording, or with another
        calibration open. The future resolves to True when it opened."""
        session, control = self._session, self._calibration
        if session is None or control is None:
            self.events.add(Severity.WARNING, "rig", "Calibration is for a real rig's Dynamixel arms.",
                            "Open the studio with a real (or emulated) rig file.")
            return _done(False)
        if arm_id not in session.rig.calibration_arm_ids:
            raise ValueError(f"unknown arm {arm_id!r}; choose one of {', '.join(session.rig.calibration_arm_ids)}")
        if self._arms_powered():
            return _done(False)
        if self._recording is not None and self._recording.is_recording():
            self.events.add(Severity.WARNING, "rig", "Calibration refused while recording.", "Stop or discard the recording first.")
            return _done(False)
        if control.open:
            self.events.add(Severity.WARNING, "rig", f"{control.status().arm_id} is being calibrated already.",
                            "Save or cancel that calibration first.")
            return _done(False)
        return self._worker.submit(lambda: not self._arms_powered() and control.open_procedure(arm_id))

    def _arms_powered(self) -> bool:
        """True (with an event) when the arms are started or starting: no calibration then."""
        rig = self.rig
        if isinstance(rig, Startable) and (rig.started or rig.starting):
            self.events.add(Severity.WARNING, "rig", "Calibration refused: the arms are powered (started or starting).",
                            "Support the follower arms, press E-stop (it cuts the torque), then Calibrate.")
            return True
        return False

    # ------------------------------------------------------------------ worker thread

    def _submit(self, busy: str, function, *args) -> Future:
        with self._lock:
            phase = None if self._phase is Phase.RUNNING else self._phase
            if phase is None:
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
        self.events.add(Severity.INFO, "rig", f"Opening {self.rig_path.name}…")
        try:
            session = open_session(self.rig_path, self._store_override, history_capacity=self._history_capacity,
                                   rig_opener=self._rig_opener)
        except SessionError as exc:
            return self._fail(exc.message, exc.what_to_do)
        try:
            sources = SourceFactory(session.rig, session.rig_file.control)
        except Exception as exc:
            log.exception("building the teleoperation sources failed")
            session.close()
            return self._fail(f"The teleoperation sources could not be built: {exc}",
                              "Check that gym-aloha is installed (./studio.sh setup), then restart the studio.")
        session.add_event_listener(self._on_loop_event)
        rig = session.rig
        self._sources = sources
        self._recording = RecordingControl(session.writer, self.events, self._hold_after_writer_death)
        self._autonomy = AutonomyControl(session, sources.jog, self.events)
        if isinstance(rig, Calibratable):
            self._calibration = CalibrationControl(rig, self.events, self._worker)
        with self._lock:
            if isinstance(rig, Resettable):
                self._seed = rig.episode_seed
                self._next_seed = self._seed + 1
        self._session = session
        self._start_loop(session.loop)
        self._monitor = RigMonitor(session, self.events, self._recording, self._loop_expected, self._on_arms_started)
        self._monitor.start()
        with self._lock:
            if self._phase is Phase.STARTING:
                self._phase = Phase.RUNNING
        self.events.add(Severity.INFO, "rig", f"{rig.name} is running at {session.rig_file.control.rate_hz:g} Hz; "
                                              f"episodes go to {session.store.root}.")
        self._recording.report_unfinished(session.store)
        return True

    def _fail(self, message: str, what_to_do: str) -> bool:
        self.events.add(Severity.ERROR, "rig", message, what_to_do)
        with self._lock:
            self._phase = Phase.FAILED
        return False

    def _start_loop(self, loop: ControlLoop) -> None:
        loop.start()
        real = self._session.capabilities.real_arms
        # Start holding: nothing moves until the user picks a source. Real arms stay IDLE
        # (commands nothing: their torque is off until Start arms), so that holding, when chosen,
        # starts from where the arms are then and not from where they were at connection.
        if not real:
            loop.request_mode(Mode.HOLD)
        with self._lock:
            pending, self._pending_estop = self._pending_estop, None
            self._source = None if real else SOURCE_BY_NAME["hold"]
        if pending is not None:
            loop.estop(pending)

    def _loop_expected(self) -> bool:
        with self._lock:
            return self._phase is Phase.RUNNING and not self._busy

    def _hold_after_writer_death(self) -> None:  # monitor thread
        """The recorder's process died while recording: hold the arm (the event says why)."""
        session = self._session
        if session is not None and session.loop.state().mode in (Mode.TELEOP, Mode.POLICY):
            self.select_source("hold")
            self.events.add(Severity.WARNING, "studio", "The arm holds: the recorder stopped, so this motion would not be recorded.",
                            "Stop (or discard) the recording, then choose a source and record again.")

    def _on_arms_started(self) -> None:  # monitor thread
        self.events.add(Severity.INFO, "rig", "The arms are started.", "Choose Leaders (F3) to teleoperate, or Jog.")

    def _on_loop_event(self, event: LoopEvent) -> None:  # control thread
        self.events.add(event.severity, "loop", event.message, event.what_to_do)
        if event.code == "rig_read":
            # A failed read names the servo; the arms panel shows it until reading resumes.
            with self._lock:
                self._not_answering = event.message if event.severity is Severity.ERROR else ""

    def _start_recording(self, task: str, operator: str) -> bool:
        with self._lock:
            notes = f"seed={self._seed}" if self._seed is not None else ""
        return self._recording.start(self._session.metadata(task, operator, notes))

    def _stop_recording(self, label: Label, notes: str | None) -> Path | None:
        path = self._recording.stop(label, notes)
        if path is not None:
            self._monitor.refresh_slow()
        return path

    def _reset_episode(self, seed: int) -> bool:
        session = self._session
        rig, loop = session.rig, session.loop
        if not isinstance(rig, Resettable):
            self.events.add(Severity.WARNING, "rig", f"{rig.name} cannot reset a towel (it is not a simulation).",
                            "Lay the towel out by hand for the next episode.")
            return False
        if self._recording.is_recording():
            self.events.add(Severity.WARNING, "studio", "New episode refused while recording.", "Stop or discard the recording first.")
            return False
        mode = loop.state().mode
        if mode is Mode.ESTOP:
            self.events.add(Severity.WARNING, "studio", "New episode refused: the E-stop is latched.",
                            "Clear the E-stop first (the reset moves the arms back to the start pose).")
            return False
        with self._lock:
            previous = self._source
        driving = mode in (Mode.TELEOP, Mode.POLICY)
        # The sim belongs to the control thread while the loop runs: stop the loop, reset here,
        # then run a fresh loop whose hold pose is read from the reset arms.
        session.stop_loop()
        try:
            rig.reset_episode(seed)
        except Exception as exc:
            log.exception("reset_episode failed")
            self.events.add(Severity.ERROR, "rig", f"Resetting the towel with seed {seed} failed: {exc}",
                            "Try another seed; if it persists restart the studio.")
        else:
            with self._lock:
                self._seed, self._next_seed = seed, seed + 1
            self.events.add(Severity.INFO, "rig", f"New episode: towel reset with seed {seed}.")
        session.history.clear()  # simulated time restarts at 0: old ticks would plot in the future
        self._start_loop(session.new_loop())
        if driving and previous is not None and previous.name != "hold":
            self.select_source(previous.name)
        return True

    def _close(self, recording_label: Label | str | None) -> None:
        session = self._session
        if self._monitor is not None:
            self._monitor.stop()
        if session is not None:
            self._recording.close(recording_label)
            try:
                session.close()
            except Exception:
                log.exception("closing the rig session failed")
            if self._autonomy is not None:
                self._autonomy.close()
        with self._lock:
            self._phase = Phase.STOPPED
        log.info("studio stopped")

    def _hint_if_not_jogging(self) -> None:
        now = time.monotonic()
        with self._lock:
            source = self._source
            if (source is not None and source.name == "keyboard") or now - self._jog_hint_time_s <= 5.0:
                return
            if self._autonomy is not None and self._autonomy.intervening:
                return  # the person took over from the policy: the jog keys drive
            self._jog_hint_time_s = now
        self.events.add(Severity.INFO, "studio", "Jog keys and pads move the arm only with the Jog source.",
                        "Press F2 (or the Jog button) to jog.")


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
