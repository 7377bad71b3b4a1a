"""Starting and stopping a real ALOHA rig safely.

`SafeStart` is ALOHA's "opening ceremony" (ALOHA.md) as a state machine that the control thread
steps once per tick while the GUI shows `prompt` and `progress`: reboot the follower grippers,
configure all arms, torque on, ramp all four arms to the start pose (1.5 s arms, 0.5 s grippers),
release the leader grippers, wait until the operator squeezes both below a threshold, release the
leaders. It never blocks longer than one bus transaction. At the end, `handover()` gives a filter
that walks the followers from where they are to where the leaders say, at a bounded speed, so
taking over never jumps.

Stopping: torque off on disconnect (the arms), on E-stop (`cut_torque`), at interpreter exit
(`ExitGuard`), when the control loop stops ticking (`TorqueWatchdog`, a thread), and when the
whole process hangs or dies (each follower's own Bus_Watchdog, configured by `FollowerArm`: it stops
the servo where it is when no packet arrives for `bus_watchdog_ms`; the X-series has it, address 98).
"""

from __future__ import annotations

import atexit
import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from robot.aloha import ALOHA_GRIPPERS, START_ARM_POSE_RAD, GripperCalibration
from robot.dynamixel.arm import GRIPPER, DynamixelArm, FollowerArm, LeaderArm
from robot.rig import RigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SafeStartConfig:
    """Timings and thresholds of the opening ceremony (ALOHA's values by default).

    squeeze_below_rad: both leader gripper joints must close below this to start (ALOHA: -0.3).
    start_pose_rad: the six arm joints' start pose. Grippers go to the middle of their range on the
    leaders and to closed on the followers, as ALOHA does.
    """

    arm_ramp_s: float = 1.5
    gripper_ramp_s: float = 0.5
    squeeze_below_rad: float = -0.3
    reboot_wait_s: float = 0.3
    start_pose_rad: tuple[float, ...] = START_ARM_POSE_RAD
    grippers: GripperCalibration = ALOHA_GRIPPERS

    def __post_init__(self) -> None:
        if self.arm_ramp_s <= 0 or self.gripper_ramp_s <= 0:
            raise ValueError("SafeStartConfig ramps must last > 0 s (ALOHA: 1.5 s arms, 0.5 s grippers)")
        if len(self.start_pose_rad) != 6:
            raise ValueError(f"SafeStartConfig.start_pose_rad needs the 6 arm joints, got {len(self.start_pose_rad)}")
        lo, hi = sorted((self.grippers.leader_joint_rad.close, self.grippers.leader_joint_rad.open))
        if not lo < self.squeeze_below_rad < hi:
            raise ValueError(f"SafeStartConfig.squeeze_below_rad {self.squeeze_below_rad} must lie inside the leader "
                             f"gripper range [{lo}, {hi}] rad, or nobody could ever start")


class SafeStartState(str, enum.Enum):
    IDLE = "idle"
    REBOOT_GRIPPERS = "reboot_grippers"
    CONFIGURE = "configure"
    RAMP = "ramp"
    WAIT_SQUEEZE = "wait_squeeze"
    READY = "ready"
    FAILED = "failed"
    ABORTED = "aborted"


_PROMPTS = {
    SafeStartState.IDLE: "Press Start to bring the arms to the start pose.",
    SafeStartState.REBOOT_GRIPPERS: "Resetting the follower grippers...",
    SafeStartState.CONFIGURE: "Setting up the servos...",
    SafeStartState.RAMP: "Moving all arms to the start pose. Keep clear of the arms.",
    SafeStartState.WAIT_SQUEEZE: "Take both leader handles and squeeze both grippers to start.",
    SafeStartState.READY: "Go: the followers now follow the leaders.",
    SafeStartState.ABORTED: "Start cancelled; the arms hold where they are.",
}


