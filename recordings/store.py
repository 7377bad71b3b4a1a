"""A folder of episodes (`episode_{idx}.hdf5`, ALOHA's naming) and the leftovers of interrupted
recordings (`episode_{idx}.hdf5.partial`): listing, next index, check, recover, relabel."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from recordings import schema
from recordings.check import CheckResult, check_episode
from recordings.errors import EpisodeFormatError, RecordingError, RecoveryError, UnfinishedEpisode
from recordings.hdf5_faults import DAMAGED_FIX, READ_ERRORS, describe
from recordings.labels import LabelState, write_label
from recordings.locks import recording_in_progress
from recordings.reader import Episode
from recordings.recovery import RecoveryResult, RepairResult, clear_open_for_write, marked_open_for_write, recover_partial
from recordings.schema import Label

log = logging.getLogger(__name__)

#: The default store: recordings/episodes/ in the repository (git-ignored).
DEFAULT_STORE_DIR = Path(__file__).resolve().parent / "episodes"


def next_free_index(store_dir: str | os.PathLike) -> int:
    """The lowest index used neither by an episode nor by a leftover (ALOHA's auto index: ACT's
    original loader wants episodes 0..N-1 without gaps)."""
    store_dir = Path(store_dir)
    used: set[int] = set()
    if store_dir.is_dir():
        for entry in os.scandir(store_dir):
            index = schema.episode_index(entry.name)
            if index is None:
                index = schema.partial_index(entry.name)
            if index is not None:
                used.add(index)
    index = 0
    while index in used:
        index += 1
    return index


def set_label(
    path: str | os.PathLike, label: Label | str, notes: str | None = None, reason: str | None = None
) -> LabelState:
    """Change a finished episode's label, and its notes / failure reason unless None ("" clears),
    so that a kill at any instant leaves the old or the new label and never the frames at risk
    (see `recordings.labels`). Returns the new state.

    Raises ValueError for an unknown label, EpisodeFormatError (UnfinishedEpisode) for a file
    that is not a readable finished episode, RecordingError when it cannot be written.
    """
    return write_label(path, label, notes, reason)


class StorePathError(RecordingError):
    """The store path given is not a folder of episodes (missing, a file, not writable)."""


def require_store_dir(path: str | os.PathLike, *, create: bool = False) -> Path:
    """`path` as a store folder, or StorePathError saying what is wrong with it.

    create: make the folder (and its parents) when missing, as a recording does; otherwise a
    missing folder is an error, so a typo in a script's `--store` is not read as "no episodes".
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StorePathError(
            f"{path} is a file, not a folder: --store takes the folder that holds the episode files "
            f"(e.g. {path.parent})"
        )
    if not path.exists():
        if not create:
            raise StorePathError(f"There is no folder {path}: check the --store path (a typo?)")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorePathError(f"Cannot create the episode folder {path}: {error.strerror or error}") from error
    if create and not os.access(path, os.W_OK | os.X_OK):
        raise StorePathError(f"The episode folder {path} is not writable: choose another --store or fix its permissions")
    return path


@dataclass(frozen=True)
class EpisodeSummary:
    """One row of the store's list. problem: why the file cannot be used (None when it can);
    unfinished: a leftover recording that `recover` may turn into an episode."""

    path: Path
    index: int | None
    length: int = 0
    duration_s: float = 0.0
    label: str = Label.UNKNOWN.value
    task: str = ""
    operator: str = ""
    created: str = ""
    cameras: tuple[str, ...] = ()
    compressed: bool = False
    frames_dropped: int = 0
    recovered: bool = False
    unfinished: bool = False
    live: bool = False  # an unfinished file that is being recorded right now
    problem: str | None = None
    reason: str = ""  # why it failed (label reason), as set with the label
    notes: str = ""
    warning: str | None = None  # worth knowing but the file is usable (e.g. a label edit was cut off)

    @property
    def needs_attention(self) -> bool:
        """A damaged file or a leftover to recover (a live recording is neither)."""
        return self.problem is not None and not self.live

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "index": self.index,
            "length": self.length,
            "duration_s": round(self.duration_s, 3),
            "label": self.label,
            "reason": self.reason,
            "task": self.task,
            "operator": self.operator,
            "created": self.created,
            "cameras": list(self.cameras),
            "compressed": self.compressed,
            "frames_dropped": self.frames_dropped,
            "recovered": self.recovered,
            "unfinished": self.unfinished,
            "live": self.live,
            "problem": self.problem,
            "reason": self.reason,
            "notes": self.notes,
            "warning": self.warning,
        }


