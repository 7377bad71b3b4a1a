"""A recording killed with kill -9 loses at most about a second, and `recover` makes an episode of
the rest. The writer runs in a real separate process, killed with SIGKILL mid-recording."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from recordings import schema
from recordings.check import check_episode
from recordings.errors import RecoveryError, UnfinishedEpisode
from recordings.reader import Episode
from recordings.recovery import recover_partial
from recordings.store import EpisodeStore
from recordings.writer import EpisodeWriter

ROOT = Path(__file__).resolve().parents[2]


def test_kill_9_mid_recording_loses_at_most_a_second(tmp_path, synthetic_script):
    store = tmp_path / "store"
    process = subprocess.Popen(
        [sys.executable, str(synthetic_script), str(store), "--mode", "crash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
        text=True,
    )
    ticks: list[tuple[int, float]] = []
    try:
        for line in process.stdout:  # 50 Hz ticks until ~3 s of recording
            event = json.loads(line)
            if event["event"] == "tick":
                ticks.append((event["index"], event["time_s"]))
                if len(ticks) >= 150:
                    break
        kill_time_s = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()

    partials = sorted(store.glob("*.partial"))
    assert [p.name for p in partials] == ["episode_0.hdf5.partial"]
    with pytest.raises(UnfinishedEpisode, match="episodes recover"):
        Episode.open(partials[0])
    results = EpisodeStore(store).recover()
    assert len(results) == 1 and not isinstance(results[0], Exception), results
    result = results[0]
    assert result.path == store / "episode_0.hdf5" and not partials[0].exists()

    episode = Episode.open(result.path)
    published_a_second_before = sum(1 for _, t in ticks if t <= kill_time_s - 1.0)
    assert episode.length >= published_a_second_before, (episode.length, published_a_second_before, len(ticks))
    assert episode.length == result.frames
    np.testing.assert_array_equal(episode.tick_indices, np.arange(episode.length))  # a prefix, no holes
    np.testing.assert_allclose(episode.timestamps, [t for _, t in ticks[: episode.length]])
    assert episode.recovered and episode.frame("cam_right_wrist", episode.length - 1).shape == (48, 64, 3)
    assert check_episode(result.path).ok


def test_recover_turns_a_leftover_into_an_episode(leftover):
    path, records = leftover
    assert check_episode(path).unfinished
    result = recover_partial(path)
    assert result.path == path.parent / "episode_0.hdf5" and result.frames == 30 and not path.exists()
    assert "recovered 30 frames" in result.message
    episode = Episode.open(result.path)
    np.testing.assert_array_equal(episode.qpos, np.stack([r.observation.qpos for r in records]))
    np.testing.assert_array_equal(episode.timestamps, [r.observation.time_s for r in records])
    assert episode.recovered and episode.metadata.label.value == "unknown"
    with h5py.File(result.path, "r") as root:  # readable without SWMR: a plain closed file
        assert root.attrs[schema.ATTR_RECOVERED] and root["/compress_len"].shape == (3, 30)


def test_recovery_keeps_the_leftover_when_its_index_is_taken_and_never_overwrites(leftover, record_episode):
    path, _ = leftover
    taken, _ = record_episode(n=3, store=path.parent)  # reserves the next free index: 1
    (path.parent / "episode_0.hdf5").write_bytes(taken.read_bytes())
    result = recover_partial(path)
    assert result.path.name not in ("episode_0.hdf5", "episode_1.hdf5") and result.frames == 30


def test_a_live_recording_is_never_recovered_or_read(tmp_path, make_tick, wait_until):
    writer = EpisodeWriter(tmp_path, ("cam_high",), flush_interval_s=0.05)
    writer.start()
    writer.on_tick(make_tick(0, 0.0, np.random.default_rng(0), cameras=("cam_high",)))
    wait_until(lambda: writer.status().frames_written == 1, what="a commit")
    partial = writer.status().partial_path
    with pytest.raises(RecoveryError, match="being recorded right now"):
        recover_partial(partial)
    assert EpisodeStore(tmp_path).recover() == []  # the store skips live recordings
    with pytest.raises(UnfinishedEpisode, match="being recorded right now"):
        Episode.open(partial)
    summary = EpisodeStore(tmp_path).summaries()[0]
    assert summary.unfinished and summary.live
    path = writer.stop()
    assert Episode.open(path).length == 1


def test_a_leftover_without_frames_is_removed_and_garbage_is_refused(tmp_path, make_tick):
    writer = EpisodeWriter(tmp_path / "a", ("cam_high",))
    writer.start()
    partial = writer.status().partial_path
    empty_copy = tmp_path / "episode_4.hdf5.partial"
    empty_copy.write_bytes(partial.read_bytes())  # killed before the first tick
    writer.discard()
    result = recover_partial(empty_copy)
    assert result.path is None and result.frames == 0 and not empty_copy.exists()
    assert "no complete frame" in result.message

    foreign = tmp_path / "episode_6.hdf5.partial"
    with h5py.File(foreign, "w") as root:
        root["/action"] = np.zeros((3, 14), np.float32)
    with pytest.raises(RecoveryError, match="not written by this studio"):
        recover_partial(foreign)
    assert foreign.exists()

    garbage = tmp_path / "episode_5.hdf5.partial"
    garbage.write_bytes(os.urandom(5000))
    with pytest.raises(RecoveryError, match="HDF5 cannot read it"):
        recover_partial(garbage)
    assert garbage.exists()  # kept as it was
