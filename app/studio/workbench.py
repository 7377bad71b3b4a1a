"""The Episodes workbench without Qt: the rows of a store, how they are shown, filtered and sorted,
and what can be done to a selection (label, trash, restore, export).

`app.ui.workbench` is a thin view over this; tests and scripts drive it directly.

Threads: `refresh()` and the exports read many files - call them from a worker thread; everything
else is quick and meant for the GUI thread. The rows are immutable; `rows` is replaced whole.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from recordings.errors import RecordingError
from recordings.export.lerobot import ExportResult, export_lerobot
from recordings.export.mp4 import export_mp4
from recordings.failure_reasons import load_failure_reasons, save_failure_reasons
from recordings.index import EpisodeRow, Refresh, StoreIndex
from recordings.qa import QaResult, QaThresholds, Verdict, load_thresholds
from recordings.schema import Label
from recordings.store import EpisodeStore
from recordings.trash import TrashedEpisode, move_to_trash, restore, trashed_episodes

log = logging.getLogger(__name__)

#: Source filter choices -> test on a row's source mix.
SOURCE_FILTERS: dict[str, Callable[[dict[str, float]], bool]] = {
    "no policy": lambda mix: mix["policy"] == 0 and mix["intervention"] == 0,
    "with policy": lambda mix: mix["policy"] > 0,
    "with interventions": lambda mix: mix["intervention"] > 0,
}


@dataclass(frozen=True)
class EpisodeFilter:
    """What the table shows. Empty sets and strings mean "any". Dates are local calendar days of
    the recording's start, inclusive; episodes of unknown date pass only when no date is set."""

    text: str = ""  # in the file name, task, operator, notes or reason (case-insensitive)
    labels: frozenset[str] = frozenset()
    task: str = ""
    operator: str = ""
    date_from: _dt.date | None = None
    date_to: _dt.date | None = None
    source: str = ""  # a key of SOURCE_FILTERS
    qa: frozenset[str] = frozenset()  # Verdict values
    problems: bool = True  # show unreadable and unfinished files

    def __post_init__(self) -> None:
        if self.source and self.source not in SOURCE_FILTERS:
            raise ValueError(f"Unknown source filter {self.source!r}; use one of {sorted(SOURCE_FILTERS)}")


def local_date(created: str) -> _dt.date | None:
    """The local calendar day of an ISO 8601 UTC time; None when unknown or unreadable."""
    if not created:
        return None
    try:
        moment = _dt.datetime.fromisoformat(created)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone().date()


def local_time_text(created: str) -> str:
    if not created:
        return "unknown"
    try:
        moment = _dt.datetime.fromisoformat(created)
    except ValueError:
        return created
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def matches(row: EpisodeRow, rules: EpisodeFilter, thresholds: QaThresholds) -> bool:
    if row.problem is not None:  # unreadable or unfinished: no label, task, ... to match
        narrowed = rules.labels or rules.task or rules.operator or rules.qa or rules.source or rules.date_from or rules.date_to
        return rules.problems and not narrowed and (not rules.text or rules.text.lower() in row.name.lower())
    if rules.labels and row.label not in rules.labels:
        return False
    if rules.task and row.task != rules.task:
        return False
    if rules.operator and row.operator != rules.operator:
        return False
    if rules.date_from or rules.date_to:
        day = local_date(row.created)
        if day is None or (rules.date_from and day < rules.date_from) or (rules.date_to and day > rules.date_to):
            return False
    if rules.source:
        mix = row.source_mix()
        if mix is None or not SOURCE_FILTERS[rules.source](mix):
            return False
    if rules.qa:
        result = row.qa(thresholds)
        if result is None or result.verdict.value not in rules.qa:
            return False
    if rules.text:
        needle = rules.text.lower()
        haystack = " ".join((row.name, row.task, row.operator, row.notes, row.reason)).lower()
        if needle not in haystack:
            return False
    return True


# ------------------------------------------------------------------------------------- columns


