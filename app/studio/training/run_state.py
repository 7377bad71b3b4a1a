"""A training run as the window shows it, without Qt: `RunState` turns the run's events (its
train.jsonl, `model.run_folder.Event`) into the stage, progress and ETA, loss curves, validation
points, checkpoints and the outcome; `checkpoint_rows` lists the checkpoints on disk with them.
The command line's progress display reads the same state (`app.studio.jobs.train`).
"""

from __future__ import annotations

import enum
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.run_folder import BEST_DIR, FINAL_EVENTS, Event, best_checkpoint, complete_checkpoints

log = logging.getLogger(__name__)


class Outcome(str, enum.Enum):
    NONE = "none"  # nothing started in this folder yet
    RUNNING = "running"
    FINISHED = "finished"  # a summary line
    CANCELLED = "cancelled"  # a cancelled line (exit 130)
    FAILED = "failed"  # an error line: message and what to do
    CRASHED = "crashed"  # the process is gone without a final line


FINAL_OUTCOMES = (Outcome.FINISHED, Outcome.CANCELLED, Outcome.FAILED, Outcome.CRASHED)

#: What each stage is called where the user reads it.
STAGE_TEXT = {
    "starting": "starting the training process",
    "select": "finding episodes",
    "canvases": "decoding the episodes' frames",
    "autoencoder": "pretraining the video autoencoder",
    "cache": "encoding episodes",
    "train": "training",
}


@dataclass(frozen=True)
class LogLine:
    text: str
    level: str = "info"  # info | warning | error | stderr


@dataclass(frozen=True)
class CheckpointRow:
    """One row of the checkpoints table. train_loss: the mean (total, video, action) logged at
    `step` (or the nearest earlier log); val_loss: the validation at `step`, if any;
    sampled_error: the validation's sampled-action error (mean end-point error of the policy's
    own chunks against the demonstrations, normalised units; what best/ is chosen by), if any."""

    step: int
    path: Path
    train_loss: tuple[float, float, float] | None
    val_loss: tuple[float, float, float] | None
    best: bool
    sampled_error: float | None = None

    @property
    def is_best_folder(self) -> bool:
        """The run's best/ (a copy of the best step's checkpoint), not a checkpoints/ folder."""
        return self.path.name == BEST_DIR


