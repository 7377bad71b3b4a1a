"""The episode writer in a process of its own (recordings/writer_process.py): the same file as the
thread writer for the same ticks, and nothing lost when either process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from recordings.errors import InvalidTick, RecordingError
from recordings.policy_tables import CHUNKS, STEPS
from recordings.reader import Episode
from recordings.recovery import recover_partial
from recordings.loop_record import clipped_joints
from recordings.schema import ATTR_CREATED, EVENT_MESSAGE_BYTES, TICK_INDEX, Label
from recordings.writer import EpisodeWriter
from recordings.writer_status import WriterState
from recordings.writer_process import ProcessEpisodeWriter, WriterProcessDied
from robot.types import Observation, TickRecord
from writer_ticks import CAMERAS, camera_ticks, feed, feed_with_events, loop_events

ROOT = Path(__file__).resolve().parents[2]


def file_content(path: Path) -> tuple[dict[str, bytes], dict[str, str], dict[str, tuple]]:
    """Every dataset's bytes, every attribute (but the creation time) and every dataset's
    (shape, dtype, chunks, maxshape)."""
    data, attrs, layout = {}, {}, {}
    with h5py.File(path, "r") as root:
        def visit(name, obj):
            for key, value in obj.attrs.items():
                attrs[f"{name}@{key}"] = repr(value)
            if isinstance(obj, h5py.Dataset):
                data[name] = obj[()].tobytes()
                layout[name] = (obj.shape, str(obj.dtype), obj.chunks, obj.maxshape)

        root.visititems(visit)
        attrs.update({f"/@{k}": repr(v) for k, v in root.attrs.items() if k != ATTR_CREATED})
    return data, attrs, layout


@pytest.fixture
def process_writer(tmp_path):
    writers = []

    def make(store: Path, **kwargs) -> ProcessEpisodeWriter:
        writer = ProcessEpisodeWriter(store, CAMERAS, **kwargs)
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        writer.close()


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_the_process_writes_the_same_file_as_the_thread_for_the_same_ticks(tmp_path, process_writer, image_format):
    ticks, events = camera_ticks(80), loop_events(80)
    paths = []
    for store, writer in ((tmp_path / "thread", EpisodeWriter(tmp_path / "thread", CAMERAS, image_format=image_format)),
                          (tmp_path / "process", process_writer(tmp_path / "process", image_format=image_format))):
        writer.start()
        feed_with_events(writer, ticks, events)
        paths.append(writer.stop(Label.SUCCESS, notes="same"))
        assert writer.status().frames_written == 80 and writer.status().state is WriterState.FINISHED
    thread_data, thread_attrs, thread_layout = file_content(paths[0])
    process_data, process_attrs, process_layout = file_content(paths[1])
    assert process_layout == thread_layout
    assert process_attrs == thread_attrs
    assert sorted(process_data) == sorted(thread_data)
    assert [name for name in thread_data if process_data[name] != thread_data[name]] == []
    assert {"loop_mode", "safety_clipped", "loop_events"} <= set(thread_data)
    with Episode.open(paths[1]) as episode:  # and it reads as an ALOHA episode
        assert len(episode) == 80 and episode.label is Label.SUCCESS
        # ... with what the loop knew, as it was handed over
        assert episode.loop_modes == tuple(t.mode for t in ticks)
        assert [clipped_joints(row) for row in episode.safety_clipped] == [t.clipped for t in ticks]
        recorded = episode.loop_events
        assert [(e.tick, e.step, e.severity, e.code, e.what_to_do) for e in recorded] == [
            (e.tick, e.tick, e.severity, e.code, e.what_to_do) for e in events.values()]
        assert recorded[0].message == events[3].message
        long = events[17].message.encode("utf-8")  # cut to the column at a character boundary
        assert recorded[2].message.encode("utf-8") == long[:EVENT_MESSAGE_BYTES].decode("utf-8", "ignore").encode("utf-8")


def policy_rows(count: int, seed: int = 1) -> list[tuple[str, dict]]:
    """Chunk and step rows as the policy runner hands them over (numpy and Python scalars, some
    columns left out), interleaved as they come on the control thread."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        rows.append((CHUNKS, {"index": index, "obs_tick": np.int64(index * 8), "obs_time_s": 100.0 + index * 0.16,
                              "inference_s": float(rng.uniform(0.01, 0.05)), "queue_depth": 1,
                              "apply_tick": -1 if index == 3 else index * 8 + 2, "guided": bool(index % 2)}))
        for step in range(8):
            rows.append((STEPS, {"obs_time_s": np.float64(100.0 + index * 0.16 + step * 0.02), "chunk_index": index,
                                 "staleness_s": step * 0.02}))
    return rows


