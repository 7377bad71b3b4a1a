"""The store index: one row per episode file, kept in `.episode_index.json` beside the episodes so
that a store of thousands opens in well under a second.

Never trusted over the files: every `refresh()` lists the store folder and stats each file; a row
is reused only while the file's (size, mtime_ns, inode) are exactly those recorded when the row was
read, so a file changed, replaced, added or removed behind the index's back (another program, a
copy from another machine, a relabel) is read again. The stat is taken *before* the file is read,
so a change during the read is caught next time. `rebuild()` reads everything; the studio calls
`update(path)` after each of its writes (a recording saved, a relabel, a trash or restore).

Leftovers of recordings (`*.partial`) are listed but never opened: one being recorded right now
shows as live (its writer holds a lock), so the index stays fast and harmless while recording.

The index file is written atomically (temporary file + rename); a damaged or foreign one is
ignored and rebuilt. Several processes may share it: the last writer wins, which costs at most a
re-read of the rows the other one had refreshed.

Threads: a `StoreIndex` may be used from several threads (one lock around its state). Each
episode file is read under `file_lock`, which writers in the same process take too (HDF5 refuses
to open a file for writing that the process has open for reading), so a refresh on a worker and a
relabel on the GUI thread wait at most one file read for each other.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from recordings import schema
from recordings.errors import EpisodeFormatError
from recordings.locks import recording_in_progress
from recordings.qa import QaResult, QaThresholds, TimingMetrics, episode_timing, judge
from recordings.reader import Episode
from recordings.schema import Label

log = logging.getLogger(__name__)

INDEX_FILE = ".episode_index.json"
INDEX_VERSION = 2  # bump when rows or the timing measurement change: old rows are read again

#: What counts as a human, a policy or a human correcting a policy in the source mix.
HUMAN_SOURCES = ("teleop", "scripted")
POLICY_SOURCES = ("policy",)
INTERVENTION_SOURCES = ("intervention",)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FileStamp:
    """What says a file is unchanged: size, modification time (ns) and inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, stat: os.stat_result) -> "FileStamp":
        return cls(int(stat.st_size), int(stat.st_mtime_ns), int(stat.st_ino))


@dataclass(frozen=True)
class EpisodeRow:
    """One episode file as the workbench lists it.

    created: ISO 8601 UTC start ("" = unknown, e.g. ALOHA files); duration_s: steps / rate when
    the file has no times; sources: control source -> steps ({} = unknown: ALOHA files);
    timing: the measured timing (None for unreadable files); problem: why the file cannot be used;
    unfinished/live: a leftover recording (live: being recorded now).
    """

    name: str
    index: int | None
    stamp: FileStamp
    length: int = 0
    duration_s: float = 0.0
    control_rate_hz: float = 50.0
    created: str = ""
    task: str = ""
    operator: str = ""
    rig: str = ""
    sim: bool = False
    label: str = Label.UNKNOWN.value
    reason: str = ""
    notes: str = ""
    cameras: tuple[str, ...] = ()
    is_ours: bool = True
    sources: Mapping[str, int] = field(default_factory=dict)
    timing: TimingMetrics | None = None
    frames_dropped: int = 0
    recovered: bool = False
    problem: str | None = None
    unfinished: bool = False
    live: bool = False

    @property
    def size_bytes(self) -> int:
        return self.stamp.size

    @property
    def usable(self) -> bool:
        return self.problem is None

    def source_share(self, kinds: Iterable[str]) -> float | None:
        """Fraction of steps whose source is one of `kinds`; None when unknown."""
        total = sum(self.sources.values())
        if not total:
            return None
        return sum(self.sources.get(kind, 0) for kind in kinds) / total

    def source_mix(self) -> dict[str, float] | None:
        """{'human', 'policy', 'intervention'} -> share of steps (human: teleop or the scripted
        demonstrator); None when unknown."""
        if not self.sources:
            return None
        return {
            "human": self.source_share(HUMAN_SOURCES) or 0.0,
            "policy": self.source_share(POLICY_SOURCES) or 0.0,
            "intervention": self.source_share(INTERVENTION_SOURCES) or 0.0,
        }

    def qa(self, thresholds: QaThresholds | None = None) -> QaResult | None:
        """The timing verdict under `thresholds`; None for files that cannot be read."""
        if self.timing is None:
            return None
        return judge(self.timing, thresholds)

    # ---- the index file ----
    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "stamp": [self.stamp.size, self.stamp.mtime_ns, self.stamp.inode],
            "length": self.length,
            "duration_s": self.duration_s,
            "control_rate_hz": self.control_rate_hz,
            "created": self.created,
            "task": self.task,
            "operator": self.operator,
            "rig": self.rig,
            "sim": self.sim,
            "label": self.label,
            "reason": self.reason,
            "notes": self.notes,
            "cameras": list(self.cameras),
            "is_ours": self.is_ours,
            "sources": dict(self.sources),
            "timing": self.timing.to_json() if self.timing is not None else None,
            "frames_dropped": self.frames_dropped,
            "recovered": self.recovered,
            "problem": self.problem,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EpisodeRow":
        values = dict(data)
        values["stamp"] = FileStamp(*values["stamp"])
        values["cameras"] = tuple(values.get("cameras", ()))
        timing = values.get("timing")
        values["timing"] = TimingMetrics.from_json(timing) if timing is not None else None
        return cls(**values)


