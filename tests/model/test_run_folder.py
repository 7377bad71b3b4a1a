"""The run folder's layout and rules (model/run_folder.py), which the trainer writes and the window
and `run.py eval` read: complete checkpoints, the latest and the best, the names of what an
interrupted save leaves, events and files always valid JSON, whole-line appends from two writers,
the job record. Torch-free, like the module. (Which checkpoint loads is model/resume.py:
tests/reliability/test_checkpoints_and_sizes.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.run_folder import (
    BEST_DIR,
    CONFIG_FILE,
    EVENTS_FILE,
    JOB_FILE,
    LATEST_FILE,
    MODEL_FILE,
    TRAINER_FILE,
    VALIDATION_FILE,
    RUN_FILE,
    Event,
    JobRecord,
    RunEvents,
    accepts_start,
    append_event,
    best_checkpoint,
    checkpoint_dir,
    checkpoint_step,
    complete_checkpoints,
    event_record,
    is_partial_file,
    latest_checkpoint,
    prune_checkpoints,
    step_folders,
    write_json,
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
    assert step_folders(run) == {10: first, 20: second, 30: killed}
    assert complete_checkpoints(run) == {10: first, 20: second}
    assert latest_checkpoint(run) == second
    (second / TRAINER_FILE).write_text("{damaged")
    assert latest_checkpoint(run) == first  # an unreadable trainer.json is an incomplete checkpoint
    # A folder holding a run takes no new start; resuming it, or a free folder, does.
    assert not accepts_start(run, resume=False) and accepts_start(run, resume=True)
    assert not accepts_start(tmp_path / "nowhere", resume=True)
    prune_checkpoints(run, keep=1)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000030"]


def test_the_best_checkpoint_and_its_step(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert best_checkpoint(run) is None
    best = run / BEST_DIR
    best.mkdir()
    (best / MODEL_FILE).write_bytes(b"weights")
    (best / CONFIG_FILE).write_text("{}")
    assert best_checkpoint(run) == (best, None)  # no validation.json: its step is unknown
    (best / VALIDATION_FILE).write_text(json.dumps({"step": 10}))
    assert best_checkpoint(run) == (best, 10)


def test_what_an_interrupted_save_leaves_is_told_by_its_name():
    for name in (".model.safetensors.a1B2c3D4.tmp", ".trainer.json.x_y1z2w3", ".training_state.pt.tmp", ".tmpAb12Cd"):
        assert is_partial_file(name), name
    for name in ("model.safetensors", "trainer.json", ".gitignore", "train.jsonl"):
        assert not is_partial_file(name), name


def test_events_are_plain_json_and_unknown_names_are_told_apart():
    record = event_record(Event.PROGRESS, {"step": np.int64(3), "loss": np.float32(0.5), "path": Path("/r"),
                                           "tasks": ("a",)})
    assert record == {"event": "progress", "step": 3, "loss": 0.5, "path": "/r", "tasks": ["a"]}
    assert Event.known("summary") is Event.SUMMARY and Event.known("from_the_future") is None
    with pytest.raises(ValueError):
        event_record("progres", {})


def test_a_loss_that_is_not_a_number_is_written_as_null_everywhere(tmp_path):
    """A resumed run with nothing left to train has no loss (NaN): every line and file stays
    valid JSON for the panel, `jq` and browsers."""
    seen = []
    events = RunEvents(seen.append)
    events.run_dir = tmp_path
    events(Event.SUMMARY, final_loss={"total": float("nan"), "video": np.float32("inf"), "action": 0.5})
    append_event(tmp_path, {"event": "note", "value": float("-inf")})
    write_json(tmp_path / RUN_FILE, {"loss": np.float64("nan")})

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    lines = [json.loads(line, parse_constant=refuse) for line in (tmp_path / EVENTS_FILE).read_text().splitlines()]
    assert lines[0]["final_loss"] == {"total": None, "video": None, "action": 0.5} and lines[1]["value"] is None
    assert seen == lines[:1]
    assert json.loads((tmp_path / RUN_FILE).read_text(), parse_constant=refuse) == {"loss": None}


def test_an_event_the_folder_cannot_take_still_reaches_the_caller(tmp_path, caplog):
    """A full disk or a folder gone read-only: the caller (the terminal, the window's pipe) is
    how the user learns what happened."""
    seen = []
    events = RunEvents(seen.append)
    events.run_dir = tmp_path / "gone"  # appending fails (no such folder), as a write to a full disk does
    events(Event.ERROR, kind="internal", message="m", what_to_do="w")
    assert seen == [{"event": "error", "kind": "internal", "message": "m", "what_to_do": "w"}]
    assert "Cannot append" in caplog.text


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
