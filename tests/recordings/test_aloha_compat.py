"""Our files open in ALOHA/ACT/LeRobot tooling, and theirs open in ours.

The reading code below restates, in our own words, what those tools do with an episode file:
tonyzhaozh/act utils.py (EpisodicDataset.__getitem__, get_norm_stats), MarkFzp/act-plus-plus
utils.py (the `compress` attr and cv2.imdecode(row, 1)), and LeRobot's ALOHA HDF5 import
(check_format: camera keys of /observations/images, ndim 2 when compressed, 4 when raw).
"""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from recordings.check import check_episode
from recordings.reader import Episode
from recordings.schema import Label
from recordings.store import EpisodeStore

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def act_style_sample(path, camera_names, start_ts):
    """What ACT/act-plus-plus read for one training sample."""
    with h5py.File(path, "r") as root:
        is_sim = root.attrs["sim"]
        compressed = root.attrs.get("compress", False)
        episode_len = root["/action"].shape[0]
        qpos = root["/observations/qpos"][start_ts]
        qvel = root["/observations/qvel"][start_ts]
        images = {cam: root[f"/observations/images/{cam}"][start_ts] for cam in camera_names}
        if compressed:
            images = {cam: np.array(cv2.imdecode(row, 1)) for cam, row in images.items()}
        action = root["/action"][start_ts:] if is_sim else root["/action"][max(0, start_ts - 1) :]
        whole_qpos = root["/observations/qpos"][()]  # get_norm_stats
    return is_sim, episode_len, qpos, qvel, images, action, whole_qpos


def lerobot_style_check(path):
    """LeRobot's ALOHA import: its format assertions and its camera discovery."""
    with h5py.File(path, "r") as data:
        assert "/action" in data and "/observations/qpos" in data
        assert data["/action"].ndim == 2 and data["/observations/qpos"].ndim == 2
        num_frames = data["/action"].shape[0]
        assert num_frames == data["/observations/qpos"].shape[0]
        cameras = [key for key in data["/observations/images"].keys() if "depth" not in key]
        for camera in cameras:
            assert num_frames == data[f"/observations/images/{camera}"].shape[0]
        return cameras, {cam: data[f"/observations/images/{cam}"].ndim for cam in cameras}


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_act_and_lerobot_read_our_episodes(record_episode, image_format):
    path, records = record_episode(n=30, image_format=image_format)
    assert path.name == "episode_0.hdf5"  # ACT builds f"episode_{idx}.hdf5" itself
    ours = Episode.open(path)
    is_sim, episode_len, qpos, qvel, images, action, whole_qpos = act_style_sample(path, CAMERAS, 12)
    assert not is_sim and episode_len == 30
    np.testing.assert_array_equal(qpos, records[12].observation.qpos)
    np.testing.assert_array_equal(qvel, records[12].observation.qvel)
    np.testing.assert_array_equal(action, np.stack([r.action for r in records[11:]]))
    assert whole_qpos.dtype == np.float32 and whole_qpos.shape == (30, 14)
    for cam in CAMERAS:
        # ACT stacks the frames and feeds them as RGB: same array as our reader, close to the camera's
        assert images[cam].shape == (48, 64, 3) and images[cam].dtype == np.uint8
        np.testing.assert_array_equal(images[cam], ours.frame(cam, 12))
        original = records[12].observation.images[cam]
        assert np.abs(images[cam].astype(np.int16) - original).mean() < 6
    cameras, ndims = lerobot_style_check(path)
    assert sorted(cameras) == sorted(CAMERAS)  # nothing but cameras under /observations/images
    assert set(ndims.values()) == ({2} if image_format == "jpeg" else {4})
    with h5py.File(path, "r") as root:
        if image_format == "jpeg":
            assert root.attrs["compress"] and root["/compress_len"].shape == (3, 30)
            padded_len = root["/compress_len"][()].max()  # ALOHA pads to the longest frame
            assert all(root[f"/observations/images/{cam}"].shape == (30, padded_len) for cam in CAMERAS)
            assert root["/observations/images/cam_high"].chunks[0] == 1
        else:
            assert not root.attrs["compress"] and root["/observations/images/cam_high"].chunks == (1, 48, 64, 3)


