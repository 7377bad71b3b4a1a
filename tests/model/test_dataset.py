"""The training data: selection, split, windows with padding, normalisation, the latent cache.

Episodes are written by the real recordings writer (raw frames whose value encodes camera and
step, see test_train_support) and read back through the real reader and HDF5 files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from model.checkpoint import NormStats, load_checkpoint, save_checkpoint
from model.config import get_preset
from model.data import (
    CanvasSpec,
    EpisodeFilter,
    EpisodeSource,
    SampleStream,
    WindowDataset,
    WindowSpec,
    find_episodes,
    split_by_episode,
    video_to_model,
)
from model.encoders import CausalVideoAutoencoder, build_encoders
from model.errors import CameraMismatch, CorruptEpisode, NoEpisodesMatch
from model.fastwam import FastWAM
from model.latent_cache import STALE_TEMP_S, CanvasCache, LatentCache, encoder_key, prune_cache
from model.normalization import compute_norm_stats, norm_stats_from_arrays
from recordings.store import set_label

_spec = importlib.util.spec_from_file_location("train_support", Path(__file__).with_name("test_train_support.py"))
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

torch.set_num_threads(1)

CONFIG = get_preset("tiny").replace(canvas_hw=(64, 96), action_horizon=8)
WINDOW = WindowSpec.from_config(CONFIG)
CANVAS = CanvasSpec.from_config(CONFIG)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("episodes")
    return support.make_store(
        root, lengths=(40, 33, 30, 36, 12),
        labels=["success", "success", "failure", "unknown", "success"],
        tasks=["fold the towel", "fold the towel", "fold the towel", "fold the towel", "stack the cups"],
    )


def _canvas_values(canvas: np.ndarray) -> tuple[int, int, int]:
    """(cam_high, left wrist, right wrist) pixel values of a canvas of flat camera images."""
    h, w = canvas.shape[:2]
    top_h = h - h // 3
    return int(canvas[top_h // 2, w // 2, 0]), int(canvas[h - 2, 2, 0]), int(canvas[h - 2, w - 3, 0])


def test_windows_frames_actions_and_padding(store):
    infos = find_episodes([store], EpisodeFilter(labels=("success",), tasks=("fold the towel",)))
    assert [i.name for i in infos] == ["episode_0.hdf5", "episode_1.hdf5"]
    dataset = WindowDataset([EpisodeSource(i, 0) for i in infos], WINDOW, CANVAS, mode="frames")
    assert len(dataset) == 40 + 33
    offset = 17 * 1  # episode_1 was written with frame offset 17
    for t in (0, 5, 20, 30, 32):
        item = dataset[40 + t]
        assert int(item["episode"]) == 1 and int(item["t"]) == t
        steps = t + 4 * np.arange(9)
        expected_pad = steps > 32
        np.testing.assert_array_equal(item["image_is_pad"].numpy(), expected_pad)
        for k, step in enumerate(np.minimum(steps, 32)):  # padding repeats the last frame
            values = _canvas_values(item["video"][k].numpy())
            assert values == tuple(support.frame_value(int(step) + offset, c) for c in range(3)), (t, k)
        a_steps = t + np.arange(8)
        np.testing.assert_array_equal(item["action_is_pad"].numpy(), a_steps > 32)
        expected_actions = np.stack([support.action_of(int(s)) for s in np.minimum(a_steps, 32)])
        np.testing.assert_array_equal(item["action"].numpy(), expected_actions)
        np.testing.assert_array_equal(item["proprio"].numpy(), support.qpos_of(t))
    assert item["video"].shape == (9, 64, 96, 3) and item["video"].dtype == torch.uint8


def test_selection_by_label_task_and_list(store):
    assert {i.name for i in find_episodes([store])} == {"episode_0.hdf5", "episode_1.hdf5", "episode_4.hdf5"}
    both = find_episodes([store], EpisodeFilter(labels=("success", "unknown")))
    assert {i.name for i in both} == {"episode_0.hdf5", "episode_1.hdf5", "episode_3.hdf5", "episode_4.hdf5"}
    cups = find_episodes([store], EpisodeFilter(tasks=("stack the cups",)))
    assert [i.name for i in cups] == ["episode_4.hdf5"] and cups[0].task == "stack the cups"
    listed = find_episodes([store], EpisodeFilter(labels=("failure", "success"), include=("episode_2", "episode_0.hdf5")))
    assert [i.name for i in listed] == ["episode_0.hdf5", "episode_2.hdf5"]
    assert "episode_1.hdf5" not in {i.name for i in find_episodes([store], EpisodeFilter(exclude=("episode_1.hdf5",)))}
    with pytest.raises(NoEpisodesMatch, match=r"labelled .*'failure': 1.*label the good demonstrations|Label the good"):
        find_episodes([store], EpisodeFilter(tasks=("sort the socks",)))
    with pytest.raises(NoEpisodesMatch, match="not there"):
        find_episodes([store], EpisodeFilter(include=("episode_77",)))
    with pytest.raises(ValueError, match="Unknown success label"):
        EpisodeFilter(labels=("great",))


def test_selection_by_control_source_trains_on_the_corrections(tmp_path):
    from robot.types import ControlSource as S

    # A policy episode: the policy drove, a person corrected it, the policy again, then a hold.
    sources = [S.POLICY] * 10 + [S.INTERVENTION] * 8 + [S.POLICY] * 6 + [S.HOLD] * 2
    support.write_episode(tmp_path / "dagger", len(sources), label="failure", sources=sources)
    support.write_episode(tmp_path / "dagger", 12, label="failure")  # scripted only: nothing selected
    flt = EpisodeFilter(labels=("failure",), control_sources=("teleop", "intervention"))
    infos = find_episodes([tmp_path / "dagger"], flt)
    assert [i.name for i in infos] == ["episode_0.hdf5"]
    np.testing.assert_array_equal(infos[0].steps, np.arange(10, 18))
    dataset = WindowDataset([EpisodeSource(i, 0) for i in infos], WINDOW, CANVAS, mode="frames")
    assert len(dataset) == 8 and [int(dataset[k]["t"]) for k in (0, 7)] == [10, 17]
    # The window still reaches past the selection: the chunk a correction starts is what it was.
    np.testing.assert_array_equal(dataset[7]["action"].numpy()[1], support.action_of(18))
    with pytest.raises(NoEpisodesMatch, match="steps from policy"):
        find_episodes([tmp_path / "dagger"], EpisodeFilter(labels=("success",), control_sources=("policy",)))
    with pytest.raises(ValueError, match="unknown control source"):
        EpisodeFilter(control_sources=("robot",))


def test_aloha_files_without_labels_are_used_with_a_camera_map(tmp_path):
    path = tmp_path / "episode_0.hdf5"
    with h5py.File(path, "w") as root:  # ACT's sim layout: one 'top' camera, no metadata
        root.attrs["sim"] = True
        obs = root.create_group("observations")
        obs["qpos"] = np.stack([support.qpos_of(t) for t in range(20)])
        obs["qvel"] = np.zeros((20, 14), np.float32)
        obs.create_group("images")["top"] = np.stack([np.full((48, 64, 3), t, np.uint8) for t in range(20)])
        root["action"] = np.stack([support.action_of(t) for t in range(20)])
    with pytest.raises(CameraMismatch, match="lack camera"):
        find_episodes([tmp_path], canvas=CANVAS)
    canvas = CanvasSpec.from_config(CONFIG, {c: "top" for c in CANVAS.cameras})
    [info] = find_episodes([tmp_path], default_task="fold the towel", canvas=canvas)
    assert not info.ours and info.label == "unknown" and info.task == "fold the towel" and not info.task_given
    item = WindowDataset([EpisodeSource(info, 0)], WINDOW, canvas, mode="frames")[3]
    assert _canvas_values(item["video"][1].numpy()) == (7, 7, 7)


def test_corrupt_episode_is_named_with_the_fix(store, tmp_path):
    bad_store = tmp_path / "bad"
    shutil.copytree(store, bad_store)
    (bad_store / "episode_9.hdf5").write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(CorruptEpisode, match=r"episode_9.hdf5: it is not an HDF5 file.*--exclude"):
        find_episodes([bad_store])
    assert len(find_episodes([bad_store], EpisodeFilter(exclude=("episode_9",)))) == 3


def test_validation_split_is_fixed_by_file_names(store):
    infos = find_episodes([store], EpisodeFilter(labels=("success", "failure", "unknown")))
    train, val = split_by_episode(infos, 0.3)
    assert val and train and not {i.path for i in train} & {i.path for i in val}
    again_train, again_val = split_by_episode(list(reversed(infos)), 0.3)
    assert {i.name for i in again_val} == {i.name for i in val}
    # Dropping an episode that is in training leaves the validation set as it was.
    fewer = [i for i in infos if i.path != train[0].path]
    assert {i.name for i in split_by_episode(fewer, 0.3)[1]} == {i.name for i in val}
    assert split_by_episode(infos[:1], 0.3) == (infos[:1], [])


def test_normalisation_round_trip_and_checkpoint(store, tmp_path):
    infos = find_episodes([store])
    stats = compute_norm_stats([i.path for i in infos])
    qpos = np.concatenate([np.stack([support.qpos_of(t) for t in range(i.length)]) for i in infos])
    np.testing.assert_allclose(stats.qpos_mean, qpos.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.qpos_std, qpos.astype(np.float64).std(0), rtol=1e-5)
    actions = np.stack([support.action_of(t) for t in range(8)])
    np.testing.assert_allclose(stats.denormalize_action(stats.normalize_action(actions)), actions, rtol=1e-6)
    # A joint that never moved: the floor keeps its normalised values bounded.
    still = norm_stats_from_arrays(np.ones((10, 14)), np.ones((10, 14)) + 1e-7 * np.arange(10)[:, None])
    assert np.abs(still.normalize_action(np.full(14, 1.001))).max() <= 0.1 + 1e-6
    # The dataset serves z-scored arrays, and the statistics survive the checkpoint folder.
    item = WindowDataset([EpisodeSource(infos[0], 0)], WINDOW, CANVAS, stats, mode="frames")[3]
    np.testing.assert_allclose(item["proprio"].numpy(), stats.normalize_qpos(support.qpos_of(3)), rtol=1e-6)
    small = CONFIG.replace(num_layers=1)
    save_checkpoint(tmp_path / "ckpt", FastWAM(small), small, stats, 1, build_encoders(small))
    loaded = load_checkpoint(tmp_path / "ckpt").norm_stats
    for name in ("qpos_mean", "qpos_std", "action_mean", "action_std"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    assert loaded.std_floor == stats.std_floor
    with pytest.raises(ValueError, match="NaN"):
        norm_stats_from_arrays(np.full((3, 14), np.nan), np.zeros((3, 14)))


def _encoder(seed: int = 0) -> CausalVideoAutoencoder:
    torch.manual_seed(seed)
    return CausalVideoAutoencoder(CONFIG.video.in_dim, (16, 16, 16)).eval()


def test_latent_cache_hits_matches_the_encoder_and_invalidates(store, tmp_path):
    work = tmp_path / "store"
    shutil.copytree(store, work)
    infos = find_episodes([work], EpisodeFilter(labels=("success",), tasks=("fold the towel",)))
    vae = _encoder()
    key = encoder_key(vae, CANVAS, WINDOW)
    cache = LatentCache(tmp_path / "cache", key)
    entries, report = cache.ensure(infos, vae, CANVAS, WINDOW)
    assert (report.built, report.hits) == (2, 0)

    # Cached windows equal encoding the window's frames directly (incl. padding at the end).
    frames = WindowDataset([EpisodeSource(i, 0) for i in infos], WINDOW, CANVAS, mode="frames")
    latents = WindowDataset([EpisodeSource(i, 0, e) for i, e in zip(infos, entries)], WINDOW, mode="latents")
    for index in (0, 7, 39, 40 + 20, 40 + 32):
        with torch.no_grad():
            direct = vae.encode(video_to_model(frames[index]["video"][None]))[0]
        torch.testing.assert_close(latents[index]["latents"], direct, atol=1e-5, rtol=1e-5)

    # A restart (new cache object, new process state) hits; relabelling does not invalidate.
    frames.close()
    latents.close()
    set_label(infos[0].path, "failure", notes="relabelled")
    restarted = LatentCache(tmp_path / "cache", encoder_key(_encoder(), CANVAS, WINDOW))
    assert restarted.ensure(infos, vae, CANVAS, WINDOW)[1].hits == 2

    # New frames under the same name are a miss; so is a changed encoder.
    replaced = support.write_episode(tmp_path / "other", 40, offset=99)
    os.replace(replaced, infos[0].path)
    again, report = LatentCache(tmp_path / "cache", key).ensure(infos, vae, CANVAS, WINDOW)
    assert (report.built, report.hits) == (1, 1)
    assert not np.array_equal(again[0].current(0), entries[0].current(0))
    other = _encoder(seed=1)
    assert encoder_key(other, CANVAS, WINDOW) != key
    assert LatentCache(tmp_path / "cache", encoder_key(other, CANVAS, WINDOW)).ensure(infos, other, CANVAS, WINDOW)[1].built == 2


def test_pruning_removes_least_recently_used_entries_never_those_in_use(store, tmp_path):
    infos = find_episodes([store], EpisodeFilter(labels=("success",), tasks=("fold the towel",)))
    root = tmp_path / "cache"
    old_vae, new_vae = _encoder(seed=1), _encoder(seed=2)
    old, _ = LatentCache(root, encoder_key(old_vae, CANVAS, WINDOW)).ensure(infos, old_vae, CANVAS, WINDOW)
    canvases, _ = CanvasCache(root, CANVAS).ensure(infos)
    new, _ = LatentCache(root, encoder_key(new_vae, CANVAS, WINDOW)).ensure(infos, new_vae, CANVAS, WINDOW)
    every = [*old, *canvases, *new]
    size = {e.path: e.path.stat().st_size + e.path.with_suffix(".json").stat().st_size for e in every}
    # The older encoder's entries were last used long ago; a reading marks an entry as used.
    for entry in old:
        os.utime(entry.path.with_suffix(".json"), (1, 1))
    LatentCache(root, encoder_key(new_vae, CANVAS, WINDOW)).get(
        json.loads(new[0].path.with_suffix(".json").read_text())["frames_key"])
    stale_temp = new[0].path.parent / f".{new[0].path.name}.k3j2x9.npy"  # left by a killed writer
    stale_temp.write_bytes(b"x")
    os.utime(stale_temp, (time.time() - STALE_TEMP_S - 60,) * 2)
    # Files that are not ours (a --cache-dir pointed at a shared folder) are never removed.
    foreign = [root / "notes" / "plan.json", root / "notes" / "plan.npy", root / "notes" / ".gitignore"]
    foreign[0].parent.mkdir()
    for path in foreign:
        path.write_text("{}")
        os.utime(path, (1, 1))

    assert prune_cache(root, max_bytes=10**12).removed == 0  # under the cap: nothing goes
    in_use = [e.path for e in new]
    report = prune_cache(root, max_bytes=sum(size[p] for p in in_use), in_use=in_use)
    # Least recently used first (the old encoder's), then canvases; the run's own entries stay.
    assert report.removed == len(old) + len(canvases)
    assert all(not e.path.exists() and not e.path.with_suffix(".json").exists() for e in [*old, *canvases])
    assert all(e.path.exists() for e in new) and not stale_temp.exists()
    assert report.kept_bytes == sum(size[p] for p in in_use)
    # Even a cap of zero keeps what the run reads.
    assert prune_cache(root, max_bytes=0, in_use=in_use).removed == 0
    assert prune_cache(root, max_bytes=0).removed == len(new)
    assert all(path.exists() for path in foreign)


def test_repeated_frames_are_encoded_once_and_canvases_cache(tmp_path):
    path = support.write_episode(tmp_path / "slow_camera", 30, repeat=2)  # 25 fps camera at 50 Hz
    [info] = find_episodes([path.parent])
    canvases, report = CanvasCache(tmp_path / "cache", CANVAS).ensure([info])
    assert report.built == 1 and CanvasCache(tmp_path / "cache", CANVAS).ensure([info])[1].hits == 1
    decoded = WindowDataset([EpisodeSource(info, 0)], WINDOW, CANVAS, mode="frames")
    cached = WindowDataset([EpisodeSource(info, 0, canvases=canvases[0])], WINDOW, CANVAS, mode="frames")
    for t in (0, 13, 29):
        assert torch.equal(decoded[t]["video"], cached[t]["video"])

    vae = _encoder()
    encoded_rows = []
    original = vae.encode_groups
    vae.encode_groups = lambda groups: encoded_rows.append(len(groups)) or original(groups)
    [entry], _ = LatentCache(tmp_path / "cache", encoder_key(vae, CANVAS, WINDOW)).ensure(
        [info], vae, CANVAS, WINDOW, canvases=canvases)
    # 15 distinct canvases; groups ending at 16..41 on pairs of equal frames: 13 distinct.
    assert sum(encoded_rows) == 15 + 13
    latents = WindowDataset([EpisodeSource(info, 0, entry)], WINDOW, mode="latents")
    for t in (0, 1, 9, 28, 29):
        with torch.no_grad():
            direct = original.__self__.encode(video_to_model(decoded[t]["video"][None]))[0]
        torch.testing.assert_close(latents[t]["latents"], direct, atol=1e-5, rtol=1e-5)


def test_loader_workers_open_files_lazily_and_agree(store):
    infos = find_episodes([store])
    dataset = WindowDataset([EpisodeSource(i, 0) for i in infos], WINDOW, CANVAS, mode="frames")
    indices = [0, 11, 45, 80]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=2, num_workers=2,
                                         multiprocessing_context="fork")
    batches = list(loader)
    assert all(s.episode is None for s in dataset.sources)  # the parent opened nothing
    for b, batch in enumerate(batches):
        for j in range(2):
            direct = dataset[indices[2 * b + j]]
            assert torch.equal(batch["video"][j], direct["video"]) and torch.equal(batch["action"][j], direct["action"])


def test_sample_stream_is_a_function_of_step_and_splits_over_ranks():
    stream = SampleStream(10, seed=3)
    first_epoch = np.concatenate([stream.batch(s, 5) for s in range(2)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    again = SampleStream(10, seed=3)
    np.testing.assert_array_equal(again.batch(7, 4), stream.batch(7, 4))  # no state: resumable anywhere
    halves = np.concatenate([stream.batch(7, 4, rank=r, world_size=2) for r in range(2)])
    np.testing.assert_array_equal(halves, stream.batch(7, 4))
    assert not np.array_equal(SampleStream(10, seed=4).batch(0, 10), stream.batch(0, 10))
    with pytest.raises(ValueError, match="divide evenly"):
        stream.batch(0, 5, world_size=2)
