"""Training from the window, without Qt: the job's command line, its files, its events as a run
state, and the rows of the episode chooser.

The job is `python run.py train ...` (model/train.py) in a process of its own, never in the GUI
process; it may outlive the window. So everything a window needs to follow it, or to pick it up
again after a restart, lives in the run folder:

    job.json      who runs it: pid, argv, host, start time (written by the window at each start)
    train.jsonl   the job's stdout, JSON lines with "event" first (model/train.py's docstring);
                  each start is preceded by a {"event": "job_started"} line the window writes, so a
                  resumed run's lines follow the cancelled or crashed attempt's in one file
    train.log     the job's stderr (logging, tracebacks)
    run.json, autoencoder/, checkpoints/step_XXXXXXXX/, latest.json, best/   the trainer's own

The window reads these files as they grow (`FileTail`); `RunState` turns the lines into what the
panel shows (stage, progress and ETA, loss curves, validation points, checkpoints, the outcome).
A job whose process is gone without a final `summary`, `cancelled` or `error` line crashed.

No torch and no model import here: the app only builds a command line and reads JSON.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import shlex
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from recordings.errors import EpisodeFormatError
from recordings.locks import recording_in_progress
from recordings.store import DEFAULT_STORE_DIR, EpisodeStore

from app.studio.paths import REPO_ROOT, RUN_PY, RUNS_ROOT

log = logging.getLogger(__name__)


#: The trainer's presets (model/config.py PRESETS); their hyper-parameters stay the trainer's.
PRESETS: tuple[str, ...] = ("tiny", "small", "fastwam-5b")
PRESET_HINTS: dict[str, str] = {
    "tiny": "Small model from scratch; runs on this CPU (~30 min for 60 demos).",
    "small": "Larger model from scratch; needs a GPU (hours).",
    "fastwam-5b": "Fine-tunes the 5 B Fast-WAM; needs big GPUs and the Wan2.2 weights "
                  "(More options: --wan-vae-dir FOLDER).",
}
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

JOB_FILE = "job.json"
EVENTS_FILE = "train.jsonl"
STDERR_FILE = "train.log"
# The trainer's file names (model/train.py, model/checkpoint.py), read here without importing it.
LATEST_FILE = "latest.json"
TRAINER_FILE = "trainer.json"
MODEL_FILE = "model.safetensors"
BEST_DIR = "best"

#: Flags the panel sets from its own fields; under "More options" they would contradict them.
PANEL_FLAGS = ("--episodes", "--labels", "--preset", "--out", "--resume")


# ------------------------------------------------------------------------------------------------
# Settings and the command line
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """What the user chose in the panel. None = the preset's default (the flag is not passed).

    episodes: the chosen episode files (passed one by one, so the run trains on exactly these);
    labels: their success labels, passed as --labels so the trainer keeps every chosen file;
    extra_args: further `run.py train` flags, passed as they are (e.g. --threads 1, --set k=v).
    """

    episodes: tuple[Path, ...]
    labels: tuple[str, ...]
    run_dir: Path
    preset: str = "tiny"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    video_cotraining: bool = True
    checkpoint_every: int | None = None
    device: str = "auto"
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "episodes", tuple(Path(p) for p in self.episodes))
        object.__setattr__(self, "labels", tuple(sorted(set(self.labels))))
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        if not self.episodes:
            raise ValueError("No episodes are chosen: tick at least one episode in the list.")
        if not self.labels:
            raise ValueError("The chosen episodes' labels are unknown: press Refresh to read them again.")
        if self.preset not in PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}.")
        for name, value in (("steps", self.steps), ("batch size", self.batch_size),
                            ("checkpoint every", self.checkpoint_every)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be 1 or more (or empty for the preset's), got {value}.")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"The learning rate must be a positive number such as 1e-4 (or empty), got {self.lr}.")
        if self.device not in DEVICES:
            raise ValueError(f"Unknown device {self.device!r}; choose one of {', '.join(DEVICES)}.")
        for arg in self.extra_args:
            if arg.split("=", 1)[0] in PANEL_FLAGS:
                raise ValueError(f"{arg.split('=', 1)[0]} is set by the panel's own fields; remove it from More options.")


def parse_extra_args(text: str) -> tuple[str, ...]:
    """The "More options" field -> flags (shell quoting rules); ValueError says what is wrong."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as error:
        raise ValueError(f"More options cannot be read ({error}); check the quotes.") from None
    if args and not args[0].startswith("-"):
        raise ValueError(f"More options must start with a flag such as --threads, not {args[0]!r}.")
    return args


