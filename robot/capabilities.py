"""What a rig can do beyond the `Rig` interface, declared as small protocols.

A rig class names the capabilities it has among its bases (`class AlohaRig(Rig, Startable, ...)`),
and the studio, the jobs and the control loop ask `isinstance(rig, Startable)` - never
`hasattr(rig, "begin_start")`. Each protocol is runtime-checkable, so a test double that has the
members counts too, but the rigs of this repository declare theirs explicitly, and
`tests/robot/test_capabilities.py` pins down which rig has which.

| capability    | sim | sim + leader arms | ALOHA (real or emulated) |
|---------------|-----|-------------------|--------------------------|
| Startable     |     | yes               | yes                      |
| Resettable    | yes | yes               |                          |
| HasLeaders    |     | yes               | yes                      |
| LeadersFollow |     |                   | yes                      |
| Calibratable  |     |                   | yes                      |
| ReportsHealth |     | yes               | yes                      |
| EvaluatesTask | yes | yes               |                          |
| Simulation    | yes | yes               |                          |

Threads: each member says who may call it. Most are for the owner of the rig (the studio's
worker thread, a job's main thread) while the control loop runs; reads of published state
(`started`, `start_prompt`, `health_reports`) are lock-guarded copies that any thread may take.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from robot.types import ActionSource

if TYPE_CHECKING:  # the types only; importing the drivers here would load the Dynamixel SDK
    from robot.dynamixel.calibration import ArmCalibration, CalibrationProcedure
    from robot.dynamixel.health import HealthReport, HealthThresholds


#: The key of a Startable rig's prompt among its status messages (`RigStatus.messages`): the studio
#: shows it where the operator looks (the arms panel) rather than as an event.
START_PROMPT_KEY = "start prompt"


@runtime_checkable
class Startable(Protocol):
    """A rig that must be started before its followers may be driven (ALOHA's opening ceremony:
    followers ramp to the start pose, then the operator squeezes both leader grippers).

    `begin_start()`: any thread; sets a flag the control thread acts on inside its reads.
    `started` / `starting` / `start_prompt`: any thread; whether the arms may be driven, whether a
    start is under way (asked and neither finished nor failed nor stopped by an E-stop), and what
    the rig asks of the operator now (empty when nothing)."""

    def begin_start(self) -> None: ...

    @property
    def started(self) -> bool: ...

    @property
    def starting(self) -> bool: ...

    @property
    def start_prompt(self) -> str: ...


@runtime_checkable
class Resettable(Protocol):
    """A rig that can lay out a new episode by itself (the simulation: arms to the start pose,
    the towel at a pose drawn from a seed). Owner thread, with the control loop stopped."""

    def reset_episode(self, seed: int | None = None) -> int:
        """Reset with `seed` (the next one when None); returns the seed used."""
        ...

    @property
    def episode_seed(self) -> int: ...


@runtime_checkable
class HasLeaders(Protocol):
    """A rig with leader arms a person moves to teleoperate the followers."""

    def leader_source(self) -> ActionSource:
        """A fresh action source that reads the leaders (builds a small object; no device I/O)."""
        ...


@runtime_checkable
class LeadersFollow(Protocol):
    """A rig whose leader arms can follow the followers while a policy drives (torque on, position
    mode, low gains), so that a person who grabs one takes over without a jump
    (`robot.autonomy.SupervisedSource`). Control thread only: both are called inside its ticks.

    `set_leaders_follow(True)`: the leaders' torque comes on where they are and their goals follow
    the commanded follower pose from then on; False releases them (torque off: the person's hands
    drive). `leaders_pushed()`: a following leader has been held away from its goal beyond the
    rig's threshold (someone grabbed it); False while not following."""

    def set_leaders_follow(self, enabled: bool) -> None: ...

    def leaders_pushed(self) -> bool: ...


@runtime_checkable
class Calibratable(Protocol):
    """A rig whose arms are calibrated step by step by the operator (Dynamixel arms: the pulse at
    each joint's zero, its direction, the gripper range). Owner thread; refused by the studio
    while the arms are started (the arm being calibrated is neither driven nor torqued)."""

    @property
    def calibration_arm_ids(self) -> tuple[str, ...]:
        """Every arm that can be calibrated (followers and leaders), in the rig file's order."""
        ...

    def calibration_procedure(self, arm_id: str) -> "CalibrationProcedure":
        """The step-by-step procedure for `arm_id` (ValueError for an unknown arm)."""
        ...

    def apply_calibration(self, result: "ArmCalibration") -> Path:
        """Save `result` to the rig's calibration folder and put it in use; returns the file."""
        ...


@runtime_checkable
class ReportsHealth(Protocol):
    """A rig whose servos report temperature, voltage, current and error bits (read by the
    control thread about once a second; these are copies any thread may take)."""

    @property
    def health_arm_ids(self) -> tuple[str, ...]:
        """The arms that report, in the order a table should list them."""
        ...

    def health_reports(self) -> "dict[str, HealthReport]": ...

    @property
    def health_thresholds(self) -> "HealthThresholds": ...


@runtime_checkable
class TaskResult(Protocol):
    """What a rig's task measure says of the current state."""

    success: bool
    fold_error_m: float


@runtime_checkable
class EvaluatesTask(Protocol):
    """A rig that can measure its own task (the simulated towel fold). Owner or control thread,
    whichever steps the rig (the measure reads the simulation state)."""

    @property
    def task_name(self) -> str:
        """The task the rig sets up, as a task string for episodes and policies."""
        ...

    def evaluate_task(self) -> TaskResult: ...


@runtime_checkable
class Simulation(Protocol):
    """A simulated rig: each command advances simulated time by one control period.

    `sim_time_s`: control thread (or the owner with the loop stopped). `set_render_thread`: owner,
    before connect or with the loop stopped; False renders the cameras inside `read()`, in step
    with the simulation (unpaced jobs: every frame is the state at its tick). `render_stats()`:
    any thread; None without a render thread."""

    @property
    def sim_time_s(self) -> float: ...

    def set_render_thread(self, enabled: bool) -> None: ...

    def render_stats(self) -> Any: ...


@dataclass(frozen=True)
class Capabilities:
    """Which of the protocols above a rig declares, as plain flags a snapshot can carry (the window
    shows panels and keys by them without holding the rig)."""

    simulated: bool = False
    startable: bool = False
    resettable: bool = False
    leaders: bool = False
    leaders_follow: bool = False
    calibratable: bool = False
    health: bool = False
    task: bool = False

    @classmethod
    def of(cls, rig: Any) -> "Capabilities":
        return cls(
            simulated=isinstance(rig, Simulation),
            startable=isinstance(rig, Startable),
            resettable=isinstance(rig, Resettable),
            leaders=isinstance(rig, HasLeaders),
            leaders_follow=isinstance(rig, LeadersFollow),
            calibratable=isinstance(rig, Calibratable),
            health=isinstance(rig, ReportsHealth),
            task=isinstance(rig, EvaluatesTask),
        )

    @property
    def real_arms(self) -> bool:
        """Real (or emulated) follower arms: torque, an opening ceremony, Start arms, calibration."""
        return self.startable and not self.simulated
