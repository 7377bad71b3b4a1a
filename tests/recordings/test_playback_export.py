"""Playback shows the frame at the cursor; MP4 and LeRobot v3.0 exports read back with PyAV and
pyarrow as other tools would read them."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from recordings.export.lerobot import export_lerobot
from recordings.export.mp4 import export_mp4
from recordings.playback import FramePrefetcher, PlaybackClock, decode_for_display
from recordings.reader import Episode
from recordings.timeline import MarkerKind, episode_timeline
from review_fixtures import write_jpeg_store_episode


def test_prefetched_frames_are_the_frames_at_their_step(tmp_path):
    path = write_jpeg_store_episode(tmp_path, 40, shape=(96, 128))
    with Episode.open(path) as episode, FramePrefetcher(path, ahead=8) as prefetcher:
        for step in (0, 1, 2, 17, 39, 5, 6, 38):  # forward, a seek, a jump back
            frames = prefetcher.frames(step)
            assert frames.step == step
            for camera in episode.camera_names:
                np.testing.assert_array_equal(frames.frames[camera], episode.frame(camera, step))
        prefetcher.set_size((64, 48))
        frames = prefetcher.frames(20)
        assert frames.frames["cam_high"].shape == (48, 64, 3)
        assert prefetcher.error is None


def test_clock_speeds_and_steps():
    clock = PlaybackClock(100, rate_hz=50.0)
    clock.play()
    assert clock.advance(0.5) == 25
    clock.set_speed(2.0)
    assert clock.advance(0.25) == 50
    clock.set_speed(0.5)
    assert clock.advance(0.2) == 55
    assert clock.advance(10.0) == 99 and not clock.playing
    assert clock.step_by(-3) == 96
    clock.seek(99)
    clock.play()  # at the end: starts over
    assert clock.step == 0 and clock.playing


def test_timeline_bands_and_markers(timed_episode):
    n = 60
    times = 100.0 + np.arange(n) / 50.0
    times[40:] += 0.3
    sources = ["policy"] * 20 + ["intervention"] * 10 + ["policy"] * 15 + ["hold"] * 15
    with Episode.open(timed_episode(times, sources=sources)) as episode:
        timeline = episode_timeline(episode)
    assert [(b.start, b.end, b.source) for b in timeline.bands] == [(0, 20, "policy"), (20, 30, "intervention"), (30, 45, "policy"), (45, 60, "hold")]
    assert [m.step for m in timeline.markers_of(MarkerKind.INTERVENTION)] == [20]
    assert [m.step for m in timeline.markers_of(MarkerKind.HOLD)] == [45]
    assert [m.step for m in timeline.markers_of(MarkerKind.STALL)] == [40]


def test_mp4_export_has_one_frame_per_step(tmp_path, record_episode):
    path, records = record_episode(n=37)
    out = export_mp4(path, tmp_path / "episode.mp4")
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert stream.codec_context.name == "h264" and int(stream.base_rate) == 50
    assert len(frames) == 37
    assert not (tmp_path / "episode.mp4.partial.mp4").exists()


def test_lerobot_export_reads_back(tmp_path, record_episode, act_file):
    from recordings.metadata import EpisodeMetadata

    store = tmp_path / "store"
    first, _ = record_episode(n=30, store=store, metadata=EpisodeMetadata(task="fold the towel"), label="success")
    second, _ = record_episode(n=45, store=store, metadata=EpisodeMetadata(task="flatten"), label="failure")
    out = tmp_path / "dataset"
    result = export_lerobot([first, second], out)
    assert result.episodes == 2 and result.frames == 75
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 50
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 75, 2)
    features = info["features"]
    for key in ("observation.state", "observation.velocity", "observation.effort", "action"):
        assert features[key]["dtype"] == "float32" and features[key]["shape"] == [14]
        assert features[key]["names"][0] == "left_waist"
    camera = features["observation.images.cam_high"]
    assert camera["dtype"] == "video" and camera["shape"] == [48, 64, 3]
    assert camera["info"]["video.fps"] == 50 and camera["info"]["video.codec"] in ("av1", "h264")
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index", "control_source", "label"):
        assert key in features

    data = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pydict()
    assert len(data["index"]) == 75 and data["index"] == list(range(75))
    assert data["episode_index"] == [0] * 30 + [1] * 45
    assert data["frame_index"] == list(range(30)) + list(range(45))
    np.testing.assert_allclose(data["timestamp"][30:32], [0.0, 0.02], atol=1e-6)
    assert data["task_index"] == [0] * 30 + [1] * 45
    assert set(data["control_source"]) == {"teleop"} and data["label"][0] == "success" and data["label"][-1] == "failure"
    with Episode.open(second) as episode:
        np.testing.assert_array_equal(np.array(data["observation.state"][30:], dtype=np.float32), episode.qpos)
        np.testing.assert_array_equal(np.array(data["action"][30:], dtype=np.float32), episode.action)

    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"], e["length"]) for e in episodes] == [(0, 30, 30), (30, 75, 45)]
    assert episodes[1]["tasks"] == ["flatten"]
    key = "videos/observation.images.cam_high"
    assert (episodes[1][f"{key}/from_timestamp"], episodes[1][f"{key}/to_timestamp"]) == pytest.approx((0.6, 1.5))
    assert episodes[0]["stats/observation.state/count"] == [30]
    assert np.array(episodes[0]["stats/observation.images.cam_high/mean"]).shape == (3, 1, 1)
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.to_pydict() == {"task_index": [0, 1], "task": ["fold the towel", "flatten"]}
    assert tasks.schema.pandas_metadata["index_columns"] == ["task"]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert stats["observation.state"]["count"] == [75]
    assert np.array(stats["observation.images.cam_high"]["std"]).shape == (3, 1, 1)

    with av.open(str(out / "videos/observation.images.cam_high/chunk-000/file-000.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)]
    assert len(decoded) == 75 and stream.pix_fmt == "yuv420p"
    # Episode 1 frame 10 is where its from_timestamp + 10 / fps says.
    time_s, image = next(item for item in decoded if abs(item[0] - (0.6 + 10 / 50)) < 1e-6)
    with Episode.open(second) as episode:
        original = episode.frame("cam_high", 10).astype(np.int16)
    assert np.abs(image.astype(np.int16) - original).mean() < 12  # lossy video of a JPEG frame

    with pytest.raises(Exception, match="already exists"):
        export_lerobot([first], out)
    path, _ = act_file(n=6, shape=(48, 64))
    with pytest.raises(Exception, match="cameras"):
        export_lerobot([first, path], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "mixed.partial").exists()


def test_playing_shows_the_newest_decoded_step_not_a_future_one(tmp_path, wait_until):
    path = write_jpeg_store_episode(tmp_path, 30, shape=(48, 64))
    with Episode.open(path) as episode, FramePrefetcher(path, ahead=30) as prefetcher:
        prefetcher.frames(0)
        prefetcher.frames(12)  # the worker decodes from 12 on
        wait_until(lambda: (f := prefetcher.latest(due=14, after=3)) is not None and f.step == 14, what="the worker to decode ahead")
        frames = prefetcher.latest(due=12, after=3)
        assert frames is not None and frames.step == 12
        np.testing.assert_array_equal(frames.frames["cam_high"], episode.frame("cam_high", 12))
        assert prefetcher.latest(due=12, after=12) is None  # nothing newer than what is shown


def test_frames_decoded_at_the_shown_size_are_the_frames_at_their_step(tmp_path, wait_until):
    """Several workers, a display size that takes the reduced JPEG decode (shown < 1/2 as wide),
    seeks forward and back: every frame set holds its own step's frames, at the shown size."""
    path = write_jpeg_store_episode(tmp_path, 60, shape=(192, 256))
    size = (100, 75)  # 256 -> 100: decoded at 1/2 (128 wide), then bilinear
    with Episode.open(path) as episode, FramePrefetcher(path, ahead=10, behind=2, size=size, decode_threads=3) as prefetcher:
        rows = {(c, t): episode.encoded_frame(c, t) for c in episode.camera_names for t in range(60)}

        def check(frames) -> None:
            for camera, image in frames.frames.items():
                assert image.shape == (75, 100, 3)
                np.testing.assert_array_equal(image, decode_for_display(rows[camera, frames.step], size, 256))

        for step in (0, 30, 31, 5, 59):  # a seek, the next step, back, the last
            frames = prefetcher.frames(step)
            assert frames.step == step
            check(frames)
        prefetcher.frames(20)
        wait_until(lambda: all(s in prefetcher._cache for s in range(20, 30)), what="the workers to fill the window")
        assert set(prefetcher._cache) <= set(range(18, 30))  # nothing of the old windows is kept
        played = {step: prefetcher.latest(due=step, after=step - 1) for step in range(20, 30)}
        for step, frames in played.items():
            assert frames.step == step
            check(frames)
        # The reduced decode is a faithful picture of the frame: close to the full decode shrunk.
        full = cv2.resize(episode.frame("cam_high", 25), size, interpolation=cv2.INTER_AREA)
        shown = played[25].frames["cam_high"]
        other = cv2.resize(episode.frame("cam_high", 26), size, interpolation=cv2.INTER_AREA)
        assert np.abs(shown.astype(int) - full).mean() < 4 < np.abs(shown.astype(int) - other).mean()
        assert prefetcher.error is None


def test_a_seek_decodes_its_step_on_the_caller_and_then_decodes_ahead(tmp_path, wait_until):
    path = write_jpeg_store_episode(tmp_path, 40, shape=(48, 64))
    with FramePrefetcher(path, ahead=6, decode_threads=2) as prefetcher:
        wait_until(lambda: prefetcher.decoded >= 6, what="the first window")
        decoded = prefetcher.decoded
        frames = prefetcher.frames(25)  # not decoded ahead: the caller decodes it
        assert frames.step == 25 and prefetcher.decoded == decoded  # the workers did not do it
        wait_until(lambda: all(s in prefetcher._cache for s in range(25, 31)), what="the window after the seek")
        assert prefetcher.frames(26).step == 26
