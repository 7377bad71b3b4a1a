"""Scripted hands on the leader arms: where a hand holds a joint while the servo's torque is off,
and a hand that grabs a joint whose torque is on (`Push`).

An `EmulatedServo` with torque off asks its `JointMotion` for the joint angle (rad) at each physics
step; `t_s` counts from the moment the hand took the joint over at `start_rad`, so every motion
starts where the joint was and never jerks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class JointMotion(Protocol):
    """Where a hand holds a joint `t_s` seconds after it took it over at `start_rad` (torque off)."""

    def position_rad(self, t_s: float, start_rad: float) -> float: ...


@dataclass(frozen=True)
class Sinusoid:
    """A gentle oscillation around where the hand took the joint."""

    amplitude_rad: float = 0.15
    period_s: float = 4.0
    phase_rad: float = 0.0

    def position_rad(self, t_s: float, start_rad: float) -> float:
        # sin(phase + wt) - sin(phase) starts at 0, so the hand never jerks the joint.
        w = 2.0 * math.pi / self.period_s
        return start_rad + self.amplitude_rad * (math.sin(self.phase_rad + w * t_s) - math.sin(self.phase_rad))


@dataclass(frozen=True)
class Squeeze:
    """An operator squeezing a leader gripper: wait, close over `ramp_s`, hold, release, repeat."""

    closed_rad: float
    delay_s: float = 0.2
    ramp_s: float = 0.3
    hold_s: float = 1.0
    repeat_s: float | None = None  # None: squeeze once and keep it closed

    def position_rad(self, t_s: float, start_rad: float) -> float:
        if self.repeat_s is not None:
            t_s = t_s % self.repeat_s
        t = t_s - self.delay_s
        if t <= 0:
            return start_rad
        if t < self.ramp_s:
            return start_rad + (self.closed_rad - start_rad) * t / self.ramp_s
        if self.repeat_s is None or t < self.ramp_s + self.hold_s:
            return self.closed_rad
        t -= self.ramp_s + self.hold_s
        return self.closed_rad + (start_rad - self.closed_rad) * min(1.0, t / self.ramp_s)


@dataclass(frozen=True)
class Trajectory:
    """Replays recorded joint positions (times from 0), blending in from the hand-over position."""

    times_s: tuple[float, ...]
    positions_rad: tuple[float, ...]
    blend_s: float = 0.3
    loop: bool = True

    def __post_init__(self) -> None:
        if len(self.times_s) != len(self.positions_rad) or len(self.times_s) < 2:
            raise ValueError("Trajectory needs at least two (time, position) samples of equal count")
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:])):
            raise ValueError("Trajectory times must increase strictly")

    def position_rad(self, t_s: float, start_rad: float) -> float:
        span = self.times_s[-1] - self.times_s[0]
        tt = self.times_s[0] + (t_s % span if self.loop else min(t_s, span))
        target = float(np.interp(tt, self.times_s, self.positions_rad))
        if t_s < self.blend_s:
            a = t_s / self.blend_s
            return (1.0 - a) * start_rad + a * target
        return target



@dataclass(frozen=True)
class Push:
    """A hand that takes hold of a joint after `delay_s` and pushes it `offset_rad` away over
    `ramp_s`, then holds it there for `hold_s` (None: until the push is detached); `position_rad`
    is None while the hand does not touch the joint. It acts whether or not the servo's torque is
    on: a servo with a low Position_P_Gain yields to it, a stiff one holds (see
    `EmulatedServo.attach_push`). An operator grabbing a leader arm that follows the followers."""

    offset_rad: float
    delay_s: float = 0.0
    ramp_s: float = 0.3
    hold_s: float | None = None

    def position_rad(self, t_s: float, start_rad: float) -> float | None:
        t = t_s - self.delay_s
        if t < 0 or (self.hold_s is not None and t > self.ramp_s + self.hold_s):
            return None
        return start_rad + self.offset_rad * min(1.0, t / self.ramp_s) if self.ramp_s > 0 else start_rad + self.offset_rad
