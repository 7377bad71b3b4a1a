"""The on-disk layout of a training run, and its rules, in one place and without torch: the
trainer writes a run folder through these names, the window (`app.studio.training`) and
`run.py eval` read it through them.

    <run folder>/
      run.json             the run: arguments, episodes, model config (the trainer, at each start)
      job.json             the process that runs or last ran here: pid, argv, host, start time;
                           written by the window when it launches a job (it needs the pid at
                           once) and by the trainer's rank 0 when it starts (a run started from a
                           terminal or under torchrun has one too)
      train.jsonl          the run's events, one JSON object a line, "event" first (`Event`);
                           the trainer's rank 0 and the window (its `job_started` marker) both
                           append, whole lines only
      train.log            stderr of a job the window started (logging, tracebacks)
      autoencoder/         tiny/small: the pretrained video autoencoder (vae.safetensors,
                           autoencoder.json); a restarted run reuses it
      checkpoints/step_XXXXXXXX/
                           a checkpoint (model.safetensors, config.json, normalization.json,
                           step.json, inputs.json: model/checkpoint.py) plus training_state.pt (optimizer,
                           torch RNG) and trainer.json (step, best so far, numpy/python RNG).
                           trainer.json is written last: a folder without it is incomplete
      latest.json          {"step", "path"} of the newest checkpoint
      best/                the checkpoint that scored best in validation, validation.json beside
                           its files ({"step", "val_loss"})

    Left by a save that was cut off (a kill, a full disk), removed when the next run starts
    (`model.resume.remove_partial_files`): `.best.tmp/` (a best/ being written), `.best.old/`
    (the best/ being replaced), `autoencoder.tmp/`, and hidden temporary files beside any file
    written whole (`is_partial_file`).

`RunEvents` is how a run reports: every event to the caller (a terminal, JSON lines on stdout)
and, from the trainer's rank 0, into train.jsonl. Every JSON value written here goes through
`model.json_lines` (NaN and infinities become null), so each file and line is valid JSON.

Which checkpoints can be loaded (the files read, not just there) and the run folder's
housekeeping at a start are `model.resume`, which builds on these rules.

A run moved to another machine (e.g. trained under torchrun elsewhere and copied back) reads the
same: every path inside is relative to the run folder.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from model.json_lines import json_line, json_safe

if TYPE_CHECKING:  # torch: only for the annotation
    from model.distributed import DistContext

log = logging.getLogger(__name__)

# The run folder's files.
RUN_FILE = "run.json"
JOB_FILE = "job.json"
EVENTS_FILE = "train.jsonl"
STDERR_FILE = "train.log"
AUTOENCODER_DIR = "autoencoder"
AUTOENCODER_WEIGHTS = "vae.safetensors"  # in autoencoder/
AUTOENCODER_META = "autoencoder.json"  # in autoencoder/
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
BEST_DIR = "best"
VALIDATION_FILE = "validation.json"  # in best/
# Folders of a save in progress (renamed into place when whole; see the module doc).
BEST_STAGING_DIR = ".best.tmp"
BEST_REPLACED_DIR = ".best.old"
AUTOENCODER_STAGING_DIR = AUTOENCODER_DIR + ".tmp"
STAGING_DIRS = (BEST_STAGING_DIR, BEST_REPLACED_DIR, AUTOENCODER_STAGING_DIR)

_STEP_FOLDER = re.compile(r"^step_(\d+)$")
# Temporary files of a save cut off (`is_partial_file`).
_TEMPORARY = re.compile(r"^\.(?P<name>[^/]+?)(\.[A-Za-z0-9_]{8})?(\.tmp)?$")
_SAFETENSORS_TEMPORARY = re.compile(r"^\.tmp[A-Za-z0-9]{6,}$")

# A checkpoint folder's files (model/checkpoint.py writes the first five).
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NORM_FILE = "normalization.json"
STEP_FILE = "step.json"
INPUTS_FILE = "inputs.json"  # the cameras (with any mapping), image sizes, widths and tasks trained on
TRAINER_FILE = "trainer.json"
TRAINING_STATE_FILE = "training_state.pt"


class Event(str, enum.Enum):
    """The events of train.jsonl (and of `run.py train`'s JSON lines on stdout). Every record is
    {"event": <value>, ...fields}; under torchrun the trainer adds "rank"."""

    JOB_STARTED = "job_started"  # the window, before it launches a job: time, resume, argv
    STARTED = "started"  # the trainer took the folder: pid, host, argv, world_size, resume
    STAGE = "stage"  # stage (select|canvases|autoencoder|cache|train), message; train: steps, start_step, ...
    NOTE = "note"  # message
    EPISODES = "episodes"  # train, val, train_steps, val_steps, tasks, variant, val_names
    INITIALISED = "initialised"  # source, kind (fastwam|wan2.2)
    AUTOENCODER = "autoencoder"  # step, steps, loss, samples_per_s, eta_s
    AUTOENCODER_READY = "autoencoder_ready"  # source, trained[, loss, seconds]
    CACHE = "cache"  # what (latents|canvases), episode, index, of, hit, seconds
    CACHE_READY = "cache_ready"  # folder, built, hits, seconds
    CACHE_PRUNED = "cache_pruned"  # removed, freed_gb, kept_gb, max_gb
    RESUMED = "resumed"  # step, checkpoint
    PROGRESS = "progress"  # step, steps, epoch, loss {total, video, action}, lr, samples_per_s, eta_s, elapsed_s
    VALIDATION = "validation"  # step, val_loss {total, video, action}, best, best_step
    CHECKPOINT = "checkpoint"  # step, path
    CANCELLED = "cancelled"  # step, checkpoint, message (exit code 130)
    SUMMARY = "summary"  # steps, final_loss, best_val_action_loss, best_step, checkpoint, best_checkpoint, ...
    ERROR = "error"  # kind, message, what_to_do
    WARNING = "warning"  # kind, message: the run goes on, but the user should know (e.g. a default task)

    @classmethod
    def known(cls, name: object) -> "Event | None":
        """The event called `name`, None for a name this version does not know."""
        try:
            return cls(name)
        except ValueError:
            return None


#: The events after which an attempt has ended.
FINAL_EVENTS = (Event.SUMMARY, Event.CANCELLED, Event.ERROR)


# ------------------------------------------------------------------------------------------------
# Files written whole
# ------------------------------------------------------------------------------------------------


def rounded(value: float, digits: int = 6) -> float:
    """A figure for an event: `digits` significant digits (NaN and inf kept as they are)."""
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


def write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON under a temporary name and rename it: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(json_safe(data), handle, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def event_record(event: Event | str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """{"event": ..., **fields} with plain JSON values only: what a reader of the line gets back
    (`model.json_lines.json_safe`: numpy scalars and paths as plain values, tuples as lists,
    NaN and infinities as None)."""
    return json_safe({"event": Event(event).value, **fields})


def append_event(run_dir: Path, record: Mapping[str, Any]) -> None:
    """Append one record to the run's train.jsonl as one whole line.

    One write() on an O_APPEND descriptor: the trainer and the window append to the same file,
    and a line of one never lands inside a line of the other.
    """
    data = (json_line(dict(record)) + "\n").encode("utf-8")
    fd = os.open(run_dir / EVENTS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class RunEvents:
    """A run's events. Each becomes a plain JSON record (`event_record`) that goes to `report`
    (the command line's display or JSON lines) and, once `run_dir` is set (the trainer took the
    folder, or an error came before it could), into the folder's train.jsonl. Under torchrun progress comes from rank 0 only and records carry
    "rank"; errors (`force=True`) are reported from any rank but logged by rank 0 only.
    """

    def __init__(self, report: Callable[[dict[str, Any]], None]):
        self.report = report
        self.ctx: DistContext | None = None  # set by the trainer once it knows its place under torchrun
        self.run_dir: Path | None = None

    def __call__(self, event: Event | str, force: bool = False, **fields: Any) -> None:
        main = self.ctx is None or self.ctx.is_main
        if not force and not main:
            return
        if self.ctx is not None and self.ctx.distributed:
            fields["rank"] = self.ctx.rank
        record = event_record(event, fields)
        if self.run_dir is not None and main:
            try:
                append_event(self.run_dir, record)  # first: the folder's record outlives a closed stdout
            except OSError as error:
                # A full disk or a folder gone read-only must not silence the caller's copy
                # (which is how the user learns what went wrong).
                log.warning("Cannot append to %s: %s", self.run_dir / EVENTS_FILE, error)
        self.report(record)


# ------------------------------------------------------------------------------------------------
# Run folders
# ------------------------------------------------------------------------------------------------


def default_run_dir(root: Path, preset: str, now: float | None = None) -> Path:
    """<root>/<preset>-<date-time>: where a run goes when no folder is named."""
    return Path(root) / f"{preset}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def accepts_start(run_dir: Path, resume: bool) -> bool:
    """Whether a start of training may write into `run_dir`: it exists and holds no complete
    checkpoint, or the start resumes it. A folder holding another run is left untouched."""
    return run_dir.is_dir() and (resume or latest_checkpoint(run_dir) is None)


@dataclass(frozen=True)
class JobRecord:
    """job.json: the process that runs (or last ran) training in a run folder."""

    pid: int
    argv: tuple[str, ...]  # after the Python executable, e.g. (".../run.py", "train", ...)
    python: str
    started: float  # wall-clock seconds (time.time())
    host: str
    cwd: str

    @classmethod
    def of_this_process(cls, argv: Sequence[str]) -> "JobRecord":
        return cls(os.getpid(), tuple(argv), sys.executable, time.time(), socket.gethostname(), os.getcwd())

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "argv": list(self.argv), "python": self.python, "started": self.started,
                "host": self.host, "cwd": self.cwd}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobRecord":
        return cls(int(data["pid"]), tuple(data["argv"]), str(data["python"]), float(data["started"]),
                   str(data["host"]), str(data["cwd"]))

    def save(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / JOB_FILE, self.to_json())

    @classmethod
    def load(cls, run_dir: Path) -> "JobRecord | None":
        """None when the folder has no (readable) job.json."""
        try:
            return cls.from_json(json.loads((Path(run_dir) / JOB_FILE).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("Cannot read %s: %s", Path(run_dir) / JOB_FILE, error)
            return None


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` goes: checkpoints/step_XXXXXXXX (sorts by step as text)."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{step:08d}"


def step_folders(run_dir: Path) -> dict[int, Path]:
    """step -> folder of every checkpoints/step_XXXXXXXX folder, complete or not, by step (the
    step as its name gives it)."""
    found = {}
    for folder in (Path(run_dir) / CHECKPOINTS_DIR).glob("step_*"):
        match = _STEP_FOLDER.match(folder.name)
        if match and folder.is_dir():
            found[int(match.group(1))] = folder
    return dict(sorted(found.items()))


def checkpoint_step(folder: Path) -> int | None:
    """The step of a complete checkpoint folder (weights and trainer.json there), else None.
    Quick: the files are not read (`model.resume.checkpoint_problem` reads them)."""
    try:
        if not (folder / MODEL_FILE).is_file():
            return None
        return int(json.loads((folder / TRAINER_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def complete_checkpoints(run_dir: Path) -> dict[int, Path]:
    """step -> folder of each complete checkpoint under checkpoints/ (`checkpoint_step`), by step."""
    found = {}
    for folder in step_folders(run_dir).values():
        step = checkpoint_step(folder)
        if step is not None:
            found[step] = folder
    return dict(sorted(found.items()))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run folder whose save finished (`checkpoint_step`): the folder
    holds a run, and a resume tries this one first (`model.resume` reads the files and falls
    back to an earlier one when they do not load)."""
    run_dir = Path(run_dir)
    candidates: list[Path] = []
    try:
        candidates.append(run_dir / json.loads((run_dir / LATEST_FILE).read_text())["path"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    candidates += list(step_folders(run_dir).values())
    steps = [(step, folder) for folder in candidates if (step := checkpoint_step(folder)) is not None]
    return max(steps, key=lambda item: item[0])[1] if steps else None


def best_checkpoint(run_dir: Path) -> tuple[Path, int | None] | None:
    """best/ and the step it was saved at (None if its validation.json is unreadable), or None
    when the run has no best/ yet."""
    best = Path(run_dir) / BEST_DIR
    if not (best / MODEL_FILE).is_file():
        return None
    try:
        return best, int(json.loads((best / VALIDATION_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return best, None


def is_checkpoint(path: Path) -> bool:
    """A folder with a checkpoint's weights and config (ours; any run's step folder or best/)."""
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / MODEL_FILE).is_file()


def is_partial_file(name: str) -> bool:
    """Whether a file name is a temporary file of a save that did not finish: `.<name>.<8
    random>` (`write_json`), `.<name>.<8 random>.tmp` (`model.checkpoint`), `.<name>.tmp`
    (training_state.pt), `.tmp<random>` (safetensors' own writer)."""
    match = _TEMPORARY.match(name)
    return bool(match and (match.group(2) or match.group(3))) or bool(_SAFETENSORS_TEMPORARY.match(name))


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Remove all but the newest `keep` step folders (best/ is apart and stays)."""
    folders = list(step_folders(run_dir).values())
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def replace_best(run_dir: Path, staged: Path) -> None:
    """Make the checkpoint written at `staged` (the run folder's BEST_STAGING_DIR) the run's
    best/. Renames only: a reader finds the old best/ or the new one, or (for an instant) none;
    a kill between the renames leaves BEST_REPLACED_DIR, put back by the next start."""
    run_dir = Path(run_dir)
    old = run_dir / BEST_REPLACED_DIR
    shutil.rmtree(old, ignore_errors=True)
    if (run_dir / BEST_DIR).exists():
        os.replace(run_dir / BEST_DIR, old)
    os.replace(staged, run_dir / BEST_DIR)
    shutil.rmtree(old, ignore_errors=True)