@dataclass
class RunState:
    """Everything the panel shows about one run, built from its JSON lines in order.

    Losses are kept per step: a resumed run overwrites the steps after its checkpoint, so the
    curves show the run as it now stands, not both attempts.
    """

    outcome: Outcome = Outcome.NONE
    stage: str = ""
    stage_done: int | None = None
    stage_total: int | None = None
    eta_s: float | None = None
    steps: int | None = None  # the run's total training steps
    train_loss: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    val_loss: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    sampled_error: dict[int, float] = field(default_factory=dict)  # step -> validation's sampled-action error
    checkpoints: dict[int, Path] = field(default_factory=dict)
    best_step: int | None = None
    episodes: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    cancelled: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)  # of the current attempt (e.g. a default task applied)
    attempts: int = 0
    samples_per_s: float | None = None
    lr: float | None = None
    processes_started: int = 0  # `started` events seen (a trainer took the folder)
    last_lines: deque = field(default_factory=lambda: deque(maxlen=40))  # rendered, for a crash report
    _cache_seconds: list = field(default_factory=list)
    _awaiting_process: bool = False  # the window's job_started came; its trainer's `started` not yet

    # -- feeding ------------------------------------------------------------------------------
    def feed_line(self, line: str) -> LogLine | None:
        """One line of train.jsonl; a line that is not an event is shown as it is (e.g. a
        library's print), one of an unexpected shape as a warning."""
        line = line.strip()
        if not line:
            return None
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "event" not in record:
            return self._remember(LogLine(line, "stderr"))
        return self.feed_record(record)

    def feed_record(self, record: dict[str, Any]) -> LogLine | None:
        """One event; what it means for the run, rendered as a log line."""
        try:
            return self._remember(self.feed(record))
        except (KeyError, TypeError, ValueError) as error:
            # A line of an unexpected shape must not stop the panel from following the run.
            log.warning("Unexpected training event %s: %s", json.dumps(record)[:200], error)
            return self._remember(LogLine(json.dumps(record), "warning"))

    def _remember(self, line: LogLine | None) -> LogLine | None:
        if line is not None:
            self.last_lines.append(line.text)
        return line

    def feed(self, r: dict[str, Any]) -> LogLine | None:
        event = Event.known(r["event"])
        handler = self._HANDLERS.get(event)
        if handler is None:
            text = r.get("message") or json.dumps({k: v for k, v in r.items() if k != "event"})
            return LogLine(f"{r['event']}: {text}")
        if event in FINAL_EVENTS:
            self._awaiting_process = False
        return handler(self, r)

    def _set_stage(self, stage: str, done: int | None = None, total: int | None = None) -> None:
        if stage != self.stage:
            self._cache_seconds = []
            self.eta_s = None
        self.stage, self.stage_done, self.stage_total = stage, done, total

    def _begin_attempt(self) -> None:
        self.attempts += 1
        self.outcome = Outcome.RUNNING
        self.summary = self.cancelled = self.error = None
        self.warnings = []
        self._set_stage("starting")

    def _on_job_started(self, r) -> LogLine:
        """The window is about to start the job (its process answers with `started`)."""
        self._begin_attempt()
        self._awaiting_process = True
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("time", time.time())))
        verb = "resuming" if r.get("resume") else "starting"
        return LogLine(f"── {when}: {verb} the training job ──")

    def _on_started(self, r) -> LogLine:
        """The trainer took the folder. After the window's `job_started` this is that job; alone it
        is a start from elsewhere (a terminal, torchrun), a new attempt all the same."""
        self.processes_started += 1
        where = f"process {r.get('pid', '?')} on {r.get('host', '?')}"
        if r.get("world_size", 1) > 1:
            where += f" and {r['world_size'] - 1} more (torchrun)"
        if self._awaiting_process and self.outcome is Outcome.RUNNING:
            self._awaiting_process = False
            return LogLine(f"training {where} started")
        self._begin_attempt()
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("time", time.time())))
        verb = "resumed" if r.get("resume") else "started"
        return LogLine(f"── {when}: training {verb} from the command line ({where}) ──")

    def _on_stage(self, r) -> LogLine:
        stage = r["stage"]
        if stage == "train":
            self.steps = r.get("steps", self.steps)
            self._set_stage(stage, r.get("start_step", 0), self.steps)
            extra = f" on {r.get('device', '?')}, batch {r.get('batch_size', '?')}"
        else:
            self._set_stage(stage)
            extra = ""
        return LogLine(f"{r.get('message', STAGE_TEXT.get(stage, stage))}{extra}")

    def _on_episodes(self, r) -> LogLine:
        self.episodes = r
        val = r.get("val_names") or []
        held = f", held out for validation: {', '.join(val)}" if val else " (none held out for validation)"
        return LogLine(f"{r['train']} training episodes ({r.get('train_steps', '?')} steps){held}; "
                       f"tasks: {', '.join(r.get('tasks', []))}")

    def _on_cache(self, r) -> LogLine:
        stage = "canvases" if r.get("what") == "canvases" else "cache"
        done, total = int(r["index"]) + 1, int(r["of"])
        self._set_stage(stage, done, total)
        if not r.get("hit"):
            self._cache_seconds.append(float(r.get("seconds", 0.0)))
        if self._cache_seconds:
            mean = sum(self._cache_seconds[-20:]) / len(self._cache_seconds[-20:])
            self.eta_s = mean * (total - done)
        what = "decoded" if stage == "canvases" else ("found in the cache" if r.get("hit") else "encoded")
        return LogLine(f"{r.get('episode', '?')} {what} ({done}/{total})")

    def _on_autoencoder(self, r) -> LogLine:
        self._set_stage("autoencoder", int(r["step"]), int(r["steps"]))
        self.eta_s = r.get("eta_s")
        return LogLine(f"autoencoder step {r['step']}/{r['steps']}: loss {r['loss']:.4g}")

    def _on_autoencoder_ready(self, r) -> LogLine:
        how = "trained" if r.get("trained") else "reused"
        return LogLine(f"video autoencoder {how}: {r.get('source', '')}")

    def _on_cache_ready(self, r) -> LogLine:
        return LogLine(f"episodes encoded: {r.get('built', 0)} new, {r.get('hits', 0)} from the cache")

    def _on_resumed(self, r) -> LogLine:
        step = int(r["step"])
        for losses in (self.train_loss, self.val_loss):
            for later in [s for s in losses if s > step]:
                del losses[later]
        return LogLine(f"resumed from step {step}: {r.get('checkpoint', '')}")

    def _on_progress(self, r) -> LogLine:
        step, steps = int(r["step"]), int(r["steps"])
        loss = r["loss"]
        self.train_loss[step] = (float(loss["total"]), float(loss["video"]), float(loss["action"]))
        self.steps = steps
        self._set_stage("train", step, steps)
        self.eta_s = r.get("eta_s")
        self.samples_per_s = r.get("samples_per_s")
        self.lr = r.get("lr")
        return LogLine(f"step {step}/{steps}: loss {loss['total']:.4g} (action {loss['action']:.4g}, "
                       f"video {loss['video']:.4g}), lr {r.get('lr', 0):.3g}, {r.get('samples_per_s', 0):.3g} samples/s")

    def _on_validation(self, r) -> LogLine:
        step = int(r["step"])
        val = r["val_loss"]
        self.val_loss[step] = (float(val["total"]), float(val["video"]), float(val["action"]))
        sampled = (r.get("sampled_action_error") or {}).get("epe")
        if sampled is not None:
            self.sampled_error[step] = float(sampled)
        self.best_step = r.get("best_step", self.best_step)
        best = " (best so far)" if r.get("best") else ""
        error = "" if sampled is None else f", sampled-action error {sampled:.4g}"
        return LogLine(f"validation at step {step}: action loss {val['action']:.4g}, total {val['total']:.4g}{error}{best}")

    def _on_checkpoint(self, r) -> LogLine:
        self.checkpoints[int(r["step"])] = Path(r["path"])
        return LogLine(f"checkpoint saved at step {r['step']}: {r['path']}")

    def _on_cancelled(self, r) -> LogLine:
        self.outcome = Outcome.CANCELLED
        self.cancelled = r
        self.eta_s = None
        where = f" at step {r['step']}" if r.get("step") is not None else ""
        return LogLine(f"stopped{where}; {r.get('message', '')}", "warning")

    def _on_summary(self, r) -> LogLine:
        self.outcome = Outcome.FINISHED
        self.summary = r
        self.best_step = r.get("best_step", self.best_step)
        self.steps = r.get("steps", self.steps)
        self._set_stage("train", self.steps, self.steps)
        self.eta_s = 0.0
        best = r.get("best_val_action_loss")
        best_text = f"; best validation action loss {best:.4g} at step {r.get('best_step')}" if best is not None else ""
        return LogLine(f"finished {r.get('steps')} steps in {format_duration(r.get('elapsed_s', 0))}{best_text}")

    def _on_warning(self, r) -> LogLine:
        self.warnings.append(str(r.get("message", "")))
        return LogLine(f"warning: {r.get('message', '')}", "warning")

    def _on_error(self, r) -> LogLine:
        self.outcome = Outcome.FAILED
        self.error = r
        self.eta_s = None
        return LogLine(f"error: {r.get('message', '')} — {r.get('what_to_do', '')}", "error")

    _HANDLERS = {
        Event.JOB_STARTED: _on_job_started, Event.STARTED: _on_started, Event.STAGE: _on_stage,
        Event.EPISODES: _on_episodes, Event.CACHE: _on_cache, Event.AUTOENCODER: _on_autoencoder,
        Event.AUTOENCODER_READY: _on_autoencoder_ready, Event.CACHE_READY: _on_cache_ready,
        Event.RESUMED: _on_resumed, Event.PROGRESS: _on_progress, Event.VALIDATION: _on_validation,
        Event.CHECKPOINT: _on_checkpoint, Event.CANCELLED: _on_cancelled, Event.SUMMARY: _on_summary,
        Event.ERROR: _on_error, Event.WARNING: _on_warning,
    }

    def mark_stopped_early(self) -> LogLine:
        return self._on_cancelled({"step": None, "checkpoint": None,
                                   "message": "stopped while starting, before it had done anything to keep"})

    def mark_crashed(self) -> LogLine:
        self.outcome = Outcome.CRASHED
        self.eta_s = None
        return LogLine("the training process stopped without a final message (it crashed or was killed)", "error")

    # -- what the panel reads -----------------------------------------------------------------
    @property
    def fraction(self) -> float | None:
        """Done share of the current stage (0..1), None when unknown."""
        if self.outcome is Outcome.FINISHED:
            return 1.0
        if self.stage_done is None or not self.stage_total:
            return None
        return max(0.0, min(1.0, self.stage_done / self.stage_total))

    def status_text(self) -> str:
        """One line: what the job does now, or how it ended."""
        if self.outcome is Outcome.NONE:
            return "No training started in this run folder."
        if self.outcome is Outcome.FINISHED:
            return "Finished."
        if self.outcome is Outcome.CANCELLED:
            return "Stopped (cancelled)."
        if self.outcome is Outcome.FAILED:
            return "Failed: " + str((self.error or {}).get("message", ""))
        if self.outcome is Outcome.CRASHED:
            return "The training process stopped unexpectedly."
        text = STAGE_TEXT.get(self.stage, self.stage)
        if self.stage_done is not None and self.stage_total:
            text += f" {self.stage_done}/{self.stage_total}"
        return text[:1].upper() + text[1:]

    def eta_text(self) -> str:
        if self.outcome is not Outcome.RUNNING or self.eta_s is None:
            return ""
        return f"about {format_duration(self.eta_s)} left" + (" in this stage" if self.stage != "train" else "")

    def final_train_step(self) -> int | None:
        return max(self.train_loss) if self.train_loss else None

    def train_loss_at(self, step: int) -> tuple[float, float, float] | None:
        earlier = [s for s in self.train_loss if s <= step]
        return self.train_loss[max(earlier)] if earlier else None


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, rest = divmod(seconds, 3600)
    return f"{int(hours)} h {rest / 60:02.0f} min"


def checkpoint_rows(state: RunState, run_dir: Path) -> list[CheckpointRow]:
    """The checkpoints still on disk (the trainer keeps the last few), newest first, then best/.

    Metrics come from the run's lines; a folder the lines do not mention (a run started from the
    command line) is listed from disk with what its step tells.
    """
    folders = complete_checkpoints(run_dir)
    rows = [
        CheckpointRow(step, folder, state.train_loss_at(step), state.val_loss.get(step), step == state.best_step,
                      state.sampled_error.get(step))
        for step, folder in sorted(folders.items(), reverse=True)
    ]
    best = best_checkpoint(run_dir)
    if best is not None:
        folder, step = best[0], best[1] if best[1] is not None else state.best_step
        if step is not None:
            rows.append(CheckpointRow(step, folder, state.train_loss_at(step), state.val_loss.get(step), True,
                                      state.sampled_error.get(step)))
    return rows