def test_the_process_writes_the_same_policy_tables_as_the_thread(tmp_path, process_writer):
    """A policy episode: the rows the control thread hands over cross to the writer process and
    land as the same /policy group, byte for byte, as the thread writer's."""
    ticks, rows = camera_ticks(60), policy_rows(12)
    attrs = {"checkpoint": "/runs/tiny/step_00000002", "checkpoint_hash": "ab12", "preset": "tiny", "strategy": "rtc",
             "every": 8, "max_guidance": 5.0}
    paths = []
    for writer in (EpisodeWriter(tmp_path / "thread", CAMERAS), process_writer(tmp_path / "process")):
        writer.set_policy_attrs(attrs)  # before the process runs: it gets them when it starts
        writer.start()
        for k, record in enumerate(ticks):
            writer.on_tick(record)
            for table, row in rows[2 * k: 2 * k + 2]:
                writer.on_policy_row(table, row)
            time.sleep(0.002)
        paths.append(writer.stop(Label.SUCCESS))
        writer.on_policy_row(CHUNKS, {"index": 99})  # after the episode: belongs to none
    thread_data, thread_attrs, thread_layout = file_content(paths[0])
    process_data, process_attrs, process_layout = file_content(paths[1])
    assert (process_layout, process_attrs) == (thread_layout, thread_attrs)
    assert [name for name in thread_data if process_data.get(name) != thread_data[name]] == []
    with Episode.open(paths[1]) as episode:
        policy = episode.policy
        assert policy.attrs["strategy"] == "rtc" and policy.attrs["every"] == 8
        assert len(policy.chunks["index"]) == 12 and len(policy.steps["obs_time_s"]) == 96
        np.testing.assert_array_equal(policy.chunks["apply_tick"][:5], [2, 10, 18, -1, 34])
        assert np.isnan(policy.chunks["encode_s"]).all()  # a column the rows left out


def test_policy_attrs_set_while_the_process_runs_reach_the_next_episode(tmp_path, process_writer):
    writer = process_writer(tmp_path)
    writer.start()
    feed(writer, camera_ticks(5))
    writer.stop()
    writer.set_policy_attrs({"strategy": "ensemble"})
    writer.start()
    feed(writer, camera_ticks(10))
    for table, row in policy_rows(2):
        writer.on_policy_row(table, row)
    path = writer.stop()
    with Episode.open(path) as episode:
        assert episode.policy.attrs["strategy"] == "ensemble" and len(episode.policy.steps["chunk_index"]) == 16


def test_one_process_records_episode_after_episode_and_ends_with_close(tmp_path, process_writer):
    writer = process_writer(tmp_path)
    for take in range(2):
        writer.start()
        pid = writer.process_id
        feed(writer, camera_ticks(20, seed=take))
        assert writer.stop().name == f"episode_{take}.hdf5"
        assert writer.process_id == pid is not None
    writer.start()
    feed(writer, camera_ticks(5))
    writer.discard()
    assert writer.status().state is WriterState.DISCARDED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_0.hdf5", "episode_1.hdf5"]
    writer.close()
    assert writer.process_id is None


