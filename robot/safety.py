"""The safety filter: the last thing every action passes before it reaches the followers.

What it guarantees, per tick and per joint, in the 14-D action convention of `robot.types`:
- the commanded position stays inside the rig's joint limits (`JointLimits.low/high`), and each
  gripper inside [0, 1] (normalised; intersected with the rig's gripper limits);
- the commanded position moves at most `max_step` from the previous command (the smaller of the
  rig's `JointLimits.max_step` and the configured speed limit divided by the control rate), so no
  source - a jumpy leader arm, a policy, a bug - can make the arm jump;
- a NaN or infinite entry, or an action of the wrong shape, is rejected outright (`NonFiniteAction`,
  `InvalidAction`): the caller holds the previous command instead of guessing a repair.

`SafetyFilter.apply()` is called on the control thread only and allocates a few (14,) arrays;
it holds no lock and keeps no state besides its limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robot.types import GRIPPER_INDICES, JOINT_NAMES, STATE_DIM, JointLimits


class SafetyError(RuntimeError):
    """An action the safety filter refused. The message says what was wrong and what to do."""


class SafetyLimit(SafetyError):
    """One joint asked for more than a limit allows.

    joint: the joint name (`robot.types.JOINT_NAMES`); value: what was asked (a position, or a
    change per tick for a rate limit); limit: the bound that applied, in the same unit.
    """

    def __init__(self, joint: str, value: float, limit: float, what: str = "position") -> None:
        self.joint = joint
        self.value = float(value)
        self.limit = float(limit)
        self.what = what
        super().__init__(f"{joint}: {what} {self.value:.4g} is beyond the limit {self.limit:.4g}")


class NonFiniteAction(SafetyLimit):
    """An action held NaN or infinity; the whole action is rejected and the arm holds."""

    def __init__(self, joint: str, value: float) -> None:
        SafetyError.__init__(
            self,
            f"the action for {joint} is {value} (not a finite number); the arm holds its last "
            "command. If a policy produced it, check its checkpoint and normalisation statistics.",
        )
        self.joint = joint
        self.value = float(value)
        self.limit = math.nan
        self.what = "finite value"


class InvalidAction(SafetyError):
    """An action that is not a (14,) numeric vector; rejected, the arm holds."""


@dataclass(frozen=True)
class SafetyConfig:
    """Speed limits on top of the rig's own `JointLimits` (the tighter one wins).

    max_joint_speed_rad_s: largest commanded joint speed, rad/s (arm joints). 1.5 rad/s is well
    below what the ViperX servos reach but lets a teleoperator move briskly; a full-range swing
    still takes a couple of seconds, which is the point.
    max_gripper_speed_per_s: largest gripper change in normalised units per second (2.0 =
    fully open to closed in half a second, as fast as ALOHA's gripper squeeze).
    """

    max_joint_speed_rad_s: float = 1.5
    max_gripper_speed_per_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_joint_speed_rad_s", "max_gripper_speed_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}; e.g. {name} = 1.5")


@dataclass(frozen=True)
class SafetyResult:
    """What the filter made of one action.

    action: (14,) float32, safe to command. clipped: joint names the filter changed this tick
    (position or rate). limits_hit: one `SafetyLimit` per clipped joint with what was asked.
    """

    action: np.ndarray
    clipped: tuple[str, ...]
    limits_hit: tuple[SafetyLimit, ...]

    @property
    def position_limited(self) -> tuple[str, ...]:
        """Joints held at a position limit (as opposed to only slowed down)."""
        return tuple(hit.joint for hit in self.limits_hit if hit.what == "position")


class SafetyFilter:
    """Clamp each action to the rig's limits and to a per-tick step from the previous command."""

    def __init__(self, limits: JointLimits, control_rate_hz: float, config: SafetyConfig | None = None) -> None:
        if not (control_rate_hz > 0 and math.isfinite(control_rate_hz)):
            raise ValueError(f"control_rate_hz must be a positive number, got {control_rate_hz!r}")
        self.config = config or SafetyConfig()
        low = np.asarray(limits.low, dtype=np.float64).copy()
        high = np.asarray(limits.high, dtype=np.float64).copy()
        grippers = list(GRIPPER_INDICES)
        # The action convention defines grippers on [0, 1]; a rig may only narrow that.
        low[grippers] = np.maximum(low[grippers], 0.0)
        high[grippers] = np.minimum(high[grippers], 1.0)
        if np.any(low >= high):
            bad = [JOINT_NAMES[i] for i in np.flatnonzero(low >= high)]
            raise ValueError(f"the rig's joint limits leave no room for {bad} (gripper limits must overlap [0, 1])")
        speed = np.full(STATE_DIM, self.config.max_joint_speed_rad_s, dtype=np.float64)
        speed[grippers] = self.config.max_gripper_speed_per_s
        self.low = low
        self.high = high
        #: (14,) largest change of the command per tick, rad (gripper: normalised units).
        self.max_step = np.minimum(np.asarray(limits.max_step, dtype=np.float64), speed / control_rate_hz)
        if np.any(self.max_step <= 0):
            bad = [JOINT_NAMES[i] for i in np.flatnonzero(self.max_step <= 0)]
            raise ValueError(f"max_step must be positive for every joint; not so for {bad}")

    def check(self, action) -> np.ndarray:
        """The action as a (14,) float64 array, or `InvalidAction` / `NonFiniteAction`."""
        try:
            array = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidAction(f"the action is not numeric ({exc}); the arm holds its last command") from exc
        if array.shape != (STATE_DIM,):
            raise InvalidAction(
                f"the action has shape {array.shape}, expected ({STATE_DIM},) "
                "[left 6 joints, left gripper, right 6 joints, right gripper]; the arm holds its last command"
            )
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise NonFiniteAction(JOINT_NAMES[bad[0]], array[bad[0]])
        return array

    def clamp_to_limits(self, pose) -> np.ndarray:
        """A (14,) float32 pose moved inside the position limits (no rate limit): for a hold pose
        taken from a reading that sits slightly outside a limit."""
        return np.clip(np.asarray(pose, dtype=np.float64), self.low, self.high).astype(np.float32)

    def apply(self, action, previous) -> SafetyResult:
        """Filter `action` (14,) against `previous` (14,), the last command sent.

        Raises `InvalidAction` or `NonFiniteAction` (a `SafetyLimit`) when the action cannot be
        used at all; the caller then holds `previous`.
        """
        requested = self.check(action)
        prev = np.asarray(previous, dtype=np.float64)
        in_range = np.clip(requested, self.low, self.high)
        step = np.clip(in_range - prev, -self.max_step, self.max_step)
        safe = prev + step
        # A previous command outside the limits (a hold pose read from an arm past its limit)
        # needs no special case: the target is clipped into range first, so the step always
        # points back inside.
        changed = np.flatnonzero(np.abs(safe - requested) > 1e-9)
        hits = []
        for i in changed:
            if in_range[i] != requested[i]:
                limit = self.low[i] if requested[i] < self.low[i] else self.high[i]
                hits.append(SafetyLimit(JOINT_NAMES[i], requested[i], limit, "position"))
            else:
                hits.append(SafetyLimit(JOINT_NAMES[i], requested[i] - prev[i], self.max_step[i], "change per tick"))
        return SafetyResult(
            action=safe.astype(np.float32),
            clipped=tuple(JOINT_NAMES[i] for i in changed),
            limits_hit=tuple(hits),
        )