def read_row(path: Path, stamp: FileStamp | None = None) -> EpisodeRow:
    """Read one finished episode file into a row (metadata and small arrays, no frames)."""
    if stamp is None:
        stamp = FileStamp.of(path.stat())
    index = schema.episode_index(path.name)
    try:
        with Episode.open(path) as episode:
            meta = episode.metadata
            steps = episode.control_sources
            sources = dict(Counter(source.value for source in steps)) if steps else {}
            timing, _ = episode_timing(episode)
            return EpisodeRow(
                name=path.name,
                index=index,
                stamp=stamp,
                length=episode.length,
                duration_s=float(episode.duration_s),
                control_rate_hz=float(meta.control_rate_hz),
                created=meta.created,
                task=meta.task,
                operator=meta.operator,
                rig=meta.rig,
                sim=meta.sim,
                label=meta.label.value,
                reason=episode.failure_reason,
                notes=meta.notes,
                cameras=episode.camera_names,
                is_ours=episode.is_ours,
                sources=sources,
                timing=timing,
                frames_dropped=episode.frames_dropped,
                recovered=episode.recovered,
            )
    except EpisodeFormatError as error:
        return EpisodeRow(name=path.name, index=index, stamp=stamp, problem="; ".join(error.reasons))
    except (OSError, KeyError, ValueError) as error:  # damaged data blocks, odd attributes
        return EpisodeRow(name=path.name, index=index, stamp=stamp, problem=f"cannot be read: {error}")


@dataclass(frozen=True)
class Refresh:
    """The result of bringing the index in line with the files.

    rows: episodes by index, then leftovers; reread: names read from their files this time;
    dropped: names the index had but the store no longer has; reused: rows taken from the index.
    """

    rows: tuple[EpisodeRow, ...]
    reread: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    reused: int = 0


