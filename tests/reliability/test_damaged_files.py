"""Fault 1: one damaged episode took the store down (`episodes list`, `check` and `train` died with
an uncaught KeyError "incorrect metadata checksum" and said nothing about the other files).
Fault 2: a damaged JPEG frame passed `check` and crashed training a minute in with "OSError:
Can't synchronously read data", naming no file.

Real episodes from the real writer, damaged on disk the way a bad copy or a failing disk does."""

from __future__ import annotations

import io
import json
import logging
import time

import h5py
import numpy as np
import pytest

from app.studio.jobs import episodes as cli
from model.data import (
    CanvasSpec,
    CorruptEpisode,
    EpisodeFilter,
    EpisodeSource,
    UnreadableEpisode,
    WindowDataset,
    WindowSpec,
    find_episodes,
)
from recordings import schema
from recordings.check import check_episode
from recordings.errors import EpisodeFormatError
from recordings.metadata import EpisodeMetadata
from recordings.reader import Episode

MARKER = "reliability marker task"
ALL_LABELS = EpisodeFilter(labels=("success", "failure", "unknown"))


def run(*argv):
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def store(record_episode):
    """Three good episodes (0, 1, 2) of 12 steps, three cameras, JPEG."""
    paths = [record_episode(n=12, label="success", metadata=EpisodeMetadata(task=MARKER))[0] for _ in range(3)]
    assert [p.name for p in paths] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    return paths[0].parent


@pytest.fixture
def damaged_header(store, flip_byte, offset_of):
    """Episode 1 with one byte of its root object header changed (inside the task text): HDF5
    fails the header's checksum when the attributes are read."""
    path = store / "episode_1.hdf5"
    flip_byte(path, offset_of(path, MARKER.encode()) + 3)
    with pytest.raises(Exception, match="checksum"):  # the fault as HDF5 sees it
        with h5py.File(path, "r") as root:
            dict(root.attrs)
    return path


def test_list_names_the_damaged_file_and_lists_the_others(store, damaged_header):
    code, text = run("list", "--store", str(store))
    assert code == 1  # something is wrong, and a script can tell
    lines = text.splitlines()
    assert lines[1].split()[:5] == ["0", "12", "0.2", "s", "success"]
    assert lines[2].split()[0] == "1" and "INVALID episode_1.hdf5" in lines[2] and "checksum" in lines[2]
    assert "restore it from a backup" in lines[2]  # what to do
    assert lines[3].split()[:5] == ["2", "12", "0.2", "s", "success"]
    assert "2 episodes" in lines[-1] and "1 damaged" in lines[-1]
    code, text = run("list", "--store", str(store), "--json")
    rows = json.loads(text)["episodes"]
    assert code == 1 and [r["problem"] is None for r in rows] == [True, False, True]


def test_check_names_the_damaged_file_and_checks_the_others(store, damaged_header):
    code, text = run("check", "--store", str(store))
    assert code == 1
    assert text.count("OK       ") == 2
    assert f"INVALID  {damaged_header}: " in text and "checksum" in text
    assert "1 of 3 files need attention" in text


def test_training_selection_names_the_damaged_file_or_leaves_it_out(store, damaged_header, caplog):
    with pytest.raises(CorruptEpisode) as info:
        find_episodes([store], ALL_LABELS)
    assert set(info.value.problems) == {damaged_header}
    assert "--exclude (episode_1.hdf5)" in str(info.value) and "--skip-unreadable" in str(info.value)
    skipped = []
    with caplog.at_level(logging.WARNING):
        kept = find_episodes([store], ALL_LABELS, skip_unreadable=True, on_skip=lambda p, r: skipped.append((p, r)))
    assert [info.name for info in kept] == ["episode_0.hdf5", "episode_2.hdf5"]
    assert [p for p, _ in skipped] == [damaged_header] and "checksum" in skipped[0][1]
    assert "Leaving out episode_1.hdf5" in caplog.text


