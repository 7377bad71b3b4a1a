"""Joint calibration of one arm: the pulse at each joint's zero, its direction, the gripper range;
stored as JSON per arm id, and the step-by-step procedure a GUI runs to measure it.

Convention: joint_rad = sign x (pulses - zero_pulses) x 2 pi / 4096. An uncalibrated Interbotix
arm is assembled so that zero_pulses = 2048 and sign = +1 (`ArmCalibration.default`); calibration
corrects horns mounted a tooth off and servos swapped for ones with another orientation.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from robot.dynamixel import control_table as ct
from robot.dynamixel.errors import DynamixelError, ServoMismatch
from robot.dynamixel.layout import ArmLayout

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1


class CalibrationError(DynamixelError):
    """A calibration file is missing or unreadable, or a measured step makes no sense."""


@dataclass(frozen=True)
class JointCalibration:
    name: str
    servo_id: int
    model_number: int
    zero_pulses: int
    sign: int  # +1 or -1
    shadow_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"joint {self.name}: sign must be +1 or -1, got {self.sign}")


@dataclass(frozen=True)
class ArmCalibration:
    """Calibration of one arm. gripper_open_rad / gripper_closed_rad: the gripper joint (after
    calibration) fully open and fully closed, the GripperRange of this arm for the rig file."""

    arm_id: str
    joints: tuple[JointCalibration, ...]
    gripper_open_rad: float | None = None
    gripper_closed_rad: float | None = None
    created: str = ""
    version: int = CALIBRATION_VERSION

    @staticmethod
    def default(arm_id: str, layout: ArmLayout) -> "ArmCalibration":
        """The factory assumption: 2048 pulses is 0 rad, every joint positive as mounted."""
        return ArmCalibration(
            arm_id,
            tuple(JointCalibration(j.name, j.servo_id, j.model.model_number, ct.CENTER_PULSE, 1, j.shadow_ids)
                  for j in layout.joints),
        )

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(j.servo_id for j in self.joints)

    def pulses_to_rad(self, pulses) -> np.ndarray:
        """(7,) pulses -> (7,) joint radians."""
        zero = np.array([j.zero_pulses for j in self.joints], dtype=np.float64)
        sign = np.array([j.sign for j in self.joints], dtype=np.float64)
        return sign * (np.asarray(pulses, dtype=np.float64) - zero) * ct.RAD_PER_PULSE

    def rad_to_pulses(self, joint_rad) -> np.ndarray:
        """(7,) joint radians -> (7,) int64 pulses."""
        zero = np.array([j.zero_pulses for j in self.joints], dtype=np.float64)
        sign = np.array([j.sign for j in self.joints], dtype=np.float64)
        return np.rint(zero + sign * np.asarray(joint_rad, dtype=np.float64) / ct.RAD_PER_PULSE).astype(np.int64)

    def velocity_sign(self) -> np.ndarray:
        return np.array([j.sign for j in self.joints], dtype=np.float64)

    def check_layout(self, layout: ArmLayout, port: str) -> None:
        """Raise ServoMismatch when the rig file's layout and this calibration disagree."""
        for cal, spec in zip(self.joints, layout.joints):
            if cal.servo_id != spec.servo_id or tuple(cal.shadow_ids) != tuple(spec.shadow_ids):
                raise ServoMismatch(port, spec.servo_id,
                                    f"the {cal.name} joint on servo {cal.servo_id} (calibration of {self.arm_id})",
                                    f"servo {spec.servo_id} in the rig file")
            if cal.model_number != spec.model.model_number:
                raise ServoMismatch(port, spec.servo_id,
                                    f"model number {cal.model_number} (calibration of {self.arm_id})",
                                    f"{spec.model.name} ({spec.model.model_number}) in the rig file")

    def check_servos(self, found_model_numbers: Mapping[int, int], port: str) -> None:
        """Raise ServoMismatch when a servo on the bus is not the one calibrated."""
        for cal in self.joints:
            found = found_model_numbers.get(cal.servo_id)
            if found is None:
                raise ServoMismatch(port, cal.servo_id, f"the {cal.name} servo of {self.arm_id}", "no servo with that id")
            if found != cal.model_number:
                name = ct.MODELS_BY_NUMBER.get(found)
                raise ServoMismatch(port, cal.servo_id, f"model number {cal.model_number} ({cal.name} of {self.arm_id})",
                                    f"{name.name if name else 'model number'} ({found})")

    @property
    def digest(self) -> str:
        """A short hash for episode metadata ("which calibration was this recorded with")."""
        body = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()[:16]

    def to_json(self) -> dict:
        d = asdict(self)
        d["joints"] = [asdict(j) | {"shadow_ids": list(j.shadow_ids)} for j in self.joints]
        return d

    @staticmethod
    def from_json(d: Mapping) -> "ArmCalibration":
        if d.get("version") != CALIBRATION_VERSION:
            raise CalibrationError(f"calibration version {d.get('version')} is not {CALIBRATION_VERSION}; recalibrate this arm")
        joints = tuple(
            JointCalibration(j["name"], int(j["servo_id"]), int(j["model_number"]), int(j["zero_pulses"]),
                             int(j["sign"]), tuple(int(s) for s in j.get("shadow_ids", ())))
            for j in d["joints"]
        )
        return ArmCalibration(d["arm_id"], joints, d.get("gripper_open_rad"), d.get("gripper_closed_rad"),
                              d.get("created", ""), int(d["version"]))


