"""Fault 10, the smaller ones: a finished run's resume printed NaN into its JSON lines (not JSON);
a whitespace-only task was accepted from the command line although the rig file rejects it;
`rate_hz = 1000` was reported against an internal `[sim]` key instead of the user's `[control]
rate_hz` line; a recording cut off by a full disk showed different durations in `recover` and
`list`. And the fuzz (issue 13's proof), small: damaged copies of real episodes through `list`,
`check --deep` and the loader (the 1,000-file run is benchmarks/fuzz_episodes.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.studio.jobs import record
from app.studio.jobs import episodes as cli
from model.json_lines import json_line
from recordings.reader import Episode
from recordings.writer import EpisodeWriter
from robot.rig_config import RigFileError
from robot.rigs import open_rig

ROOT = Path(__file__).resolve().parents[2]


def test_progress_lines_are_valid_json_even_when_the_loss_is_unknown():
    line = json_line({"event": "summary", "final_loss": {"total": float("nan"), "video": np.float32("inf"), "action": 0.25}})
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line)["final_loss"] == {"total": None, "video": None, "action": 0.25}
    with pytest.raises(ValueError):  # what the plain encoder must never be allowed to do again
        json.dumps(float("nan"), allow_nan=False)


def test_a_blank_task_on_the_command_line_is_refused_like_in_the_rig_file(tmp_path, capsys):
    assert record.main(["--seconds", "1", "--task", "   ", "--store", str(tmp_path)]) == 2
    assert 'record: --task must describe the task, e.g. "fold the towel"' in capsys.readouterr().err
    rig = tmp_path / "rig.toml"
    rig.write_text('[rig]\nkind = "sim"\n[recording]\ntask = "   "\n')
    with pytest.raises(RigFileError, match="task must describe the task"):
        open_rig(rig)


def test_a_rate_the_sim_refuses_is_reported_at_the_users_line(tmp_path):
    rig = tmp_path / "rig.toml"
    rig.write_text('[rig]\nkind = "sim"\n\n[control]\nrate_hz = 1000\n')
    with pytest.raises(RigFileError) as info:
        open_rig(rig)
    assert info.value.line == 5 and info.value.key == "rate_hz"
    assert "[control] rate_hz: must be within 1..500 Hz" in str(info.value) and "control_rate_hz" not in str(info.value)


def test_recover_and_list_give_a_simulated_episode_the_same_duration(tmp_path, make_tick, wait_until):
    """A simulation stepped faster than real time: host time and simulated time differ, and
    `list` shows simulated time; `recover` now says the same."""
    live, store = tmp_path / "live", tmp_path / "store"
    store.mkdir()
    writer = EpisodeWriter(live, ("cam_high",), flush_interval_s=0.05)
    writer.start()
    rng = np.random.default_rng(0)
    for i in range(30):
        tick = make_tick(i, 50.0 + 0.005 * i, rng, cameras=("cam_high",))  # host: 4x faster than sim
        writer.on_tick(dataclasses.replace(tick, sim_time_s=0.02 * i))
    wait_until(lambda: writer.status().frames_written == 30, what="30 committed frames")
    time.sleep(0.1)  # the writer thread is idle: the file is as a kill -9 would leave it
    shutil.copyfile(writer.status().partial_path, store / writer.status().partial_path.name)
    writer.discard()
    out = io.StringIO()
    assert cli.main(["recover", "--store", str(store)], out=out) == 0
    with Episode.open(store / "episode_0.hdf5") as episode:
        assert episode.duration_s == pytest.approx(0.58)  # 29 steps of simulated 20 ms
    assert "recovered 30 frames (0.6 s)" in out.getvalue()
    out = io.StringIO()
    cli.main(["list", "--store", str(store), "--json"], out=out)
    assert json.loads(out.getvalue())["episodes"][0]["duration_s"] == 0.58


def test_fuzz_small_no_crash_no_hang_every_damaged_file_named():
    done = subprocess.run([sys.executable, "benchmarks/fuzz_episodes.py", "--files", "16", "--seed", "11", "--timeout-s", "60"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    summary = next(line for line in lines if line.get("kind") == "all")
    assert summary["files"] == 16
    assert (summary["crash"], summary["hang"], summary["missed"]) == (0, 0, 0), lines
    assert summary["named"] + summary["harmless"] == 16 and summary["named"] > 0
    assert done.returncode == 0, done.stderr[-2000:]
