"""`check` rejects damaged or foreign files and says why."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from recordings import schema
from recordings.check import check_episode
from recordings.errors import EpisodeFormatError
from recordings.reader import Episode


@pytest.fixture
def good(record_episode):
    path, _ = record_episode(n=20)
    return path


def _variant(good, tmp_path, name, change):
    path = tmp_path / name
    shutil.copyfile(good, path)
    with h5py.File(path, "r+") as root:
        change(root)
    return path


def test_a_good_episode_passes(good):
    result = check_episode(good)
    assert result.ok and result.reasons == () and result.length == 20


def test_a_truncated_copy_is_rejected(good, tmp_path):
    data = good.read_bytes()
    for fraction in (0.5, 0.95):
        cut = tmp_path / f"cut_{fraction}.hdf5"
        cut.write_bytes(data[: int(len(data) * fraction)])
        result = check_episode(cut)
        assert not result.ok and "truncated" in " ".join(result.reasons), result.reasons
    with pytest.raises(EpisodeFormatError, match="truncated"):
        Episode.open(cut)


def test_files_that_are_not_episodes(tmp_path):
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"\x00" * 4096)
    assert check_episode(junk).reasons == ("it is not an HDF5 file",)
    assert "no file" in check_episode(tmp_path / "missing.hdf5").reasons[0]
    empty = tmp_path / "empty.hdf5"
    h5py.File(empty, "w").close()
    reasons = check_episode(empty).reasons
    assert "/observations/qpos is missing" in reasons and "/action is missing" in reasons
    assert "/observations/images is missing" in reasons


def test_inconsistent_lengths_dtypes_and_values(good, tmp_path):
    def shorten_action(root):
        data = root["/action"][:15]
        del root["/action"]
        root["/action"] = data

    reasons = check_episode(_variant(good, tmp_path, "short.hdf5", shorten_action)).reasons
    assert any("/observations/qpos has 20 steps but /action has 15" in r for r in reasons), reasons

    def nan_qpos(root):
        root["/observations/qpos"][3, 2] = np.nan

    assert check_episode(_variant(good, tmp_path, "nan.hdf5", nan_qpos)).reasons == (
        "/observations/qpos has 1 NaN or infinite values",
    )

    def int_qvel(root):
        del root["/observations/qvel"]
        root["/observations/qvel"] = np.zeros((20, 14), dtype=np.int32)

    assert any("dtype int32" in r for r in check_episode(_variant(good, tmp_path, "int.hdf5", int_qvel)).reasons)

    def backwards_time(root):
        root["/timestamp"][5] = 0.0

    assert any("backwards" in r for r in check_episode(_variant(good, tmp_path, "time.hdf5", backwards_time)).reasons)

    def no_compress_attr(root):
        root.attrs["compress"] = False

    reasons = check_episode(_variant(good, tmp_path, "attr.hdf5", no_compress_attr)).reasons
    assert any("'compress' attribute is not set" in r for r in reasons), reasons


def test_a_corrupt_jpeg_is_found_by_the_spot_check(good, tmp_path):
    def scramble_last_frame(root):
        row = root["/observations/images/cam_left_wrist"]
        row[19, 2:400] = np.random.default_rng(0).integers(0, 255, 398, dtype=np.uint8)

    path = _variant(good, tmp_path, "jpeg.hdf5", scramble_last_frame)
    result = check_episode(path)
    assert not result.ok and result.reasons == ("frame 19 of camera 'cam_left_wrist' is not a decodable JPEG image",)
    with pytest.raises(EpisodeFormatError, match="frame 19"):
        Episode.open(path).frame("cam_left_wrist", 19)
    assert Episode.open(path).frame("cam_left_wrist", 18).shape == (48, 64, 3)  # the rest reads


def test_an_unknown_label_and_an_unclosed_file_are_reasons(good, tmp_path):
    def odd(root):
        root.attrs[schema.ATTR_LABEL] = "maybe"
        root.attrs[schema.ATTR_FINISHED] = False

    reasons = check_episode(_variant(good, tmp_path, "odd.hdf5", odd)).reasons
    assert "success label 'maybe' is not one of unknown/success/failure" in reasons
    assert "the recording was not closed properly (neither finished nor recovered)" in reasons
