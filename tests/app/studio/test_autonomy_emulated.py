"""Autonomy on the emulated ALOHA rig (configs/emulated.toml: four pty Dynamixel emulators behind
the real dynamixel-sdk, emulated RealSense cameras): while the tiny policy drives, the leader arms
follow the followers on soft gains; a hand grabbing a leader (the emulator's `Push`) takes over at
once, the leaders go limp and the scripted operator drives; handing back makes them follow again.
The recorded episode labels the intervention steps."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from app.studio.autonomy import AutonomySettings
from app.studio.snapshot import AutonomyState, Phase
from app.studio.studio import Studio
from recordings.reader import Episode
from robot.dynamixel.emulator import Push
from robot.types import Mode

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 60.0
#: The stale-camera limit here: a shared test machine can starve the sim's render thread for half a
#: second, and these tests are about hand-overs (tests/model/test_runner.py checks the limit).
STALE_S = 5.0
LEADER_WAIST = 1  # servo id of the waist joint of a WidowX leader


def wait_for(condition, what: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def rig_file(tmp_path: Path) -> Path:
    """configs/emulated.toml with private calibration and store folders, short ramps, slow cameras."""
    text = (ROOT / "configs" / "emulated.toml").read_text()
    text = text.replace('calibration_dir = "../calibration/emulated"', f'calibration_dir = "{tmp_path / "calibration"}"')
    text = text.replace("[aloha]\n", "[aloha]\narm_ramp_s = 0.5\ngripper_ramp_s = 0.2\n", 1)
    text = re.sub(r"fps = 15", "fps = 6", text)
    text = text.replace('store_dir = "../recordings/episodes"', f'store_dir = "{tmp_path / "episodes"}"')
    path = tmp_path / "emulated.toml"
    path.write_text(text)
    return path


def torque(studio: Studio, arm_id: str) -> list[int]:
    bus = studio.rig.emulators[arm_id]
    return [bus.read_register(sid, "Torque_Enable") for sid in (1, 2, 4, 6)]


@pytest.fixture
def studio(tmp_path):
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # the emulators are threads of this process (see tests/robot/dynamixel)
    studio = Studio(rig_file(tmp_path), tmp_path / "episodes")
    studio.start()
    assert studio.wait_until_running(90), [e.message for e in studio.events.all()]
    yield studio
    if studio.phase is not Phase.STOPPED:
        studio.shutdown(recording_label=None)
    sys.setswitchinterval(before)


def test_grabbing_a_leader_takes_over_and_the_episode_says_so(studio, tiny_checkpoint_h32):
    settings = AutonomySettings(device="cpu", strategy="ensemble", max_image_age_s=STALE_S)
    assert studio.load_policy(tiny_checkpoint_h32, settings).result(120)
    assert studio.start_autonomy() is False  # real arms: not before Start arms
    assert studio.start_arms()
    wait_for(lambda: studio.rig.started, "the opening ceremony")
    leader = studio.rig.emulators["leader_left"]
    stiff = leader.read_register(LEADER_WAIST, "Position_P_Gain")
    assert studio.start_recording("fold the towel", "tester").result(30)
    assert studio.start_autonomy()
    wait_for(lambda: studio.snapshot().autonomy.state is AutonomyState.AUTONOMOUS, "autonomy")
    # The leaders follow: torque on, on soft gains.
    wait_for(lambda: torque(studio, "leader_left") == [1, 1, 1, 1], "the leaders' torque")
    assert leader.read_register(LEADER_WAIST, "Position_P_Gain") == 200 < stiff
    wait_for(lambda: studio.snapshot().autonomy.runner.chunks >= 3, "chunks")
    time.sleep(0.6)  # past the grace after the torque came on

    leader.attach_push(LEADER_WAIST, Push(offset_rad=0.4, ramp_s=0.2))  # an operator grabs the left leader
    wait_for(lambda: studio.snapshot().autonomy.state is AutonomyState.INTERVENTION, "the take-over")
    status = studio.snapshot().autonomy
    assert "leader" in status.message
    wait_for(lambda: torque(studio, "leader_left") == [0, 0, 0, 0], "the leaders going limp")
    assert leader.read_register(LEADER_WAIST, "Position_P_Gain") == stiff  # the gains as they were
    time.sleep(1.0)  # the operator (the emulator's scripted hand) drives the followers
    leader.attach_push(LEADER_WAIST, None)

    assert studio.hand_back()
    wait_for(lambda: studio.snapshot().autonomy.state is AutonomyState.AUTONOMOUS, "autonomy again")
    wait_for(lambda: torque(studio, "leader_left") == [1, 1, 1, 1], "the leaders following again")
    time.sleep(1.0)
    studio.stop_autonomy()
    wait_for(lambda: studio.snapshot().mode is Mode.HOLD, "hold")
    wait_for(lambda: torque(studio, "leader_left") == [0, 0, 0, 0], "the leaders released")
    path = studio.stop_recording(success=False).result(60)
    with Episode.open(path) as episode:
        sources = [s.value for s in episode.control_sources]
    runs = [s for i, s in enumerate(sources) if i == 0 or s != sources[i - 1]]
    first = runs.index("intervention")
    assert "policy" in runs[:first] and "policy" in runs[first + 1:]
    assert sources.count("intervention") >= 25  # a second of the operator's steps, whatever the machine's load
