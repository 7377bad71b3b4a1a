"""Following a run folder without Qt: growing files, process liveness, the job record, the runs a
window lists. (A run started from a terminal and followed: tests/app/studio/test_train_command.py;
by the panel: tests/app/ui/training/test_panel.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.studio.training.follower import FileTail, find_runs
from app.studio.training.job import process_alive
from model.run_folder import JOB_FILE, JobRecord


def test_file_tail_returns_whole_lines_in_bounded_slices(tmp_path):
    path = tmp_path / "train.jsonl"
    tail = FileTail(path, max_bytes=10)
    assert tail.read_lines() == [] and tail.at_end
    path.write_text("first line\nsecond")
    got = []
    while not tail.at_end:
        got += tail.read_lines()
    assert got == ["first line"]
    with open(path, "a") as handle:
        handle.write(" half\nthird\n")
    while not tail.at_end:
        got += tail.read_lines()
    assert got == ["first line", "second half", "third"]
    path.write_text("new\n")  # replaced by a shorter file: read from its start
    assert tail.read_lines() == ["new"]


def test_process_alive_sees_a_live_job_by_its_run_folder_and_not_a_dead_one(tmp_path):
    marker = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--out", marker])
    try:
        # Until the child has exec'd, /proc shows the parent's arguments (seen under load).
        deadline = time.monotonic() + 10
        while marker.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_alive(proc.pid, marker)
        assert not process_alive(proc.pid, str(tmp_path / "another-run"))  # a reused pid is not our job
        assert process_alive(proc.pid, "--out")
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(proc.pid, marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not process_alive(proc.pid, marker)  # a zombie (not reaped yet) is gone too
    finally:
        proc.kill()
        proc.wait()
    assert not process_alive(proc.pid, marker) and not process_alive(0)


def test_find_runs_lists_the_runs_jobs_ran_in_newest_first(tmp_path):
    assert find_runs(tmp_path / "none") == []
    for i, name in enumerate(("a", "b")):
        run = tmp_path / name
        run.mkdir()
        JobRecord(1, (), sys.executable, 0.0, "h", "/").save(run)
        os.utime(run / JOB_FILE, (1000 + i, 1000 + i))
    (tmp_path / "from-the-command-line").mkdir()
    assert [p.name for p in find_runs(tmp_path)] == ["b", "a"]
