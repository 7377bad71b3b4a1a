"""An episode recorded from the real MuJoCo rig through the real control loop, with what the
workbench's loop markers are for: a joint jogged into its limit (safety clipping and a
position-limit event), the source running dry (a hold), an E-stop pressed and cleared.

Used by tests/recordings/test_loop_record.py and, as a script, to make a store for a screenshot:

    MUJOCO_GL=egl python tests/loop_scenario.py STORE [--size 240x320] [--process]
    xvfb-run -a python run.py review --store STORE --episode 0 --step 150 --screenshot out.png
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recordings.metadata import EpisodeMetadata  # noqa: E402
from recordings.schema import Label  # noqa: E402
from recordings.writer import EpisodeWriter  # noqa: E402
from recordings.writer_process import ProcessEpisodeWriter  # noqa: E402
from robot.control_loop import ControlLoop, LoopConfig  # noqa: E402
from robot.sim.config import SimRigConfig  # noqa: E402
from robot.sim.sim_rig import SimRig  # noqa: E402
from robot.types import JOINT_NAMES, ControlSource, Mode, Observation  # noqa: E402

#: The joint jogged into its limit: the left wrist bends down from -0.3 rad to its -1.87 rad limit.
JOG_JOINT = "left_wrist_angle"
JOG_SPEED_RAD_S = -1.2  # under the safety filter's 1.5 rad/s, so only the position limit clips


class JointJogSource:
    """An ActionSource that moves one joint at a constant speed from where the arm is (the
    keyboard jog of a joint), holding every other joint; `paused` makes it return nothing (a
    source that runs dry, as a policy that falls behind)."""

    kind = ControlSource.TELEOP

    def __init__(self, joint: str, speed_rad_s: float, rate_hz: float) -> None:
        self.name = f"jog {joint}"
        self.index = JOINT_NAMES.index(joint)
        self.step_rad = speed_rad_s / rate_hz
        self.paused = False
        self.target: np.ndarray | None = None

    def start(self, observation: Observation) -> None:
        self.target = None

    def resume(self, speed_rad_s: float, rate_hz: float) -> None:
        """Jog again, at this speed, from where the arm is then."""
        self.paused, self.step_rad, self.target = False, speed_rad_s / rate_hz, None

    def next_action(self, observation: Observation) -> np.ndarray | None:
        if self.paused:
            return None
        if self.target is None:
            self.target = np.asarray(observation.qpos, dtype=np.float64).copy()
        self.target[self.index] += self.step_rad  # keeps asking, past the limit as a jog key held down does
        return self.target.astype(np.float32)

    def stop(self) -> None:
        pass

    @property
    def finished(self) -> bool:
        return False


@dataclass(frozen=True)
class ScenarioSteps:
    """Tick counts of the phases (at 50 Hz)."""

    idle: int = 10
    jog_into_limit: int = 120
    dry: int = 25
    jog_back: int = 40
    estop: int = 30
    after_clear: int = 20

    @property
    def total(self) -> int:
        return self.idle + self.jog_into_limit + self.dry + self.jog_back + self.estop + self.after_clear


def record_scenario(store: Path, *, process: bool = False, size: tuple[int, int] = (48, 64),
                    cameras: tuple[str, ...] = ("cam_high",), steps: ScenarioSteps = ScenarioSteps()) -> Path:
    """Record the scenario into `store` with the thread writer (or the writer process); returns
    the episode's path. Unpaced (`tick_once`): the sim renders each frame in step."""
    config = SimRigConfig(camera_names=cameras, image_height=size[0], image_width=size[1], render_thread=False)
    kind = ProcessEpisodeWriter if process else EpisodeWriter
    writer = kind(store, cameras, EpisodeMetadata(task="loop markers", operator="scenario", sim=True, rig="sim"))
    try:
        with SimRig(config) as rig:
            loop = ControlLoop(rig, LoopConfig(rate_hz=config.control_rate_hz))
            loop.subscribe(writer.on_tick)
            loop.add_event_listener(writer.on_loop_event)
            jog = JointJogSource(JOG_JOINT, JOG_SPEED_RAD_S, config.control_rate_hz)
            writer.start()
            run(loop, steps.idle)
            loop.set_source(jog)
            loop.request_mode(Mode.TELEOP)
            run(loop, steps.jog_into_limit)
            jog.paused = True
            run(loop, steps.dry)
            jog.resume(-JOG_SPEED_RAD_S, config.control_rate_hz)
            run(loop, steps.jog_back)
            loop.estop()
            run(loop, steps.estop)
            loop.clear_estop()
            run(loop, steps.after_clear)
            return writer.stop(Label.FAILURE, notes="E-stop pressed mid-fold", reason="operator stopped")
    finally:
        if isinstance(writer, ProcessEpisodeWriter):
            writer.close()


def run(loop: ControlLoop, ticks: int) -> None:
    for _ in range(ticks):
        loop.tick_once()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--size", default="240x320", help="camera frames HxW")
    parser.add_argument("--process", action="store_true", help="record through the writer process")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    path = record_scenario(args.store, process=args.process, size=(height, width),
                           cameras=("cam_high", "cam_left_wrist", "cam_right_wrist"))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
