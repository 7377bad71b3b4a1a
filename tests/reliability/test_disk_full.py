"""Fault 3: a full disk during `run.py record` ended in a segfault (exit 139) after the clear
message, twice in two tries.

The cause: the writer's HDF5 file had a raw-data chunk cache; after ENOSPC the chunks written
since the last flush stayed dirty in it, the dataset close flushed them, failed again, and HDF5
2.0 kept the dataset's id registered although it had freed the dataset; its library shutdown at
exit closed it a second time (gdb: H5D_close <- H5I_clear_type <- H5_term_library). The writer
now writes without that cache, so nothing is left to flush.

Made on a real small file system (a tmpfs of a few MB, mounted by the test: needs root; the
RLIMIT_FSIZE test in tests/recordings covers the same write error without root)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from app.studio.jobs import episodes as cli
from recordings.check import check_episode
from recordings.reader import Episode

SIZES = ("5M", "14M")  # the disk fills at a different moment of the commit cycle


@pytest.mark.parametrize("size", SIZES)
def test_a_full_disk_ends_the_writer_cleanly_and_the_frames_are_recovered(small_filesystem, synthetic_script, size):
    disk = small_filesystem.mount(size)
    store = disk / "store"
    done = subprocess.run([sys.executable, str(synthetic_script), str(store), "--mode", "full", "--format", "raw"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])  # was -11 / 139: a segfault at exit
    assert "Segmentation fault" not in done.stderr and "Fatal Python error" not in done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    error = next(e for e in events if e["event"] == "error")
    assert error["error_type"] == "RecordingWriteError"
    assert "No space left on device" in error["message"] and "free some space first" in error["message"]
    assert "episodes recover" in error["message"] and error["frames_written"] > 0
    assert any(e["event"] == "stop_failed" for e in events)  # saving needs space too; nothing lost by trying

    small_filesystem.resize(disk, "64M")  # the user frees some space
    out = io.StringIO()
    assert cli.main(["recover", "--store", str(store)], out=out) == 0, out.getvalue()
    recovered = out.getvalue()
    assert recovered.startswith("RECOVERED episode_0.hdf5.partial -> episode_0.hdf5")
    episode_path = store / "episode_0.hdf5"
    assert check_episode(episode_path, deep=True).ok
    with Episode.open(episode_path) as episode:
        assert episode.length >= error["frames_written"]  # at least every step committed before the error
        duration = episode.duration_s
    # Fault 10: `recover` and `list` give the same duration for the same file.
    assert f"({duration:.1f} s)" in recovered
    out = io.StringIO()
    cli.main(["list", "--store", str(store), "--json"], out=out)
    assert json.loads(out.getvalue())["episodes"][0]["duration_s"] == round(duration, 3)


def test_run_py_record_on_a_full_disk_exits_with_the_message_not_a_segfault(small_filesystem, run_py):
    """The command from the report, on the simulated rig, with a disk that fills within a second."""
    disk = small_filesystem.mount("1500k")
    done = run_py("record", "--rig", "configs/sim.toml", "--seconds", "4", "--store", str(disk / "store"))
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    last = done.stderr.strip().splitlines()[-1]
    # Whichever write meets the full disk first (under load the sim may not have flushed a frame
    # yet), the user reads that the disk is full and, once frames were written, how to get them.
    assert last.startswith("record failed: ") and "No space left on device" in last, last
    # Either frames were on disk (and the message says how to get them back) or nothing had
    # been written yet (and it says so); never neither.
    assert "episodes recover" in last or "Nothing had been written yet" in last, last
    assert "Traceback" not in done.stderr.split("record failed:")[-1]
