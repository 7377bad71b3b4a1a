"""What the headless jobs share: their error type, the rig-file check, the task's outcome."""

from __future__ import annotations

from pathlib import Path

from app.studio.paths import DEFAULT_RIG_FILE
from recordings.metadata import validate_task
from recordings.schema import Label
from recordings.store import StorePathError, require_store_dir
from robot.capabilities import EvaluatesTask
from robot.rig import Rig


class JobError(RuntimeError):
    """A job cannot run; the message says why and what to do."""


def check_rig_file(path: Path) -> str:
    """'' when `path` is a file, else the message for the user."""
    if Path(path).is_file():
        return ""
    return f"The rig file {path} does not exist; pass one with --rig (e.g. {DEFAULT_RIG_FILE})."


def check_arguments(rig: Path, store: Path | None, task: str = "") -> str:
    """'' when a recording job may start, else what is wrong (exit code 2): checked before the
    rig starts, so a typo does not cost a rig start-up. Creates a missing store folder."""
    if task:
        try:
            validate_task(task, "--task")
        except ValueError as exc:
            return str(exc)
    if store is not None:
        try:
            require_store_dir(store, create=True)
        except StorePathError as exc:
            return str(exc)
    return check_rig_file(rig)


def task_outcome(rig: Rig) -> tuple[Label, str]:
    """Success/failure from the rig's own task measure (EvaluatesTask), else unknown; and notes."""
    if not isinstance(rig, EvaluatesTask):
        return Label.UNKNOWN, ""
    result = rig.evaluate_task()
    return (Label.SUCCESS if result.success else Label.FAILURE), f"fold_error_m={result.fold_error_m:.4f}"