class EpisodeStore:
    """The episodes in one folder. Reads only what a summary needs (no frames)."""

    def __init__(self, root: str | os.PathLike = DEFAULT_STORE_DIR):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.root)!r})"

    # ---- files ----
    def episode_paths(self) -> list[Path]:
        """Finished episodes, by index."""
        return self._matching(schema.episode_index)

    def partial_paths(self) -> list[Path]:
        """Leftovers of interrupted recordings (and the one being recorded now), by index."""
        return self._matching(schema.partial_index)

    def _matching(self, index_of) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [(index_of(entry.name), Path(entry.path)) for entry in os.scandir(self.root) if entry.is_file()]
        return [path for index, path in sorted((i, p) for i, p in found if i is not None)]

    def next_index(self) -> int:
        return next_free_index(self.root)

    def path_for(self, index: int) -> Path:
        return self.root / schema.episode_filename(index)

    def resolve(self, episode: str | os.PathLike | int) -> Path:
        """An index, a file name in the store, or a path -> the file's path."""
        if isinstance(episode, int):
            return self.path_for(episode)
        path = Path(episode)
        if not path.exists() and not path.is_absolute() and (self.root / path).exists():
            return self.root / path
        return path

    # ---- summaries ----
    def summaries(self) -> list[EpisodeSummary]:
        """Every episode, then every leftover, with what the list view shows."""
        rows = [self.summary(path) for path in self.episode_paths()]
        for path in self.partial_paths():
            live = recording_in_progress(path)
            rows.append(
                EpisodeSummary(
                    path=path,
                    index=schema.partial_index(path.name),
                    unfinished=True,
                    live=live,
                    problem="being recorded now" if live else "unfinished recording: run `episodes recover`",
                )
            )
        return rows

    def summary(self, path: str | os.PathLike) -> EpisodeSummary:
        """One file's row; a damaged file gives a row with `problem` (never an exception)."""
        path = Path(path)
        index = schema.episode_index(path.name)
        try:
            with Episode.open(path) as episode:
                meta = episode.metadata
                return EpisodeSummary(
                    path=path,
                    index=index,
                    length=episode.length,
                    duration_s=episode.duration_s,
                    label=meta.label.value,
                    task=meta.task,
                    operator=meta.operator,
                    created=meta.created,
                    cameras=episode.camera_names,
                    compressed=episode.compressed,
                    frames_dropped=episode.frames_dropped,
                    recovered=episode.recovered,
                    reason=meta.reason,
                    notes=meta.notes,
                    warning=episode.label_warning,
                )
        except UnfinishedEpisode as error:
            return EpisodeSummary(path=path, index=index, unfinished=True, problem="; ".join(error.reasons))
        except EpisodeFormatError as error:
            return EpisodeSummary(path=path, index=index, problem="; ".join(error.reasons) + f": {DAMAGED_FIX}")
        except READ_ERRORS as error:  # what the reader did not turn into a format error itself
            return EpisodeSummary(path=path, index=index, problem=f"{describe(error)}: {DAMAGED_FIX}")

    # ---- operations ----
    def check(
        self, paths: Iterable[str | os.PathLike] | None = None, spot_checks: int = 3, deep: bool = False
    ) -> list[CheckResult]:
        """Check the given files, or every episode and leftover of the store, each on its own
        (deep: decode every frame, see `check_episode`)."""
        targets = [self.resolve(p) for p in paths] if paths is not None else self.episode_paths() + self.partial_paths()
        return [check_episode(path, spot_checks, deep=deep) for path in targets]

    def recover(
        self, paths: Iterable[str | os.PathLike] | None = None
    ) -> list[RecoveryResult | RepairResult | RecoveryError]:
        """Recover the given files, or all of the store's that need it and are not being recorded
        right now: leftovers of interrupted recordings, and finished episodes that HDF5 refuses
        only because a killed process left them marked open for writing. One failure does not
        stop the rest."""
        if paths is None:
            targets = [path for path in self.partial_paths() if not recording_in_progress(path)]
            targets += [path for path in self.episode_paths() if marked_open_for_write(path)]
        else:
            targets = [self.resolve(p) for p in paths]
        results: list[RecoveryResult | RepairResult | RecoveryError] = []
        for path in targets:
            try:
                if schema.partial_index(path.name) is None and path.suffix == schema.EPISODE_SUFFIX:
                    results.append(clear_open_for_write(path))
                else:
                    results.append(recover_partial(path, self.root if paths is None else None))
            except RecoveryError as error:
                log.error("%s", error)
                results.append(error)
        return results

    def relabel(
        self, episode: str | os.PathLike | int, label: Label | str, notes: str | None = None, reason: str | None = None
    ) -> Path:
        """Set an episode's label (index, file name in the store, or path); see `set_label`."""
        path = self.resolve(episode)
        set_label(path, label, notes, reason)
        return path
