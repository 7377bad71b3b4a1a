"""Writer -> file -> reader round trips with the real writer thread, HDF5 and OpenCV."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recordings import schema
from recordings.check import check_episode
from recordings.errors import FramesDropped, InvalidTick, RecordingError
from recordings.metadata import EpisodeMetadata
from recordings.reader import Episode
from recordings.schema import Label
from recordings.store import EpisodeStore
from recordings.writer import EpisodeWriter
from recordings.writer_status import WriterConfig, WriterState
from robot.types import ControlSource

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def _stack(records, field):
    if field == "action":
        return np.stack([r.action for r in records])
    return np.stack([getattr(r.observation, field) for r in records])


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_round_trip_keeps_every_value(record_episode, image_format):
    meta = EpisodeMetadata(task="fold the towel", operator="ana", rig="sim", sim=True, notes="n", calibration_hash="abc")
    path, records = record_episode(n=40, image_format=image_format, label="success", metadata=meta)

    assert path.name == "episode_0.hdf5" and path.exists()
    assert not path.with_name(path.name + schema.PARTIAL_SUFFIX).exists()
    episode = Episode.open(path)
    assert episode.length == 40 and episode.camera_names == CAMERAS
    assert episode.compressed is (image_format == "jpeg")
    for field in ("qpos", "qvel", "effort", "action"):
        values = getattr(episode, field)
        assert values.dtype == np.float32 and values.shape == (40, 14)
        np.testing.assert_array_equal(values, _stack(records, field))
    np.testing.assert_array_equal(episode.timestamps, [r.observation.time_s for r in records])
    np.testing.assert_array_equal(episode.tick_indices, np.arange(40))
    assert episode.control_sources == (ControlSource.TELEOP,) * 40
    for camera in CAMERAS:
        np.testing.assert_array_equal(episode.image_times(camera), [r.observation.image_times_s[camera] for r in records])
    for t in (0, 17, 39):
        for camera in CAMERAS:
            frame, original = episode.frame(camera, t), records[t].observation.images[camera]
            assert frame.shape == original.shape and frame.dtype == np.uint8
            if image_format == "raw":
                np.testing.assert_array_equal(frame, original)
            else:  # JPEG at quality 90: close, and the channels in the right order
                error = np.abs(frame.astype(np.int16) - original).mean(axis=(0, 1))
                assert error.max() < 6, error
    assert episode.frame("cam_high", -1).shape == (48, 64, 3)
    meta_read = episode.metadata
    assert (meta_read.task, meta_read.operator, meta_read.rig, meta_read.sim) == ("fold the towel", "ana", "sim", True)
    assert meta_read.calibration_hash == "abc" and meta_read.label is Label.SUCCESS and meta_read.notes == "n"
    assert meta_read.control_rate_hz == 50.0 and meta_read.created and meta_read.software_version
    assert episode.duration_s == pytest.approx(0.78)
    assert check_episode(path).ok, check_episode(path).reasons
    with pytest.raises(KeyError, match="cam_low"):
        episode.frame("cam_low", 0)
    with pytest.raises(IndexError):
        episode.frame("cam_high", 40)
    episode.close()


def test_status_tracks_the_recording_and_the_writer_records_again(tmp_path, make_tick, wait_until):
    writer = EpisodeWriter(tmp_path, CAMERAS, flush_interval_s=0.1)
    assert writer.status().state is WriterState.IDLE
    first = writer.start()
    rng = np.random.default_rng(0)
    for i in range(20):
        writer.on_tick(make_tick(i, 10 + 0.02 * i, rng))
    wait_until(lambda: writer.status().frames_written == 20, what="20 committed frames")
    status = writer.status()
    assert status.recording and status.state is WriterState.RECORDING
    assert status.frames_received == 20 and status.frames_dropped == 0 and status.last_error is None
    assert status.bytes_written > 0 and 1 <= status.queue_high_water <= 20 and status.queue_capacity == 100
    assert status.duration_s == pytest.approx(0.38)
    assert status.partial_path.exists() and status.path == first
    assert writer.stop(Label.FAILURE, notes="slipped") == first
    assert writer.status().state is WriterState.FINISHED
    with pytest.raises(RecordingError, match="no episode is being recorded"):
        writer.stop()

    second = writer.start()
    writer.on_tick(make_tick(0, 20.0, rng))
    assert writer.stop() == tmp_path / "episode_1.hdf5" == second
    assert Episode.open(first).label is Label.FAILURE and Episode.open(first).metadata.notes == "slipped"
    assert Episode.open(second).length == 1
    assert EpisodeStore(tmp_path).next_index() == 2


def test_bad_label_is_refused_and_the_recording_goes_on(tmp_path, make_tick):
    writer = EpisodeWriter(tmp_path, CAMERAS)
    writer.start()
    writer.on_tick(make_tick(0, 1.0, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="unknown, success, failure"):
        writer.stop("great")
    assert writer.status().recording
    writer.on_tick(make_tick(1, 1.02, np.random.default_rng(1)))
    assert Episode.open(writer.stop("success")).length == 2


def test_a_full_queue_drops_ticks_loudly_without_blocking_the_caller(tmp_path, make_tick, wait_until):
    rng = np.random.default_rng(0)
    records = [make_tick(i, 0.02 * i, rng, shape=(120, 160)) for i in range(200)]
    writer = EpisodeWriter(tmp_path, CAMERAS, queue_size=3)
    writer.start()
    worst_s = 0.0
    for burst in (records[:100], records[100:]):
        for record in burst:  # far faster than 50 Hz: the writer cannot keep up
            begin = time.perf_counter()
            writer.on_tick(record)
            worst_s = max(worst_s, time.perf_counter() - begin)
        wait_until(lambda: writer.status().queue_depth == 0, what="the writer to catch up")
    status = writer.status()
    assert status.frames_dropped > 0
    assert status.frames_dropped + status.frames_received == 200
    assert isinstance(status.last_error, FramesDropped) and "NOT recorded" in str(status.last_error)
    assert status.queue_high_water <= 3
    assert worst_s < 0.05  # generous for a shared CI core; the benchmark measures the real cost
    path = writer.stop()
    episode = Episode.open(path)
    assert episode.length == status.frames_received and episode.frames_dropped == status.frames_dropped
    ticks = episode.tick_indices
    assert np.all(np.diff(ticks) > 0) and ticks[-1] - ticks[0] + 1 > episode.length  # the gaps show
    result = check_episode(path)
    assert result.ok and any("dropped" in warning for warning in result.warnings)


def test_a_tick_with_a_changed_camera_stops_the_recording_and_keeps_the_frames(tmp_path, make_tick, wait_until):
    rng = np.random.default_rng(0)
    writer = EpisodeWriter(tmp_path, CAMERAS)
    writer.start()
    for i in range(10):
        writer.on_tick(make_tick(i, 0.02 * i, rng))
    writer.on_tick(make_tick(10, 0.2, rng, shape=(24, 32)))
    writer.on_tick(make_tick(11, 0.22, rng))  # after the error: ignored
    wait_until(lambda: writer.status().state is WriterState.ERROR, what="the error")
    error = writer.status().last_error
    assert isinstance(error, InvalidTick) and "changed its frame size" in str(error) and error.tick_index == 10
    path = writer.stop("failure")
    episode = Episode.open(path)
    assert episode.length == 10 and episode.label is Label.FAILURE and episode.recovered
    assert check_episode(path).ok


def test_discard_leaves_nothing_and_stop_without_ticks_says_so(tmp_path, make_tick):
    writer = EpisodeWriter(tmp_path, CAMERAS)
    writer.start()
    writer.on_tick(make_tick(0, 0.0, np.random.default_rng(0)))
    writer.discard()
    assert writer.status().state is WriterState.DISCARDED
    assert list(tmp_path.iterdir()) == []
    writer.start()
    with pytest.raises(RecordingError, match="Nothing was recorded"):
        writer.stop()
    assert list(tmp_path.iterdir()) == []


def test_start_refuses_a_second_recording_and_bad_configs(tmp_path):
    writer = EpisodeWriter(tmp_path, CAMERAS)
    writer.start()
    with pytest.raises(RecordingError, match="Already recording"):
        writer.start()
    writer.discard()
    with pytest.raises(ValueError, match="jpeg_quality"):
        WriterConfig(jpeg_quality=0)
    with pytest.raises(ValueError, match="'jpeg' or 'raw'"):
        WriterConfig(image_format="png")
    with pytest.raises(ValueError, match="flush_interval_s"):
        WriterConfig(flush_interval_s=2.0)
    with pytest.raises(ValueError, match="control_rate_hz"):
        EpisodeMetadata(control_rate_hz=0)
    with pytest.raises(ValueError, match="distinct"):
        EpisodeWriter(tmp_path, ("cam", "cam"))


def test_start_in_an_unwritable_place_says_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RecordingError, match="Choose a folder you can write to"):
        EpisodeWriter(blocker / "store", CAMERAS).start()


def test_episode_pickles_without_its_file_handle_and_reopens_in_another_process(record_episode):
    path, records = record_episode(n=5, image_format="raw")
    episode = Episode.open(path)
    episode.frame("cam_high", 0)  # the handle is open now
    blob = pickle.dumps(episode)
    assert len(blob) < 5000  # layout and attributes only: no arrays, no handle
    child = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; e = pickle.load(sys.stdin.buffer); print(int(e.frame('cam_left_wrist', 3).sum()), e.length)"],
        input=blob,
        capture_output=True,
        check=True,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    expected = int(records[3].observation.images["cam_left_wrist"].sum())
    assert child.stdout.split() == [str(expected).encode(), b"5"]
    copy = pickle.loads(blob)
    np.testing.assert_array_equal(copy.qpos, episode.qpos)


def test_simulated_time_is_kept_and_judges_a_simulation_stepped_faster_than_real_time(tmp_path, make_tick, wait_until):
    """A sim stepped as fast as the CPU goes has host stamps far apart from 50 Hz; /sim_time keeps
    the exact simulated timing, the duration uses it and check does not call it a slow loop."""
    import dataclasses

    from recordings.check import check_episode
    from recordings.metadata import EpisodeMetadata
    from recordings.reader import Episode
    from recordings.writer import EpisodeWriter

    rng = np.random.default_rng(3)
    writer = EpisodeWriter(tmp_path / "store", ("cam_high",), EpisodeMetadata(task="t", sim=True))
    writer.start()
    for i in range(30):
        # Host time 0.1 s a step (10 Hz), simulated time exactly 0.02 s a step.
        record = dataclasses.replace(make_tick(i, 50.0 + 0.1 * i, rng, cameras=("cam_high",)), sim_time_s=0.02 * i)
        writer.on_tick(record)
        wait_until(lambda: writer.status().queue_depth < 20, what="queue to drain")
    path = writer.stop("success")

    episode = Episode.open(path)
    np.testing.assert_allclose(episode.sim_times, 0.02 * np.arange(30))
    assert episode.duration_s == pytest.approx(0.58)
    result = check_episode(path)
    assert result.ok, result.reasons
    assert not any("mean rate" in warning for warning in result.warnings), result.warnings


def test_a_real_rig_episode_has_no_simulated_time(record_episode):
    from recordings.reader import Episode

    path, _ = record_episode(n=5)
    assert Episode.open(path).sim_times is None