def parse_lr(text: str) -> float | None:
    """The learning-rate field: empty = the preset's; ValueError with the fix otherwise."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"The learning rate {text!r} is not a number; write it like 1e-4 or 0.0005.") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"The learning rate must be a positive number such as 1e-4, got {text}.")
    return value


def train_argv(settings: TrainSettings, resume: bool = False) -> list[str]:
    """The arguments after the Python executable: [run.py, "train", ...] for `settings`."""
    argv = [str(RUN_PY), "train", "--episodes", *(str(p) for p in settings.episodes),
            "--labels", ",".join(settings.labels), "--preset", settings.preset, "--out", str(settings.run_dir)]
    for flag, value in (("--steps", settings.steps), ("--batch-size", settings.batch_size),
                        ("--lr", settings.lr), ("--checkpoint-every", settings.checkpoint_every)):
        if value is not None:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    if not settings.video_cotraining:
        argv.append("--no-video-cotraining")
    if settings.device != "auto":
        argv += ["--device", settings.device]
    argv += settings.extra_args
    if resume:
        argv.append("--resume")
    return argv


def resume_argv(argv: Sequence[str]) -> list[str]:
    """The same command plus --resume (once)."""
    return [a for a in argv if a != "--resume"] + ["--resume"]


def default_run_dir(preset: str, now: float | None = None, root: Path = RUNS_ROOT) -> Path:
    """runs/<preset>-<date-time>, the trainer's own default name."""
    return root / f"{preset}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


