"""The episode chooser's rows from a real store (episodes written by the recordings writer)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from app.studio.training.episode_rows import LABEL_FILTERS, EpisodeScanner, select_rows, selection_text, tasks_of

_spec = importlib.util.spec_from_file_location(
    "train_support", Path(__file__).resolve().parents[3] / "model" / "test_train_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)


def test_episode_rows_from_a_real_store_with_filters_and_a_growing_store(tmp_path):
    from recordings.reader import Episode
    from recordings.store import set_label

    store = tmp_path / "store"
    paths = [support.write_episode(store, 30 + 5 * i, label=label, task=task, offset=i)
             for i, (label, task) in enumerate([("success", "fold the towel"), ("success", "fold the towel"),
                                                ("failure", "fold the towel"), ("unknown", "fold the towel"),
                                                ("success", "sort the socks")])]
    (store / "episode_9.hdf5.partial").write_bytes(b"\0" * 64)  # a leftover of a killed recording
    scanner = EpisodeScanner()
    rows = scanner.scan(store)
    assert [r.name for r in rows] == [p.name for p in paths] + ["episode_9.hdf5.partial"]
    assert "recover" in rows[-1].problem and all(r.problem is None for r in rows[:-1])
    for row, path in zip(rows, paths):
        with Episode.open(path) as episode:
            assert row.duration_s == pytest.approx(episode.duration_s) and row.length == episode.length
            assert row.minutes == pytest.approx(episode.duration_s / 60)

    successes = select_rows(rows, LABEL_FILTERS["successes"])
    assert [r.name for r in successes] == ["episode_0.hdf5", "episode_1.hdf5", "episode_4.hdf5"]
    assert [r.name for r in select_rows(rows, LABEL_FILTERS["successes"], "fold the towel")] == \
        ["episode_0.hdf5", "episode_1.hdf5"]
    assert len(select_rows(rows, LABEL_FILTERS["successes and failures"])) == 4
    assert [r.name for r in select_rows(rows, LABEL_FILTERS["unlabelled"])] == ["episode_3.hdf5"]
    assert len(select_rows(rows, LABEL_FILTERS["all"])) == 5
    assert tasks_of(rows) == ["fold the towel", "sort the socks"]
    minutes = sum(r.duration_s for r in successes) / 60
    assert selection_text(successes) == f"3 episodes, {minutes:.1f} minutes selected"

    # The store grows and an episode is relabelled: the next scan shows both.
    new = support.write_episode(store, 20, label="success")
    set_label(paths[2], "success")
    rows = scanner.scan(store)
    assert new.name in [r.name for r in rows]
    assert next(r for r in rows if r.path == paths[2]).label == "success"
    paths[1].unlink()
    assert paths[1].name not in [r.name for r in scanner.scan(store)]
    assert scanner.scan(tmp_path / "no-such-store") == []
