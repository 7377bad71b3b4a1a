"""Deleting episodes without losing them: a trash folder inside the store, restorable.

`move_to_trash` renames `episode_{idx}.hdf5` to `trash/episode_{idx}.hdf5.trashed-{UTC stamp}`:
the same file system, so it is one atomic rename; outside the store's top folder and without an
`.hdf5` ending, so neither our store nor ALOHA/ACT/LeRobot globs (`episode_*.hdf5`, `*.hdf5`)
see it. The name keeps everything a restore needs, so there is no manifest to go out of step.

`restore` puts a trashed file back under its old name, or - when a newer recording took that
index meanwhile (the store reuses the lowest free index, as ALOHA does) - under the next free
index, and says so. Nothing here ever overwrites an episode.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from recordings import schema
from recordings.errors import RecordingError

TRASH_DIR = "trash"
_TRASHED_NAME = re.compile(r"^(episode_(\d+)\.hdf5)\.trashed-(\d{8}T\d{12})$")


@dataclass(frozen=True)
class TrashedEpisode:
    """One file in the trash. original: the name it had in the store; trashed_at: UTC."""

    path: Path
    original: str
    index: int
    trashed_at: _dt.datetime

    @property
    def name(self) -> str:
        return self.path.name


def trash_dir(store_dir: str | os.PathLike) -> Path:
    return Path(store_dir) / TRASH_DIR


def _stamp(now: _dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S%f")


def move_to_trash(store_dir: str | os.PathLike, episode: str | os.PathLike) -> TrashedEpisode:
    """Move a finished episode of the store to its trash. Raises RecordingError (what to do)
    for a file that is not a finished episode of this store."""
    store = Path(store_dir)
    path = Path(episode)
    if not path.is_absolute() and path.parent == Path("."):
        path = store / path
    index = schema.episode_index(path.name)
    if index is None:
        if schema.partial_index(path.name) is not None:
            raise RecordingError(
                f"{path.name} is an unfinished recording, not an episode: recover it first "
                f"(`python run.py episodes recover`) or wait until the recording stops."
            )
        raise RecordingError(f"{path.name} is not an episode file (episode_N.hdf5); nothing was moved.")
    if path.resolve().parent != store.resolve():
        raise RecordingError(f"{path} is not in the store {store}; only the store's episodes go to its trash.")
    if not path.is_file():
        raise RecordingError(f"There is no episode {path.name} in {store} (already in the trash?).")
    folder = trash_dir(store)
    folder.mkdir(exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    target = folder / f"{path.name}.trashed-{_stamp(now)}"
    while target.exists():  # two trashings within a microsecond: keep both
        now += _dt.timedelta(microseconds=1)
        target = folder / f"{path.name}.trashed-{_stamp(now)}"
    try:
        os.rename(path, target)
    except OSError as error:
        raise RecordingError(f"Could not move {path.name} to the trash: {error}. Is the store read-only?") from error
    return TrashedEpisode(target, path.name, index, now)


def trashed_episodes(store_dir: str | os.PathLike) -> list[TrashedEpisode]:
    """The trash, newest first."""
    folder = trash_dir(store_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in os.scandir(folder):
        match = _TRASHED_NAME.match(entry.name)
        if match and entry.is_file():
            when = _dt.datetime.strptime(match.group(3), "%Y%m%dT%H%M%S%f").replace(tzinfo=_dt.timezone.utc)
            found.append(TrashedEpisode(Path(entry.path), match.group(1), int(match.group(2)), when))
    return sorted(found, key=lambda item: item.trashed_at, reverse=True)


def find_trashed(store_dir: str | os.PathLike, name: str | os.PathLike) -> TrashedEpisode:
    """A trashed file by its trash name, its path, or its original name/index (the newest such)."""
    wanted = Path(name).name
    items = trashed_episodes(store_dir)
    for item in items:
        if item.name == wanted:
            return item
    for item in items:  # newest first: the most recent trashing of that name
        if item.original == wanted or str(item.index) == wanted:
            return item
    listed = ", ".join(item.name for item in items[:5]) or "the trash is empty"
    raise RecordingError(f"{wanted} is not in the trash of {store_dir} ({listed}).")


def restore(store_dir: str | os.PathLike, name: str | os.PathLike) -> Path:
    """Put a trashed episode back; returns its new path (its old name when free)."""
    from recordings.store import next_free_index  # the store imports this module's names

    store = Path(store_dir)
    item = find_trashed(store, name)
    target = store / item.original
    if target.exists() or (store / schema.partial_filename(item.index)).exists():
        target = store / schema.episode_filename(next_free_index(store))
    try:
        # link + unlink instead of rename: link fails if a recording took the name meanwhile.
        os.link(item.path, target)
    except FileExistsError:
        target = store / schema.episode_filename(next_free_index(store))
        os.link(item.path, target)
    except OSError:  # a file system without hard links: a checked rename
        if target.exists():
            target = store / schema.episode_filename(next_free_index(store))
        try:
            os.rename(item.path, target)
        except OSError as error:
            raise RecordingError(f"Could not restore {item.name}: {error}.") from error
        return target
    os.unlink(item.path)
    return target
