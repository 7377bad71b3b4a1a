"""The Policy panel's "Evaluate in sim" without Qt (app/studio/eval_job.py): the `run.py eval`
command line it starts, and the progress it reads from the job's JSON lines (written below as the
job writes them, `model.json_lines.json_line` of {"event": ..., fields}; the window runs the real
job in tests/app/ui/test_policy_window.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.studio.eval_job import EvalProgress, EvalRequest, EvalState, eval_argv, evaluation_store
from app.studio.evaluation import wilson_interval
from model.json_lines import json_line


def job_lines(*events: tuple[str, dict]) -> str:
    return "".join(json_line({"event": event, **fields}) + "\n" for event, fields in events)


def test_the_command_line_names_what_the_panel_chose(tmp_path):
    request = EvalRequest(Path("runs/a"), episodes=5, first_seed=1000, strategy="rtc", rig=Path("configs/sim.toml"),
                          device="cpu", max_seconds=12.5, save_dir=tmp_path / "out")
    argv = eval_argv(request)
    assert argv[0].endswith("run.py") and argv[1] == "eval"
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert flags == {"--checkpoint": "runs/a", "--episodes": "5", "--seed": "1000", "--strategy": "rtc",
                     "--rig": "configs/sim.toml", "--max-seconds": "12.5", "--device": "cpu",
                     "--save-dir": str(tmp_path / "out")}
    auto = eval_argv(EvalRequest(Path("runs/a"), 1, 0, "ensemble", Path("sim.toml")))
    assert "--device" not in auto and "--save-dir" not in auto  # cuda when present; not recorded
    with pytest.raises(ValueError, match="at least one episode"):
        EvalRequest(Path("runs/a"), 0, 0, "ensemble", Path("sim.toml"))
    store = evaluation_store(tmp_path, Path("/x/runs/tiny-3/best"), now=0)
    assert store.parent == tmp_path / "evaluations" and store.name.startswith("tiny-3-")


def test_progress_counts_rollouts_with_their_interval_as_they_arrive():
    progress = EvalProgress(3)
    assert progress.state is EvalState.STARTING and "loading" in progress.text
    out = job_lines(("eval_start", {"episodes": 3, "checkpoint": "c"}),
                    ("episode", {"seed": 1000, "success": True, "fold_error_m": 0.01}),
                    ("episode", {"seed": 1001, "success": False, "fold_error_m": 0.2}))
    # Lines arrive in pieces (a pipe's reads), and a library may print to stdout.
    cut = len(out) // 2 + 3
    assert progress.feed_text("loading weights...\n" + out[:cut]) is True
    assert progress.tally.episodes <= 1
    progress.feed_text(out[cut:])
    assert progress.state is EvalState.RUNNING and (progress.tally.successes, progress.tally.episodes) == (1, 2)
    lo, hi = wilson_interval(1, 2)
    assert progress.interval == (lo, hi)
    assert progress.text == f"2 of 3 rollouts: 1 folded (50 %, 95 % interval {100 * lo:.0f}-{100 * hi:.0f} %)"
    progress.feed_text(job_lines(("episode", {"seed": 1002, "success": True, "fold_error_m": 0.02}),
                                 ("summary", {"episodes": 3, "successes": 2, "success_ci95": [0.2, 0.94]})))
    assert progress.state is EvalState.FINISHED and progress.summary["successes"] == 2
    progress.finish(0)
    assert progress.state is EvalState.FINISHED and progress.text.startswith("Done. 3 of 3 rollouts: 2 folded")


def test_an_error_a_cancel_and_a_silent_death_each_say_what_happened():
    failed = EvalProgress(5)
    failed.feed_text(job_lines(("error", {"kind": "checkpoint_mismatch", "message": "cameras differ",
                                                  "what_to_do": "Evaluate it on a matching rig."})))
    failed.finish(4)
    assert failed.state is EvalState.FAILED and failed.text == "Failed: cameras differ Evaluate it on a matching rig."

    cancelled = EvalProgress(5)
    cancelled.feed_text(job_lines(("eval_start", {"episodes": 5}),
                                  ("episode", {"success": False, "fold_error_m": 0.3})))
    cancelled.finish(-2, cancelled=True)  # killed before it could say `cancelled`
    assert cancelled.state is EvalState.CANCELLED and cancelled.text.startswith("Cancelled. 1 of 5 rollouts: 0 folded")

    died = EvalProgress(5)
    died.feed_text(job_lines(("eval_start", {"episodes": 5})))
    died.finish(1)
    assert died.state is EvalState.FAILED and "without a result (exit code 1)" in died.text