# ------------------------------------------------------------------------------------------------
# The job record and the process
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRecord:
    """job.json: the process the window started for a run folder (the newest start)."""

    pid: int
    argv: tuple[str, ...]  # after the Python executable
    python: str
    started: float  # wall-clock seconds (time.time())
    host: str
    cwd: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "argv": list(self.argv), "python": self.python, "started": self.started,
                "host": self.host, "cwd": self.cwd}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobRecord":
        return cls(int(data["pid"]), tuple(data["argv"]), str(data["python"]), float(data["started"]),
                   str(data["host"]), str(data["cwd"]))

    def save(self, run_dir: Path) -> None:
        tmp = run_dir / f".{JOB_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, run_dir / JOB_FILE)

    @classmethod
    def load(cls, run_dir: Path) -> "JobRecord | None":
        """None when the folder has no (readable) job.json."""
        try:
            return cls.from_json(json.loads((run_dir / JOB_FILE).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("Cannot read %s: %s", run_dir / JOB_FILE, error)
            return None


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int, marker: str = "") -> bool:
    """Whether process `pid` runs and (where /proc tells) has `marker` among its arguments.

    The marker (the run folder) guards against a pid the system has since given to another
    process; a zombie counts as gone (a detached job's parent is init, which may reap it late).
    """
    if pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return False
            if marker:
                return marker.encode() in (proc / "cmdline").read_bytes().split(b"\0")
            return True
        except FileNotFoundError:
            return False
        except (OSError, IndexError):
            pass  # fall back to a signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def out_arg(argv: Sequence[str]) -> str:
    """The --out value of a train command line ("" when absent)."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return ""


#: Runs as `python -c LAUNCHER EVENTS_PATH STDERR_PATH PROGRAM ARGS...`: points stdout and stderr
#: at the run folder's files (appending) and becomes the job with exec, keeping its pid. PySide6's
#: QProcess.startDetached() with output files does not hand back the pid (6.11 returns only a
#: bool), and the static form that does cannot redirect output; this joins the two.
LAUNCHER = (
    "import os, sys\n"
    "for fd, name in ((1, sys.argv[1]), (2, sys.argv[2])):\n"
    "    f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n"
    "    os.dup2(f, fd)\n"
    "    os.close(f)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def launch_command(run_dir: Path, argv: Sequence[str], python: str | None = None) -> tuple[str, list[str]]:
    """(program, arguments) that start `python argv...` with its output in the run folder's files."""
    python = python or sys.executable
    return python, ["-c", LAUNCHER, str(run_dir / EVENTS_FILE), str(run_dir / STDERR_FILE), python, *argv]


def request_cancel(pid: int) -> None:
    """SIGTERM: the trainer finishes its step, writes a checkpoint, prints `cancelled`, exits 130."""
    os.kill(pid, signal.SIGTERM)


def started_marker(argv: Sequence[str], resume: bool) -> dict[str, Any]:
    """The line the window writes into train.jsonl before each start of the job."""
    return {"event": "job_started", "time": round(time.time(), 3), "resume": resume, "argv": list(argv)}


def append_event(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / EVENTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------------------------------------
# Reading growing files
# ------------------------------------------------------------------------------------------------


class FileTail:
    """The complete lines appended to a file since the last call (a partial last line waits).

    `max_bytes` bounds one call, so a long finished run's log is read over a few calls instead of
    holding the GUI thread. A file that shrinks (replaced) is read again from its start.
    """

    def __init__(self, path: Path, max_bytes: int = 512 * 1024) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.offset = 0
        self._partial = b""

    def read_lines(self) -> list[str]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(self.max_bytes)
        self.offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in lines]

    @property
    def at_end(self) -> bool:
        try:
            return self.path.stat().st_size <= self.offset
        except FileNotFoundError:
            return True


# ------------------------------------------------------------------------------------------------
# The run state
# ------------------------------------------------------------------------------------------------


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
    `step` (or the nearest earlier log); val_loss: the validation at `step`, if any."""

    step: int
    path: Path
    train_loss: tuple[float, float, float] | None
    val_loss: tuple[float, float, float] | None
    best: bool


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
    checkpoints: dict[int, Path] = field(default_factory=dict)
    best_step: int | None = None
    episodes: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    cancelled: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    samples_per_s: float | None = None
    lr: float | None = None
    last_lines: deque = field(default_factory=lambda: deque(maxlen=40))  # rendered, for a crash report
    _cache_seconds: list = field(default_factory=list)

    # -- feeding ------------------------------------------------------------------------------
    def feed_line(self, line: str) -> LogLine | None:
        """One stdout line; a line that is not JSON is shown as it is (e.g. a library's print)."""
        line = line.strip()
        if not line:
            return None
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "event" not in record:
            return self._remember(LogLine(line, "stderr"))
        try:
            return self._remember(self.feed(record))
        except (KeyError, TypeError, ValueError) as error:
            # A line of an unexpected shape must not stop the panel from following the run.
            log.warning("Unexpected training event %s: %s", line[:200], error)
            return self._remember(LogLine(line, "warning"))

    def _remember(self, line: LogLine | None) -> LogLine | None:
        if line is not None:
            self.last_lines.append(line.text)
        return line

    def feed(self, r: dict[str, Any]) -> LogLine | None:
        event = r["event"]
        handler = getattr(self, f"_on_{event}", None)
        if handler is None:
            text = r.get("message") or json.dumps({k: v for k, v in r.items() if k != "event"})
            return LogLine(f"{event}: {text}")
        return handler(r)

    def _set_stage(self, stage: str, done: int | None = None, total: int | None = None) -> None:
        if stage != self.stage:
            self._cache_seconds = []
            self.eta_s = None
        self.stage, self.stage_done, self.stage_total = stage, done, total

    def _on_job_started(self, r) -> LogLine:
        self.attempts += 1
        self.outcome = Outcome.RUNNING
        self.summary = self.cancelled = self.error = None
        self._set_stage("starting")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("time", time.time())))
        verb = "resuming" if r.get("resume") else "starting"
        return LogLine(f"── {when}: {verb} the training job ──")

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
        self.best_step = r.get("best_step", self.best_step)
        best = " (best so far)" if r.get("best") else ""
        return LogLine(f"validation at step {step}: action loss {val['action']:.4g}, total {val['total']:.4g}{best}")

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

    def _on_error(self, r) -> LogLine:
        self.outcome = Outcome.FAILED
        self.error = r
        self.eta_s = None
        return LogLine(f"error: {r.get('message', '')} — {r.get('what_to_do', '')}", "error")

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


