"""The data vocabulary every package shares: observations, actions, tick records.

Conventions (ALOHA, see ALOHA.md):
- State and action vectors are 14-D: [left 6 joints (rad), left gripper, right 6 joints (rad),
  right gripper]. The gripper entry is normalised to [0, 1] (0 = closed, 1 = open): in an
  observation it is the follower *finger position* normalised, in an action the leader *joint*
  normalised (see `robot.aloha`).
- Times are host monotonic seconds (`time.monotonic()`), never wall-clock.
- Images are RGB uint8 arrays of shape (H, W, 3).
- `obs[t]` is the observation taken before `action[t]` was commanded.

This module imports nothing of ours and nothing heavier than numpy: `recordings` and `model` take
their vocabulary from here without pulling in any driver.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

ARM_JOINT_NAMES: tuple[str, ...] = (
    "waist",
    "shoulder",
    "elbow",
    "forearm_roll",
    "wrist_angle",
    "wrist_rotate",
    "gripper",
)
ARM_NAMES: tuple[str, ...] = ("left", "right")
JOINT_NAMES: tuple[str, ...] = tuple(f"{arm}_{joint}" for arm in ARM_NAMES for joint in ARM_JOINT_NAMES)
STATE_DIM = len(JOINT_NAMES)  # 14
JOINTS_PER_ARM = len(ARM_JOINT_NAMES)  # 7
GRIPPER_INDICES: tuple[int, ...] = (6, 13)
ARM_JOINT_INDICES: tuple[int, ...] = tuple(i for i in range(STATE_DIM) if i not in GRIPPER_INDICES)

DEFAULT_CAMERA_NAMES: tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist")


class Mode(str, enum.Enum):
    """What the control loop is doing. Only the control thread changes it (on request)."""

    IDLE = "idle"  # followers not commanded (torque may be off on a real rig)
    TELEOP = "teleop"  # a human (or the scripted demonstrator) is the action source
    POLICY = "policy"  # the learned policy is the action source
    HOLD = "hold"  # followers hold the last commanded pose
    ESTOP = "estop"  # emergency stop: latched until the user clears it


class Severity(str, enum.Enum):
    """How much an event or a rig message matters to the person at the rig; the one scale used by
    the control loop, the rigs, the recorder and the studio."""

    INFO = "info"  # for the record: nothing to do
    WARNING = "warning"  # worth a look; the work goes on
    ERROR = "error"  # something stopped or was refused; the message says what to do


class ControlSource(str, enum.Enum):
    """Who produced the action of a tick; recorded per step as `/control_source`."""

    NONE = "none"
    TELEOP = "teleop"  # a human: leader arms or keyboard/mouse jogging
    SCRIPTED = "scripted"  # the scripted sim demonstrator
    POLICY = "policy"
    INTERVENTION = "intervention"  # a human correcting the policy
    HOLD = "hold"  # the loop held position (no source, source ran dry, fault)


@dataclass(frozen=True)
class LoopEvent:
    """Something the control loop wants the user (and the episode file) to know.

    seq: increasing number (for `ControlLoop.events_since`); time_s: host monotonic time; code: a
    short stable identifier for tests, the GUI and the recorder ("estop", "source_error",
    "source_dry", "source_fault", "source_finished", "source_removed", "unsafe_action", "position_limit",
    "subscriber_error", "rig_read", "rig_command", "mode", "request_refused", "realtime",
    "loop_error"); what_to_do: empty only for plain information. tick: the index of the tick
    during which it happened (`TickRecord.index`); between two ticks, the next one's.
    """

    seq: int
    time_s: float
    severity: Severity
    code: str
    message: str
    what_to_do: str = ""
    tick: int = -1


@dataclass(frozen=True)
class Observation:
    """One reading of the rig, taken at the start of a tick.

    qpos/qvel/effort: (14,) float32 - joint positions (rad, gripper normalised 0..1),
    velocities (rad/s, gripper normalised units/s) and efforts (N*m or servo current, mA).
    images: camera name -> (H, W, 3) uint8 RGB, the latest frame of each camera.
    image_times_s: camera name -> host monotonic capture time of that frame.
    time_s: host monotonic time at which the joint state was read.
    """

    qpos: np.ndarray
    qvel: np.ndarray
    effort: np.ndarray
    images: Mapping[str, np.ndarray]
    image_times_s: Mapping[str, float]
    time_s: float
    task: str = ""


@dataclass(frozen=True)
class TickTimings:
    """Where the time of one control tick went (seconds).

    period_s: time since the previous tick started; jitter_s: how late this tick started
    against its deadline (>= 0); the stage times are measured on the control thread.
    """

    period_s: float
    jitter_s: float
    read_s: float
    source_s: float
    safety_s: float
    command_s: float
    total_s: float


@dataclass(frozen=True)
class TickRecord:
    """Everything one control tick produced; published to subscribers (recorder, GUI).

    action: (14,) float32 - the action *requested* of the rig after the safety filter, in the
    ALOHA action convention. clipped: names of joints the safety filter limited this tick.
    """

    index: int
    observation: Observation
    action: np.ndarray
    source: ControlSource
    mode: Mode
    timings: TickTimings
    clipped: tuple[str, ...] = ()
    sim_time_s: float | None = None


class SourceFault(RuntimeError):
    """An action source cannot go on (a policy's NaN chunk, a stale camera, a missed deadline).

    Raised from `ActionSource.next_action`; the control loop holds the arm within the tick and
    shows `message` with `what_to_do` (a plain exception gets a generic what-to-do instead)."""

    def __init__(self, message: str, what_to_do: str) -> None:
        super().__init__(message)
        self.message = message
        self.what_to_do = what_to_do


@runtime_checkable
class ActionSource(Protocol):
    """Something that produces actions for the control loop: leader arms, keyboard jogging,
    the scripted demonstrator, the policy. Called on the control thread only.

    `start(observation)` is called when the source becomes active, with the current reading, so
    it can begin from where the arm is (no jump). `next_action(observation)` returns a (14,)
    action or None when it has nothing this tick (the loop then holds). `finished` tells the
    loop that the source has completed (a scripted demo that is done).
    """

    name: str
    kind: ControlSource

    def start(self, observation: Observation) -> None: ...

    def next_action(self, observation: Observation) -> np.ndarray | None: ...

    def stop(self) -> None: ...

    @property
    def finished(self) -> bool: ...


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits in the 14-D action convention.

    low/high: (14,) position limits; max_step: (14,) largest change of the commanded position in
    one tick (rad per tick, gripper normalised units per tick).
    """

    low: np.ndarray
    high: np.ndarray
    max_step: np.ndarray

    def __post_init__(self) -> None:
        for name in ("low", "high", "max_step"):
            value = getattr(self, name)
            if np.shape(value) != (STATE_DIM,):
                raise ValueError(f"JointLimits.{name} must have shape ({STATE_DIM},), got {np.shape(value)}")
        if np.any(np.asarray(self.low) >= np.asarray(self.high)):
            bad = [JOINT_NAMES[i] for i in np.flatnonzero(np.asarray(self.low) >= np.asarray(self.high))]
            raise ValueError(f"JointLimits: low must be below high for every joint; not so for {bad}")


@dataclass(frozen=True)
class RigMessage:
    """A condition a rig reports for as long as it lasts ("camera cam_high: no frame for 2 s").

    key: stable while the condition lasts ("camera cam_high"), so a message whose text carries live
    numbers ("31.5 bus errors/s") is one condition, not a new one each second; text: for people.
    """

    key: str
    text: str
    severity: Severity = Severity.WARNING


@dataclass(frozen=True)
class RigStatus:
    """Health summary a rig reports for the status bar (any thread may read the latest)."""

    name: str
    real_time_factor: float | None = None  # sim only: simulated seconds per wall second
    camera_fps: Mapping[str, float] = field(default_factory=dict)
    messages: tuple[RigMessage, ...] = ()


def zero_state() -> np.ndarray:
    """A (14,) float32 zero vector, the shape of every state and action."""
    return np.zeros(STATE_DIM, dtype=np.float32)