class SafeStart:
    """The opening ceremony for `followers` and `leaders` (same order: left, right).

    Call `begin()` (GUI request), then `step()` every control tick until `finished`. `prompt`,
    `state` and `progress` are safe to read from the GUI thread. A device error ends in FAILED
    with the error's message as the prompt and the error in `error`; the arms are left holding.
    """

    def __init__(
        self,
        followers: Sequence[FollowerArm],
        leaders: Sequence[LeaderArm],
        config: SafeStartConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(followers) != len(leaders) or not followers:
            raise ValueError("SafeStart needs as many leaders as followers (at least one of each)")
        self.followers = list(followers)
        self.leaders = list(leaders)
        self.config = config or SafeStartConfig()
        self._clock = clock
        self.state = SafeStartState.IDLE
        self.error: Exception | None = None
        self._t0 = 0.0
        self._from: list[np.ndarray] = []
        self._to: list[np.ndarray] = []
        self.progress = 0.0
        self.leader_grippers_rad: tuple[float, ...] = ()

    @property
    def prompt(self) -> str:
        if self.state is SafeStartState.FAILED:
            return str(self.error)
        return _PROMPTS[self.state]

    @property
    def finished(self) -> bool:
        return self.state in (SafeStartState.READY, SafeStartState.FAILED, SafeStartState.ABORTED)

    @property
    def arms(self) -> list[DynamixelArm]:
        return [*self.followers, *self.leaders]

    def begin(self) -> None:
        if self.state in (SafeStartState.IDLE, SafeStartState.FAILED, SafeStartState.ABORTED, SafeStartState.READY):
            self.error = None
            self.progress = 0.0
            self._rebooted = False
            self._configured = 0
            self._enter(SafeStartState.REBOOT_GRIPPERS)

    def abort(self) -> None:
        """Stop where we are: arms with torque keep holding their last goal."""
        if not self.finished:
            self._enter(SafeStartState.ABORTED)

    def step(self) -> None:
        """Advance by at most a few bus transactions (control thread)."""
        if self.finished or self.state is SafeStartState.IDLE:
            return
        try:
            self._step()
        except RigError as exc:
            log.error("safe start failed in %s: %s", self.state.value, exc)
            self.error = exc
            self.state = SafeStartState.FAILED

    def _enter(self, state: SafeStartState) -> None:
        self.state = state
        self._t0 = self._clock()
        log.info("safe start: %s", state.value)

    def _step(self) -> None:
        now = self._clock()
        cfg = self.config
        if self.state is SafeStartState.REBOOT_GRIPPERS:
            if not self._rebooted:
                # Follower grippers often end a session in overload; a reboot clears it (ALOHA does this too).
                for arm in self.followers:
                    arm.reboot(("gripper",))
                self._rebooted = True
                self._t0 = now
            elif now - self._t0 >= cfg.reboot_wait_s:
                self._enter(SafeStartState.CONFIGURE)
        elif self.state is SafeStartState.CONFIGURE:
            # One arm per tick, so no tick is held up for long; then torque on, all in one tick.
            if self._configured < len(self.arms):
                self.arms[self._configured].configure()
                self._configured += 1
                return
            for arm in self.arms:
                arm.set_torque(True)  # goals = present first: no jump at torque-on
            self._from = [arm.read().joint_pos_rad for arm in self.arms]
            self._to = [self._start_pose(arm) for arm in self.arms]
            self._enter(SafeStartState.RAMP)
        elif self.state is SafeStartState.RAMP:
            t = now - self._t0
            a_arm = min(1.0, t / cfg.arm_ramp_s)
            a_grip = min(1.0, t / cfg.gripper_ramp_s)
            alpha = np.full(7, _smooth(a_arm))
            alpha[GRIPPER] = _smooth(a_grip)
            for arm, q0, q1 in zip(self.arms, self._from, self._to):
                arm.read()  # a servo that stops answering ends the start (commands get no reply)
                arm.command(q0 + alpha * (q1 - q0))
            self.progress = min(a_arm, a_grip)
            if a_arm >= 1.0 and a_grip >= 1.0:
                for arm in self.leaders:
                    arm.release(("gripper",))
                self._enter(SafeStartState.WAIT_SQUEEZE)
        elif self.state is SafeStartState.WAIT_SQUEEZE:
            # Keep talking to the followers: their Bus_Watchdog stops them if they hear nothing.
            for arm, q in zip(self.followers, self._to):
                arm.read()
                arm.command(q)
            grips = tuple(float(arm.read().joint_pos_rad[GRIPPER]) for arm in self.leaders)
            self.leader_grippers_rad = grips
            if all(g < cfg.squeeze_below_rad for g in grips):
                for arm in self.leaders:
                    arm.release()
                self.progress = 1.0
                self._enter(SafeStartState.READY)

    _rebooted = False
    _configured = 0

    def _start_pose(self, arm: DynamixelArm) -> np.ndarray:
        g = self.config.grippers
        if isinstance(arm, FollowerArm):
            gripper = g.follower_joint_rad.close
        else:
            gripper = 0.5 * (g.leader_joint_rad.open + g.leader_joint_rad.close)
        return np.array([*self.config.start_pose_rad, gripper], dtype=np.float64)

    def handover(self, max_step_rad: float = 0.02) -> list["HandoverFilter"]:
        """One filter per follower, starting from the pose the ramp left it in."""
        if self.state is not SafeStartState.READY:
            raise RigError(f"The arms are not ready to hand over (state: {self.state.value}). Finish the start first.")
        followers_to = self._to[: len(self.followers)]
        return [HandoverFilter(q, max_step_rad) for q in followers_to]


def _smooth(a: float) -> float:
    """Smoothstep: zero velocity at both ends of a ramp."""
    return a * a * (3.0 - 2.0 * a)


class HandoverFilter:
    """Rate-limits follower commands after a change of source (leader takes over, policy hands
    back) until they have caught up with the new source, then passes them through.

    start: (7,) the command the followers had; max_step_rad: (7,) or scalar, the largest change per
    tick while catching up (0.02 rad at 50 Hz = 1 rad/s).
    """

    def __init__(self, start, max_step_rad=0.02) -> None:
        self._last = np.array(start, dtype=np.float64)
        self._max = np.broadcast_to(np.asarray(max_step_rad, dtype=np.float64), self._last.shape).copy()
        if np.any(self._max <= 0):
            raise ValueError("HandoverFilter.max_step_rad must be > 0")
        self.caught_up = False

    def __call__(self, target) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64)
        if self.caught_up:
            self._last = target.copy()
            return self._last.copy()
        step = np.clip(target - self._last, -self._max, self._max)
        self._last = self._last + step
        if np.all(np.abs(target - self._last) <= 1e-9):
            self.caught_up = True
        return self._last.copy()