# ------------------------------------------------------------------------------------------------
# Checkpoints on disk
# ------------------------------------------------------------------------------------------------


def _checkpoint_step(folder: Path) -> int | None:
    """The step of a complete checkpoint folder (trainer.json and weights there), else None."""
    try:
        if not (folder / MODEL_FILE).is_file():
            return None
        return int(json.loads((folder / TRAINER_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `--resume` continues from (model.train.latest_checkpoint's rule)."""
    candidates: list[Path] = []
    try:
        candidates.append(run_dir / json.loads((run_dir / LATEST_FILE).read_text())["path"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    candidates += sorted((run_dir / "checkpoints").glob("step_*"), reverse=True)
    steps = [(step, folder) for folder in candidates if (step := _checkpoint_step(folder)) is not None]
    return max(steps, key=lambda item: item[0])[1] if steps else None


def checkpoint_rows(state: RunState, run_dir: Path) -> list[CheckpointRow]:
    """The checkpoints still on disk (the trainer keeps the last few), newest first, then best/.

    Metrics come from the run's lines; a folder the lines do not mention (a run started from the
    command line) is listed from disk with what its step tells.
    """
    folders = {}
    for folder in sorted((run_dir / "checkpoints").glob("step_*")):
        step = _checkpoint_step(folder)
        if step is not None:
            folders[step] = folder
    rows = [
        CheckpointRow(step, folder, state.train_loss_at(step), state.val_loss.get(step), step == state.best_step)
        for step, folder in sorted(folders.items(), reverse=True)
    ]
    best = run_dir / BEST_DIR
    if (best / MODEL_FILE).is_file():
        try:
            step = int(json.loads((best / "validation.json").read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            step = state.best_step
        if step is not None:
            rows.append(CheckpointRow(step, best, state.train_loss_at(step), state.val_loss.get(step), True))
    return rows


def find_runs(root: Path = RUNS_ROOT) -> list[Path]:
    """Run folders the window started (they hold job.json), newest first."""
    if not root.is_dir():
        return []
    found = []
    for entry in os.scandir(root):
        job = Path(entry.path) / JOB_FILE
        if entry.is_dir() and job.is_file():
            found.append((job.stat().st_mtime, Path(entry.path)))
    return [path for _, path in sorted(found, reverse=True)]


# ------------------------------------------------------------------------------------------------
# Following one run folder
# ------------------------------------------------------------------------------------------------


class RunFollower:
    """One run folder as the window follows it: reads what the job appended, tells whether its
    process still lives, and notices a crash. GUI thread only; `poll()` reads only new bytes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.state = RunState()
        self.job = JobRecord.load(self.run_dir)
        self._events = FileTail(self.run_dir / EVENTS_FILE)
        self._stderr = FileTail(self.run_dir / STDERR_FILE)
        self.stderr_tail: deque[str] = deque(maxlen=30)
        self.cancel_requested = False

    def job_alive(self) -> bool:
        job = self.job
        if job is None or job.host != this_host():
            return False
        return process_alive(job.pid, out_arg(job.argv))

    def poll(self) -> list[LogLine]:
        """New log lines (events rendered, then stderr), and the crash verdict when it applies."""
        out = self._read()
        if self.state.outcome is Outcome.RUNNING and not self.job_alive():
            # The process may have written its last lines just before it ended: read to the end.
            while not (self._events.at_end and self._stderr.at_end):
                out += self._read()
            if self.state.outcome is Outcome.RUNNING:
                # Asked to stop before its signal handler was in place (while Python starts), the
                # job ends at once: nothing was lost, so this is a stop, not a crash.
                out.append(self.state.mark_stopped_early() if self.cancel_requested else self.state.mark_crashed())
        return out

    def _read(self) -> list[LogLine]:
        out = [line for text in self._events.read_lines() if (line := self.state.feed_line(text)) is not None]
        for text in self._stderr.read_lines():
            if text.strip():
                self.stderr_tail.append(text)
                out.append(LogLine(text, "stderr"))
        return out

    @property
    def loading(self) -> bool:
        """More of the files is left to read (a long finished run is read over several polls)."""
        return not (self._events.at_end and self._stderr.at_end)

    def cancel(self) -> bool:
        """Ask the job to stop (it checkpoints first); False when there is no live job."""
        if self.job is None or not self.job_alive():
            return False
        request_cancel(self.job.pid)
        self.cancel_requested = True
        return True

    def resume_checkpoint(self) -> Path | None:
        return latest_complete_checkpoint(self.run_dir)

    def crash_report(self) -> str:
        """What the user reads after a crash: the job's last lines, its error output (a traceback,
        if Python got to print one), and the checkpoint Resume continues from."""
        parts = ["Its last lines:", *list(self.state.last_lines)[-5:]]
        if self.stderr_tail:
            parts += ["Its error output (train.log):", *list(self.stderr_tail)[-6:]]
        checkpoint = self.resume_checkpoint()
        parts.append(f"Resume continues from {checkpoint} (step {_checkpoint_step(checkpoint)})." if checkpoint
                     else "There is no checkpoint yet: Resume starts the training again (a finished autoencoder is kept).")
        return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# The episode chooser
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeRow:
    """One episode of the chooser (no frames read). problem: why it cannot be chosen (None if it can)."""

    path: Path
    label: str = "unknown"
    task: str = ""
    duration_s: float = 0.0
    length: int = 0
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def minutes(self) -> float:
        return self.duration_s / 60.0


#: The label filter's choices: what the user reads -> the labels kept (None = any).
LABEL_FILTERS: dict[str, tuple[str, ...] | None] = {
    "successes": ("success",),
    "failures": ("failure",),
    "successes and failures": ("success", "failure"),
    "unlabelled": ("unknown",),
    "all": None,
}
ALL_TASKS = ""


class EpisodeScanner:
    """Rows of a store's episodes; a file is read again only when its size or time changed, so
    re-scanning a store that grows while demos are collected costs the new files only.

    Reading 60 episodes' summaries takes 0.3-0.5 s on the loaded 2-core machine, so the panel
    scans in a worker thread; one scan at a time (not thread-safe).
    """

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, int], EpisodeRow]] = {}

    def scan(self, store_dir: Path) -> list[EpisodeRow]:
        store = EpisodeStore(store_dir)
        rows = []
        seen = set()
        for path in store.episode_paths():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # relabelled or removed meanwhile
            key = (stat.st_size, stat.st_mtime_ns)
            seen.add(path)
            cached = self._known.get(path)
            if cached is None or cached[0] != key:
                cached = (key, _row_of(store, path))
                self._known[path] = cached
            rows.append(cached[1])
        for path in store.partial_paths():
            live = recording_in_progress(path)
            rows.append(EpisodeRow(path, problem="being recorded now" if live
                                   else "unfinished recording: recover it with `python run.py episodes recover`"))
        for gone in set(self._known) - seen:
            del self._known[gone]
        return rows


def _row_of(store: EpisodeStore, path: Path) -> EpisodeRow:
    try:
        s = store.summary(path)
    except (EpisodeFormatError, OSError) as error:  # summary() catches these; a race may not
        return EpisodeRow(path, problem=str(error))
    return EpisodeRow(path, s.label, s.task, s.duration_s, s.length, s.problem)


def select_rows(rows: Iterable[EpisodeRow], labels: tuple[str, ...] | None, task: str = ALL_TASKS) -> list[EpisodeRow]:
    """Usable rows with one of `labels` (None = any) and the task (ALL_TASKS = any)."""
    return [r for r in rows if r.problem is None and (labels is None or r.label in labels) and (not task or r.task == task)]


def tasks_of(rows: Iterable[EpisodeRow]) -> list[str]:
    return sorted({r.task for r in rows if r.problem is None and r.task})


def selection_text(rows: Sequence[EpisodeRow]) -> str:
    minutes = sum(r.minutes for r in rows)
    return f"{len(rows)} episode{'s' if len(rows) != 1 else ''}, {minutes:.1f} minutes selected"


def default_store(candidate: Path | None) -> Path:
    """The rig's store when known, else recordings/episodes."""
    return Path(candidate) if candidate is not None else DEFAULT_STORE_DIR
