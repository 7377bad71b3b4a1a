"""What the window paints: plain, immutable copies of the studio's state at one moment.

`Studio.snapshot()` builds a `StudioSnapshot` from values other threads keep up to date (the
control loop's state, the monitor's readings, the recorder's status); building one never changes
anything, so a test can build one by hand and hand it to the window.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.studio.events import StudioEvent
from robot.capabilities import Capabilities
from robot.control_loop import LoopState, LoopStats
from robot.dynamixel.calibration import CalibrationStep
from robot.dynamixel.health import HealthReport, HealthThresholds
from robot.types import ControlSource, Mode, RigStatus, TickRecord

if TYPE_CHECKING:  # imported for the annotations only: the snapshot must not load torch
    from app.studio.autonomy import AutonomySettings
    from app.studio.checkpoints import CheckpointInfo
    from model.runner import RunnerStatus


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
SOURCE_BY_NAME = {s.name: s for s in SOURCE_OPTIONS}


@dataclass(frozen=True)
class RecordingStatus:
    """What the recording panel shows.

    active: ticks are being recorded; failed: the writer stopped on an error and the episode
    waits for Stop (keeps the frames written) or Discard; busy: a start, save, discard or towel
    reset is in progress (text says which); elapsed_s: host time covered by the recorded ticks;
    frames: ticks received.
    """

    active: bool = False
    failed: bool = False
    busy: str = ""
    elapsed_s: float = 0.0
    frames: int = 0
    frames_dropped: int = 0
    episode_count: int | None = None
    last_saved: str = ""


@dataclass(frozen=True)
class ArmsState:
    """The arms of a rig with real followers (None in the snapshot otherwise).

    started: the opening ceremony finished and the followers may be driven; starting: Start arms
    was pressed and the ceremony has not finished (nor been stopped by an E-stop); prompt: what the
    rig asks of the operator now; not_answering: the latest failed read (names the servo), empty
    while the rig reads fine; health: the latest report per arm (in `arm_ids` order), time_s on
    the monotonic clock of the control thread's read.
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
    """The open calibration (see `Studio.begin_calibration`). step: a CalibrationStep value;
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


class AutonomyState(str, enum.Enum):
    """Where autonomy stands (the mode the control panel and the status bar show)."""

    OFF = "off"  # no policy loaded
    LOADING = "loading"  # a checkpoint is being loaded (worker thread)
    READY = "ready"  # loaded; a person or nothing drives
    AUTONOMOUS = "autonomous"  # the policy drives
    INTERVENTION = "intervention"  # the person took over from the policy
    FAULT = "fault"  # loading failed or the policy stopped; message says why and what to do


@dataclass(frozen=True)
class AutonomyStatus:
    """The Policy panel's state (`Studio.snapshot().autonomy`).

    checkpoint: what is loaded (`app.studio.checkpoints.CheckpointInfo`: preset, variant, step,
    validation loss, whether it is the run's best, what it trained on); device: "cuda"/"cpu";
    strategy: the execution strategy and its settings as running; settings: as asked
    (`app.studio.autonomy.AutonomySettings`); runner: the policy runner's copy
    (`model.runner.RunnerStatus`: current and previous plan, queue depth, latency series and
    p50/p95/p99/max), None when nothing is loaded.
    """

    state: AutonomyState = AutonomyState.OFF
    message: str = ""
    checkpoint: "CheckpointInfo | None" = None
    device: str = ""
    strategy: dict = field(default_factory=dict)
    settings: "AutonomySettings | None" = None
    runner: "RunnerStatus | None" = None

    @property
    def driving(self) -> bool:
        """The policy or the person correcting it has the arm."""
        return self.state in (AutonomyState.AUTONOMOUS, AutonomyState.INTERVENTION)


@dataclass(frozen=True)
class StudioSnapshot:
    """Everything the window paints, copied at one moment (any thread may call `snapshot()`).

    loop: the control loop's mode and source now (None before the rig is up); loop_stats: its
    rate and timing statistics, refreshed four times a second; tick: the newest tick record.
    source: the selected entry of SOURCE_OPTIONS (the loop's actual source kind is in loop).
    disk_free_bytes: free space where episodes are written (None if unknown).
    seed / next_seed: towel seed of the current episode and of the next "New episode".
    capabilities: what the rig declares (robot.capabilities); arms: only for rigs with real
    follower arms. events: the newest events, oldest first (the window shows those it has not).
    autonomy: the policy's state (`AutonomyStatus`; OFF until a checkpoint is loaded).
    """

    phase: Phase
    rig_name: str
    loop: LoopState | None = None
    loop_stats: LoopStats | None = None
    source: SourceOption | None = None
    rig_status: RigStatus | None = None
    disk_free_bytes: int | None = None
    store_dir: Path | None = None
    recording: RecordingStatus = field(default_factory=RecordingStatus)
    seed: int | None = None
    next_seed: int = 0
    camera_names: tuple[str, ...] = ()
    control_rate_hz: float = 50.0
    capabilities: Capabilities = field(default_factory=Capabilities)
    arms: ArmsState | None = None
    calibration: CalibrationStatus | None = None
    tick: TickRecord | None = None
    events: tuple[StudioEvent, ...] = ()
    autonomy: AutonomyStatus = field(default_factory=AutonomyStatus)

    @property
    def available_sources(self) -> tuple[str, ...]:
        """Source names that make sense on this rig now: Demo on a simulation, Leaders with leader
        arms; on real follower arms the driving sources only once the arms are started."""
        caps = self.capabilities
        if self.arms is not None:
            driving = ("keyboard", "leaders") if self.arms.started else ()
            return (*driving, "hold")
        return tuple(s.name for s in SOURCE_OPTIONS
                     if (s.name != "leaders" or caps.leaders) and (s.name != "demo" or caps.simulated))

    @property
    def mode(self) -> Mode:
        """The loop's mode when this snapshot was taken (IDLE before the loop runs)."""
        return self.loop.mode if self.loop is not None else Mode.IDLE

    @property
    def resettable(self) -> bool:
        return self.capabilities.resettable