def test_a_bad_tick_ends_the_recording_as_in_the_thread_writer(tmp_path, process_writer):
    writer = process_writer(tmp_path)
    writer.start()
    ticks = camera_ticks(30)
    bad = ticks[20]
    ticks[20] = TickRecord(bad.index, Observation(bad.observation.qpos[:5], bad.observation.qvel, bad.observation.effort,
                                                  bad.observation.images, bad.observation.image_times_s, bad.observation.time_s),
                           bad.action, bad.source, bad.mode, bad.timings)
    feed(writer, ticks)
    deadline = time.monotonic() + 10
    while writer.status().state is not WriterState.ERROR and time.monotonic() < deadline:
        time.sleep(0.02)
    error = writer.status().last_error
    assert isinstance(error, InvalidTick) and error.tick_index == 20 and "qpos has shape (5,)" in str(error)
    path = writer.stop()  # the steps before it are kept
    with Episode.open(path) as episode:
        assert len(episode) == 20


def test_a_killed_writer_process_is_seen_at_once_and_stop_keeps_what_reached_the_disk(tmp_path, process_writer):
    writer = process_writer(tmp_path, flush_interval_s=0.2)
    writer.start()
    ticks = camera_ticks(200)
    feed(writer, ticks[:100], pause_s=0.02)  # 2 s at 50 Hz: several flushes
    written = writer.status().frames_written
    assert written > 0
    killed_at = time.monotonic()
    os.kill(writer.process_id, signal.SIGKILL)
    while writer.status().state is not WriterState.ERROR and time.monotonic() - killed_at < 5:
        time.sleep(0.005)
    detected_s = time.monotonic() - killed_at
    status = writer.status()
    assert status.state is WriterState.ERROR and detected_s < 1.0
    assert isinstance(status.last_error, WriterProcessDied) and "was killed" in str(status.last_error)
    feed(writer, ticks[100:110])  # the loop goes on publishing; nothing is taken any more
    assert writer.status().frames_received == 100

    path = writer.stop(Label.FAILURE, notes="recorder killed")
    with Episode.open(path) as episode:
        # Everything flushed before the kill is there, and at most a flush interval (plus the
        # ticks on their way) is missing.
        assert written <= len(episode) <= 100 and 100 - len(episode) <= 0.2 * 50 + 10
        assert episode.label is Label.FAILURE
        np.testing.assert_array_equal(tick_indices(path), np.arange(len(episode)))
        np.testing.assert_array_equal(episode.qpos, np.stack([t.observation.qpos for t in ticks[: len(episode)]]).astype(np.float32))
    # The next recording starts a new process.
    writer.start()
    assert writer.process_id is not None
    feed(writer, camera_ticks(10))
    assert writer.stop().exists()


def test_a_killed_studio_process_loses_nothing_the_writer_process_had(tmp_path):
    """kill -9 of the process holding the control loop: the writer process writes every tick
    already in the ring and leaves the partial file, which `episodes recover` turns into an
    episode with all of them."""
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
        from writer_ticks import CAMERAS, camera_ticks
        from recordings.writer_process import ProcessEpisodeWriter
        writer = ProcessEpisodeWriter({str(tmp_path)!r}, CAMERAS, flush_interval_s=1.0)
        writer.start()
        for record in camera_ticks(90):
            writer.on_tick(record)
        print(writer.process_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    studio = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert studio.returncode == -signal.SIGKILL, studio.stderr
    writer_pid = int(studio.stdout.split()[0])
    deadline = time.monotonic() + 60
    while _alive(writer_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(writer_pid), "the writer process did not end after the studio process was killed"
    partials = sorted(tmp_path.glob("*.partial"))
    assert len(partials) == 1
    result = recover_partial(partials[0])
    assert result.frames == 90
    np.testing.assert_array_equal(tick_indices(result.path), np.arange(90))


def test_starting_twice_is_refused_as_in_the_thread_writer(tmp_path, process_writer):
    writer = process_writer(tmp_path)
    writer.start()
    with pytest.raises(RecordingError, match="Already recording"):
        writer.start()
    writer.discard()


def tick_indices(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as root:
        return root[TICK_INDEX][()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