class StoreIndex:
    """The index of one store folder (see the module doc)."""

    def __init__(self, store_dir: str | os.PathLike):
        self.store_dir = Path(store_dir)
        self.path = self.store_dir / INDEX_FILE
        self._lock = threading.Lock()
        self.file_lock = threading.Lock()
        self._rows: dict[str, EpisodeRow] | None = None  # name -> row, finished episodes only

    def __repr__(self) -> str:
        return f"StoreIndex({str(self.store_dir)!r})"

    # ---- reading ----
    def cached_rows(self) -> tuple[EpisodeRow, ...]:
        """The rows as the index file has them, without looking at the episodes (for a table
        to show at once while `refresh()` runs); () when there is no usable index file."""
        rows = self._loaded()
        return tuple(sorted(rows.values(), key=_order))

    def refresh(self, progress: Progress | None = None) -> Refresh:
        """Compare the index with the files, read what changed, save; returns every row."""
        return self._refresh(self._loaded(), progress)

    def rebuild(self, progress: Progress | None = None) -> Refresh:
        """Forget the index file and read every episode again."""
        with self._lock:
            self._rows = {}
        return self._refresh({}, progress)

    def update_one(self, path: str | os.PathLike) -> EpisodeRow:
        """Re-read one episode now and return its row (raises FileNotFoundError if it is gone)."""
        path = Path(path)
        self.update([path])
        row = self._loaded().get(path.name)
        if row is None:
            raise FileNotFoundError(f"{path} is not an episode of {self.store_dir}")
        return row

    def update(self, paths: Iterable[str | os.PathLike]) -> None:
        """Re-read these episodes now (the studio calls this after writing them); a path that no
        longer exists drops its row. Saves the index."""
        known = dict(self._loaded())
        for item in paths:
            path = Path(item)
            if path.parent != self.store_dir:
                path = self.store_dir / path.name
            if schema.episode_index(path.name) is None:
                continue
            try:
                stamp = FileStamp.of(path.stat())
            except FileNotFoundError:
                known.pop(path.name, None)
                continue
            with self.file_lock:
                known[path.name] = read_row(path, stamp)
        self._store(known)

    # ---- internals ----
    def _loaded(self) -> dict[str, EpisodeRow]:
        with self._lock:
            if self._rows is not None:
                return dict(self._rows)
        rows = self._read_file()
        with self._lock:
            if self._rows is None:
                self._rows = rows
            return dict(self._rows)

    def _read_file(self) -> dict[str, EpisodeRow]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("The store index %s is unreadable (%s); rebuilding it from the episodes", self.path, error)
            return {}
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
            return {}
        rows: dict[str, EpisodeRow] = {}
        for item in data.get("rows", ()):
            try:
                row = EpisodeRow.from_json(item)
            except (TypeError, KeyError, ValueError) as error:
                log.warning("Ignoring a damaged row of %s: %s", self.path.name, error)
                continue
            rows[row.name] = row
        return rows

    def _refresh(self, known: dict[str, EpisodeRow], progress: Progress | None) -> Refresh:
        finished: list[tuple[str, FileStamp]] = []
        partials: list[str] = []
        if self.store_dir.is_dir():
            for entry in os.scandir(self.store_dir):
                if schema.episode_index(entry.name) is not None:
                    try:
                        if entry.is_file():
                            finished.append((entry.name, FileStamp.of(entry.stat())))
                    except FileNotFoundError:  # removed between listing and stat
                        continue
                elif schema.partial_index(entry.name) is not None:
                    partials.append(entry.name)
        rows: dict[str, EpisodeRow] = {}
        reread: list[str] = []
        stale = [(name, stamp) for name, stamp in finished if known.get(name) is None or known[name].stamp != stamp]
        for name, stamp in finished:
            row = known.get(name)
            if row is not None and row.stamp == stamp:
                rows[name] = row
        for done, (name, stamp) in enumerate(stale):
            with self.file_lock:
                rows[name] = read_row(self.store_dir / name, stamp)
            reread.append(name)
            if progress is not None:
                progress(done + 1, len(stale))
        dropped = tuple(sorted(set(known) - set(rows)))
        if reread or dropped or not self.path.exists():
            self._store(rows)
        else:
            with self._lock:
                self._rows = dict(rows)
        leftovers = [self._partial_row(name) for name in partials]
        ordered = tuple(sorted(rows.values(), key=_order)) + tuple(sorted(leftovers, key=_order))
        return Refresh(ordered, tuple(reread), dropped, len(rows) - len(reread))

    def _partial_row(self, name: str) -> EpisodeRow:
        path = self.store_dir / name
        try:
            stamp = FileStamp.of(path.stat())
        except FileNotFoundError:
            stamp = FileStamp(0, 0, 0)
        live = recording_in_progress(path)
        return EpisodeRow(
            name=name,
            index=schema.partial_index(name),
            stamp=stamp,
            unfinished=True,
            live=live,
            problem="being recorded now" if live else "unfinished recording: run `episodes recover`",
        )

    def _store(self, rows: dict[str, EpisodeRow]) -> None:
        with self._lock:
            self._rows = dict(rows)
        data = {"version": INDEX_VERSION, "rows": [row.to_json() for row in sorted(rows.values(), key=_order)]}
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"), allow_nan=False)
            os.replace(temporary, self.path)
        except (OSError, ValueError) as error:
            # A read-only store still opens; it is just read in full every time.
            log.warning("Could not save the store index %s: %s", self.path, error)
            try:
                temporary.unlink()
            except OSError:
                pass


def _order(row: EpisodeRow) -> tuple[int, str]:
    return (row.index if row.index is not None else 1 << 62, row.name)

