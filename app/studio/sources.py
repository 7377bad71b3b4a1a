"""The action sources a person can put in charge of the arm, built for one rig.

    sources = SourceFactory(rig, loop_config)     # owner thread: builds the kinematics (~0.2 s)
    jog = sources.jog                             # keyboard/mouse jogging, kept for the session
    demo = sources.make("demo")                   # a fresh scripted fold (simulation only)
    leaders = sources.make("leaders")             # the rig's leader arms (HasLeaders)

The window, `run.py record` and `run.py demos` all get their sources here, so "scripted demo" or
"leader arms" means the same object everywhere. Building a source touches no device: the control
thread starts it (`ActionSource.start`) when it becomes active.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.studio.snapshot import SourceOption
from robot.capabilities import Capabilities, HasLeaders, Simulation
from robot.control_loop import LoopConfig
from robot.rig import Rig
from robot.types import ActionSource, Mode


class SourceUnavailable(RuntimeError):
    """This rig has no such source; the message says what to use instead."""


class SourceFactory:
    """Sources for one rig. Owner thread builds it; `make` may be called from any thread (it only
    builds small objects); the sources themselves run on the control thread."""

    def __init__(self, rig: Rig, control: LoopConfig) -> None:
        # Kinematics of gym-aloha's ViperX model; one MjData each, used on the control thread only.
        from robot.kinematics import BimanualKinematics
        from robot.teleop import EndEffectorJogSource, JogConfig

        self.rig = rig
        # A dead-man timer: a key release lost by the window system must not jog forever. The
        # window refreshes held keys faster than this (app.ui.main_window JOG_REFRESH_MS).
        self.jog = EndEffectorJogSource(BimanualKinematics(), control.rate_hz, JogConfig(velocity_timeout_s=0.5))
        # Built now, on the owner thread, so that choosing Demo in the window costs nothing.
        self._demo_kinematics = BimanualKinematics() if isinstance(rig, Simulation) else None

    def make(self, name: str) -> ActionSource:
        """The source called `name`: "keyboard" (the session's jog source), "leaders" or "demo"
        (a new one each call). Raises SourceUnavailable when the rig has none."""
        if name == "keyboard":
            return self.jog
        if name == "leaders":
            if not isinstance(self.rig, HasLeaders):
                raise SourceUnavailable(
                    f"{self.rig.name} has no leader arms. Use a rig file with leader [[arms]] "
                    "(configs/aloha.toml, or configs/sim_leaders.toml: leader arms driving the simulation).")
            return self.rig.leader_source()
        if name == "demo":
            if not isinstance(self.rig, Simulation):
                raise SourceUnavailable(f"The scripted demonstrator needs the simulated rig; {self.rig.name} is real. "
                                        "Use the leader arms.")
            from robot.sim import ScriptedFoldDemonstrator

            return ScriptedFoldDemonstrator(self.rig, kinematics=self._demo_kinematics)
        raise SourceUnavailable(f"Unknown source {name!r}: choose keyboard, leaders or demo.")


@dataclass(frozen=True)
class Refusal:
    """Why a source cannot be chosen now, and what to do instead (an event for the user)."""

    origin: str
    message: str
    what_to_do: str


def refuse_source(option: SourceOption, caps: Capabilities, mode: Mode, arms_started: bool) -> Refusal | None:
    """None when `option` may drive the arm now, else why not: never while the E-stop is latched;
    Leaders only with leader arms; on real follower arms a driving source only once Start arms
    has finished."""
    if mode is Mode.ESTOP:
        return Refusal("loop", f"{option.label} was refused: the E-stop is latched.",
                       "Make the workspace safe, then press Clear E-stop and choose the source again.")
    if option.name == "leaders" and not caps.leaders:
        return Refusal("studio", "Leaders needs a rig with leader arms; this simulation has none.",
                       "Use Jog or Demo here, or open the studio with --rig configs/aloha.toml "
                       "(or configs/sim_leaders.toml: your leader arms driving the simulation).")
    if option.name == "demo" and not caps.simulated:
        return Refusal("studio", "Demo (the scripted towel fold) runs on the simulated rig only.",
                       "Use Leaders or Jog on a real rig.")
    if caps.real_arms and option.name != "hold" and not arms_started:
        return Refusal("studio", f"{option.label} was not selected: the arms are not started.",
                       "Press Start arms, wait for the followers to reach the start pose, squeeze both leader grippers, "
                       "then choose again.")
    return None
