"""Headless jobs through run.py, in a subprocess as a user runs them: real sim rig, real loop,
real episode files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from recordings.check import check_episode
from recordings.reader import Episode
from robot.dynamixel.arm import GRIPPER

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_demos_writes_labelled_sim_episodes(tmp_path):
    # Cut off after 1 simulated second: the plumbing, not the fold (tests/robot/sim covers that).
    result = run("demos", "--episodes", "2", "--seed", "11", "--store", str(tmp_path), "--max-seconds", "1")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    episodes = [line for line in lines if line["event"] == "episode"]
    assert [line["seed"] for line in episodes] == [11, 12]
    assert lines[-1]["event"] == "summary" and (lines[-1]["episodes"], lines[-1]["successes"]) == (2, 0)
    for line in episodes:
        path = tmp_path / line["episode"]
        assert check_episode(path).ok
        episode = Episode.open(path)
        assert episode.length == line["steps"] == 51  # 50 ticks of the demonstrator + the HOLD tick
        assert episode.label.value == "failure"
        assert episode.sim and episode.sim_times is not None
        assert episode.duration_s == 50 * 0.02
        assert set(episode.camera_names) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
        assert episode.frame("cam_high", 10).shape == (240, 320, 3)
        # Every episode starts where its arms are (no jump back to the previous episode's pose).
        assert abs(episode.action[0] - episode.qpos[0]).max() < 0.1


def test_record_runs_the_paced_loop_for_the_seconds_asked(tmp_path):
    result = run("record", "--source", "scripted", "--seconds", "2", "--store", str(tmp_path), "--task", "fold it")
    assert result.returncode == 0, result.stderr
    line = json_lines(result.stdout)[-1]
    episode = Episode.open(line["episode"])
    assert episode.metadata.task == "fold it"
    assert episode.length == line["steps"] > 10
    assert episode.timestamps[-1] - episode.timestamps[0] > 1.5


def test_bad_requests_say_what_to_do(tmp_path):
    missing = run("record", "--rig", str(tmp_path / "nope.toml"), "--seconds", "1")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    real_only = run("record", "--source", "leaders", "--seconds", "1", "--store", str(tmp_path))
    assert real_only.returncode == 1 and "has no leader arms" in real_only.stderr


def test_record_a_teleop_episode_from_the_emulated_leaders_through_the_real_sdk(tmp_path):
    """configs/emulated.toml: pty Dynamixel emulators behind the real dynamixel-sdk, RealSense
    software devices; the job runs the opening ceremony (the emulated operator squeezes) first."""
    result = run("record", "--rig", str(ROOT / "configs" / "emulated.toml"), "--source", "leaders",
                 "--seconds", "3", "--store", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "squeeze both grippers" in result.stderr
    line = json_lines(result.stdout)[-1]
    episode = Episode.open(line["episode"])
    assert episode.length == line["steps"] > 20
    # Teleoperation throughout - or, if the busy machine starves the emulator's thread of a bus
    # reply, teleoperation and then the hold the loop falls back to (never anything else).
    sources = [source.value for source in episode.control_sources]
    assert sources[0] == "teleop" and set(sources) <= {"teleop", "hold"}
    assert not episode.sim and episode.sim_times is None
    # The emulated leaders move, so the recorded actions do.
    assert (episode.action.max(axis=0) - episode.action.min(axis=0)).max() > 0.05
    assert episode.frame("cam_high", 0).ndim == 3


def test_record_from_emulated_leaders_driving_the_simulation(tmp_path):
    """configs/sim_leaders_emulated.toml: two leader buses on pty emulators behind the real
    dynamixel-sdk drive the MuJoCo followers through the paced loop into the recorder."""
    text = (ROOT / "configs" / "sim_leaders_emulated.toml").read_text()
    text = text.replace('calibration_dir = "../calibration/emulated"', f'calibration_dir = "{tmp_path / "calibration"}"')
    # One camera keeps the shared CPUs free for the loop; the sim's cameras are tested elsewhere.
    text = text.replace('camera_names = ["cam_high", "cam_left_wrist", "cam_right_wrist"]', 'camera_names = ["cam_high"]')
    (tmp_path / "rig.toml").write_text(text)
    result = run("record", "--rig", str(tmp_path / "rig.toml"), "--source", "leaders", "--seconds", "3",
                 "--store", str(tmp_path / "episodes"), "--operator", "test")
    assert result.returncode == 0, result.stderr
    path = Path(json_lines(result.stdout)[-1]["episode"])
    result = check_episode(path)
    assert result.ok, result.reasons
    episode = Episode.open(path)
    try:
        assert episode.sim and episode.metadata.rig == "sim-leaders-emulated"
        n = episode.length
        # 3 s at 50 Hz, less what a loaded CPU loses to late ticks (2 s gave 43-69 at load 8-3 on 2
        # cores); the blend-in takes 38 ticks and the tracking is checked after it.
        assert n >= 45
        # Simulated time: exactly one control period per recorded step.
        assert np.allclose(np.diff(episode.sim_times), 0.02, atol=1e-9)
        assert "teleop" in {source.value for source in episode.control_sources}
        action, qpos = episode.action, episode.qpos
        arm_joints = [j for j in range(14) if j % 7 != GRIPPER]
        # The scripted hands sway every leader joint by up to 0.15 rad, so the actions move ...
        assert (action[:, arm_joints].max(axis=0) - action[:, arm_joints].min(axis=0)).max() > 0.05
        # ... and after the blend (0.75 s = 38 ticks) the simulated arms track them closely (0.045 rad seen).
        after = slice(40, None)
        error = np.abs(qpos[after][:, arm_joints] - action[after][:, arm_joints])
        assert error.max() < 0.08, error.max(axis=0)
    finally:
        episode.close()
