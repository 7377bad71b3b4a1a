"""The workbench core without Qt: columns, filters and sorting over a real store; bulk label,
trash and restore; the episodes commands; replay of a recorded sim episode on the sim rig."""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pytest

from app.studio.jobs.episodes import main as episodes_main
from app.studio.workbench import COLUMN_KEYS, COLUMNS, EpisodeFilter, Workbench
from recordings.metadata import EpisodeMetadata
from recordings.reader import Episode
from review_fixtures import write_timed_episode


def cell(workbench, row, key):
    return COLUMNS[COLUMN_KEYS.index(key)].text(row, workbench.thresholds)


@pytest.fixture
def store(tmp_path, act_file):
    root = tmp_path / "store"
    times = 100.0 + np.arange(50) / 50.0
    today = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_timed_episode(root, times, metadata=EpisodeMetadata(task="fold", operator="ann", created=today), label="success")
    write_timed_episode(root, 100.0 + np.arange(50) / 40.0, metadata=EpisodeMetadata(task="fold", operator="bob", created="2024-05-01T10:00:00+00:00"))
    write_timed_episode(root, times, sources=["policy"] * 30 + ["intervention"] * 20,
                        metadata=EpisodeMetadata(task="flatten", operator="ann", created=today), label="failure")
    act_file(name="episode_3.hdf5", folder=root, n=20, shape=(48, 64))
    return root


def test_rows_columns_and_filters(store):
    bench = Workbench(store)
    bench.refresh()
    names = [row.name for row in bench.visible()]
    assert names == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5", "episode_3.hdf5"]
    rows = {row.name: row for row in bench.rows}
    assert cell(bench, rows["episode_1.hdf5"], "qa") == "bad"
    assert cell(bench, rows["episode_2.hdf5"], "sources") == "policy 60%, intervention 40%"
    aloha = rows["episode_3.hdf5"]
    assert [cell(bench, aloha, key) for key in ("task", "operator", "created", "sources", "qa", "cameras", "label")] == [
        "unknown", "unknown", "unknown", "unknown", "unknown", "top", "unknown"]

    def shown(**rules):
        return [row.name for row in bench.visible(EpisodeFilter(**rules))]

    assert shown(labels=frozenset({"success"})) == ["episode_0.hdf5"]
    assert shown(task="fold") == ["episode_0.hdf5", "episode_1.hdf5"]
    assert shown(operator="ann") == ["episode_0.hdf5", "episode_2.hdf5"]
    assert shown(qa=frozenset({"bad"})) == ["episode_1.hdf5"]
    assert shown(qa=frozenset({"unknown"})) == ["episode_3.hdf5"]
    assert shown(source="with interventions") == ["episode_2.hdf5"]
    assert shown(source="no policy") == ["episode_0.hdf5", "episode_1.hdf5"]
    today = dt.date.today()
    assert shown(date_from=today, date_to=today) == ["episode_0.hdf5", "episode_2.hdf5"]
    assert shown(date_to=dt.date(2024, 12, 31)) == ["episode_1.hdf5"]
    assert shown(text="FLAT") == ["episode_2.hdf5"]
    assert [row.name for row in bench.visible(sort_key="qa", descending=True)][0] == "episode_1.hdf5"
    assert [row.name for row in bench.visible(sort_key="duration")][-1] == "episode_1.hdf5"  # 50 steps at 40 Hz
    assert [row.name for row in bench.bad_episodes()] == ["episode_1.hdf5"]


def test_bulk_label_trash_and_restore(store):
    bench = Workbench(store)
    bench.refresh()
    assert bench.label(["episode_0.hdf5", "episode_1.hdf5"], "failure", reason="towel dropped") == []
    with Episode.open(store / "episode_1.hdf5") as episode:
        assert (episode.label.value, episode.failure_reason) == ("failure", "towel dropped")
    assert [row.reason for row in bench.rows[:2]] == ["towel dropped", "towel dropped"]
    bench.label(["episode_1.hdf5"], "success", reason="ignored for a success")
    assert bench.row("episode_1.hdf5").reason == ""
    moved, errors = bench.trash(["episode_1.hdf5", "nonsense.txt"])
    assert len(moved) == 1 and "not an episode file" in errors[0]
    assert bench.row("episode_1.hdf5") is None
    bench.restore(bench.trashed()[0].name)
    assert bench.row("episode_1.hdf5").label == "success"
    bench.set_failure_reasons(["a", "b"])
    assert Workbench(store).failure_reasons == ("a", "b")


