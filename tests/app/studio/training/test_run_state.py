"""The run state the Training panel (and the terminal display) builds from a run's events, and the
checkpoints table from the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.studio.training.run_state import Outcome, RunState, checkpoint_rows, format_duration
from model.run_folder import BEST_DIR, MODEL_FILE, TRAINER_FILE


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




def test_a_start_from_the_command_line_is_an_attempt_and_the_windows_start_is_one():
    """`started` is the trainer's own line: after the window's job_started it confirms that job;
    alone (a terminal, torchrun elsewhere) it begins an attempt, which the panel then shows."""
    state = RunState()
    started = {"event": "started", "time": 0, "pid": 7, "host": "h", "world_size": 2, "resume": False}
    line = state.feed_line(json.dumps(started))
    assert state.outcome is Outcome.RUNNING and state.attempts == 1 and state.processes_started == 1
    assert "from the command line" in line.text and "1 more (torchrun)" in line.text
    for record in _lines(*(_progress(s) for s in (1, 2)), {"event": "summary", "steps": 6, "elapsed_s": 1}):
        state.feed_line(record)
    assert state.outcome is Outcome.FINISHED and sorted(state.train_loss) == [1, 2]

    state.feed_line(json.dumps({"event": "job_started", "time": 0, "resume": True, "argv": []}))
    line = state.feed_line(json.dumps({**started, "resume": True}))
    assert state.attempts == 2 and state.outcome is Outcome.RUNNING and line.text.startswith("training process 7")
    # The window's start that failed before its trainer spoke: the next `started` is a new attempt.
    state.feed_line(json.dumps({"event": "job_started", "time": 0, "resume": True, "argv": []}))
    state.feed_line(json.dumps({"event": "error", "kind": "launch", "message": "x", "what_to_do": "y"}))
    state.feed_line(json.dumps(started))
    assert state.attempts == 4 and state.outcome is Outcome.RUNNING and state.error is None


def _checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    folder = run_dir / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"weights")
    if complete:
        (folder / TRAINER_FILE).write_text(json.dumps({"step": step}))
    return folder


def test_checkpoint_rows_list_the_complete_checkpoints_with_the_runs_figures_then_best(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _checkpoint(run, 10)
    _checkpoint(run, 20)
    _checkpoint(run, 30, complete=False)  # killed while saving: trainer.json is written last

    state = RunState()
    for line in _lines({"event": "progress", **_progress(20)}, {"event": "validation", "step": 20,
                       "val_loss": {"total": 1.0, "video": 0.5, "action": 0.5}, "best": True, "best_step": 20}):
        state.feed_line(line)
    best = run / BEST_DIR
    best.mkdir()
    (best / MODEL_FILE).write_bytes(b"weights")
    (best / "validation.json").write_text(json.dumps({"step": 20}))
    rows = checkpoint_rows(state, run)
    assert [(r.step, r.path.name, r.best) for r in rows] == [(20, "step_00000020", True), (10, "step_00000010", False),
                                                              (20, "best", True)]
    assert rows[0].val_loss == (1.0, 0.5, 0.5) and rows[0].train_loss == state.train_loss[20]
    assert rows[1].train_loss is None and rows[1].val_loss is None
    assert [r.is_best_folder for r in rows] == [False, False, True]


def test_durations_read_as_people_say_them():
    assert format_duration(42) == "42 s" and format_duration(600) == "10 min"
    assert format_duration(3900) == "1 h 05 min" and format_duration(None) == "?"