def cut_torque(arms: Sequence[DynamixelArm]) -> list[str]:
    """E-stop: torque off every arm now, from any thread; never raises. Returns the arm ids whose
    torque-off packet could not be sent (tell the user to switch the power off)."""
    failed = []
    for arm in arms:
        if not arm.connected or not arm.bus.emergency_torque_off(arm.layout.all_ids):
            failed.append(arm.arm_id)
    return failed


class TorqueWatchdog:
    """Cuts the torque when the control loop stops ticking.

    The control thread calls `kick()` every tick. A daemon thread checks every `check_period_ms`;
    when no kick came for `timeout_ms`, it calls `cut_torque(arms)` once, sets `tripped` and calls
    `on_trip(message)` (the rig turns it into a visible fault). `stop()` ends the thread.
    A process hung in C code with the GIL held starves this thread too; the servos' own
    Bus_Watchdog covers that case.
    """

    def __init__(self, arms: Sequence[DynamixelArm], timeout_ms: float = 200.0, check_period_ms: float = 20.0,
                 on_trip: Callable[[str], None] | None = None) -> None:
        if timeout_ms <= 0 or check_period_ms <= 0 or check_period_ms > timeout_ms:
            raise ValueError("TorqueWatchdog needs 0 < check_period_ms <= timeout_ms")
        self.arms = list(arms)
        self.timeout_s = timeout_ms * 1e-3
        self.check_period_s = check_period_ms * 1e-3
        self.on_trip = on_trip
        self.tripped = False
        self.message = ""
        self._last_kick = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "TorqueWatchdog":
        self._last_kick = time.monotonic()
        self._stop.clear()
        self.tripped = False
        self._thread = threading.Thread(target=self._run, name="torque-watchdog", daemon=True)
        self._thread.start()
        return self

    def kick(self) -> None:
        self._last_kick = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.check_period_s):
            silent_s = time.monotonic() - self._last_kick
            if silent_s > self.timeout_s and not self.tripped:
                failed = cut_torque(self.arms)
                self.tripped = True
                self.message = (f"The control loop stopped for {silent_s * 1e3:.0f} ms, so the torque was cut on all arms. "
                                "Support the arms, then restart the rig.")
                if failed:
                    self.message += f" Torque could not be cut on {', '.join(failed)}: switch their power off."
                log.error(self.message)
                if self.on_trip is not None:
                    try:
                        self.on_trip(self.message)
                    except Exception:  # the callback must not kill the watchdog
                        log.exception("torque watchdog on_trip callback failed")


class ExitGuard:
    """Torque off at interpreter exit (normal exit, unhandled exception, sys.exit). A SIGTERM or
    SIGINT that Python turns into an exit runs it too; SIGKILL and power loss are the servos'
    Bus_Watchdog's job. Register after connecting, `close()` after a clean disconnect."""

    def __init__(self, arms: Sequence[DynamixelArm]) -> None:
        self.arms = list(arms)
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        failed = cut_torque(self.arms)
        if failed:
            log.error("at exit: torque could not be cut on %s", ", ".join(failed))

    def close(self) -> None:
        atexit.unregister(self._at_exit)
