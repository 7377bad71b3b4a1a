"""Fault 4: a kill at the wrong moment of `episodes label` left a complete episode unreadable (7 of
7 kills mid-write: `check` called it unfinished, `recover` refused it, only h5clear helped).

Now a label edit writes one slot of the file's label record and never opens the file through
HDF5 for writing (`recordings.labels`). Each test kills a real process with SIGKILL: at each
step of the write (held there by the FASTWAM_LABEL_PAUSE hook), and at random moments of a
process relabelling in a loop. After every kill the episode must check out with every frame
intact and carry either the old or the new label."""

from __future__ import annotations

import io
import random
import time

import h5py
import pytest

from app.studio.jobs import episodes as cli
from recordings import schema
from recordings.check import check_episode
from recordings.errors import LeftOpenForWrite
from recordings.labels import PAUSE_ENV
from recordings.reader import Episode
from recordings.store import EpisodeStore, set_label

TRIES_PER_STEP = 4
RANDOM_KILLS = 20


def frames_of(path) -> dict[str, bytes]:
    """Every dataset but the label record, as bytes: what a label edit must never change."""
    out = {}
    with h5py.File(path, "r") as root:
        def visit(name, item):
            if isinstance(item, h5py.Dataset) and "/" + name != schema.LABEL_RECORD:
                out[name] = item[()].tobytes()
        root.visititems(visit)
    return out


def label_of(path) -> tuple[str, str, str]:
    with Episode.open(path) as episode:
        meta = episode.metadata
        return meta.label.value, meta.reason, meta.notes


@pytest.fixture
def episode(record_episode):
    path, _ = record_episode(n=10, label="success")
    return path, frames_of(path)


@pytest.mark.parametrize("step", ["locked", "torn", "written"])
def test_a_kill_at_each_step_of_a_label_edit_leaves_the_old_or_the_new_label(episode, fork_child, step):
    path, frames = episode
    old = label_of(path)
    for attempt in range(TRIES_PER_STEP):
        new = ("failure", f"reason {attempt}", f"note {attempt}")
        child = fork_child(lambda: set_label(path, new[0], notes=new[2], reason=new[1]), {PAUSE_ENV: step})
        child.wait_for(f"paused at {step}".encode())
        assert child.kill() == 9
        verdict = check_episode(path, deep=True)
        assert verdict.ok, verdict.reasons
        assert frames_of(path) == frames
        got = label_of(path)
        expected = new if step == "written" else old  # written: the slot reached the file, only fsync was left
        assert got == expected, (step, attempt, got)
        if step == "torn":  # half a slot on disk: ignored by its checksum, and said
            assert any("did not complete" in w for w in verdict.warnings)
        # The next edit goes through and clears any trace of the cut-off one.
        set_label(path, "success", notes="", reason="")
        old = label_of(path)
        assert old == ("success", "", "") and check_episode(path).warnings == ()


def test_random_kills_of_a_process_relabelling_in_a_loop(episode, fork_child):
    path, frames = episode
    initial = label_of(path)
    rng = random.Random(13)

    def relabel_forever():
        i = 0
        while True:
            label = ("success", "failure")[i % 2]
            set_label(path, label, notes=f"{label} {i}", reason="")
            i += 1

    for _ in range(RANDOM_KILLS):
        child = fork_child(relabel_forever)
        time.sleep(rng.uniform(0.0, 0.05))
        child.kill()
        verdict = check_episode(path)
        assert verdict.ok, verdict.reasons
        label, reason, notes = label_of(path)
        # The state before the loop, or a matching pair: never half of one edit and half of another.
        assert (label, reason, notes) == initial or notes.startswith(label)
    assert frames_of(path) == frames


@pytest.fixture
def older_episode(record_episode, tmp_path):
    """An episode as the studio wrote it before label records existed (no /label_record)."""
    path, _ = record_episode(n=8, label="unknown")
    old = path.parent / "episode_5.hdf5"
    with h5py.File(path, "r") as src, h5py.File(old, "w", libver=("v110", "v110")) as dst:
        for name, value in src.attrs.items():
            dst.attrs[name] = value
        for name in src:
            if "/" + name != schema.LABEL_RECORD:
                src.copy(src[name], dst, name)
    return old


