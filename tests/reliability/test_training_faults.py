"""The faults of issue 13 that reach training, through the real `run.py train` (in-process
`main(argv)`, JSON lines as a script reads them): a read-only --out was reported as an internal
bug (fault 9); a damaged latest checkpoint stopped the resume with `kind: internal` and torch's
weights_only advice, and temporary files of interrupted saves stayed (fault 6); a damaged frame
passed the selection and crashed training late (fault 2); a finished run's resume printed NaN
(fault 10); a blank task was accepted from the command line (fault 10); an absurd model size
started building (fault 7).

Runs are real and tiny (episodes from the recordings writer, the model shrunk by --set, a few
steps, one thread)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

import h5py
import pytest
import torch

from app.studio.jobs.console import open_reporter
from app.studio.jobs.train import TrainingView, main
from model.run_folder import BEST_STAGING_DIR, EVENTS_FILE, MODEL_FILE, TRAINING_STATE_FILE, checkpoint_dir
from recordings import schema

_spec = importlib.util.spec_from_file_location(
    "train_support", Path(__file__).resolve().parents[1] / "model" / "test_train_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

torch.set_num_threads(1)


def _args(store: Path, out: Path, cache: Path, *extra: str, steps: int = 6) -> list[str]:
    args = ["--store", str(store), "--out", str(out), "--cache-dir", str(cache), "--steps", str(steps),
            "--batch-size", "4", "--log-every", "1", "--val-every", "3", "--checkpoint-every", "3",
            "--keep-checkpoints", "3", "--val-samples", "8", "--seed", "3", "--vae-steps", "2",
            "--vae-batch-size", "2", "--threads", "1", *extra]
    for item in support.TEST_MODEL_OVERRIDES:
        args += ["--set", item]
    return args


def _refuse(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def _run(capsys, args: list[str]) -> tuple[int, list[dict], str]:
    """(exit code, the JSON lines on stdout, strictly parsed, stderr)."""
    code = main(args)
    captured = capsys.readouterr()
    lines = [json.loads(line, parse_constant=_refuse) for line in captured.out.splitlines() if line.startswith("{")]
    return code, lines, captured.err


def _logged(run_dir: Path) -> list[dict]:
    path = run_dir / EVENTS_FILE
    return [json.loads(line, parse_constant=_refuse) for line in path.read_text().splitlines()] if path.exists() else []


def _losses(lines: list[dict]) -> dict[int, list[float]]:
    return {e["step"]: [e["loss"]["total"], e["loss"]["video"], e["loss"]["action"]] for e in lines
            if e["event"] == "progress"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return support.make_store(tmp_path_factory.mktemp("training_faults"))


def test_a_read_only_out_is_a_usage_problem_before_any_work(store, tmp_path, capsys, small_filesystem):
    if os.geteuid() == 0:  # root writes through permission bits: a read-only mount then
        read_only = small_filesystem.mount("1M")
        small_filesystem.read_only(read_only)
    else:
        read_only = tmp_path / "read-only"
        read_only.mkdir()
        os.chmod(read_only, 0o555)
    try:
        for out in (read_only, read_only / "run1"):  # the folder itself, and one to be made in it
            code, lines, err = _run(capsys, _args(store, out, tmp_path / "cache"))
            assert code == 2, lines
            error = lines[-1]
            assert error["event"] == "error" and error["kind"] == "invalid_argument"
            assert error["message"].startswith(f"--out {out}: cannot be written (")
            assert "Read-only file system" in error["message"] or "Permission denied" in error["message"]
            assert "write to" in error["what_to_do"] and "bug" not in error["what_to_do"]
            assert not [e for e in lines if e["event"] in ("stage", "episodes")]  # stopped before the data
            assert "Traceback" not in err
        assert not (read_only / "run1").exists() and not os.listdir(read_only)
    finally:
        if os.geteuid() != 0:
            os.chmod(read_only, 0o755)


class _Payload:
    """Would create a file when unpickled (what a poisoned checkpoint does, harmlessly here)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_damaged_latest_checkpoint_falls_back_with_a_warning_and_the_run_resumes(store, tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = _args(store, out, cache, steps=9)
    code, first, _ = _run(capsys, [*args, "--stop-after-steps", "6"])
    assert code == 130 and first[-1]["event"] == "cancelled" and first[-1]["step"] == 6
    latest, earlier = checkpoint_dir(out, 6), checkpoint_dir(out, 3)
    # The latest checkpoint's optimizer payload poisoned (its zip structure is sound: found when
    # read), and what killed saves leave: a hidden temporary file and a half-written best/.
    marker = tmp_path / "PWNED"
    torch.save({"optimizer": {"state": _Payload(marker)}}, latest / TRAINING_STATE_FILE)
    (earlier / f".{MODEL_FILE}.a1B2c3D4.tmp").write_bytes(b"half a tensor")
    (out / BEST_STAGING_DIR).mkdir()
    (out / BEST_STAGING_DIR / MODEL_FILE).write_bytes(b"half")

    code, lines, err = _run(capsys, [*args, "--resume"])
    assert code == 0, lines[-1]
    assert not marker.exists()  # never unpickled
    warnings = [e for e in lines if e["event"] == "warning" and e["kind"] == "damaged_checkpoint"]
    assert len(warnings) == 1 and warnings[0]["path"] == str(latest)
    assert "step_00000006 cannot be resumed from" in warnings[0]["message"]
    assert str(latest / TRAINING_STATE_FILE) in warnings[0]["message"] and "never unpickled" in warnings[0]["message"]
    assert "weights_only=False" not in json.dumps(lines) + err
    note = next(e for e in lines if e["event"] == "note" and "interrupted save" in e["message"])
    assert "removed 2 temporary file(s)" in note["message"]
    assert not (out / BEST_STAGING_DIR).exists() and not [p for p in earlier.iterdir() if p.name.startswith(".")]
    assert next(e for e in lines if e["event"] == "resumed") == {"event": "resumed", "step": 3,
                                                                 "checkpoint": str(earlier)}
    # Steps 4-6 trained again from step 3 give the first attempt's losses exactly.
    resumed = _losses(lines)
    assert sorted(resumed) == [4, 5, 6, 7, 8, 9] and {s: resumed[s] for s in (4, 5, 6)} == {
        s: _losses(first)[s] for s in (4, 5, 6)}
    assert lines[-1]["event"] == "summary" and lines[-1]["steps"] == 9
    assert _logged(out)[-len(lines):] == lines  # the folder's record, the same valid JSON

    # A resume of the finished run has nothing to train: its loss is unknown, written as null.
    code, lines, _ = _run(capsys, [*args, "--resume"])
    assert code == 0 and lines[-1]["event"] == "summary"
    assert lines[-1]["final_loss"] == {"total": None, "video": None, "action": None}
    assert lines[-1]["checkpoint"] == str(checkpoint_dir(out, 9))
    assert _logged(out)[-1] == lines[-1]
    shown = io.StringIO()
    with open_reporter(json_lines=False, view=TrainingView(), stream=shown) as reporter:
        reporter.event("summary", **{k: v for k, v in lines[-1].items() if k != "event"})
    assert "Training finished" in shown.getvalue() and "— (action —, video —)" in shown.getvalue()

    # Every checkpoint damaged: refused with each one named, and nothing trained over them.
    for step in (3, 6, 9):
        weights = checkpoint_dir(out, step) / MODEL_FILE
        weights.write_bytes(weights.read_bytes()[:1000])
    code, lines, _ = _run(capsys, [*args, "--resume"])
    assert code == 4 and lines[-1]["kind"] == "model"
    for step in (3, 6, 9):
        assert f"step_{step:08d}: {MODEL_FILE} is truncated or corrupt" in lines[-1]["message"]
    assert "bug" not in lines[-1]["what_to_do"] and not [e for e in lines if e["event"] == "episodes"]


@pytest.fixture
def store_with_a_bad_frame(store, tmp_path) -> tuple[Path, Path]:
    """A copy of the store whose episode_1 has one changed byte in frame 7 of cam_left_wrist
    (a failing disk sector): the file opens and its other frames read."""
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    path = copy / "episode_1.hdf5"
    with h5py.File(path, "r") as root:
        chunk = root[schema.image_path("cam_left_wrist")].id.get_chunk_info_by_coord((7, 0, 0, 0))
    with open(path, "r+b") as handle:
        handle.seek(chunk.byte_offset + chunk.size // 2)
        value = handle.read(1)[0]
        handle.seek(chunk.byte_offset + chunk.size // 2)
        handle.write(bytes([value ^ 0x5A]))
    return copy, path


def test_a_damaged_frame_is_found_before_any_work_and_skipped_on_request(store_with_a_bad_frame, tmp_path, capsys):
    copy, damaged = store_with_a_bad_frame
    cache = tmp_path / "cache"
    code, lines, err = _run(capsys, _args(copy, tmp_path / "refused", cache, steps=2))
    assert code == 3, lines[-1]
    error = lines[-1]
    assert error["kind"] == "corrupt_episode" and "episode_1.hdf5" in error["message"]
    assert "frame 7 of camera 'cam_left_wrist'" in error["message"] and "--skip-unreadable" in error["message"]
    assert [e["stage"] for e in lines if e["event"] == "stage"] == ["select"]  # no autoencoder, no cache
    assert "Traceback" not in err
    # The files that passed are remembered; the damaged one is checked again next time.
    memo = json.loads((cache / "deep_checks.json").read_text())
    assert sorted(Path(p).name for p in memo) == ["episode_0.hdf5", "episode_2.hdf5", "episode_3.hdf5"]

    # Without the up-front check the frame is met while the episodes are decoded: the same kind of
    # error naming the file, later (what --deep-check spares).
    code, lines, err = _run(capsys, _args(copy, tmp_path / "unchecked", cache, "--no-deep-check", steps=2))
    assert code == 3 and lines[-1]["kind"] == "corrupt_episode", lines[-1]
    assert "episode_1.hdf5" in lines[-1]["message"] and "cam_left_wrist" in lines[-1]["message"]
    assert len([e for e in lines if e["event"] == "stage"]) > 1 and "Traceback" not in err

    code, lines, _ = _run(capsys, _args(copy, tmp_path / "skipped", cache, "--skip-unreadable", steps=2))
    assert code == 0, lines[-1]
    warning = next(e for e in lines if e["event"] == "warning" and e["kind"] == "unreadable_episode")
    assert warning["path"] == str(damaged) and "left out episode_1.hdf5" in warning["message"]
    assert "frame 7 of camera 'cam_left_wrist'" in warning["message"]
    episodes = next(e for e in lines if e["event"] == "episodes")
    assert episodes["train"] + episodes["val"] == 3
    run = json.loads((tmp_path / "skipped" / "run.json").read_text())
    assert str(damaged) not in run["train"] + run["val"]


@pytest.mark.parametrize("flag, value", [("--task", "   "), ("--default-task", ""), ("--task", "fold\x1b[2J the towel")])
def test_a_blank_or_control_character_task_is_a_usage_error(store, tmp_path, capsys, flag, value):
    code, lines, _ = _run(capsys, _args(store, tmp_path / "run", tmp_path / "cache", flag, value))
    assert code == 2 and lines[-1]["kind"] == "invalid_argument"
    assert lines[-1]["message"].startswith(f"{flag} must ")
    assert not (tmp_path / "run").exists()


def test_an_absurd_model_size_is_refused_with_the_estimate_before_anything_is_built(store, tmp_path, capsys):
    args = _args(store, tmp_path / "run", tmp_path / "cache")
    code, lines, _ = _run(capsys, [*args, "--set", "num_layers=1000000"])
    assert code == 2 and lines[-1]["kind"] == "invalid_argument" and "num_layers must be within 1..200" in lines[-1]["message"]
    # Within the limits, but 40 B parameters: far more memory than any machine here has.
    code, lines, _ = _run(capsys, ["--preset", "fastwam-5b", "--set", "num_layers=200", "--store", str(store),
                                   "--out", str(tmp_path / "big"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2, lines[-1]
    error = lines[-1]
    assert error["kind"] == "invalid_argument" and "39.55 B parameters" in error["message"]
    assert "GB, but this machine has" in error["message"] or "GB, but the GPU" in error["message"]
    assert "--preset" in error["what_to_do"]
    assert not [e for e in lines if e["event"] == "stage"]  # refused before the data, let alone the model


def test_under_torchrun_every_rank_stops_on_the_damaged_frame_none_waits(store_with_a_bad_frame, tmp_path):
    """Rank 0 checks first and the others find its passes in the memo; its refusal reaches every
    rank (each says why), so none waits at a barrier for a rank that has stopped."""
    copy, _ = store_with_a_bad_frame
    code, lines, stderr = support.run_train(_args(copy, tmp_path / "run", tmp_path / "cache", "--device", "cpu", steps=2),
                                            torchrun=2, timeout_s=300)
    assert code != 0, stderr[-2000:]
    errors = {e["rank"]: e for e in lines if e["event"] == "error"}
    assert sorted(errors) == [0, 1], lines
    for error in errors.values():
        assert error["kind"] == "corrupt_episode" and "frame 7 of camera 'cam_left_wrist'" in error["message"]
