"""`python run.py episodes list|check|recover|label` (app.studio.jobs.episodes.main)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.studio.jobs import episodes as cli
from recordings.reader import Episode

ROOT = Path(__file__).resolve().parents[3]


def run(*argv):
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def test_list_shows_episodes_and_leftovers(leftover, record_episode):
    path, _ = leftover
    store = path.parent
    record_episode(n=10, store=store, label="success")  # index 1: the leftover keeps 0
    code, text = run("list", "--store", str(store))
    assert code == 1  # the leftover needs `recover`: a script's check must notice
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["idx", "frames", "duration", "label"]
    assert lines[1].split()[:5] == ["1", "10", "0.2", "s", "success"]
    assert "UNFINISHED" in lines[2] and "episodes recover" in lines[2]
    assert "1 episode (0.0 min)" in lines[-1] and "1 unfinished" in lines[-1]

    code, text = run("list", "--store", str(store), "--json")
    data = json.loads(text)
    assert code == 1 and data["next_index"] == 2 and not data["ok"]
    assert [(e["index"], e["length"], e["unfinished"]) for e in data["episodes"]] == [(1, 10, False), (0, 0, True)]


def test_check_exits_non_zero_with_the_reason(tmp_path, record_episode):
    good, _ = record_episode(n=5)
    code, text = run("check", str(good))
    assert code == 0 and text.startswith("OK       episode_0.hdf5 (5 frames)")
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(good.read_bytes()[:2000])
    code, text = run("check", str(good), str(bad))
    assert code == 1 and f"INVALID  {bad}: the file is truncated" in text
    code, text = run("check", str(bad), "--json")
    result = json.loads(text)["results"][0]
    assert code == 1 and not result["ok"] and "truncated" in result["reasons"][0]
    code, text = run("check", "--store", str(tmp_path / "nowhere"))
    assert code == 2 and "There is no folder" in text and "nowhere" in text


def test_recover_says_what_it_recovered(leftover):
    path, _ = leftover
    code, text = run("check", "--store", str(path.parent))
    assert code == 1 and "UNFINISHED" in text and "episodes recover" in text
    code, text = run("recover", "--store", str(path.parent))
    assert code == 0 and text.strip() == "RECOVERED episode_0.hdf5.partial -> episode_0.hdf5: recovered 30 frames (0.6 s)"
    code, text = run("recover", "--store", str(path.parent))
    assert code == 0 and "Nothing to recover" in text
    code, text = run("check", "--store", str(path.parent))
    assert code == 0 and "recovered after a crash" in text


def test_recover_failure_and_json(tmp_path):
    garbage = tmp_path / "episode_2.hdf5.partial"
    garbage.write_bytes(b"\x01" * 3000)
    code, text = run("recover", "--store", str(tmp_path), "--json")
    data = json.loads(text)
    assert code == 1 and not data["ok"] and "HDF5 cannot read it" in data["results"][0]["error"]
    assert garbage.exists()


def test_label_and_usage_errors(record_episode):
    path, _ = record_episode(n=3)
    code, text = run("label", "0", "failure", "--notes", "towel fell", "--store", str(path.parent))
    assert code == 0 and "label set to failure" in text
    episode = Episode.open(path)
    assert episode.label.value == "failure" and episode.metadata.notes == "towel fell"
    code, text = run("label", "7", "success", "--store", str(path.parent))
    assert code == 1 and "there is no file" in text
    assert run("label", "0", "great", "--store", str(path.parent))[0] == 2
    assert run("frobnicate")[0] == 2
    assert run("--help")[0] == 0


def test_run_py_dispatches_to_the_cli(record_episode):
    path, _ = record_episode(n=3)
    done = subprocess.run(
        [sys.executable, "run.py", "episodes", "list", "--store", str(path.parent), "--json"],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode == 3 and "system packages" in done.stderr:
        pytest.skip("run.py refuses to start without its system libraries: " + done.stderr[-300:])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["episodes"][0]["length"] == 3
