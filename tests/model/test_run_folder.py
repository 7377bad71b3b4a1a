"""The run folder's layout and rules (model/run_folder.py), which the trainer writes and the window
and `run.py eval` read: complete checkpoints, the latest and the best, resolving a path to a
checkpoint, whole-line appends from two writers, the job record. Torch-free, like the module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.errors import CheckpointError
from model.run_folder import (
    BEST_DIR,
    CONFIG_FILE,
    EVENTS_FILE,
    JOB_FILE,
    LATEST_FILE,
    MODEL_FILE,
    TRAINER_FILE,
    VALIDATION_FILE,
    Event,
    JobRecord,
    accepts_start,
    best_checkpoint,
    checkpoint_dir,
    checkpoint_step,
    complete_checkpoints,
    event_record,
    latest_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    folder = checkpoint_dir(run_dir, step)
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"weights")
    (folder / CONFIG_FILE).write_text("{}")
    if complete:
        (folder / TRAINER_FILE).write_text(json.dumps({"step": step}))
    return folder


def test_the_latest_complete_checkpoint_is_what_resume_continues_from(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert latest_checkpoint(run) is None and accepts_start(run, resume=False)
    first = _checkpoint(run, 10)
    second = _checkpoint(run, 20)
    killed = _checkpoint(run, 30, complete=False)  # killed while saving: trainer.json is written last
    (run / LATEST_FILE).write_text(json.dumps({"step": 30, "path": "checkpoints/step_00000030"}))
    assert checkpoint_dir(run, 20) == second and second.name == "step_00000020"
    assert checkpoint_step(second) == 20 and checkpoint_step(killed) is None
    assert complete_checkpoints(run) == {10: first, 20: second}
    assert latest_checkpoint(run) == second
    (second / TRAINER_FILE).write_text("{damaged")
    assert latest_checkpoint(run) == first  # an unreadable trainer.json is an incomplete checkpoint
    # A folder holding a run takes no new start; resuming it, or a free folder, does.
    assert not accepts_start(run, resume=False) and accepts_start(run, resume=True)
    assert not accepts_start(tmp_path / "nowhere", resume=True)
    prune_checkpoints(run, keep=1)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000030"]


def test_a_path_resolves_to_a_checkpoint_the_best_then_the_latest(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint folder nor a run folder"):
        resolve_checkpoint(run)
    latest = _checkpoint(run, 10)
    assert resolve_checkpoint(run) == latest and resolve_checkpoint(latest) == latest
    best = run / BEST_DIR
    best.mkdir()
    (best / MODEL_FILE).write_bytes(b"weights")
    (best / CONFIG_FILE).write_text("{}")
    assert best_checkpoint(run) == (best, None)  # no validation.json: its step is unknown
    (best / VALIDATION_FILE).write_text(json.dumps({"step": 10}))
    assert best_checkpoint(run) == (best, 10) and resolve_checkpoint(run) == best


def test_events_are_plain_json_and_unknown_names_are_told_apart():
    record = event_record(Event.PROGRESS, {"step": np.int64(3), "loss": np.float32(0.5), "path": Path("/r"),
                                           "tasks": ("a",)})
    assert record == {"event": "progress", "step": 3, "loss": 0.5, "path": "/r", "tasks": ["a"]}
    assert Event.known("summary") is Event.SUMMARY and Event.known("from_the_future") is None
    with pytest.raises(ValueError):
        event_record("progres", {})


def test_two_writers_append_whole_lines(tmp_path):
    """The trainer and the window append to one train.jsonl: long lines (well past a pipe or
    buffer size) written at the same time from two processes never interleave."""
    code = ("import sys; from pathlib import Path; from model.run_folder import append_event\n"
            "for i in range(300):\n"
            "    append_event(Path(sys.argv[1]), {'event': 'note', 'writer': sys.argv[2], 'i': i, 'pad': 'x' * 20000})\n")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name], cwd=ROOT) for name in ("a", "b")]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    records = [json.loads(line) for line in (tmp_path / EVENTS_FILE).read_text().splitlines()]
    for name in ("a", "b"):
        assert [r["i"] for r in records if r["writer"] == name] == list(range(300))


def test_job_record_round_trips_and_a_damaged_one_reads_as_none(tmp_path):
    record = JobRecord(123, ("run.py", "train", "--out", str(tmp_path)), sys.executable, 1.5, "host", "/repo")
    record.save(tmp_path)
    assert JobRecord.load(tmp_path) == record
    (tmp_path / JOB_FILE).write_text("{not json")
    assert JobRecord.load(tmp_path) is None
    assert JobRecord.load(tmp_path / "nowhere") is None