@pytest.mark.parametrize("step", ["copied", "modified"])
def test_an_older_file_gets_its_record_copy_on_write_and_a_kill_leaves_it_untouched(older_episode, fork_child, step):
    before = older_episode.read_bytes()
    child = fork_child(lambda: set_label(older_episode, "failure", notes="dropped", reason="towel fell"), {PAUSE_ENV: step})
    child.wait_for(f"paused at {step}".encode())
    child.kill()
    assert older_episode.read_bytes() == before  # the original is only ever replaced whole
    leftovers = list(older_episode.parent.glob(f".{older_episode.name}.label-*.tmp"))
    assert len(leftovers) == 1
    set_label(older_episode, "failure", notes="dropped", reason="towel fell")  # cleans up, then works
    assert not list(older_episode.parent.glob(f".{older_episode.name}.label-*.tmp"))
    assert label_of(older_episode) == ("failure", "towel fell", "dropped")
    assert check_episode(older_episode, deep=True).ok
    with h5py.File(older_episode, "r") as root:
        assert schema.LABEL_RECORD[1:] in root  # from now on edits are single-slot writes


def test_the_store_api_the_workbench_uses(episode):
    path, _ = episode
    store = EpisodeStore(path.parent)
    assert store.relabel(0, "failure", notes="corner missed", reason="grasp failed") == path
    summary = store.summaries()[0]
    assert (summary.label, summary.reason, summary.notes) == ("failure", "grasp failed", "corner missed")
    assert summary.to_json()["reason"] == "grasp failed"
    store.relabel(path.name, "success", reason="")  # notes kept (None), reason cleared ("")
    assert label_of(path) == ("success", "", "corner missed")
    with pytest.raises(ValueError, match="shorten the notes"):
        set_label(path, "success", notes="x" * 5000)
    assert label_of(path) == ("success", "", "corner missed")


def test_recover_clears_the_open_for_write_mark_a_killed_writer_left(episode, fork_child):
    """What the old label edit (HDF5 opened read-write) left behind when killed: a file HDF5
    refuses until the mark is cleared. `recover` now clears it without outside tools."""
    path, frames = episode

    def hold_open_for_write():
        with h5py.File(path, "r+") as root:
            root.attrs["scratch"] = 1
            root.flush()
            import sys

            sys.stderr.write("opened for write\n")
            sys.stderr.flush()
            time.sleep(600)

    child = fork_child(hold_open_for_write)
    child.wait_for(b"opened for write")
    child.kill()
    verdict = check_episode(path)
    assert not verdict.ok and verdict.unfinished and "episodes recover episode_0.hdf5" in verdict.reasons[0]
    with pytest.raises(LeftOpenForWrite):
        Episode.open(path)
    out = io.StringIO()
    assert cli.main(["list", "--store", str(path.parent)], out=out) == 1 and "UNFINISHED" in out.getvalue()
    out = io.StringIO()
    assert cli.main(["recover", "--store", str(path.parent)], out=out) == 0, out.getvalue()
    assert out.getvalue().startswith("REPAIRED episode_0.hdf5: cleared HDF5's open-for-write mark")
    assert check_episode(path, deep=True).ok and frames_of(path) == frames
    out = io.StringIO()
    assert cli.main(["recover", str(path)], out=out) == 1 and "needs no recovery" in out.getvalue()


def test_an_episode_open_elsewhere_is_not_touched_by_recover(episode, fork_child):
    path, _ = episode
    before = path.read_bytes()

    def hold_open_for_write():
        with h5py.File(path, "r+"):
            import sys

            sys.stderr.write("open\n")
            sys.stderr.flush()
            time.sleep(600)

    child = fork_child(hold_open_for_write)
    child.wait_for(b"open")
    try:
        out = io.StringIO()
        assert cli.main(["recover", str(path)], out=out) == 1
        assert "a process has it open right now" in out.getvalue()
        assert path.read_bytes()[:8] == before[:8]
    finally:
        child.kill()