def _write_aloha_sim_file(path, rng, n=25):
    """An episode as ACT's record_sim_episodes.py writes it: raw frames, no effort, no extras."""
    frames = rng.integers(0, 255, (n, 60, 80, 3), dtype=np.uint8)
    qpos = rng.standard_normal((n, 14)).astype(np.float32)
    action = rng.standard_normal((n, 14)).astype(np.float32)
    with h5py.File(path, "w", rdcc_nbytes=1024**2 * 2) as root:
        root.attrs["sim"] = True
        obs = root.create_group("observations")
        image = obs.create_group("images")
        image.create_dataset("top", (n, 60, 80, 3), dtype="uint8", chunks=(1, 60, 80, 3))
        obs.create_dataset("qpos", (n, 14), dtype="f4")
        obs.create_dataset("qvel", (n, 14), dtype="f4")
        root.create_dataset("action", (n, 14), dtype="f4")
        root["/observations/images/top"][...] = frames
        root["/observations/qpos"][...] = qpos
        root["/observations/qvel"][...] = qpos * 0.5
        root["/action"][...] = action
    return frames, qpos, action


def _write_mobile_aloha_file(path, rng, n=20):
    """An episode as (mobile) ALOHA's recorder writes it compressed: JPEG of the RGB array as it
    is, rows zero-padded to the longest, compress_len as float32 (h5py's default dtype)."""
    cams = ("cam_high", "cam_left_wrist")
    y, x = np.mgrid[0:60, 0:80]
    frames = {
        cam: np.stack(
            [np.dstack([(x * 3 + t) % 256, (y * 4) % 256, np.full_like(x, 40 * k)]).astype(np.uint8) for t in range(n)]
        )
        for k, cam in enumerate(cams)
    }
    encoded = {cam: [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 50])[1] for f in frames[cam]] for cam in cams}
    padded_size = max(len(e) for rows in encoded.values() for e in rows)
    compressed_len = np.array([[len(e) for e in encoded[cam]] for cam in cams])
    with h5py.File(path, "w", rdcc_nbytes=1024**2 * 2) as root:
        root.attrs["sim"] = False
        root.attrs["compress"] = True
        obs = root.create_group("observations")
        image = obs.create_group("images")
        for cam in cams:
            data = image.create_dataset(cam, (n, padded_size), dtype="uint8", chunks=(1, padded_size))
            for t, row in enumerate(encoded[cam]):
                padded = np.zeros(padded_size, dtype="uint8")
                padded[: len(row)] = row.reshape(-1)
                data[t] = padded
        for name in ("qpos", "qvel", "effort"):
            obs.create_dataset(name, (n, 14), dtype="f4")[...] = rng.standard_normal((n, 14))
        root.create_dataset("action", (n, 14), dtype="f4")[...] = rng.standard_normal((n, 14))
        root.create_dataset("base_action", (n, 2), dtype="f4")[...] = 0.0
        root.create_dataset("compress_len", (len(cams), n), dtype="f4")[...] = compressed_len
    return frames


def test_we_read_an_act_sim_episode(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "episode_0.hdf5"
    frames, qpos, action = _write_aloha_sim_file(path, rng)
    episode = Episode.open(path)
    assert episode.length == 25 and episode.camera_names == ("top",) and not episode.compressed
    assert episode.sim and not episode.is_ours and episode.label is Label.UNKNOWN
    assert episode.timestamps is None and episode.control_sources is None and episode.image_times("top") is None
    assert episode.effort is None
    np.testing.assert_array_equal(episode.qpos, qpos)
    np.testing.assert_array_equal(episode.action, action)
    np.testing.assert_array_equal(episode.frame("top", 7), frames[7])
    assert episode.duration_s == pytest.approx(0.5)  # 25 steps at ALOHA's 50 Hz
    result = check_episode(path)
    assert result.ok and any("effort" in warning for warning in result.warnings)
    summary = EpisodeStore(tmp_path).summaries()[0]
    assert summary.length == 25 and summary.problem is None and summary.label == "unknown"


def test_we_read_a_compressed_mobile_aloha_episode_as_rgb(tmp_path):
    path = tmp_path / "episode_3.hdf5"
    frames = _write_mobile_aloha_file(path, np.random.default_rng(1))
    episode = Episode.open(path)
    assert episode.compressed and set(episode.camera_names) == {"cam_high", "cam_left_wrist"}
    assert episode.effort.shape == (20, 14)
    for cam in episode.camera_names:
        decoded = episode.frame(cam, 11)
        assert decoded.shape == (60, 80, 3)
        # same channel order as the array ALOHA encoded (JPEG at quality 50 is only close)
        assert np.abs(decoded.astype(np.int16) - frames[cam][11]).mean(axis=(0, 1)).max() < 8
    assert check_episode(path).ok
    assert EpisodeStore(tmp_path).next_index() == 0  # ALOHA's auto index: lowest free
