"""Headless jobs through run.py, in a subprocess as a user runs them: real sim rig, real loop,
real episode files."""

import json
import os
import subprocess
import sys
from pathlib import Path

from recordings.check import check_episode
from recordings.reader import Episode

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
    assert [line["seed"] for line in lines[:2]] == [11, 12]
    assert lines[-1] == {"episodes": 2, "successes": 0}
    for line in lines[:2]:
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
