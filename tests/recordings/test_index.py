"""The store index: built from the files, reused while they are unchanged, re-read when a file
changes behind its back, rebuilt when damaged; trash and restore; failure reasons."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest

from recordings import schema
from recordings.errors import RecordingError
from recordings.failure_reasons import DEFAULT_FAILURE_REASONS, load_failure_reasons, save_failure_reasons
from recordings.index import INDEX_FILE, StoreIndex
from recordings.store import set_label
from recordings.trash import move_to_trash, restore, trashed_episodes


@pytest.fixture
def store(tmp_path, record_episode):
    root = tmp_path / "store"
    for _ in range(3):
        record_episode(n=12, store=root)
    return root


def test_build_then_reuse(store):
    first = StoreIndex(store).refresh()
    assert [row.name for row in first.rows] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    assert len(first.reread) == 3 and first.reused == 0
    assert (store / INDEX_FILE).is_file()
    row = first.rows[0]
    assert row.length == 12 and row.cameras == ("cam_high", "cam_left_wrist", "cam_right_wrist")
    assert row.sources == {"teleop": 12} and row.qa().verdict.value == "ok"
    again = StoreIndex(store).refresh()  # a new process: from the file alone
    assert again.reread == () and again.reused == 3
    assert again.rows == first.rows


def test_refresh_after_outside_changes(store, record_episode):
    index = StoreIndex(store)
    index.refresh()
    # Behind the index's back: a relabel by another program, a new file, a deleted one.
    set_label(store / "episode_1.hdf5", "failure")
    record_episode(n=5, store=store)  # episode_3
    (store / "episode_0.hdf5").unlink()
    result = StoreIndex(store).refresh()
    assert set(result.reread) == {"episode_1.hdf5", "episode_3.hdf5"}
    assert result.dropped == ("episode_0.hdf5",)
    rows = {row.name: row for row in result.rows}
    assert rows["episode_1.hdf5"].label == "failure"
    assert rows["episode_3.hdf5"].length == 5
    assert "episode_0.hdf5" not in rows


def test_a_replaced_file_of_the_same_size_is_read_again(store):
    StoreIndex(store).refresh()
    replacement = store / "copy.tmp"
    shutil.copyfile(store / "episode_2.hdf5", replacement)
    set_label(replacement, "success", notes="x" * 3)
    replacement.replace(store / "episode_2.hdf5")  # a new inode under the old name
    result = StoreIndex(store).refresh()
    assert result.reread == ("episode_2.hdf5",)
    assert result.rows[2].label == "success"


def test_a_damaged_index_is_rebuilt_and_never_trusted_over_the_files(store):
    StoreIndex(store).refresh()
    (store / INDEX_FILE).write_text("{ not json")
    result = StoreIndex(store).refresh()
    assert len(result.reread) == 3
    data = json.loads((store / INDEX_FILE).read_text())
    data["rows"][0]["label"] = "success"  # a lie, with a stamp that no longer matches
    data["rows"][0]["stamp"][1] -= 1
    (store / INDEX_FILE).write_text(json.dumps(data))
    result = StoreIndex(store).refresh()
    assert result.reread == ("episode_0.hdf5",) and result.rows[0].label == "unknown"
    assert len(StoreIndex(store).rebuild().reread) == 3


def test_leftovers_are_listed_not_opened(store, leftover):
    path, _ = leftover
    shutil.copyfile(path, store / "episode_7.hdf5.partial")
    rows = StoreIndex(store).refresh().rows
    assert rows[-1].name == "episode_7.hdf5.partial" and rows[-1].unfinished and not rows[-1].live
    assert "recover" in rows[-1].problem


def test_a_broken_file_gets_a_row_with_the_problem(store):
    (store / "episode_9.hdf5").write_bytes(b"not hdf5 at all")
    rows = {row.name: row for row in StoreIndex(store).refresh().rows}
    assert rows["episode_9.hdf5"].problem == "it is not an HDF5 file"
    assert rows["episode_9.hdf5"].qa() is None


def test_update_after_a_write(store):
    index = StoreIndex(store)
    index.refresh()
    set_label(store / "episode_0.hdf5", "failure", reason="towel dropped")
    index.update([store / "episode_0.hdf5"])
    row = StoreIndex(store).cached_rows()[0]
    assert (row.label, row.reason) == ("failure", "towel dropped")
    assert StoreIndex(store).refresh().reread == ()


def test_trash_and_restore(store, record_episode):
    trashed = move_to_trash(store, "episode_1.hdf5")
    assert not (store / "episode_1.hdf5").exists()
    assert trashed.path.parent.name == "trash" and not trashed.path.name.endswith(".hdf5")
    assert [row.name for row in StoreIndex(store).refresh().rows] == ["episode_0.hdf5", "episode_2.hdf5"]
    assert [item.original for item in trashed_episodes(store)] == ["episode_1.hdf5"]
    assert restore(store, "episode_1.hdf5") == store / "episode_1.hdf5"
    assert trashed_episodes(store) == []
    # Trashed again, and a new recording takes index 1 meanwhile: the restore goes elsewhere.
    move_to_trash(store, store / "episode_1.hdf5")
    record_episode(n=4, store=store)
    back = restore(store, "1")
    assert back == store / "episode_3.hdf5"
    assert StoreIndex(store).refresh().rows[1].length == 4  # the new episode_1 is untouched
    with pytest.raises(RecordingError, match="not in the trash"):
        restore(store, "episode_1.hdf5")
    with pytest.raises(RecordingError, match="not an episode file"):
        move_to_trash(store, store / INDEX_FILE)


def test_failure_reasons_file(tmp_path):
    assert load_failure_reasons(tmp_path) == DEFAULT_FAILURE_REASONS
    save_failure_reasons(tmp_path, ["  towel  dropped ", "", "grasp slipped", "towel dropped"])
    assert load_failure_reasons(tmp_path) == ("towel dropped", "grasp slipped")
    (tmp_path / "failure_reasons.txt").write_text("# ours\nwrinkled\n\nsecond try\n")
    assert load_failure_reasons(tmp_path) == ("wrinkled", "second try")


def test_a_recording_in_progress_is_listed_live_and_never_opened(store, make_tick):
    import numpy as np

    from recordings.writer import EpisodeWriter

    writer = EpisodeWriter(store, ("cam_high", "cam_left_wrist", "cam_right_wrist"), flush_interval_s=0.05)
    writer.start()
    rng = np.random.default_rng(0)
    try:
        for i in range(10):
            writer.on_tick(make_tick(i, 10.0 + 0.02 * i, rng))
        rows = StoreIndex(store).refresh().rows
        live = [row for row in rows if row.unfinished]
        assert [(row.name, row.live, row.problem) for row in live] == [("episode_3.hdf5.partial", True, "being recorded now")]
        assert len([row for row in rows if row.usable]) == 3
    finally:
        writer.stop()
    assert StoreIndex(store).refresh().rows[-1].name == "episode_3.hdf5"
