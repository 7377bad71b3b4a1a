"""Fixtures for tests that need episodes: synthetic tick records and episodes written by the real
writer (a pytest plugin of tests/conftest.py, so the recordings, the episodes command and the
window tests share them)."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent / "recordings"
_spec = importlib.util.spec_from_file_location("recordings_synthetic", HERE / "synthetic.py")
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)


@pytest.fixture
def make_tick():
    """make_tick(index, time_s, rng, cameras=..., shape=(48, 64), source=...) -> TickRecord."""
    return synthetic.make_tick


@pytest.fixture
def synthetic_script() -> Path:
    return HERE / "synthetic.py"


def wait_until(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def record_episode(tmp_path, make_tick):
    """Record `n` synthetic ticks with the real writer; returns (path, records)."""
    from recordings.writer import EpisodeWriter

    def record(n=40, image_format="jpeg", store=None, label="unknown", metadata=None, cameras=synthetic.CAMERAS, **kwargs):
        store = Path(store or tmp_path / "store")
        rng = np.random.default_rng(7)
        writer = EpisodeWriter(store, cameras, metadata, image_format=image_format, **kwargs)
        writer.start()
        records = [make_tick(i, 100.0 + 0.02 * i, rng, cameras=cameras) for i in range(n)]
        for record in records:
            writer.on_tick(record)
            wait_until(lambda: writer.status().queue_depth < 50, what="queue to drain")
        return writer.stop(label), records

    return record


@pytest.fixture
def leftover(tmp_path, make_tick):
    """The on-disk state a kill -9 leaves: a live partial file copied while its writer is idle
    between commits (nothing is written then), with 30 committed steps. Returns (path, records)."""
    from recordings.writer import EpisodeWriter

    live_store, store = tmp_path / "live", tmp_path / "crashed"
    store.mkdir()
    rng = np.random.default_rng(3)
    writer = EpisodeWriter(live_store, synthetic.CAMERAS, flush_interval_s=0.05)
    writer.start()
    records = [make_tick(i, 50.0 + 0.02 * i, rng) for i in range(30)]
    for record in records:
        writer.on_tick(record)
    wait_until(lambda: writer.status().frames_written == 30, what="30 committed frames")
    time.sleep(0.1)  # past the next commit interval: the writer thread is idle
    partial = writer.status().partial_path
    copy = store / partial.name
    shutil.copyfile(partial, copy)
    writer.discard()
    return copy, records


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return wait_until
