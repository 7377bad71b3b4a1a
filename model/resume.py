"""Which checkpoints of a run can be loaded, resuming from the newest that does, and the run
folder's housekeeping when a run starts. The names and the layout are `model.run_folder`'s
(torch-free, what the window reads); this module reads the files themselves.

A kill, a full disk or a bad copy can leave the newest checkpoint incomplete or damaged; a
resume then falls back to the newest one that loads, and says so:

- `checkpoint_problem(folder)`: why a checkpoint folder cannot be used, None when its files are
  all there and structurally sound (tensor bytes are not read);
- `loadable_checkpoints(run_dir)` / `newest_complete_checkpoint(run_dir)`: the step folders that
  pass it, newest first; each one that does not is passed to `on_skip(folder, reason)`;
- `resume_from_newest_loadable(run_dir, load)`: the first of those that `load` (e.g.
  `read_resume_state`) reads without a CheckpointError; `ResumeChoice`: the trainer's use of
  both, each checkpoint passed over warned about once; `check_resumable`: the run's arguments
  are the ones it started with;
- `resolve_checkpoint(path)`: what `run.py eval` and `--vae-from` load for a run folder;
- `load_training_state(path)`: the optimizer/RNG payload, read with weights_only=True;
- `prepare_output_folder(path)`: proves `--out` writable before a run spends time on data;
- `remove_partial_files(run_dir)`: what interrupted saves left.

Nothing here unpickles arbitrary objects (`model.checkpoint`'s read helpers).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import torch

from model.checkpoint import NormStats, load_config, read_json, read_tensors, torch_load_tensors
from model.errors import CheckpointError, OutputFolderError, RunFolderError
from model.run_folder import (
    AUTOENCODER_DIR,
    BEST_DIR,
    BEST_REPLACED_DIR,
    MODEL_FILE,
    NORM_FILE,
    RUN_FILE,
    STAGING_DIRS,
    TRAINER_FILE,
    TRAINING_STATE_FILE,
    best_checkpoint,
    is_checkpoint,
    is_partial_file,
    step_folders,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: `on_skip(folder, reason)`: told of each checkpoint passed over, and why.
OnSkip = Callable[[Path, str], None]

_FALL_BACK = "Resume from an earlier checkpoint (the trainer falls back by itself)."


# ------------------------------------------------------------------------------------------------
# Is it loadable
# ------------------------------------------------------------------------------------------------


def checkpoint_problem(folder: str | os.PathLike, for_resume: bool = True) -> str | None:
    """Why a checkpoint folder cannot be used, or None when it looks complete.

    Quick: every file is there and its structure reads (JSON parses, the config passes its
    limits, the safetensors header matches the file's length, and for a resume the trainer
    record and the torch payload's zip directory are intact); tensor bytes are not read. A file
    that passes this and still fails to load is a CheckpointError at load time, and the caller
    falls back to the next checkpoint. for_resume=False: what a policy loads (best/ has no
    trainer record).
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    trainer = folder / TRAINER_FILE
    if for_resume and not trainer.is_file():
        return f"{TRAINER_FILE} is missing: the save did not finish"
    try:
        if for_resume:
            step = read_json(trainer, "trainer record")["step"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                return f"{TRAINER_FILE} holds no valid step ({step!r})"
        load_config(folder)
        NormStats.from_dict(read_json(folder / NORM_FILE, "normalisation statistics"))
    except CheckpointError as error:
        return error.reason + f" ({Path(error.path).name})"
    except FileNotFoundError as error:
        return f"{Path(error.filename).name} is missing"
    except (KeyError, TypeError, ValueError) as error:
        return f"{NORM_FILE} is incomplete ({error})"
    weights = folder / MODEL_FILE
    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except FileNotFoundError:
        return f"{MODEL_FILE} is missing"
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        return f"{MODEL_FILE} is truncated or corrupt ({str(error)[:160]})"
    if not for_resume:
        return None
    state = folder / TRAINING_STATE_FILE
    try:
        size = state.stat().st_size
        with zipfile.ZipFile(state) as archive:
            for member in archive.infolist():
                if member.header_offset + member.compress_size > size:
                    return f"{TRAINING_STATE_FILE} is truncated"
    except FileNotFoundError:
        return f"{TRAINING_STATE_FILE} is missing"
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        return f"{TRAINING_STATE_FILE} is truncated or not a torch file ({error})"
    return None


def _skipped(folder: Path, reason: str, on_skip: OnSkip | None) -> None:
    log.warning("Checkpoint %s cannot be used: %s", folder, reason)
    if on_skip is not None:
        on_skip(folder, reason)


def loadable_checkpoints(
    run_dir: str | os.PathLike, on_skip: OnSkip | None = None, for_resume: bool = True
) -> Iterator[Path]:
    """The run's step folders (`model.run_folder.step_folders`) that pass `checkpoint_problem`,
    newest step first. Each one that does not is logged and passed to `on_skip(folder, reason)`
    (for the caller to show), so a resume falls back to the newest complete checkpoint and says
    why."""
    for folder in reversed(step_folders(Path(run_dir)).values()):
        problem = checkpoint_problem(folder, for_resume)
        if problem is None:
            yield folder
        else:
            _skipped(folder, problem, on_skip)


def newest_complete_checkpoint(
    run_dir: str | os.PathLike, on_skip: OnSkip | None = None, for_resume: bool = True
) -> Path | None:
    """The newest checkpoint of a run that passes `checkpoint_problem` (None when none does)."""
    return next(loadable_checkpoints(run_dir, on_skip, for_resume), None)


# ------------------------------------------------------------------------------------------------
# Resume from the newest loadable
# ------------------------------------------------------------------------------------------------


def load_training_state(path: str | os.PathLike) -> dict:
    """A checkpoint's optimizer/RNG payload (`training_state.pt`), read with weights_only=True.
    Raises CheckpointError naming the file (truncated, damaged, or holding other objects)."""
    path = Path(path)
    payload = torch_load_tensors(path, _FALL_BACK)
    if not isinstance(payload, Mapping) or "optimizer" not in payload:
        raise CheckpointError(path, "it has no optimizer state", "Resume from an earlier checkpoint.")
    return dict(payload)


@dataclass
class ResumeState:
    """Everything a resume reads from one checkpoint folder, in CPU memory.

    best: {"val_action_loss", "step"} of the run so far; rng: the numpy/python RNG states
    (trainer.json); tensors: model.safetensors by name; training_state: {"optimizer",
    "torch_rng", ["cuda_rng"]} (training_state.pt)."""

    folder: Path
    step: int
    best: dict[str, Any]
    rng: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    training_state: dict[str, Any]


def read_resume_state(folder: str | os.PathLike) -> ResumeState:
    """What the trainer resumes from, every file read (`read_tensors`, `read_json`,
    `load_training_state`); CheckpointError naming the file and the fault."""
    folder = Path(folder)
    trainer = folder / TRAINER_FILE
    try:
        record = read_json(trainer, "trainer record")
    except FileNotFoundError as error:
        raise CheckpointError(trainer, "no such file", _FALL_BACK) from error
    step, best, rng = record.get("step"), record.get("best"), record.get("rng")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(trainer, f"it holds no valid step ({step!r})", _FALL_BACK)
    if not isinstance(best, dict) or not isinstance(rng, dict) or not {"numpy", "python"} <= set(rng):
        raise CheckpointError(trainer, "it lacks the best-so-far record or the RNG states", _FALL_BACK)
    tensors = read_tensors(folder / MODEL_FILE)
    return ResumeState(folder, step, best, rng, tensors, load_training_state(folder / TRAINING_STATE_FILE))


def resume_from_newest_loadable(
    run_dir: str | os.PathLike,
    load: Callable[[Path], T],
    on_skip: OnSkip | None = None,
) -> tuple[Path, T] | None:
    """(folder, load(folder)) for the newest checkpoint of a run that both passes
    `checkpoint_problem` and loads; each newer one that does not is passed to `on_skip(folder,
    reason)` (and logged), so a resume falls back with a warning instead of failing on a damaged
    latest checkpoint. `load` raises CheckpointError for a file it cannot read (use
    `read_resume_state`, or `read_tensors` / `load_training_state`). None when no checkpoint
    can be resumed from."""
    for folder in loadable_checkpoints(run_dir, on_skip):
        try:
            return folder, load(folder)
        except CheckpointError as error:
            _skipped(folder, str(error), on_skip)
    return None


class ResumeChoice:
    """Which checkpoint of a run a resume continues from: first chosen by the files' structure
    (quick, before the data work), then read whole (`read_resume_state`) once the model is
    there to take it, falling back past any that does not load. Each checkpoint passed over is
    told to `warn(folder, reason)` once, however often it is looked at."""

    def __init__(self, run_dir: str | os.PathLike, warn: OnSkip):
        self.run_dir = Path(run_dir)
        self.skipped: dict[Path, str] = {}
        self._warn = warn

    def _skip(self, folder: Path, reason: str) -> None:
        if folder not in self.skipped:
            self.skipped[folder] = reason
            self._warn(folder, reason)

    def newest_complete(self, holds_checkpoints: bool) -> Path | None:
        """The newest complete checkpoint; None for a run with none yet (it starts from step
        0). CheckpointError when the run holds checkpoints (`holds_checkpoints`) and none is
        complete."""
        found = newest_complete_checkpoint(self.run_dir, self._skip)
        if found is None and holds_checkpoints:
            raise self._nothing_to_resume()
        return found

    def read(self) -> ResumeState:
        """The newest checkpoint whose files all read; CheckpointError naming each one tried
        when none does."""
        found = resume_from_newest_loadable(self.run_dir, read_resume_state, self._skip)
        if found is None:
            raise self._nothing_to_resume()
        return found[1]

    def _nothing_to_resume(self) -> CheckpointError:
        listed = "; ".join(f"{folder.name}: {reason}" for folder, reason in self.skipped.items())
        return CheckpointError(self.run_dir, f"none of its checkpoints can be resumed from ({listed})",
                               "Restore the run folder from a backup, or start a new run with another --out (the "
                               "damaged checkpoints are left as they are)")


def check_resumable(run_dir: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Refuse (RunFolderError) to resume a run with other episodes, model, seed, process count,
    camera mapping or schedule than it started with: `record` is this start's run.json, compared
    with the one in the folder."""
    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / RUN_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as error:
        raise RunFolderError(f"{run_dir / RUN_FILE} is missing or damaged ({error}); the run cannot be resumed "
                             "exactly - start a new run with another --out") from None
    if saved.get("camera_map", {}) != record["camera_map"]:  # runs from before it was recorded had none
        raise RunFolderError(f"cannot resume {run_dir}: it was started with --camera-map "
                             f"{saved.get('camera_map') or '(none)'} and now {record['camera_map'] or '(none)'}; "
                             "resume with the same mapping, or start a new run with another --out")
    for key, what in (("train", "training episodes"), ("val", "validation episodes"), ("config", "model config"),
                      ("seed", "seed"), ("world_size", "number of processes")):
        if saved.get(key) != record[key]:
            raise RunFolderError(
                f"cannot resume {run_dir}: the {what} differ from when the run started; resume with the same "
                "episodes and flags (and the same torchrun process count), or start a new run with another --out")
    for key in ("batch_size", "steps", "lr", "weight_decay", "warmup_fraction", "grad_clip"):
        if saved["hyper"].get(key) != record["hyper"][key]:
            raise RunFolderError(f"cannot resume {run_dir}: {key} was {saved['hyper'].get(key)} and is now "
                                 f"{record['hyper'][key]}; pass the original value or start a new run")


def resolve_checkpoint(path: str | os.PathLike, on_skip: OnSkip | None = None) -> Path:
    """A checkpoint folder as it is, or a run folder -> its best/ if it is complete, else its
    newest complete checkpoint; each one passed over is given to `on_skip(folder, reason)`.
    CheckpointError (with what to pass instead) when there is none."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    best = best_checkpoint(path)
    if best is not None:
        problem = checkpoint_problem(best[0], for_resume=False)
        if problem is None:
            return best[0]
        _skipped(best[0], problem, on_skip)
    latest = newest_complete_checkpoint(path, on_skip, for_resume=False)
    if latest is not None:
        return latest
    if best is not None or step_folders(path):
        raise CheckpointError(path, "none of its checkpoints is complete (each one is named above with its fault)",
                              "Point to another run folder, or copy the run again.")
    raise CheckpointError(path, "it is neither a checkpoint folder nor a run folder with checkpoints",
                          "Point to a run folder (runs/...) or one of its checkpoints/step_* folders.")


# ------------------------------------------------------------------------------------------------
# The run folder at a start
# ------------------------------------------------------------------------------------------------


def prepare_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create `path` (and its parents) and prove it writable by writing a file there, before a
    run spends minutes on data; raises OutputFolderError (a usage problem, with the flag's
    name) when it is a file, read-only or not permitted. A probe, not os.access: root passes
    every permission check, and a read-only mount says so only when written to."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputFolderError(path, flag, "is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputFolderError(path, flag, f"cannot be written ({exc.strerror or exc})") from exc
    return path


def remove_partial_files(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what interrupted saves left in a run folder (`model.run_folder`: its staging
    folders and the temporary files beside files written whole); a best/ cut off between its
    two renames is put back first. Call it only while no process writes the run (at the start
    of a run or a resume). Returns what was removed."""
    run_dir = Path(run_dir)
    removed: list[Path] = []
    if not run_dir.is_dir():
        return removed
    best, old = run_dir / BEST_DIR, run_dir / BEST_REPLACED_DIR
    if old.is_dir() and not best.exists():
        os.replace(old, best)
        log.warning("Restored %s from %s (a save was interrupted between its renames)", best, old.name)
    for name in STAGING_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name, ignore_errors=True)
            removed.append(run_dir / name)
    folders = [run_dir, best, run_dir / AUTOENCODER_DIR, *step_folders(run_dir).values()]
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not entry.is_dir() and is_partial_file(entry.name):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    for path in removed:
        log.info("Removed %s, left by an interrupted save", path)
    return removed
