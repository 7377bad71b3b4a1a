"""What the headless jobs share: their error type, the rig-file check, the task's outcome."""

from __future__ import annotations

from pathlib import Path

from app.studio.paths import DEFAULT_RIG_FILE
from recordings.schema import Label
from robot.capabilities import EvaluatesTask
from robot.rig import Rig


class JobError(RuntimeError):
    """A job cannot run; the message says why and what to do."""


def check_rig_file(path: Path) -> str:
    """'' when `path` is a file, else the message for the user."""
    if Path(path).is_file():
        return ""
    return f"The rig file {path} does not exist; pass one with --rig (e.g. {DEFAULT_RIG_FILE})."


def task_outcome(rig: Rig) -> tuple[Label, str]:
    """Success/failure from the rig's own task measure (EvaluatesTask), else unknown; and notes."""
    if not isinstance(rig, EvaluatesTask):
        return Label.UNKNOWN, ""
    result = rig.evaluate_task()
    return (Label.SUCCESS if result.success else Label.FAILURE), f"fold_error_m={result.fold_error_m:.4f}"
