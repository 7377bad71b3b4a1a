"""The episode chooser's rows, without Qt: a store's episodes with label, task and length (no
frames read), the files that cannot be chosen and why, and the label/task filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from recordings.errors import EpisodeFormatError
from recordings.locks import recording_in_progress
from recordings.store import DEFAULT_STORE_DIR, EpisodeStore


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
