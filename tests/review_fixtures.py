"""Episodes with chosen timing and ALOHA/ACT-written files, for the workbench's tests
(a pytest plugin of tests/conftest.py, beside episode_fixtures)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from episode_fixtures import synthetic


def write_timed_episode(store, times_s, image_times=None, ticks=None, sources=None, metadata=None, shape=(48, 64),
                        cameras=synthetic.CAMERAS, label="unknown", seed=0):
    """Record one episode with the real writer, with each step's time, camera capture times
    (camera -> (T,) or None for `time - 5 ms`), tick numbers and sources given."""
    from recordings.writer import EpisodeWriter
    from robot.types import ControlSource

    rng = np.random.default_rng(seed)
    writer = EpisodeWriter(store, cameras, metadata)
    writer.start()
    for i, time_s in enumerate(times_s):
        record = synthetic.make_tick(i if ticks is None else int(ticks[i]), float(time_s), rng, cameras=cameras, shape=shape,
                                     source=ControlSource(sources[i]) if sources is not None else ControlSource.TELEOP)
        if image_times is not None:
            stamps = {camera: float(image_times[camera][i]) if camera in image_times else float(time_s) - 0.005 for camera in cameras}
            record = dataclasses.replace(record, observation=dataclasses.replace(record.observation, image_times_s=stamps))
        writer.on_tick(record)
        if i % 20 == 19:
            _drain(writer)
    return writer.stop(label)


def _drain(writer) -> None:
    import time

    deadline = time.monotonic() + 10
    while writer.status().queue_depth and time.monotonic() < deadline:
        time.sleep(0.005)


def write_act_file(path: Path, n: int = 40, shape=(480, 640), seed: int = 0, camera: str = "top") -> np.ndarray:
    """An episode as ACT's own sim recorder writes it: attrs sim only, one camera `top`, raw
    frames, no effort, no labels, no timestamps. Returns the (n, H, W, 3) frames."""
    rng = np.random.default_rng(seed)
    frames = np.stack([synthetic.make_image(rng, shape, t) for t in range(n)])
    with h5py.File(path, "w", rdcc_nbytes=1024**2 * 2) as root:
        root.attrs["sim"] = True
        obs = root.create_group("observations")
        image = obs.create_group("images")
        image.create_dataset(camera, (n, *shape, 3), dtype="uint8", chunks=(1, *shape, 3))[...] = frames
        obs.create_dataset("qpos", (n, 14), dtype="f4")[...] = rng.standard_normal((n, 14))
        obs.create_dataset("qvel", (n, 14), dtype="f4")[...] = rng.standard_normal((n, 14))
        root.create_dataset("action", (n, 14), dtype="f4")[...] = rng.standard_normal((n, 14))
    return frames


def write_jpeg_store_episode(store: Path, n: int, shape=(480, 640), cameras=synthetic.CAMERAS, quality: int = 90, seed: int = 0,
                             created: str = "", task: str = "fold the towel", operator: str = "", label: str = "unknown",
                             time0: float = 100.0, distinct_frames: int | None = None) -> Path:
    """A finished episode of ours written fast (without the writer thread): camera-like JPEG
    frames (each step's frame shows its camera and step number; with `distinct_frames` only that
    many are encoded and cycled), 50 Hz timing. For benchmarks and large stores; the layout is the
    writer's."""
    from recordings import schema
    from recordings.images import encode_jpeg
    from recordings.layout import ImageLayout, create_episode
    from recordings.metadata import EpisodeMetadata
    from recordings.schema import ImageFormat
    from recordings.store import next_free_index

    rng = np.random.default_rng(seed)
    store.mkdir(parents=True, exist_ok=True)
    path = store / schema.episode_filename(next_free_index(store))
    base = [synthetic.make_image(rng, shape, k) for k in range(4)]
    encoded = {camera: [] for camera in cameras}
    for t in range(n if distinct_frames is None else min(n, distinct_frames)):
        for c, camera in enumerate(cameras):
            image = np.roll(base[(t + c) % 4], shift=t * 3, axis=1)
            cv2.putText(image, f"{camera} {t}", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
            encoded[camera].append(encode_jpeg(image, quality))
    for camera in cameras:  # a large store need not encode every frame: cycle a few
        encoded[camera] = [encoded[camera][t % len(encoded[camera])] for t in range(n)]
    width = max(len(row) for rows in encoded.values() for row in rows)
    metadata = EpisodeMetadata(task=task, operator=operator, created=created, label=label)
    layout = ImageLayout(tuple(cameras), ImageFormat.JPEG, {c: (*shape, 3) for c in cameras}, quality, width)
    temporary = path.with_name(path.name + ".partial")
    with h5py.File(temporary, "w") as root:
        create_episode(root, layout, metadata, length=n, jpeg_width=width)
        times = time0 + 0.02 * np.arange(n)
        root[schema.QPOS][...] = np.cumsum(rng.normal(0, 0.01, (n, 14)), axis=0)
        root[schema.QVEL][...] = rng.normal(0, 0.1, (n, 14))
        root[schema.EFFORT][...] = rng.normal(0, 1, (n, 14))
        root[schema.ACTION][...] = root[schema.QPOS][...] + rng.normal(0, 0.005, (n, 14))
        root[schema.TIMESTAMP][...] = times
        root[schema.TICK_INDEX][...] = np.arange(n)
        root[schema.CONTROL_SOURCE][...] = np.array([b"teleop"] * n)
        for c, camera in enumerate(cameras):
            root[schema.image_time_path(camera)][...] = times - 0.01
            dataset = root[schema.image_path(camera)]
            for t, row in enumerate(encoded[camera]):
                dataset[t, : len(row)] = row
            root[schema.COMPRESS_LEN][c, :] = [len(row) for row in encoded[camera]]
        root.attrs[schema.ATTR_FINISHED] = True
    temporary.rename(path)
    return path


@pytest.fixture
def timed_episode(tmp_path):
    def write(times_s, **kwargs):
        return write_timed_episode(kwargs.pop("store", tmp_path / "store"), times_s, **kwargs)

    return write


@pytest.fixture
def act_file(tmp_path):
    def write(name="episode_0.hdf5", folder=None, **kwargs):
        folder = Path(folder or tmp_path / "aloha")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        return path, write_act_file(path, **kwargs)

    return write
