"""app.studio.training without Qt: the command line against the real trainer's parser, the run state built
from JSON lines, growing files, process liveness, checkpoints on disk, and the episode chooser's
rows from a real store."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.studio import training as tr
from app.studio.training import Outcome, RunState

_spec = importlib.util.spec_from_file_location(
    "train_support", Path(__file__).resolve().parents[2] / "model" / "test_train_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)


def _settings(tmp_path, **changes) -> tr.TrainSettings:
    fields = dict(episodes=(tmp_path / "episode_0.hdf5", tmp_path / "episode_1.hdf5"), labels=("success",),
                  run_dir=tmp_path / "run")
    fields.update(changes)
    return tr.TrainSettings(**fields)


def test_the_command_passes_only_what_the_user_set_and_the_real_parser_takes_it(tmp_path):
    from model.train import build_parser, hyper_from_args

    plain = tr.train_argv(_settings(tmp_path))
    assert plain[:2] == [str(tr.RUN_PY), "train"]
    args = build_parser().parse_args(plain[2:])
    assert args.episodes == [str(tmp_path / "episode_0.hdf5"), str(tmp_path / "episode_1.hdf5")]
    assert args.labels == "success" and args.preset == "tiny" and args.out == str(tmp_path / "run")
    assert args.steps is None and args.lr is None and not args.no_video_cotraining and not args.resume
    assert args.device == "auto"

    full = tr.train_argv(_settings(tmp_path, labels=("success", "failure", "success"), preset="small", steps=300,
                                   batch_size=8, lr=3e-4, video_cotraining=False, checkpoint_every=50, device="cpu",
                                   extra_args=("--threads", "1", "--set", "num_layers=2")), resume=True)
    args = build_parser().parse_args(full[2:])
    assert args.labels == "failure,success"
    assert (args.preset, args.steps, args.batch_size, args.lr, args.checkpoint_every) == ("small", 300, 8, 3e-4, 50)
    assert args.no_video_cotraining and args.device == "cpu" and args.threads == 1 and args.resume
    assert args.overrides == ["num_layers=2"]
    hyper = hyper_from_args(args)
    assert (hyper.steps, hyper.batch_size, hyper.lr, hyper.checkpoint_every) == (300, 8, 3e-4, 50)

    assert tr.resume_argv(full) == full  # already there: not twice
    assert tr.resume_argv(plain) == plain + ["--resume"]
    assert tr.out_arg(plain) == str(tmp_path / "run")


@pytest.mark.parametrize("changes, words", [
    ({"episodes": ()}, "tick at least one episode"),
    ({"preset": "huge"}, "Unknown preset"),
    ({"steps": 0}, "steps must be 1 or more"),
    ({"lr": -1.0}, "positive number"),
    ({"device": "tpu"}, "Unknown device"),
    ({"extra_args": ("--out", "x")}, "--out is set by the panel"),
    ({"extra_args": ("--resume",)}, "--resume is set by the panel"),
])
def test_settings_say_what_to_fix(tmp_path, changes, words):
    with pytest.raises(ValueError, match=words):
        _settings(tmp_path, **changes)


def test_field_parsers_say_what_to_fix():
    assert tr.parse_lr("") is None and tr.parse_lr(" 5e-4 ") == 5e-4
    with pytest.raises(ValueError, match="not a number"):
        tr.parse_lr("fast")
    with pytest.raises(ValueError, match="positive"):
        tr.parse_lr("0")
    assert tr.parse_extra_args('--threads 2 --set "video.hidden_dim=64"') == ("--threads", "2", "--set", "video.hidden_dim=64")
    with pytest.raises(ValueError, match="quotes"):
        tr.parse_extra_args('--set "a=1')
    with pytest.raises(ValueError, match="start with a flag"):
        tr.parse_extra_args("threads 2")


def _lines(*records) -> list[str]:
    return [json.dumps(r) for r in records]


def _progress(step, steps=6, total=3.0):
    return {"event": "progress", "step": step, "steps": steps, "epoch": 0.1, "loss": {"total": total, "video": total / 2,
            "action": total / 2}, "lr": 1e-4, "samples_per_s": 10.0, "eta_s": 5.0 * (steps - step), "elapsed_s": 1.0}


def test_run_state_follows_stages_and_a_resume_replaces_the_lost_steps():
    state = RunState()
    assert state.outcome is Outcome.NONE
    lines = _lines(
        {"event": "job_started", "time": 0, "resume": False, "argv": []},
        {"event": "stage", "stage": "select", "message": "finding episodes"},
        {"event": "episodes", "train": 3, "val": 1, "train_steps": 90, "val_steps": 30, "tasks": ["fold"],
         "variant": "fastwam", "val_names": ["episode_3.hdf5"]},
        {"event": "stage", "stage": "autoencoder", "message": "pretraining the video autoencoder (4 steps)"},
        {"event": "autoencoder", "step": 2, "steps": 4, "loss": 0.5, "samples_per_s": 3.0, "eta_s": 12.0},
    )
    rendered = [state.feed_line(line) for line in lines]
    assert state.outcome is Outcome.RUNNING and state.stage == "autoencoder"
    assert state.fraction == 0.5 and state.eta_s == 12.0 and "autoencoder 2/4" in state.status_text()
    assert "held out for validation: episode_3.hdf5" in rendered[2].text
    for line in _lines({"event": "cache", "episode": "episode_0.hdf5", "index": 0, "of": 4, "hit": False, "seconds": 2.0}):
        state.feed_line(line)
    assert state.stage == "cache" and state.stage_done == 1 and state.eta_s == pytest.approx(6.0)

    first = _lines({"event": "stage", "stage": "train", "message": "training steps 0..6", "steps": 6, "start_step": 0},
                   *(_progress(s, total=5.0) for s in (1, 2, 3)),
                   {"event": "validation", "step": 3, "val_loss": {"total": 4.0, "video": 2.0, "action": 2.0},
                    "best": True, "best_step": 3},
                   {"event": "checkpoint", "step": 3, "path": "/r/checkpoints/step_00000003"},
                   *(_progress(s, total=5.0) for s in (4, 5)))
    for line in first:
        state.feed_line(line)
    assert sorted(state.train_loss) == [1, 2, 3, 4, 5] and state.fraction == pytest.approx(5 / 6)
    assert state.eta_text() == "about 5 s left"
    state.mark_crashed()
    assert state.outcome is Outcome.CRASHED and state.eta_text() == ""

    second = _lines({"event": "job_started", "time": 0, "resume": True, "argv": []},
                    {"event": "resumed", "step": 3, "checkpoint": "/r/checkpoints/step_00000003"},
                    *(_progress(s, total=2.0) for s in (4, 5, 6)),
                    {"event": "validation", "step": 6, "val_loss": {"total": 3.0, "video": 1.5, "action": 1.5},
                     "best": True, "best_step": 6},
                    {"event": "checkpoint", "step": 6, "path": "/r/checkpoints/step_00000006"},
                    {"event": "summary", "steps": 6, "best_step": 6, "best_val_action_loss": 1.5, "elapsed_s": 100})
    for line in second:
        state.feed_line(line)
    assert state.outcome is Outcome.FINISHED and state.attempts == 2 and state.fraction == 1.0
    assert state.train_loss[5] == (2.0, 1.0, 1.0) and state.train_loss[3] == (5.0, 2.5, 2.5)
    assert sorted(state.val_loss) == [3, 6] and state.best_step == 6
    assert state.train_loss_at(7) == state.train_loss[6] and state.train_loss_at(0) is None
    # Lines of other shapes do not stop the panel: shown as they are.
    assert state.feed_line("Traceback (most recent call last):").level == "stderr"
    assert state.feed_line('{"event": "progress", "step": "x"}').level == "warning"
    assert state.feed_line('{"event": "note", "message": "no checkpoint yet"}').text == "note: no checkpoint yet"


def test_error_and_cancel_lines_end_the_run():
    state = RunState()
    state.feed_line(json.dumps({"event": "job_started"}))
    state.feed_line(json.dumps({"event": "error", "kind": "no_episodes", "message": "nothing matches",
                                "what_to_do": "Record demonstrations"}))
    assert state.outcome is Outcome.FAILED and state.status_text() == "Failed: nothing matches"
    state.feed_line(json.dumps({"event": "job_started", "resume": True}))
    assert state.outcome is Outcome.RUNNING and state.error is None
    state.feed_line(json.dumps({"event": "cancelled", "step": 4, "checkpoint": "/r/c", "message": "stopped"}))
    assert state.outcome is Outcome.CANCELLED and state.cancelled["step"] == 4


def test_file_tail_returns_whole_lines_in_bounded_slices(tmp_path):
    path = tmp_path / "train.jsonl"
    tail = tr.FileTail(path, max_bytes=10)
    assert tail.read_lines() == [] and tail.at_end
    path.write_text("first line\nsecond")
    got = []
    while not tail.at_end:
        got += tail.read_lines()
    assert got == ["first line"]
    with open(path, "a") as handle:
        handle.write(" half\nthird\n")
    while not tail.at_end:
        got += tail.read_lines()
    assert got == ["first line", "second half", "third"]
    path.write_text("new\n")  # replaced by a shorter file: read from its start
    assert tail.read_lines() == ["new"]


def test_process_alive_sees_a_live_job_by_its_run_folder_and_not_a_dead_one(tmp_path):
    marker = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--out", marker])
    try:
        assert tr.process_alive(proc.pid, marker)
        assert not tr.process_alive(proc.pid, str(tmp_path / "another-run"))  # a reused pid is not our job
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while tr.process_alive(proc.pid, marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not tr.process_alive(proc.pid, marker)  # a zombie (not reaped yet) is gone too
    finally:
        proc.kill()
        proc.wait()
    assert not tr.process_alive(proc.pid, marker) and not tr.process_alive(0)


def test_job_record_round_trips_and_a_damaged_one_reads_as_none(tmp_path):
    record = tr.JobRecord(123, ("run.py", "train", "--out", str(tmp_path)), sys.executable, 1.5, "host", "/repo")
    record.save(tmp_path)
    assert tr.JobRecord.load(tmp_path) == record
    (tmp_path / tr.JOB_FILE).write_text("{not json")
    assert tr.JobRecord.load(tmp_path) is None
    assert tr.JobRecord.load(tmp_path / "nowhere") is None


def _checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    folder = run_dir / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    (folder / tr.MODEL_FILE).write_bytes(b"weights")
    if complete:
        (folder / tr.TRAINER_FILE).write_text(json.dumps({"step": step}))
    return folder


def test_latest_complete_checkpoint_follows_the_trainers_rule(tmp_path):
    from model.train import latest_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    assert tr.latest_complete_checkpoint(run) is None and latest_checkpoint(run) is None
    _checkpoint(run, 10)
    second = _checkpoint(run, 20)
    _checkpoint(run, 30, complete=False)  # killed while saving: trainer.json is written last
    (run / tr.LATEST_FILE).write_text(json.dumps({"step": 30, "path": "checkpoints/step_00000030"}))
    assert tr.latest_complete_checkpoint(run) == latest_checkpoint(run) == second

    state = RunState()
    for line in _lines({"event": "progress", **_progress(20)}, {"event": "validation", "step": 20,
                       "val_loss": {"total": 1.0, "video": 0.5, "action": 0.5}, "best": True, "best_step": 20}):
        state.feed_line(line)
    best = run / tr.BEST_DIR
    best.mkdir()
    (best / tr.MODEL_FILE).write_bytes(b"weights")
    (best / "validation.json").write_text(json.dumps({"step": 20}))
    rows = tr.checkpoint_rows(state, run)
    assert [(r.step, r.path.name, r.best) for r in rows] == [(20, "step_00000020", True), (10, "step_00000010", False),
                                                              (20, "best", True)]
    assert rows[0].val_loss == (1.0, 0.5, 0.5) and rows[0].train_loss == state.train_loss[20]
    assert rows[1].train_loss is None and rows[1].val_loss is None


def test_episode_rows_from_a_real_store_with_filters_and_a_growing_store(tmp_path):
    from recordings.reader import Episode
    from recordings.store import set_label

    store = tmp_path / "store"
    paths = [support.write_episode(store, 30 + 5 * i, label=label, task=task, offset=i)
             for i, (label, task) in enumerate([("success", "fold the towel"), ("success", "fold the towel"),
                                                ("failure", "fold the towel"), ("unknown", "fold the towel"),
                                                ("success", "sort the socks")])]
    (store / "episode_9.hdf5.partial").write_bytes(b"\0" * 64)  # a leftover of a killed recording
    scanner = tr.EpisodeScanner()
    rows = scanner.scan(store)
    assert [r.name for r in rows] == [p.name for p in paths] + ["episode_9.hdf5.partial"]
    assert "recover" in rows[-1].problem and all(r.problem is None for r in rows[:-1])
    for row, path in zip(rows, paths):
        with Episode.open(path) as episode:
            assert row.duration_s == pytest.approx(episode.duration_s) and row.length == episode.length
            assert row.minutes == pytest.approx(episode.duration_s / 60)

    successes = tr.select_rows(rows, tr.LABEL_FILTERS["successes"])
    assert [r.name for r in successes] == ["episode_0.hdf5", "episode_1.hdf5", "episode_4.hdf5"]
    assert [r.name for r in tr.select_rows(rows, tr.LABEL_FILTERS["successes"], "fold the towel")] == \
        ["episode_0.hdf5", "episode_1.hdf5"]
    assert len(tr.select_rows(rows, tr.LABEL_FILTERS["successes and failures"])) == 4
    assert [r.name for r in tr.select_rows(rows, tr.LABEL_FILTERS["unlabelled"])] == ["episode_3.hdf5"]
    assert len(tr.select_rows(rows, tr.LABEL_FILTERS["all"])) == 5
    assert tr.tasks_of(rows) == ["fold the towel", "sort the socks"]
    minutes = sum(r.duration_s for r in successes) / 60
    assert tr.selection_text(successes) == f"3 episodes, {minutes:.1f} minutes selected"

    # The store grows and an episode is relabelled: the next scan shows both.
    new = support.write_episode(store, 20, label="success")
    set_label(paths[2], "success")
    rows = scanner.scan(store)
    assert new.name in [r.name for r in rows]
    assert next(r for r in rows if r.path == paths[2]).label == "success"
    paths[1].unlink()
    assert paths[1].name not in [r.name for r in scanner.scan(store)]
    assert scanner.scan(tmp_path / "no-such-store") == []


def test_find_runs_lists_the_windows_runs_newest_first(tmp_path):
    assert tr.find_runs(tmp_path / "none") == []
    for i, name in enumerate(("a", "b")):
        run = tmp_path / name
        run.mkdir()
        tr.JobRecord(1, (), sys.executable, 0.0, "h", "/").save(run)
        os.utime(run / tr.JOB_FILE, (1000 + i, 1000 + i))
    (tmp_path / "from-the-command-line").mkdir()
    assert [p.name for p in tr.find_runs(tmp_path)] == ["b", "a"]
    assert tr.default_run_dir("tiny", now=0, root=tmp_path).name.startswith("tiny-19")
    assert tr.format_duration(42) == "42 s" and tr.format_duration(600) == "10 min"
    assert tr.format_duration(3900) == "1 h 05 min"
