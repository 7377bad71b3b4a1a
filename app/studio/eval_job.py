"""The Policy panel's "Evaluate in sim" as a `python run.py eval` process, without Qt.

    request = EvalRequest(checkpoint, episodes=10, first_seed=1000, strategy="ensemble", save_dir=folder)
    program, arguments = eval_command(request)      # what the window starts (QProcess)
    progress = EvalProgress(request.episodes)
    progress.feed(line)                             # each stdout line of the job (JSON lines)
    progress.text, progress.tally.summary()         # "3 of 10 rollouts: 2 folded (67 %, 95 % ...)"
    progress.finish(exit_code, cancelled=False)     # when the process has ended

The job prints `eval_start`, one `episode` line per rollout, then `summary` (or `error` /
`cancelled`) - see `app.studio.jobs.evaluate`. The tally is `app.studio.evaluation.EvalTally`, so
the panel's interval is the Wilson interval `run.py eval` itself reports.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app.studio.evaluation import EvalTally, wilson_interval
from app.studio.paths import RUN_PY

#: Rollouts of one evaluation go into a store of their own under here (git-ignored runs/), so
#: they are reviewed in the workbench without mixing into the demonstrations a policy trains on.
EVALUATIONS_FOLDER = "evaluations"


@dataclass(frozen=True)
class EvalRequest:
    """What the panel asks `run.py eval` for. checkpoint: a checkpoint or run folder; episodes:
    rollouts, one towel seed each from first_seed (1000 on: seeds the demos never used);
    strategy: plain / ensemble / rtc; device: cpu / cuda / None (cuda when present); max_seconds:
    simulated seconds before a rollout counts as failed; save_dir: the store the rollouts are
    recorded into (None: not recorded); rig: the simulated rig file."""

    checkpoint: Path
    episodes: int
    first_seed: int
    strategy: str
    rig: Path
    device: str | None = None
    max_seconds: float = 15.0
    save_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"Evaluate at least one episode (asked for {self.episodes}).")
        if self.max_seconds <= 0:
            raise ValueError(f"The time limit per episode must be positive (got {self.max_seconds:g} s).")


def evaluation_store(root: Path, checkpoint: Path, now: float | None = None) -> Path:
    """A fresh store folder for one evaluation's rollouts: root/evaluations/<run>-<time>."""
    name = checkpoint.parent.name if checkpoint.name == "best" else checkpoint.name
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path(root) / EVALUATIONS_FOLDER / f"{name}-{stamp}"


def eval_argv(request: EvalRequest) -> list[str]:
    """The `run.py eval` command line (without the Python interpreter) of `request`."""
    argv = [str(RUN_PY), "eval", "--checkpoint", str(request.checkpoint), "--episodes", str(request.episodes),
            "--seed", str(request.first_seed), "--strategy", request.strategy, "--rig", str(request.rig),
            "--max-seconds", f"{request.max_seconds:g}"]
    if request.device is not None:
        argv += ["--device", request.device]
    if request.save_dir is not None:
        argv += ["--save-dir", str(request.save_dir)]
    return argv


def eval_command(request: EvalRequest, python: str | None = None) -> tuple[str, list[str]]:
    """(program, arguments) that run the evaluation with this studio's Python."""
    return python or sys.executable, eval_argv(request)


def request_cancel(pid: int) -> None:
    """SIGINT: `run.py eval` stops between ticks, closes its rig and store, prints `cancelled`."""
    os.kill(pid, signal.SIGINT)


class EvalState(str, enum.Enum):
    STARTING = "starting"  # the process runs; the policy and the sim are loading
    RUNNING = "running"  # rollouts under way
    FINISHED = "finished"  # the summary came
    FAILED = "failed"  # an error line, or the process ended without a summary
    CANCELLED = "cancelled"


class EvalProgress:
    """What one evaluation job reported so far (whoever reads its stdout; not thread-safe).

    tally: the rollouts so far (`EvalTally`); summary: the job's own summary line (None before);
    message / what_to_do: the job's error, or why it ended without a summary.
    """

    def __init__(self, episodes: int) -> None:
        self.episodes = int(episodes)
        self.state = EvalState.STARTING
        self.tally = EvalTally()
        self.summary: dict | None = None
        self.message = ""
        self.what_to_do = ""
        self.last_episode: dict | None = None
        self._partial = ""

    @property
    def running(self) -> bool:
        return self.state in (EvalState.STARTING, EvalState.RUNNING)

    def feed_text(self, text: str) -> bool:
        """Feed a chunk of stdout (lines may be split across chunks); True if anything changed."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        changed = False
        for line in lines:
            changed = self.feed(line) or changed
        return changed

    def feed(self, line: str) -> bool:
        """One stdout line of the job; True if it changed the progress. Lines that are not the
        job's JSON (a library printing to stdout) are ignored."""
        line = line.strip()
        if not line.startswith("{"):
            return False
        try:
            record = json.loads(line)
        except ValueError:
            return False
        event = record.get("event") if isinstance(record, dict) else None
        if event == "eval_start":
            self.episodes = int(record.get("episodes", self.episodes))
            self.state = EvalState.RUNNING
        elif event == "episode":
            self.tally.add(bool(record.get("success")), float(record.get("fold_error_m", float("nan"))), ())
            self.last_episode = record
            self.state = EvalState.RUNNING
        elif event == "summary":
            self.summary = record
            self.state = EvalState.FINISHED
        elif event == "error":
            self.state = EvalState.FAILED
            self.message = str(record.get("message", "the evaluation failed"))
            self.what_to_do = str(record.get("what_to_do", ""))
        elif event == "cancelled":
            self.state = EvalState.CANCELLED
        else:
            return False
        return True

    def finish(self, exit_code: int, cancelled: bool = False) -> None:
        """The process ended (`cancelled`: the user asked it to): settle the final state."""
        if self._partial:
            self.feed(self._partial)
            self._partial = ""
        if self.state in (EvalState.FINISHED, EvalState.FAILED, EvalState.CANCELLED):
            return
        if cancelled:
            self.state = EvalState.CANCELLED
            return
        self.state = EvalState.FAILED
        self.message = f"The evaluation stopped without a result (exit code {exit_code})."
        self.what_to_do = "Run `python run.py eval --checkpoint ...` in a terminal to see why."

    @property
    def interval(self) -> tuple[float, float]:
        """95 % Wilson interval of the success rate so far ((0, 1) before the first rollout)."""
        return wilson_interval(self.tally.successes, self.tally.episodes)

    @property
    def text(self) -> str:
        """One line for the panel."""
        done, wins = self.tally.episodes, self.tally.successes
        if self.state is EvalState.STARTING:
            return "Starting: loading the policy and the simulation…"
        if self.state is EvalState.FAILED:
            return f"Failed: {self.message}" + (f" {self.what_to_do}" if self.what_to_do else "")
        if done == 0:
            head = f"0 of {self.episodes} rollouts done"
        else:
            lo, hi = self.interval
            head = (f"{done} of {self.episodes} rollouts: {wins} folded ({100 * wins / done:.0f} %, "
                    f"95 % interval {100 * lo:.0f}-{100 * hi:.0f} %)")
        if self.state is EvalState.CANCELLED:
            return f"Cancelled. {head}"
        if self.state is EvalState.FINISHED:
            return f"Done. {head}"
        return head
