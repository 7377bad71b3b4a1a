"""`python run.py train`'s own part (app/studio/jobs/train.py, console.py): the flags, errors as
events with what to do (and where they are recorded), the display on a terminal, and a run
started from a terminal followed by the window's Qt-free core as the Training panel follows it.

The trainer's behaviour (resume, torchrun, fine-tuning) is tests/model/test_trainer.py.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.studio.jobs.console import JsonLinesReporter, open_reporter
from app.studio.jobs.train import TrainingView, build_parser, main, options_from_args
from app.studio.paths import RUN_PY
from app.studio.training.follower import RunFollower, find_runs
from app.studio.training.run_state import Outcome, checkpoint_rows
from model.run_folder import EVENTS_FILE, MODEL_FILE, TRAINER_FILE

_spec = importlib.util.spec_from_file_location(
    "train_support", Path(__file__).resolve().parents[2] / "model" / "test_train_support.py")
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_command")
    return {"store": support.make_store(root), "cache": root / "cache", "root": root}


def _args(store: Path, out: Path, cache: Path, *extra: str, steps: int = 6) -> list[str]:
    args = ["--store", str(store), "--out", str(out), "--cache-dir", str(cache), "--steps", str(steps),
            "--batch-size", "4", "--log-every", "1", "--val-every", "3", "--checkpoint-every", "3",
            "--val-samples", "8", "--seed", "3", "--vae-steps", "3", "--vae-batch-size", "2", *extra]
    for item in support.TEST_MODEL_OVERRIDES:
        args += ["--set", item]
    return args


def _run(capsys, args: list[str]) -> tuple[int, list[dict]]:
    code = main(args)
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def _logged(run_dir: Path) -> list[dict]:
    path = run_dir / EVENTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_flags_are_checked_and_the_window_follows_runs_without_torch():
    """`run.py train --help` and a wrong flag are answered before torch loads; the Training
    panel's core never loads it."""
    code = ("import sys\n"
            "from app.studio.jobs.train import main\n"
            "import app.studio.training.follower, app.studio.training.settings, app.studio.training.episode_rows\n"
            "assert main(['--steps', '0']) == 2\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert lines[-1] == "False", result.stdout + result.stderr
    assert json.loads(lines[0])["kind"] == "invalid_argument" and "--steps" in json.loads(lines[0])["message"]


def test_store_and_its_old_name_episodes_and_a_default_run_folder_kept_for_resume():
    parser = build_parser()
    plain = ["--store", "a", "b.hdf5"]
    assert parser.parse_args(plain).store == parser.parse_args(["--episodes", "a", "b.hdf5"]).store == ["a", "b.hdf5"]
    options = options_from_args(parser.parse_args(plain), plain)
    assert options.store == ("a", "b.hdf5") and options.program == (str(RUN_PY), "train")
    # No --out: a new folder under runs/, named in the recorded flags so `... --resume` finds it.
    assert options.argv[:3] == tuple(plain) and options.argv[3:] == ("--out", options.out)
    assert Path(options.out).parent.name == "runs" and Path(options.out).name.startswith("tiny-")


def test_errors_are_json_lines_with_what_to_do(workspace, capsys, tmp_path, monkeypatch):
    store, cache = workspace["store"], workspace["cache"]
    code, lines = _run(capsys, _args(store, tmp_path / "a", cache, "--task", "sort the socks"))
    assert code == 3 and lines[-1]["event"] == "error" and lines[-1]["kind"] == "no_episodes"
    assert "sort the socks" in lines[-1]["message"] and lines[-1]["what_to_do"]

    bad = tmp_path / "bad"
    shutil.copytree(store, bad)
    (bad / "episode_7.hdf5").write_bytes(b"\0" * 4096)
    code, lines = _run(capsys, _args(bad, tmp_path / "b", cache))
    assert code == 3 and lines[-1]["kind"] == "corrupt_episode" and "episode_7.hdf5" in lines[-1]["message"]

    code, lines = _run(capsys, _args(store, tmp_path / "c", cache, "--set", "num_layerz=2"))
    assert code == 2 and lines[-1]["kind"] == "invalid_argument" and "num_layerz" in lines[-1]["message"]
    code, lines = _run(capsys, ["--lr", "-1", "--episodes", str(store)])
    assert code == 2 and "--lr" in lines[-1]["message"]
    code, lines = _run(capsys, _args(store, tmp_path / "e", cache, "--cache-max-gb", "-1"))
    assert code == 2 and "--cache-max-gb" in lines[-1]["message"]

    import torch

    from model.trainer import Trainer

    def out_of_memory(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "run", out_of_memory)
    code, lines = _run(capsys, _args(store, tmp_path / "d", cache))
    assert code == 5 and lines[-1]["kind"] == "out_of_memory" and "--batch-size (now 4)" in lines[-1]["what_to_do"]


def test_an_error_is_recorded_in_a_folder_free_for_the_start_and_nowhere_else(workspace, capsys, tmp_path):
    # The window makes the folder and follows it: a wrong flag typed under More options shows there.
    made = tmp_path / "made-by-the-window"
    made.mkdir()
    code, lines = _run(capsys, ["--out", str(made), "--no-such-flag"])
    assert code == 2 and lines[-1]["kind"] == "invalid_argument"
    assert _logged(made) == lines
    # A folder that holds another run is left as it is: refused, and nothing written into it.
    taken = tmp_path / "taken"
    step = taken / "checkpoints" / "step_00000003"
    step.mkdir(parents=True)
    (step / MODEL_FILE).write_bytes(b"weights")
    (step / TRAINER_FILE).write_text(json.dumps({"step": 3}))
    code, lines = _run(capsys, _args(workspace["store"], taken, workspace["cache"]))
    assert code == 2 and lines[-1]["kind"] == "run_folder" and "--resume" in lines[-1]["message"]
    assert not (taken / EVENTS_FILE).exists()
    # A folder that does not exist is not made for an error.
    code, _ = _run(capsys, ["--out", str(tmp_path / "nowhere"), "--no-such-flag"])
    assert code == 2 and not (tmp_path / "nowhere").exists()


def _events_of_a_run() -> list[dict]:
    """The events of a short run with a resume, as the trainer reports them (shapes as in
    tests/model/test_trainer.py)."""
    loss = {"total": 1.5, "video": 0.9, "action": 0.6}
    return [
        {"event": "started", "time": 0.0, "pid": 1, "host": "h", "world_size": 1, "resume": False},
        {"event": "stage", "stage": "select", "message": "finding episodes"},
        {"event": "episodes", "train": 3, "val": 1, "train_steps": 99, "val_steps": 33, "tasks": ["fold the towel"],
         "variant": "fastwam", "val_names": ["episode_3.hdf5"]},
        {"event": "stage", "stage": "autoencoder", "message": "pretraining the video autoencoder (3 steps)"},
        {"event": "autoencoder", "step": 3, "steps": 3, "loss": 0.25, "samples_per_s": 9.0, "eta_s": 0.0},
        {"event": "autoencoder_ready", "source": "/r/autoencoder", "trained": True, "loss": 0.25, "seconds": 1.0},
        {"event": "stage", "stage": "cache", "message": "encoding episodes (cached after the first time)"},
        {"event": "cache", "what": "latents", "episode": "episode_0.hdf5", "index": 0, "of": 1, "hit": False,
         "seconds": 0.5},
        {"event": "stage", "stage": "train", "message": "training steps 0..6", "steps": 6, "start_step": 0},
        *({"event": "progress", "step": s, "steps": 6, "epoch": 0.1, "loss": loss, "lr": 1e-4, "samples_per_s": 40.0,
           "eta_s": 6.0 - s, "elapsed_s": float(s)} for s in range(1, 7)),
        {"event": "validation", "step": 6, "val_loss": loss, "best": True, "best_step": 6},
        {"event": "checkpoint", "step": 6, "path": "/r/checkpoints/step_00000006"},
        {"event": "summary", "steps": 6, "final_loss": loss, "best_val_action_loss": 0.6, "best_step": 6,
         "checkpoint": "/r/checkpoints/step_00000006", "best_checkpoint": "/r/best", "run_dir": "/r",
         "elapsed_s": 12.0, "samples_per_s": 40.0, "train_episodes": 3, "val_episodes": 1},
    ]


def test_json_lines_are_the_events_as_they_came():
    out = io.StringIO()
    with JsonLinesReporter(out) as reporter:
        for record in _events_of_a_run():
            reporter.event(record["event"], **{k: v for k, v in record.items() if k != "event"})
    assert [json.loads(line) for line in out.getvalue().splitlines()] == _events_of_a_run()
    assert isinstance(open_reporter(None, TrainingView(), stream=io.StringIO()), JsonLinesReporter)  # not a terminal


def test_the_terminal_display_reads_like_the_panel():
    out = io.StringIO()
    with open_reporter(json_lines=False, view=TrainingView(), stream=out) as reporter:
        for record in _events_of_a_run():
            reporter.event(record["event"], **{k: v for k, v in record.items() if k != "event"})
    text = out.getvalue()
    assert "{" not in text  # no JSON for people
    assert "3 training episodes (99 steps), held out for validation: episode_3.hdf5" in text
    assert "validation at step 6: action loss 0.6" in text and "checkpoint saved at step 6" in text
    assert "step 3/6" not in text  # progress goes to the bar, not to lines
    for words in ("Training finished", "policy to run", "/r/best", "1.5 (action 0.6, video 0.9)", "12 s",
                  "3 for training, 1 for validation"):
        assert words in text, words

    out = io.StringIO()
    with open_reporter(json_lines=False, view=TrainingView(), stream=out) as reporter:
        reporter.event("error", kind="no_episodes", message="no episodes to train on", what_to_do="Record demos")
    assert "Training failed" in out.getvalue() and "Record demos" in out.getvalue()


def _drain(master: int, into: list[bytes]) -> None:
    """Everything written to the terminal, until the process closes it (EIO)."""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        into.append(data)


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _read_all(follower: RunFollower) -> None:
    follower.poll()
    while follower.loading:
        follower.poll()


def test_a_run_from_a_terminal_is_shown_there_and_followed_cancelled_and_resumed_by_the_panels_core(workspace,
                                                                                                    tmp_path):
    """No window started it: the run's folder alone lets the Training panel's core see it live,
    stop it and follow the next start (the trainer records its process and events there)."""
    out = tmp_path / "runs" / "from-a-terminal"
    args = _args(workspace["store"], out, workspace["cache"], "--threads", "1", "--val-every", "1000",
                 "--checkpoint-every", "1000", steps=2000)
    master, slave = pty.openpty()
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MUJOCO_GL": "egl",
           "COLUMNS": "140", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "train", *args], stdin=slave, stdout=slave,
                            stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    written: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(master, written), daemon=True)
    reader.start()
    try:
        _wait_for(lambda: any(e["event"] == "progress" for e in _logged(out)), 240, "training to start")
        assert find_runs(out.parent) == [out]
        follower = RunFollower(out)
        _read_all(follower)
        assert follower.state.outcome is Outcome.RUNNING and follower.state.stage == "train"
        assert follower.job.pid == proc.pid and follower.job.argv[:2] == (str(RUN_PY), "train")
        assert follower.job_alive() and follower.cancel()
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
        os.close(master)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(written).decode("utf-8", errors="replace"))
    assert '{"event"' not in screen  # a terminal gets the display, not JSON lines
    for words in ("encoding episodes", "training", "/2000", "loss", "Training stopped", "--resume"):
        assert words in screen, (words, screen[-2000:])

    _wait_for(lambda: (follower.poll() or True) and follower.state.outcome is Outcome.CANCELLED, 30, "the cancel")
    stopped = follower.state.cancelled["step"]
    assert sorted(follower.state.train_loss) == list(range(1, stopped + 1))
    rows = checkpoint_rows(follower.state, out)
    assert [(r.step, r.path.name) for r in rows] == [(stopped, f"step_{stopped:08d}")]
    assert rows[0].train_loss == follower.state.train_loss[stopped]

    # Resumed from a script (JSON lines): the follower sees the new process and its steps.
    code, lines, stderr = support.run_train([*args, "--resume", "--stop-after-steps", str(stopped + 3)])
    assert code == 130, stderr[-3000:]
    assert lines[0]["event"] == "started" and lines[0]["resume"] and lines[-1]["event"] == "cancelled"
    _read_all(follower)
    state = follower.state
    assert state.attempts == 2 and state.processes_started == 2 and state.outcome is Outcome.CANCELLED
    assert follower.job.pid == lines[0]["pid"] != proc.pid and not follower.job_alive()
    assert sorted(state.train_loss) == list(range(1, stopped + 4))
    assert [r.step for r in checkpoint_rows(state, out)] == [stopped + 3, stopped]