@pytest.fixture
def damaged_frame(record_episode):
    """An episode whose frame 7 of cam_left_wrist has one changed byte in the middle of its
    JPEG (a failing disk sector): not one of the spot-checked frames."""
    path, _ = record_episode(n=20, label="success")
    with h5py.File(path, "r") as root:
        length = int(root[schema.COMPRESS_LEN][1, 7])
        chunk = root[schema.image_path("cam_left_wrist")].id.get_chunk_info_by_coord((7, 0))
    with open(path, "r+b") as handle:
        handle.seek(chunk.byte_offset + length // 2)
        value = handle.read(1)[0]
        handle.seek(chunk.byte_offset + length // 2)
        handle.write(bytes([value ^ 0x5A]))
    return path


def test_deep_check_names_episode_camera_and_frame(damaged_frame):
    assert check_episode(damaged_frame).ok  # the spot check does not read frame 7: that is what --deep is for
    code, text = run("check", "--deep", str(damaged_frame))
    assert code == 1
    assert f"INVALID  {damaged_frame}: frame 7 of camera 'cam_left_wrist' cannot be read" in text
    assert "checksum" in text
    with Episode.open(damaged_frame) as episode:
        episode.frame("cam_left_wrist", 6)  # the frames around it still read
        with pytest.raises(EpisodeFormatError, match="frame 7 of camera 'cam_left_wrist' cannot be read"):
            episode.frame("cam_left_wrist", 7)


def test_training_finds_the_bad_frame_up_front_not_an_hour_in(damaged_frame, tmp_path):
    from recordings.check_memo import DeepCheckMemo

    memo = DeepCheckMemo(tmp_path / "deep_checks.json")
    with pytest.raises(CorruptEpisode, match="frame 7 of camera 'cam_left_wrist'"):
        find_episodes([damaged_frame.parent], ALL_LABELS, deep=True, check_memo=memo)
    # Without the up-front check the loader still stops with the file and the frame, as a
    # typed error that survives a DataLoader worker (built from its message alone).
    infos = find_episodes([damaged_frame.parent], ALL_LABELS)
    canvas = CanvasSpec((48, 40), ("cam_high", "cam_left_wrist", "cam_right_wrist"))
    dataset = WindowDataset([EpisodeSource(infos[0], 0)], WindowSpec(4, 2, 2, 2), canvas, mode="frames")
    with pytest.raises(UnreadableEpisode) as info:
        for index in range(len(dataset)):
            dataset[index]
    text = str(info.value)
    assert "episode_0.hdf5 cannot be read while training" in text and "camera 'cam_left_wrist'" in text
    assert type(info.value)(text).args == (text,)  # how torch re-raises a worker's error


def test_the_deep_check_is_remembered_for_unchanged_files(record_episode, tmp_path):
    from recordings.check_memo import DeepCheckMemo, deep_check

    path, _ = record_episode(n=8)
    memo = DeepCheckMemo(tmp_path / "memo.json")
    assert deep_check(path, memo) == [] and DeepCheckMemo(tmp_path / "memo.json").passed(path)
    with h5py.File(path, "r") as root:
        chunk = root[schema.ACTION].id.get_chunk_info(0)
    with open(path, "r+b") as handle:  # changed after the check: the memo no longer vouches for it
        handle.seek(chunk.byte_offset + 5)
        handle.write(b"\x7f")
    assert not memo.passed(path)
    assert any("/action cannot be read" in reason for reason in deep_check(path, memo))


def test_a_cut_off_jpeg_in_a_file_without_checksums_is_found_by_its_end_marker(record_episode, tmp_path):
    """Files written before the checksums (or by other tools) have no Fletcher-32: a JPEG cut
    short still decodes (libjpeg fills it grey and complains on stderr), so its end is checked."""
    path, _ = record_episode(n=6)
    plain = tmp_path / "plain.hdf5"
    with h5py.File(path, "r") as src, h5py.File(plain, "w") as dst:
        for name, value in src.attrs.items():
            dst.attrs[name] = value
        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                dst.create_dataset(name, data=item[()])  # no filters
        src.visititems(copy)
    with h5py.File(plain, "r+") as root:
        n = int(root[schema.COMPRESS_LEN][0, 3])
        row = root[schema.image_path("cam_high")][3]
        row[n - 2 : n] = 0  # the last bytes (the end marker) lost
        root[schema.image_path("cam_high")][3] = row
    assert check_episode(plain).ok or True  # the spot check may or may not hit frame 3
    result = check_episode(plain, deep=True)
    assert not result.ok
    assert "frame 3 of camera 'cam_high' is cut off (the JPEG end marker is missing)" in result.reasons


def test_every_frame_is_decoded_once_and_named_in_the_verdict(record_episode):
    path, _ = record_episode(n=10)
    result = check_episode(path, deep=True)
    assert result.ok and result.reasons == () and result.length == 10
    with h5py.File(path, "r") as root:
        assert all(root[schema.image_path(c)].fletcher32 for c in ("cam_high", "cam_left_wrist", "cam_right_wrist"))
        assert root[schema.ACTION].fletcher32 and root[schema.TIMESTAMP].fletcher32
        assert np.asarray(root.attrs[schema.ATTR_TASK]).dtype.kind == "S"  # inside the checksummed header


def test_a_damaged_global_heap_in_an_older_file_does_not_hang_the_store(store, monkeypatch):
    """Files written before the checksums keep text attributes in HDF5's global heap, which has
    none; HDF5 reads one damaged there in an endless loop (found by the fuzz). The attributes
    of such files are read by a helper process that is replaced when it does not answer."""
    import struct

    import recordings.attributes as attributes

    older = store / "episode_1.hdf5"
    with h5py.File(older, "r+") as root:  # text attributes as the studio wrote them before
        for name, value in list(root.attrs.items()):
            if isinstance(value, bytes):
                root.attrs[name] = value.decode("utf-8")
    data = bytearray(older.read_bytes())
    collection = data.find(b"GCOL")
    position = collection + 16
    while data[position : position + 2] != b"\x00\x00":  # walk the heap's objects to the label's
        size = struct.unpack("<Q", data[position + 8 : position + 16])[0]
        if data[position + 16 : position + 16 + size] == b"success":
            break
        position += 16 + (size + 7) // 8 * 8
    data[position + 8 : position + 16] = struct.pack("<Q", 202)  # the size the fuzz found
    older.write_bytes(bytes(data))

    monkeypatch.setattr(attributes, "TIMEOUT_S", 2.0)
    started = time.monotonic()
    code, text = run("list", "--store", str(store))
    assert time.monotonic() - started < 20
    assert code == 1 and "did not finish" in text and "episode_1.hdf5" in text
    assert text.count(" success ") == 2  # the two others are listed as usual
    assert not check_episode(older).ok