class CalibrationStore:
    """Calibrations as `<dir>/<arm_id>.json`, written atomically (a crash keeps the old file)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, arm_id: str) -> Path:
        if not arm_id or any(c in arm_id for c in "/\\") or arm_id.startswith("."):
            raise ValueError(f"arm id {arm_id!r} can't name a file; use letters, digits, '_' or '-'")
        return self.directory / f"{arm_id}.json"

    def exists(self, arm_id: str) -> bool:
        return self.path(arm_id).is_file()

    def load(self, arm_id: str) -> ArmCalibration:
        path = self.path(arm_id)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(f"No calibration for arm {arm_id} in {self.directory}. Run the calibration of this arm first.") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"The calibration file {path} can't be read ({exc}). Recalibrate arm {arm_id}.") from exc
        try:
            cal = ArmCalibration.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"The calibration file {path} is damaged ({exc}). Recalibrate arm {arm_id}.") from exc
        if cal.arm_id != arm_id:
            raise CalibrationError(f"{path} holds the calibration of {cal.arm_id}, not {arm_id}. Recalibrate arm {arm_id}.")
        return cal

    def save(self, calibration: ArmCalibration) -> Path:
        path = self.path(calibration.arm_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{calibration.arm_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(calibration.to_json(), f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("saved calibration of %s to %s", calibration.arm_id, path)
        return path


# --- the procedure --------------------------------------------------------------------------------
class CalibrationStep(str, enum.Enum):
    START = "start"
    ZERO = "zero"
    ROTATED = "rotated"
    GRIPPER_OPEN = "gripper_open"
    GRIPPER_CLOSED = "gripper_closed"
    DONE = "done"
    CANCELLED = "cancelled"


_PROMPTS = {
    CalibrationStep.START: "Calibrating {arm}. Its torque is off, so it moves freely: hold it. Press Next to begin.",
    CalibrationStep.ZERO: "Move {arm} to its zero pose: upper arm straight up, forearm level and pointing forward, "
                          "wrist level, gripper horn centred (the pose in the manual). Press Next when it is there.",
    CalibrationStep.ROTATED: "Now turn every joint of {arm} except the gripper by about a quarter turn (90 degrees) "
                             "in its positive direction (the arrows in the manual). Press Next when done.",
    CalibrationStep.GRIPPER_OPEN: "Open the gripper of {arm} fully and press Next.",
    CalibrationStep.GRIPPER_CLOSED: "Close the gripper of {arm} fully and press Next.",
    CalibrationStep.DONE: "{arm} is calibrated. Press Save to keep it.",
    CalibrationStep.CANCELLED: "Calibration of {arm} cancelled; the previous calibration stays in use.",
}


class PulseReader(Protocol):
    """What the procedure needs from an arm: raw present positions of its seven joints."""

    def read_pulses(self) -> np.ndarray: ...

    def set_torque(self, enabled: bool) -> None: ...


class CalibrationProcedure:
    """Step-by-step calibration of one arm, for a GUI: show `prompt`, call `step()` on a timer to
    refresh `live_rad` (one bus read), call `advance()` when the operator presses Next.

    No input(), no print(): every problem is a CalibrationError from `advance()` whose message
    tells the operator what to redo; the procedure then stays on the same step.
    Thread: all calls from one thread (the one that owns the arm's bus at that time).
    """

    MIN_TURN_RAD = math.radians(45)
    MAX_TURN_RAD = math.radians(135)

    def __init__(self, arm_id: str, layout: ArmLayout, arm: PulseReader) -> None:
        self.arm_id = arm_id
        self.layout = layout
        self._arm = arm
        self.state = CalibrationStep.START
        self.live_pulses: np.ndarray | None = None
        self._zero: np.ndarray | None = None
        self._signs: np.ndarray | None = None
        self._open: float | None = None
        self.result: ArmCalibration | None = None

    @property
    def prompt(self) -> str:
        return _PROMPTS[self.state].format(arm=self.arm_id)

    @property
    def done(self) -> bool:
        return self.state is CalibrationStep.DONE

    @property
    def live_rad(self) -> np.ndarray | None:
        """The joints in radians under the calibration measured so far (None before the first step)."""
        if self.live_pulses is None:
            return None
        zero = self._zero if self._zero is not None else np.full(len(self.layout.joints), ct.CENTER_PULSE)
        signs = self._signs if self._signs is not None else np.ones(len(self.layout.joints))
        return signs * (self.live_pulses - zero) * ct.RAD_PER_PULSE

    def step(self) -> None:
        """Refresh the live reading (one sync read)."""
        if self.state is CalibrationStep.START:
            return
        self.live_pulses = self._arm.read_pulses().astype(np.float64)

    def advance(self) -> None:
        """Take the current reading for this step and move to the next one."""
        if self.state in (CalibrationStep.DONE, CalibrationStep.CANCELLED):
            return
        if self.state is CalibrationStep.START:
            self._arm.set_torque(False)
            self.state = CalibrationStep.ZERO
            self.step()
            return
        self.step()
        pulses = self.live_pulses
        assert pulses is not None
        names = [j.name for j in self.layout.joints]
        if self.state is CalibrationStep.ZERO:
            self._zero = np.rint(pulses)
            self.state = CalibrationStep.ROTATED
        elif self.state is CalibrationStep.ROTATED:
            turn = (pulses - self._zero) * ct.RAD_PER_PULSE
            bad = [f"{n} ({math.degrees(abs(t)):.0f} deg)" for n, t in zip(names[:-1], turn[:-1])
                   if not self.MIN_TURN_RAD <= abs(t) <= self.MAX_TURN_RAD]
            if bad:
                raise CalibrationError(
                    "These joints did not turn by about 90 degrees: " + ", ".join(bad)
                    + ". Turn each of them a quarter turn from the zero pose and press Next again."
                )
            signs = np.sign(turn)
            signs[-1] = 1.0  # the gripper's direction comes from its open/closed readings
            self._signs = signs
            self.state = CalibrationStep.GRIPPER_OPEN
        elif self.state is CalibrationStep.GRIPPER_OPEN:
            self._open = float(pulses[-1])
            self.state = CalibrationStep.GRIPPER_CLOSED
        elif self.state is CalibrationStep.GRIPPER_CLOSED:
            closed = float(pulses[-1])
            if abs(closed - self._open) * ct.RAD_PER_PULSE < math.radians(10):
                raise CalibrationError("The gripper barely moved between open and closed. Open it fully, press Back, "
                                       "or close it fully and press Next again.")
            # Opening is the gripper's positive direction, as in ALOHA's ranges (open > close).
            self._signs[-1] = 1.0 if self._open > closed else -1.0
            self.result = self._build(closed)
            self.state = CalibrationStep.DONE

    def back(self) -> None:
        """Redo the previous step."""
        order = [CalibrationStep.START, CalibrationStep.ZERO, CalibrationStep.ROTATED,
                 CalibrationStep.GRIPPER_OPEN, CalibrationStep.GRIPPER_CLOSED, CalibrationStep.DONE]
        if self.state in order and self.state is not CalibrationStep.START:
            self.state = order[order.index(self.state) - 1]
            self.result = None

    def cancel(self) -> None:
        self.state = CalibrationStep.CANCELLED
        self.result = None

    def _build(self, closed_pulses: float) -> ArmCalibration:
        joints = []
        for spec, zero, sign in zip(self.layout.joints, self._zero, self._signs):
            joints.append(JointCalibration(spec.name, spec.servo_id, spec.model.model_number, int(zero), int(sign),
                                           spec.shadow_ids))
        g_zero, g_sign = self._zero[-1], self._signs[-1]
        to_rad = lambda p: float(g_sign * (p - g_zero) * ct.RAD_PER_PULSE)  # noqa: E731
        return ArmCalibration(
            self.arm_id,
            tuple(joints),
            gripper_open_rad=to_rad(self._open),
            gripper_closed_rad=to_rad(closed_pulses),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
