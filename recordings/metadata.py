"""What an episode says about itself besides its data: task, operator, rig, label and so on."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import importlib.metadata
import logging
import math
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from recordings import schema
from recordings.schema import Label

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def software_version() -> str:
    """The studio's version: the installed distribution's, else pyproject.toml's, else 'unknown'."""
    try:
        return importlib.metadata.version("fastwam-studio")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with open(_REPO_ROOT / "pyproject.toml", "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        log.warning("Could not tell the software version for the episode metadata: %s", error)
        return "unknown"


def validate_task(task: str, where: str = "task") -> str:
    """`task` if it can name a task: not blank, no control characters (the rig file's rule,
    applied to command-line flags too). Raises ValueError saying what to write instead."""
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f'{where} must describe the task, e.g. "fold the towel"; got {task!r}')
    if any(unicodedata.category(char) == "Cc" for char in task):
        raise ValueError(f"{where} must be one line of plain text (no control characters); got {task!r}")
    return task


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class EpisodeMetadata:
    """Metadata written as root attributes of an episode (see `recordings.schema`).

    control_rate_hz: the control loop's rate; created: ISO 8601 UTC wall-clock start time (set
    when the writer starts if left empty); calibration_hash: identifies the rig calibration the
    joint values depend on (empty when unknown); reason: why the demonstration failed (the
    lab's list); label, reason and notes may be edited later (`recordings.labels`).
    """

    task: str = ""
    operator: str = ""
    rig: str = ""
    sim: bool = False
    notes: str = ""
    calibration_hash: str = ""
    control_rate_hz: float = 50.0  # ALOHA's DT = 0.02 s
    label: Label = Label.UNKNOWN
    created: str = ""
    software_version: str = field(default_factory=software_version)
    reason: str = ""

    def __post_init__(self) -> None:
        for name in ("task", "operator", "rig", "notes", "calibration_hash", "created", "software_version", "reason"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"EpisodeMetadata.{name} must be text, got {getattr(self, name)!r}")
        if not (isinstance(self.control_rate_hz, (int, float)) and math.isfinite(self.control_rate_hz)) or (
            self.control_rate_hz <= 0
        ):
            raise ValueError(
                f"EpisodeMetadata.control_rate_hz must be a positive number of ticks per second "
                f"(50 for ALOHA), got {self.control_rate_hz!r}"
            )
        object.__setattr__(self, "label", Label.parse(self.label))
        object.__setattr__(self, "sim", bool(self.sim))

    def with_created_now(self) -> "EpisodeMetadata":
        if self.created:
            return self
        return dataclasses.replace(self, created=_now_iso())

    def to_attrs(self) -> dict[str, Any]:
        """Root attributes for this metadata (our extras plus ALOHA's `sim`)."""
        return {
            schema.ATTR_SIM: self.sim,
            schema.ATTR_SCHEMA_VERSION: schema.SCHEMA_VERSION,
            schema.ATTR_TASK: self.task,
            schema.ATTR_OPERATOR: self.operator,
            schema.ATTR_RIG: self.rig,
            schema.ATTR_CREATED: self.created,
            schema.ATTR_SOFTWARE_VERSION: self.software_version,
            schema.ATTR_LABEL: self.label.value,
            schema.ATTR_NOTES: self.notes,
            schema.ATTR_LABEL_REASON: self.reason,
            schema.ATTR_CALIBRATION_HASH: self.calibration_hash,
            schema.ATTR_CONTROL_RATE_HZ: float(self.control_rate_hz),
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> "EpisodeMetadata":
        """Read metadata back; ALOHA/ACT files carry only `sim`, the rest takes defaults."""

        def text(name: str) -> str:
            value = attrs.get(name, "")
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
            return str(value)

        label = text(schema.ATTR_LABEL) or Label.UNKNOWN.value
        try:
            parsed_label = Label(label)
        except ValueError:
            log.warning("Episode has an unknown success label %r; reading it as 'unknown'", label)
            parsed_label = Label.UNKNOWN
        rate = attrs.get(schema.ATTR_CONTROL_RATE_HZ, 50.0)
        try:
            rate = float(rate)
        except (TypeError, ValueError):
            rate = 50.0
        if not math.isfinite(rate) or rate <= 0:
            rate = 50.0
        return cls(
            task=text(schema.ATTR_TASK),
            operator=text(schema.ATTR_OPERATOR),
            rig=text(schema.ATTR_RIG),
            sim=bool(attrs.get(schema.ATTR_SIM, False)),
            notes=text(schema.ATTR_NOTES),
            calibration_hash=text(schema.ATTR_CALIBRATION_HASH),
            control_rate_hz=rate,
            label=parsed_label,
            created=text(schema.ATTR_CREATED),
            software_version=text(schema.ATTR_SOFTWARE_VERSION),
            reason=text(schema.ATTR_LABEL_REASON),
        )