def run(*argv):
    out = io.StringIO()
    code = episodes_main(list(argv), out=out)
    return code, out.getvalue()


def test_episodes_commands(store, tmp_path):
    code, text = run("qa", "--store", str(store))
    assert code == 0 and "BAD      episode_1.hdf5 - control rate 40.0 Hz" in text
    assert run("qa", "--store", str(store), "--verdict", "bad", "--names") == (0, "episode_1.hdf5\n")
    code, text = run("check", "--store", str(store))
    assert "episode_1.hdf5 (50 frames) - mean rate 40.0 Hz" in text and "timing QA: bad (control rate 40.0 Hz" in text
    assert run("label", "0", "failure", "--reason", "missed grasp", "--store", str(store))[0] == 0
    assert json.loads(run("list", "--store", str(store), "--json")[1])["episodes"][0]["reason"] == "missed grasp"
    code, text = run("trash", "2", "--store", str(store))
    assert code == 0 and "episode_2.hdf5 -> trash/" in text
    assert "was episode_2.hdf5" in run("restore", "--list", "--store", str(store))[1]
    assert run("restore", "episode_2.hdf5", "--store", str(store)) == (0, "restored episode_2.hdf5\n")
    code, text = run("export", "0", "2", "--format", "lerobot", "--out", str(tmp_path / "ds"), "--codec", "h264", "--store", str(store))
    assert code == 0 and "2 episodes, 100 frames" in text
    code, text = run("export", "3", "--format", "mp4", "--out", str(tmp_path / "mp4"), "--store", str(store))
    assert code == 0 and (tmp_path / "mp4" / "episode_3.mp4").is_file()
    code, text = run("trash", "episode_9.hdf5", "--store", str(store))
    assert code == 1 and "There is no episode" in text


def test_replay_of_a_sim_episode_on_the_sim_rig(tmp_path):
    from app.studio.jobs.console import JsonLinesReporter
    from app.studio.jobs.demos import run_demos
    from app.studio.paths import DEFAULT_RIG_FILE
    from app.studio.replay import replay_episode

    results = run_demos(1, seed=3, store=tmp_path, rig_path=DEFAULT_RIG_FILE, max_seconds=1.2, operator="",
                        reporter=JsonLinesReporter(io.StringIO()))
    path = tmp_path / results[0]["episode"]
    with Episode.open(path) as episode:
        steps = episode.length
        moved = float(np.abs(episode.qpos[-1] - episode.qpos[0]).max())
    result = replay_episode(path, DEFAULT_RIG_FILE)
    assert result.seed == 3 and result.steps == steps
    assert moved > 0.02  # the demonstrator moved the arms: replaying is not trivially close
    assert result.tracking_rms_rad < 0.02, result.tracking_rms_rad


def test_a_saved_recording_is_indexed_and_judged_at_once(tmp_path):
    from app.studio.events import Severity
    from app.studio.recording import index_and_judge
    from recordings.index import StoreIndex

    store = tmp_path / "store"
    good = write_timed_episode(store, 100.0 + np.arange(40) / 50.0)
    slow = write_timed_episode(store, 100.0 + np.arange(40) / 30.0)
    assert index_and_judge(good, "Saved.") == (Severity.INFO, "Saved. Timing QA: ok.")
    severity, text = index_and_judge(slow, "Saved.")
    assert severity is Severity.WARNING and text.startswith("Saved. Timing QA: bad (control rate 30.0 Hz")
    assert [row.name for row in StoreIndex(store).cached_rows()] == ["episode_0.hdf5", "episode_1.hdf5"]
    (store / "qa.toml").write_text("[timing]\nnonsense = 1\n")
    severity, text = index_and_judge(good, "Saved.")
    assert severity is Severity.WARNING and "unknown threshold" in text
