"""Autonomy in the studio: load a checkpoint, check it fits the rig, hand the arm to the policy,
take it back and hand it back, and record every step as what it was. No Qt here.

    control = AutonomyControl(session, sources, events)
    control.load(path, AutonomySettings(strategy="rtc"))   # studio worker thread (loads torch weights)
    control.start()                                        # any thread: the loop's POLICY mode
    control.take_over(); control.hand_back()               # any thread
    control.status(loop_state)                             # any thread: AutonomyStatus for the snapshot
    control.stop(); control.close()

Pieces: `model.runner.PolicyRunner` (the policy on its thread, `model.execution` strategies) is
wrapped in a `robot.autonomy.SupervisedSource` with the person's source: the leader arms on a rig
whose leaders can follow (`LeadersFollow`: grabbing one takes over), keyboard jogging otherwise. The
runner's chunk and step records go to the session's writer (`recordings.policy_tables`), with the
checkpoint, its hash and the strategy as /policy attributes of every episode the policy acts in.
Nothing here bypasses the loop: the E-stop latches over the policy as over any source, and a
policy fault holds the arm (the loop's event says why and what to do).

Threads: `load` on the studio's worker thread; `start`, `stop`, `take_over`, `hand_back`,
`status` from any thread (they queue requests to the loop or set one attribute); `close` by the
owner when the session closes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from app.studio.checkpoints import CheckpointInfo, checkpoint_hash, describe_checkpoint
from app.studio.events import EventLog, Severity
from app.studio.session import Session
from app.studio.snapshot import AutonomyState, AutonomyStatus
from model.compatibility import RigInputs, compare, read_policy_inputs
from model.errors import PolicyRigMismatch
from recordings.policy_tables import CHUNKS, STEPS
from recordings.writer import EpisodeWriter
from recordings.writer_process import ProcessEpisodeWriter
from robot.autonomy import Supervision, SupervisedSource
from robot.capabilities import EvaluatesTask, HasLeaders, LeadersFollow, Startable
from robot.control_loop import LoopState
from robot.types import ActionSource, Mode

if TYPE_CHECKING:  # torch is loaded only when a checkpoint is
    from model.runner import ChunkRecord, PolicyRunner, StepRecord

log = logging.getLogger(__name__)

#: Name of the supervised source in the loop (and so in its events: "The source 'policy' ...").
SOURCE_NAME = "policy"


@dataclass(frozen=True)
class AutonomySettings:
    """How to run a checkpoint. device: "cuda", "cpu" or None (cuda when present); strategy:
    "plain", "ensemble" or "rtc" (`model.execution`); every: ticks between chunks (None: the
    strategy's default); decay: ensembling's weight decay; max_guidance: RTC's beta; threads:
    torch CPU threads of the policy thread (None: automatic); max_image_age_s: a camera frame older
    than this stops the policy (model.runner.RunnerConfig); process: run the policy in a process of
    its own (`model.policy_process`) instead of a thread of the studio's, `process_nice` added to its
niceness; allow_mismatch: load a checkpoint
    that does not fit the rig anyway (experts; the mismatch is still shown)."""

    device: str | None = None
    strategy: str = "ensemble"
    every: int | None = None
    decay: float = 0.01
    max_guidance: float = 5.0
    threads: int | None = None
    max_image_age_s: float = 0.5
    process: bool = False
    process_nice: int = 0
    allow_mismatch: bool = False


def policy_attributes(info: CheckpointInfo, digest: str, settings: dict, device: str, delay_ms) -> dict:
    """The /policy attributes of the episodes a policy acts in (scalars only)."""
    attrs = {"checkpoint": str(info.path), "checkpoint_hash": digest, "preset": info.preset, "variant": info.variant,
             "device": device, "delay_ms": "real time" if delay_ms is None else str(delay_ms)}
    attrs.update({key: value for key, value in settings.items() if isinstance(value, (int, float, str))})
    return attrs


def record_policy(runner: "PolicyRunner", writer: ProcessEpisodeWriter | EpisodeWriter) -> Callable[[], None]:
    """Send the runner's chunk and step records to the writer's policy tables (on the control
    thread: one dict and a deque append each). Returns a function that stops it."""

    def on_chunk(record: "ChunkRecord") -> None:
        writer.on_policy_row(CHUNKS, dataclasses.asdict(record))

    def on_step(record: "StepRecord") -> None:
        writer.on_policy_row(STEPS, {"obs_time_s": record.obs_time_s, "chunk_index": record.chunk_index,
                                     "staleness_s": record.staleness_s})

    removers = (runner.add_chunk_listener(on_chunk), runner.add_step_listener(on_step))
    return lambda: [remove() for remove in removers]


@dataclass
class _Loaded:
    info: CheckpointInfo
    runner: "PolicyRunner"
    supervised: SupervisedSource
    device: str
    unrecord: Callable[[], None]


class AutonomyControl:
    """Autonomy over one studio session (see the module doc)."""

    def __init__(self, session: Session, human: ActionSource, events: EventLog) -> None:
        """human: the source a take-over hands the arm to when the rig's leaders cannot follow
        (the studio's keyboard jog source)."""
        self.session = session
        self.events = events
        self._jog = human
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None  # replaced whole; read by any thread
        self._state = AutonomyState.OFF  # OFF, LOADING, READY or FAULT (the loop says the rest)
        self._message = ""
        self._settings = AutonomySettings()

    # -- worker thread ---------------------------------------------------------------------------------
    def load(self, path: str | Path, settings: AutonomySettings = AutonomySettings()) -> bool:
        """Load `path` (a checkpoint or run folder) with `settings`; returns whether it is ready.
        Refusals and failures become events and the status's message."""
        self._set(AutonomyState.LOADING, f"Loading {path}…")
        try:
            info = describe_checkpoint(path)
            feeds = self._check(info, settings)
            loaded = self._build(info, settings, feeds)
        except PolicyRigMismatch as exc:
            return self._refuse(f"The policy was not loaded: {exc}",
                                "Choose a checkpoint trained on this rig's cameras, image sizes, arms and task (or "
                                "tick \"Load even if it does not fit\" if you know it fits).")
        except Exception as exc:  # any failure to load must reach the user with what to do
            log.exception("loading the policy %s failed", path)
            return self._refuse(f"The policy {path} could not be loaded: {exc}",
                                "Check the folder is a checkpoint or run folder from `run.py train`; see the log.")
        self._unload()
        with self._lock:
            self._loaded, self._settings = loaded, settings
        self._set(AutonomyState.READY, "")
        extra = f" (on {loaded.device}, {settings.strategy})"
        self.events.add(Severity.INFO, "policy", f"Policy ready: {info.preset} {info.variant}, step {info.step}{extra}.",
                        "Press Autonomous to hand it the arm.")
        return True

    def _check(self, info: CheckpointInfo, settings: AutonomySettings) -> dict[str, str]:
        """The checkpoint's recorded inputs against the rig's live ones (`model.compatibility`):
        PolicyRigMismatch unless it fits or the override is set; returns view -> rig camera."""
        rig = self.session.rig
        latest = self.session.history.latest
        if latest is not None:
            images = latest.observation.images
        else:  # no frame yet: the cameras by name, sizes unknown (not compared)
            images = {}
        task = rig.task_name if isinstance(rig, EvaluatesTask) else self.session.rig_file.recording.task
        live = (RigInputs.of_images(rig.name, images, task) if images
                else RigInputs(rig.name, tuple((c, None) for c in rig.camera_names), task=task))
        fit = compare(read_policy_inputs(info.path), live)
        fit.require(info.path, allow_mismatch=settings.allow_mismatch, override="\"Load even if it does not fit\"")
        for mismatch in fit.mismatches:
            self.events.add(Severity.WARNING, "policy", f"Loading anyway: {mismatch.message}.", "Watch the arm closely.")
        return {view: camera for view, camera in fit.camera_feeds if camera is not None}

    def _build(self, info: CheckpointInfo, settings: AutonomySettings, feeds: dict[str, str]) -> _Loaded:
        from model.execution import make_strategy
        from model.runner import PolicyRunner, RunnerConfig

        if settings.process:
            from model.policy_process import PolicyProcess

            policy = PolicyProcess(info.path, device=settings.device, threads=settings.threads,
                                   nice=settings.process_nice, camera_map=feeds)
            device = policy.device
        else:
            from model.policy import FastWAMPolicy

            policy = FastWAMPolicy.from_checkpoint(info.path, device=settings.device)
            policy.camera_map = feeds
            device = policy.device.type
        strategy = make_strategy(settings.strategy, info.horizon, settings.every, decay=settings.decay,
                                 max_guidance=settings.max_guidance)
        control = self.session.rig_file.control
        runner = PolicyRunner(policy, strategy, self.session.rig.joint_limits(),
                              RunnerConfig(rate_hz=control.rate_hz, threads=settings.threads,
                                           max_image_age_s=settings.max_image_age_s))
        rig = self.session.rig
        if isinstance(rig, LeadersFollow) and isinstance(rig, HasLeaders):
            human, leaders = rig.leader_source(), rig
        else:
            human, leaders = self._jog, None
        blend_ticks = max(1, int(round(control.blend_s * control.rate_hz)))
        supervised = SupervisedSource(runner, human, blend_ticks, leaders=leaders, name=SOURCE_NAME)
        unrecord = lambda: None  # noqa: E731 - replaced below when there is a writer
        writer = self.session.writer
        if writer is not None:
            writer.set_policy_attrs(policy_attributes(info, checkpoint_hash(info.path), strategy.settings(),
                                                      device, None))
            unrecord = record_policy(runner, writer)
        return _Loaded(info, runner, supervised, device, unrecord)

    def _refuse(self, message: str, what_to_do: str) -> bool:
        with self._lock:
            self._state = AutonomyState.FAULT if self._loaded is None else AutonomyState.READY
            self._message = message
        self.events.add(Severity.ERROR, "policy", message, what_to_do)
        return False

    # -- any thread --------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Hand the arm to the policy (the loop blends it in from the held pose). Refused, with an
        event saying why, without a loaded policy, while the E-stop is latched, and on real arms
        that are not started."""
        loaded = self._loaded
        loop = self.session.loop
        if loaded is None:
            return self._warn("Autonomous was refused: no policy is loaded.", "Choose a checkpoint in the Policy panel first.")
        mode = loop.state().mode
        if mode is Mode.ESTOP:
            return self._warn("Autonomous was refused: the E-stop is latched.",
                              "Make the workspace safe, press Clear E-stop, then Autonomous.")
        rig = self.session.rig
        if self.session.capabilities.real_arms and isinstance(rig, Startable) and not rig.started:
            return self._warn("Autonomous was refused: the arms are not started.",
                              "Press Start arms, squeeze both leader grippers, then Autonomous.")
        loaded.supervised.hand_back()  # a new start begins with the policy driving
        loop.set_source(loaded.supervised)
        loop.request_mode(Mode.POLICY)
        self._set(AutonomyState.READY, "")
        self.events.add(Severity.INFO, "policy", "The policy drives the arm.",
                        "Take over with the key (or by grabbing a leader arm); E-stop stops everything.")
        return True

    def stop(self) -> None:
        """The policy lets go: the arm holds where it is."""
        loaded = self._loaded
        loop = self.session.loop
        if loaded is not None and self._driving(loop.state(), loaded):
            loop.request_mode(Mode.HOLD)

    def take_over(self) -> bool:
        """The person drives (leaders or jogging); steps are recorded as intervention."""
        loaded = self._loaded
        if loaded is None or not self._driving(self.session.loop.state(), loaded):
            return self._warn("Take over: the policy is not driving.", "Press Autonomous first.")
        loaded.supervised.take_over()
        return True

    def hand_back(self) -> bool:
        """The policy drives again, re-planning from where the arm is."""
        loaded = self._loaded
        if loaded is None or not self._driving(self.session.loop.state(), loaded):
            return self._warn("Hand back: the policy is not driving.", "Press Autonomous first.")
        loaded.supervised.hand_back()
        return True

    def status(self, loop_state: LoopState | None) -> AutonomyStatus:
        """What the Policy panel and the status bar show (copies; cheap)."""
        with self._lock:
            loaded, state, message, settings = self._loaded, self._state, self._message, self._settings
        runner = loaded.runner.status() if loaded is not None else None
        if loaded is not None and loop_state is not None and self._driving(loop_state, loaded):
            supervision = loaded.supervised.supervision
            state = AutonomyState.INTERVENTION if supervision is Supervision.INTERVENTION else AutonomyState.AUTONOMOUS
            message = "A leader arm was grabbed: you drive." if loaded.supervised.taken_by_push else ""
        elif runner is not None and runner.state == "fault" and state is AutonomyState.READY:
            state, message = AutonomyState.FAULT, runner.message
        return AutonomyStatus(
            state=state, message=message, checkpoint=None if loaded is None else loaded.info,
            device="" if loaded is None else loaded.device, strategy={} if runner is None else runner.strategy,
            settings=settings, runner=runner,
        )

    @property
    def intervening(self) -> bool:
        """The person has taken over from the policy (cheap: no copies)."""
        loaded = self._loaded
        return (loaded is not None and self._driving(self.session.loop.state(), loaded)
                and loaded.supervised.supervision is Supervision.INTERVENTION)

    @property
    def runner(self) -> "PolicyRunner | None":
        loaded = self._loaded
        return None if loaded is None else loaded.runner

    # -- owner ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the policy thread (after the loop stopped)."""
        self._unload()

    # -- internals -----------------------------------------------------------------------------------------
    def _unload(self) -> None:
        with self._lock:
            loaded, self._loaded = self._loaded, None
        if loaded is not None:
            loop = self.session.loop
            if loop.state().source_name == SOURCE_NAME:
                loop.set_source(None)
                # The control thread lets go of the runner at its next tick; only then stop its thread.
                deadline = time.monotonic() + 1.0
                while loop.running and loop.state().source_name == SOURCE_NAME and time.monotonic() < deadline:
                    time.sleep(0.005)
            loaded.unrecord()
            loaded.runner.close()

    @staticmethod
    def _driving(loop_state: LoopState, loaded: _Loaded) -> bool:
        return loop_state.mode is Mode.POLICY and loop_state.source_name == loaded.supervised.name

    def _set(self, state: AutonomyState, message: str) -> None:
        with self._lock:
            self._state, self._message = state, message

    def _warn(self, message: str, what_to_do: str) -> bool:
        self.events.add(Severity.WARNING, "policy", message, what_to_do)
        return False
