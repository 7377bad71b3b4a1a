"""What a resume of a training run can use, and the run folder's housekeeping.

A run folder (`--out`) holds `checkpoints/step_<8 digits>/`, each a `model.checkpoint` folder
plus the optimizer/RNG payload (`training_state.pt`) and `trainer.json`, written last: it marks
the folder complete. A kill, a full disk or a bad copy can leave the newest checkpoint
incomplete or damaged; a resume then falls back to the newest one that loads, and says so:

- `complete_checkpoints(run_dir)` / `newest_complete_checkpoint(run_dir)`: the checkpoints
  whose files are all there and structurally sound, newest first; the others named with why;
- `resume_from_newest_loadable(run_dir, load)`: the first of those that `load` reads without
  a CheckpointError (tensor bytes are only read there);
- `load_training_state(path)`: the optimizer/RNG payload, read with weights_only=True;
- `remove_partial_files(run_dir)`: the temporary files and folders of interrupted saves;
- `prepare_output_folder(path)`: proves `--out` writable before a run spends time on data.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Mapping, TypeVar

from model.checkpoint import MODEL_FILE, NORM_FILE, NormStats, load_config, read_json, torch_load_tensors
from model.errors import CheckpointError, OutputFolderError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Names inside a run folder (see the module doc).
CHECKPOINTS_DIR = "checkpoints"
TRAINER_FILE = "trainer.json"
TRAINING_STATE_FILE = "training_state.pt"
LATEST_FILE = "latest.json"
_STEP_FOLDER = re.compile(r"^step_(\d+)$")
#: Temporary files of an interrupted save: `.<name>.<random>.tmp` (ours), `.<name>.<random>`
#: (mkstemp without a suffix), `.<name>.tmp`; `.tmp<random>` is safetensors' own (its Rust
#: writer goes through a temporary file in the same folder).
_TEMPORARY = re.compile(r"^\.(?P<name>[^/]+?)(\.[A-Za-z0-9_]{8})?(\.tmp)?$")
_SAFETENSORS_TEMPORARY = re.compile(r"^\.tmp[A-Za-z0-9]{6,}$")


def load_training_state(path: str | os.PathLike) -> dict:
    """A checkpoint's optimizer/RNG payload (`training_state.pt`), read with weights_only=True.
    Raises CheckpointError naming the file (truncated, damaged, or holding other objects)."""
    path = Path(path)
    payload = torch_load_tensors(path, "Resume from an earlier checkpoint (the trainer falls back by itself).")
    if not isinstance(payload, Mapping) or "optimizer" not in payload:
        raise CheckpointError(path, "it has no optimizer state", "Resume from an earlier checkpoint.")
    return dict(payload)


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why a run's checkpoint folder cannot be resumed from, or None when it looks complete.

    Quick: every file is there and its structure reads (JSON parses, the config passes its
    limits, the safetensors header matches the file's length, the torch payload's zip directory
    is intact); tensor bytes are not read. A file that passes this and still fails to load is a
    CheckpointError at load time, and the caller falls back to the next checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    trainer = folder / TRAINER_FILE
    if not trainer.is_file():
        return f"{TRAINER_FILE} is missing: the save did not finish"
    try:
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


def _step_of(folder: Path) -> int:
    match = _STEP_FOLDER.match(folder.name)
    return int(match.group(1)) if match else -1


def complete_checkpoints(
    run_dir: str | os.PathLike, on_skip: Callable[[Path, str], None] | None = None
) -> Iterator[Path]:
    """The run's checkpoint folders that pass `checkpoint_problem`, newest step first. Each one
    that does not is logged and passed to `on_skip(folder, reason)` (for the caller to show),
    so a resume falls back to the newest complete checkpoint and says why."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return
    for candidate in sorted((p for p in folder.iterdir() if p.is_dir() and _step_of(p) >= 0), key=_step_of, reverse=True):
        problem = checkpoint_problem(candidate)
        if problem is None:
            yield candidate
            continue
        log.warning("Checkpoint %s cannot be resumed from: %s", candidate, problem)
        if on_skip is not None:
            on_skip(candidate, problem)


def newest_complete_checkpoint(
    run_dir: str | os.PathLike, on_skip: Callable[[Path, str], None] | None = None
) -> Path | None:
    """The newest checkpoint of a run that passes `checkpoint_problem` (None when none does)."""
    return next(complete_checkpoints(run_dir, on_skip), None)


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


def resume_from_newest_loadable(
    run_dir: str | os.PathLike,
    load: Callable[[Path], T],
    on_skip: Callable[[Path, str], None] | None = None,
) -> tuple[Path, T] | None:
    """(folder, load(folder)) for the newest checkpoint of a run that both passes
    `checkpoint_problem` and loads; each newer one that does not is passed to `on_skip(folder,
    reason)` (and logged), so a resume falls back with a warning instead of failing on a damaged
    latest checkpoint. `load` raises CheckpointError for a file it cannot read (use
    `read_tensors` / `load_training_state`). None when no checkpoint can be resumed from."""
    for folder in complete_checkpoints(run_dir, on_skip):
        try:
            return folder, load(folder)
        except CheckpointError as error:
            log.warning("Checkpoint %s cannot be resumed from: %s", folder, error)
            if on_skip is not None:
                on_skip(folder, str(error))
    return None


def remove_partial_files(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what interrupted saves left in a run folder: hidden temporary files beside
    checkpoint files, `.best.tmp` and `autoencoder.tmp` folders; a `.best.old` is put back as
    `best` when the swap was cut off between its two renames. Call it only while no process
    writes the run (at the start of a run or a resume). Returns what was removed."""
    run_dir = Path(run_dir)
    removed: list[Path] = []
    if not run_dir.is_dir():
        return removed
    best, old = run_dir / "best", run_dir / ".best.old"
    if old.is_dir() and not best.exists():
        os.replace(old, best)
        log.warning("Restored %s from %s (a save was interrupted between its renames)", best, old.name)
    folders = [run_dir, best, run_dir / "autoencoder"]
    checkpoints = run_dir / CHECKPOINTS_DIR
    if checkpoints.is_dir():
        folders += [p for p in checkpoints.iterdir() if p.is_dir()]
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_dir():
                if folder == run_dir and entry.name in (".best.tmp", ".best.old", "autoencoder.tmp"):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
                continue
            match = _TEMPORARY.match(entry.name)
            if (match and (match.group(2) or match.group(3))) or _SAFETENSORS_TEMPORARY.match(entry.name):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    for path in removed:
        log.info("Removed %s, left by an interrupted save", path)
    return removed