def _mix_text(row: EpisodeRow) -> str:
    """Each control source's share of the steps, largest first: "policy 73%, intervention 13%"."""
    total = sum(row.sources.values())
    if not total:
        return "unknown"
    ordered = sorted(row.sources.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {_percent(count / total)}" for name, count in ordered)


def _percent(share: float) -> str:
    return "<1%" if 0 < share < 0.005 else f"{round(100 * share)}%"


def _size_text(size: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class Column:
    """One table column: its header, the text of a cell and the key to sort by."""

    key: str
    header: str
    text: Callable[[EpisodeRow, QaThresholds], str]
    sort: Callable[[EpisodeRow, QaThresholds], object]
    tooltip: Callable[[EpisodeRow, QaThresholds], str] = field(default=lambda row, limits: "")


def _qa(row: EpisodeRow, limits: QaThresholds) -> QaResult | None:
    return row.qa(limits)


def _qa_text(row: EpisodeRow, limits: QaThresholds) -> str:
    if row.problem is not None:
        return "live" if row.live else ("unfinished" if row.unfinished else "invalid")
    result = _qa(row, limits)
    return result.verdict.value if result is not None else "unknown"


def _qa_tip(row: EpisodeRow, limits: QaThresholds) -> str:
    if row.problem is not None:
        return row.problem
    result = _qa(row, limits)
    timing = row.timing
    lines = list(result.reasons) if result is not None else []
    if timing is not None and timing.has_timestamps:
        lines.append(f"rate {timing.rate_hz:.1f} Hz, jitter p99 {timing.jitter_p99_ms:.1f} ms, {timing.late_ticks} late, {timing.lost_ticks} lost ticks")
    return "\n".join(lines)


_VERDICT_ORDER = {"ok": 0, "unknown": 1, "warn": 2, "bad": 3, "live": 4, "unfinished": 5, "invalid": 6}

COLUMNS: tuple[Column, ...] = (
    Column("index", "#", lambda r, l: "" if r.index is None else str(r.index), lambda r, l: (r.index is None, r.index or 0)),
    Column("created", "recorded", lambda r, l: local_time_text(r.created), lambda r, l: r.created or ""),
    Column("task", "task", lambda r, l: r.task or ("unknown" if not r.is_ours else ""), lambda r, l: r.task.lower()),
    Column("operator", "operator", lambda r, l: r.operator or ("unknown" if not r.is_ours else ""), lambda r, l: r.operator.lower()),
    Column("duration", "duration", lambda r, l: f"{r.duration_s:.1f} s" if r.usable else "", lambda r, l: r.duration_s),
    Column("frames", "frames", lambda r, l: str(r.length) if r.usable else "", lambda r, l: r.length),
    Column("cameras", "cameras", lambda r, l: ", ".join(r.cameras), lambda r, l: len(r.cameras)),
    Column("label", "label", lambda r, l: r.label if r.usable else "", lambda r, l: r.label,
           lambda r, l: r.notes),
    Column("reason", "reason", lambda r, l: r.reason, lambda r, l: r.reason.lower()),
    Column("sources", "sources", lambda r, l: _mix_text(r) if r.usable else "",
           lambda r, l: (r.source_share(("policy",)) or 0.0, r.source_share(("intervention",)) or 0.0),
           lambda r, l: ", ".join(f"{k}: {v} steps" for k, v in sorted(r.sources.items()))),
    Column("qa", "timing QA", _qa_text, lambda r, l: _VERDICT_ORDER.get(_qa_text(r, l), 9), _qa_tip),
    Column("size", "size", lambda r, l: _size_text(r.size_bytes), lambda r, l: r.size_bytes),
)
COLUMN_KEYS = tuple(column.key for column in COLUMNS)


# ------------------------------------------------------------------------------------- the model


class Workbench:
    """The Episodes workbench over one store folder (see the module doc)."""

    def __init__(self, store_dir: str | os.PathLike):
        self.store_dir = Path(store_dir)
        self.index = StoreIndex(self.store_dir)
        self.store = EpisodeStore(self.store_dir)
        self.rows: tuple[EpisodeRow, ...] = ()
        self.thresholds = QaThresholds()
        self.settings_problem: str | None = None
        self.failure_reasons: tuple[str, ...] = load_failure_reasons(self.store_dir)
        self.reload_settings()

    # ---- reading (worker thread for refresh) ----
    def reload_settings(self) -> None:
        """Re-read qa.toml and failure_reasons.txt; a bad qa.toml keeps the defaults and says why."""
        try:
            self.thresholds = load_thresholds(self.store_dir)
            self.settings_problem = None
        except ValueError as error:
            self.thresholds = QaThresholds()
            self.settings_problem = f"{error}. Using the default QA thresholds."
        self.failure_reasons = load_failure_reasons(self.store_dir)

    def load_cached(self) -> tuple[EpisodeRow, ...]:
        """Rows from the index file alone (instant; `refresh` then checks them against the files)."""
        self.rows = self.index.cached_rows()
        return self.rows

    def refresh(self, progress: Callable[[int, int], None] | None = None, rebuild: bool = False) -> Refresh:
        result = self.index.rebuild(progress) if rebuild else self.index.refresh(progress)
        self.rows = result.rows
        return result

    def row(self, name: str) -> EpisodeRow | None:
        for row in self.rows:
            if row.name == name:
                return row
        return None

    def path(self, name: str) -> Path:
        return self.store_dir / name

    # ---- what the table shows ----
    def visible(self, rules: EpisodeFilter | None = None, sort_key: str = "index", descending: bool = False) -> list[EpisodeRow]:
        rules = rules or EpisodeFilter()
        shown = [row for row in self.rows if matches(row, rules, self.thresholds)]
        column = COLUMNS[COLUMN_KEYS.index(sort_key)]
        shown.sort(key=lambda row: column.sort(row, self.thresholds), reverse=descending)
        return shown

    def tasks(self) -> list[str]:
        return sorted({row.task for row in self.rows if row.task})

    def operators(self) -> list[str]:
        return sorted({row.operator for row in self.rows if row.operator})

    def qa(self, row: EpisodeRow) -> QaResult | None:
        return row.qa(self.thresholds)

    def bad_episodes(self) -> list[EpisodeRow]:
        return [row for row in self.rows if (result := row.qa(self.thresholds)) is not None and result.verdict is Verdict.BAD]

    # ---- actions (GUI thread: each touches a few files) ----
    def label(self, names: Iterable[str], label: Label | str, reason: str | None = None, notes: str | None = None) -> list[str]:
        """Label the episodes; a reason is kept only for failures (others get it cleared).
        Returns one message per episode that could not be labelled (the rest are)."""
        parsed = Label.parse(label)
        if parsed is not Label.FAILURE:
            reason = ""
        errors: list[str] = []
        done: list[Path] = []
        for name in names:
            try:
                with self.index.file_lock:  # not while the index reads this file on a worker
                    done.append(self.store.relabel(self.path(name), parsed, notes, reason))
            except RecordingError as error:
                errors.append(str(error))
        self._updated(done)
        return errors

    def trash(self, names: Iterable[str]) -> tuple[list[TrashedEpisode], list[str]]:
        moved: list[TrashedEpisode] = []
        errors: list[str] = []
        for name in names:
            try:
                moved.append(move_to_trash(self.store_dir, name))
            except RecordingError as error:
                errors.append(str(error))
        self._updated([self.path(item.original) for item in moved])
        return moved, errors

    def trashed(self) -> list[TrashedEpisode]:
        return trashed_episodes(self.store_dir)

    def restore(self, trash_name: str) -> Path:
        path = restore(self.store_dir, trash_name)
        self._updated([path])
        return path

    def set_failure_reasons(self, reasons: Sequence[str]) -> None:
        save_failure_reasons(self.store_dir, list(reasons))
        self.failure_reasons = load_failure_reasons(self.store_dir)

    # ---- exports (worker thread) ----
    def export_lerobot(self, names: Sequence[str], output: str | os.PathLike, progress=None, **options) -> ExportResult:
        return export_lerobot([self.path(name) for name in names], output, progress=progress, **options)

    def export_mp4(self, name: str, output: str | os.PathLike, progress=None) -> Path:
        return export_mp4(self.path(name), output, progress=progress)

    def _updated(self, paths: list[Path]) -> None:
        if not paths:
            return
        self.index.update(paths)
        self.rows = self.index.refresh().rows
