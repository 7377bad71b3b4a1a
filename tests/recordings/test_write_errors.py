"""A write that fails (disk full) stops the recording cleanly, keeps what was written, and the
control thread never notices beyond the status.

The failure is real: the writer process runs under RLIMIT_FSIZE (with SIGXFSZ ignored), so the
operating system refuses HDF5's write() with EFBIG exactly as it refuses one on a full disk with
ENOSPC. No root, no special file system."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recordings.check import check_episode
from recordings.reader import Episode
from recordings.schema import Label

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics are Linux's")
def test_a_full_disk_stops_the_recording_and_keeps_the_frames(tmp_path, synthetic_script):
    store = tmp_path / "store"
    # Raw 120x160 frames of 3 cameras: ~173 kB per tick, so 9 MB hold ~50 ticks (2 commits).
    done = subprocess.run(
        [sys.executable, str(synthetic_script), str(store), "--mode", "fsize", "--limit", "9000000", "--format", "raw"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    error = next(e for e in events if e["event"] == "error")
    ticks = [e for e in events if e["event"] == "tick"]

    assert error["error_type"] == "RecordingWriteError"
    assert "File too large" in error["message"] and "free some space" in error["message"]
    assert "episodes recover" in error["message"]
    assert error["frames_written"] > 0  # the commits before the failure
    assert error["worst_on_tick_s"] < 0.05  # the control thread kept its pace (benchmark measures it)
    assert len(ticks) > error["frames_written"]

    saved = next(e for e in events if e["event"] == "saved")  # stop() after "space was freed"
    episode = Episode.open(saved["path"])
    assert episode.length == error["frames_written"] == saved["frames"]
    assert episode.label is Label.FAILURE and episode.metadata.notes == "disk filled up"
    np.testing.assert_array_equal(episode.tick_indices, np.arange(episode.length))
    assert episode.frame("cam_high", episode.length - 1).shape == (120, 160, 3)
    assert check_episode(saved["path"]).ok
    assert not list(store.glob("*.partial"))
