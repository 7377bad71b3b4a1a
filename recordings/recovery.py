"""Turning the leftover of an interrupted recording (`episode_{idx}.hdf5.partial`) into an episode.

The writer (see `recordings.writer`) keeps the partial file consistent with HDF5's SWMR mode and
writes a step's `/timestamp` only after the step's other data is flushed. So the complete steps
are the leading ones whose timestamp is set (unwritten timestamps read NaN). Recovery copies
them into a fresh file with the same layout, checks it, renames it to `episode_{idx}.hdf5` and
only then deletes the leftover. A leftover that is being recorded right now (its writer holds a
flock on it) is never touched.

A finished episode that HDF5 refuses only because a process was killed while it had the file
open for writing (the superblock's open-for-write flags are still set) is repaired in place by
clearing the flags (`clear_open_for_write`, what `h5clear -s` does), after making sure nobody
has it open, and then checked.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from recordings import schema
from recordings.attributes import root_attributes
from recordings.check import check_episode
from recordings.errors import RecoveryError
from recordings.hdf5_faults import READ_ERRORS, attribute, describe, member
from recordings.images import decode_jpeg
from recordings.layout import SWMR_LIBVER, ImageLayout, attr_text, camera_names_of, create_episode
from recordings.locks import LockHeld, lock_exclusive, release
from recordings.metadata import EpisodeMetadata
from recordings.schema import ImageFormat
from recordings.superblock import clear_write_flags, read_superblock

log = logging.getLogger(__name__)

#: Steps copied per block: bounds memory for raw frames (64 x 0.9 MB per camera).
COPY_BLOCK = 64
#: How far back recovery looks for a decodable last frame before giving up on the tail.
MAX_TAIL_BACKOFF = 50


@dataclass(frozen=True)
class RecoveryResult:
    """What recovering one leftover gave. path: the new episode, or None when the leftover held
    no complete step (it is then removed). frames_discarded: incomplete steps past the last
    complete one (those of the last flush interval)."""

    source: Path
    path: Path | None
    frames: int
    duration_s: float
    frames_discarded: int

    @property
    def message(self) -> str:
        if self.path is None:
            return f"{self.source.name}: held no complete frame (stopped before the first second); removed"
        return (
            f"{self.source.name} -> {self.path.name}: recovered {self.frames} frames ({self.duration_s:.1f} s)"
            + (f", {self.frames_discarded} incomplete frames at the end dropped" if self.frames_discarded else "")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "path": str(self.path) if self.path else None,
            "frames": self.frames,
            "duration_s": self.duration_s,
            "frames_discarded": self.frames_discarded,
            "message": self.message,
        }


@dataclass(frozen=True)
class RepairResult:
    """A finished episode whose open-for-write mark was cleared. ok: it checks out now; reasons:
    what `check` still finds wrong when it does not."""

    path: Path
    ok: bool
    reasons: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        if self.ok:
            return f"{self.path.name}: cleared HDF5's open-for-write mark (left by a killed process); the episode checks out"
        return f"{self.path.name}: cleared HDF5's open-for-write mark, but it is still not valid: " + "; ".join(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {"source": str(self.path), "path": str(self.path), "repaired": True, "ok": self.ok,
                "reasons": list(self.reasons), "message": self.message}


def marked_open_for_write(path: str | os.PathLike) -> bool:
    """True when the file's superblock says a process has it open for writing (never raises)."""
    try:
        block = read_superblock(path)
    except OSError:
        return False
    return block is not None and block.open_for_write


def clear_open_for_write(path: str | os.PathLike) -> RepairResult:
    """Clear the open-for-write mark of a finished episode that no process has open, then check
    it. Raises RecoveryError (the file untouched) when a process holds it or the superblock is
    damaged, or when there is nothing to clear."""
    path = Path(path)
    if not path.is_file():
        raise RecoveryError(path, "there is no such file")
    try:
        lock_fd = lock_exclusive(path)  # HDF5 readers and writers hold flock locks on open files
    except LockHeld as error:
        raise RecoveryError(path, "a process has it open right now; close the studio or tool using it first") from error
    except OSError as error:
        raise RecoveryError(path, f"it cannot be opened ({error.strerror or error})") from error
    try:
        try:
            cleared = clear_write_flags(path)
        except ValueError as error:
            raise RecoveryError(path, str(error)) from error
        except OSError as error:
            raise RecoveryError(path, f"writing its superblock failed ({error.strerror or error})") from error
    finally:
        release(lock_fd)  # before checking: HDF5's own lock would collide with ours
    verdict = check_episode(path)
    if not cleared:
        if verdict.ok:
            raise RecoveryError(path, "it is a finished episode that needs no recovery")
        raise RecoveryError(path, "it is not marked open for writing; what is wrong: " + "; ".join(verdict.reasons))
    result = RepairResult(path, verdict.ok, verdict.reasons)
    log.info("%s", result.message)
    return result


def committed_length(root: h5py.File) -> tuple[int, int]:
    """(complete steps, steps present at all) in a partial file."""
    stamps_ds = member(root, schema.TIMESTAMP)
    if stamps_ds is None:
        return 0, 0
    stamps = stamps_ds[()]
    finite = np.isfinite(stamps)
    complete = int(stamps.size if finite.all() else np.argmin(finite))
    present = complete
    cameras = camera_names_of(root)
    paths = [schema.QPOS, schema.QVEL, schema.EFFORT, schema.ACTION, schema.CONTROL_SOURCE, schema.TICK_INDEX]
    paths += [schema.image_path(c) for c in cameras] + [schema.image_time_path(c) for c in cameras]
    paths += [path for path in (schema.LOOP_MODE, schema.SAFETY_CLIPPED) if member(root, path) is not None]
    for path in paths:
        item = member(root, path)
        if item is None:
            return 0, present
        complete = min(complete, item.shape[0])
        present = max(present, item.shape[0])
    compress_len = member(root, schema.COMPRESS_LEN)
    if compress_len is not None:
        complete = min(complete, compress_len.shape[1])
    return complete, present


def recover_partial(partial: str | os.PathLike, target_dir: str | os.PathLike | None = None) -> RecoveryResult:
    """Recover one leftover recording into `target_dir` (default: its own folder).

    Raises RecoveryError (the leftover is kept as it was) when it is being recorded right now,
    cannot be read, or the copy does not check out.
    """
    partial = Path(partial)
    target_dir = Path(target_dir) if target_dir is not None else partial.parent
    if not partial.is_file():
        raise RecoveryError(partial, "there is no such file")
    try:
        lock_fd = lock_exclusive(partial)  # held while recovering: keeps a second `recover` out
    except LockHeld as error:
        raise RecoveryError(partial, "it is being recorded right now; stop that recording first") from error
    try:
        if marked_open_for_write(partial) and not _swmr_leftover(partial):
            # Killed while finishing (a plain read-write open, not SWMR): only the mark is in
            # the way, and the flock taken above says nobody has the file open.
            try:
                clear_write_flags(partial)
            except (ValueError, OSError) as error:
                raise RecoveryError(partial, f"HDF5's open-for-write mark cannot be cleared ({error})") from error
        root = _open_leftover(partial)
        try:
            with root:
                result = _recover_open(root, partial, target_dir)
        except RecoveryError:
            raise
        except READ_ERRORS as error:  # the leftover itself is damaged beyond its last flush
            raise RecoveryError(partial, f"its data cannot be read ({describe(error)})") from error
        partial.unlink()
    finally:
        release(lock_fd)
    log.info("%s", result.message)
    return result


def _recover_open(root: h5py.File, partial: Path, target_dir: Path) -> RecoveryResult:
    """The copy of `recover_partial`, from the open leftover into a checked new episode."""
    from recordings.store import next_free_index

    if schema.ATTR_SCHEMA_VERSION not in root_attributes(root):
        raise RecoveryError(partial, "it was not written by this studio's recorder; rename it if it is an episode")
    complete, present = committed_length(root)
    if complete == 0:
        return RecoveryResult(partial, None, 0, 0.0, present)
    complete = _last_decodable(root, complete)
    index = schema.partial_index(partial.name)
    if index is None or (target_dir / schema.episode_filename(index)).exists() or (
        target_dir != partial.parent and (target_dir / schema.partial_filename(index)).exists()
    ):
        index = next_free_index(target_dir)
    target = target_dir / schema.episode_filename(index)
    staging = target.with_name(target.name + schema.RECOVERING_SUFFIX)
    try:
        _copy(root, staging, complete)
    except READ_ERRORS as error:
        _remove_quietly(staging)
        if _disk_full(error):
            raise RecoveryError(partial, f"writing {staging.name} failed ({describe(error)}); free disk space and retry") from error
        raise RecoveryError(partial, f"copying its data failed ({describe(error)})") from error
    verdict = check_episode(staging)
    if not verdict.ok:
        _remove_quietly(staging)
        raise RecoveryError(partial, "the recovered copy does not check out: " + "; ".join(verdict.reasons))
    _fsync(staging)
    os.rename(staging, target)
    _fsync(target_dir)
    return RecoveryResult(partial, target, complete, _duration_s(target), present - complete)


def _disk_full(error: BaseException) -> bool:
    text = str(error).lower()
    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or any(
        sign in text for sign in ("no space left", "file too large", "disk quota")
    )


def _duration_s(path: Path) -> float:
    """The duration `episodes list` shows for the same file: one definition, the reader's."""
    from recordings.reader import Episode  # the reader imports this package's check module

    with Episode.open(path) as episode:
        return episode.duration_s


def _swmr_leftover(path: Path) -> bool:
    block = read_superblock(path)
    return block is not None and bool(block.flags & 0x04)


def _open_leftover(partial: Path) -> h5py.File:
    """A crashed SWMR writer leaves the file marked open-for-writing, which only a SWMR reader
    may open; a leftover that never reached its first frame is a plain closed file."""
    errors = []
    for kwargs in ({"swmr": True}, {}):
        try:
            return h5py.File(partial, "r", locking=False, **kwargs)
        except OSError as error:
            errors.append(str(error))
    raise RecoveryError(partial, "HDF5 cannot read it (" + " / ".join(" ".join(e.split())[:160] for e in errors) + ")")


def _last_decodable(root: h5py.File, complete: int) -> int:
    """Belt and braces: back off from a tail whose frames do not decode."""
    cameras = camera_names_of(root)
    compress_len = member(root, schema.COMPRESS_LEN)
    if compress_len is None:
        return complete
    for n in range(complete, max(complete - MAX_TAIL_BACKOFF, 0), -1):
        t = n - 1
        try:
            for c, camera in enumerate(cameras):
                length = int(compress_len[c, t])
                decode_jpeg(root[schema.image_path(camera)][t, :length], length)
            if n != complete:
                log.warning("Dropped %d steps whose frames do not decode", complete - n)
            return n
        except (ValueError, OSError):
            continue
    return complete


def _copy(source: h5py.File, target: Path, n: int) -> None:
    """Copy the first n steps of `source` into a new episode file at `target`."""
    attrs = root_attributes(source)
    cameras = camera_names_of(source, attrs)
    fmt = ImageFormat(attr_text(attribute(attrs, schema.ATTR_IMAGE_FORMAT, ImageFormat.JPEG.value)))
    metadata = EpisodeMetadata.from_attrs(attrs)
    shapes: dict[str, tuple[int, int, int]] = {}
    jpeg_width = 1
    compress_len = source[schema.COMPRESS_LEN][:, :n] if fmt is ImageFormat.JPEG else None
    for c, camera in enumerate(cameras):
        dataset = source[schema.image_path(camera)]
        if fmt is ImageFormat.RAW:
            shapes[camera] = tuple(dataset.shape[1:])
        else:
            shapes[camera] = decode_jpeg(dataset[0, : int(compress_len[c, 0])], int(compress_len[c, 0])).shape
    if compress_len is not None and compress_len.size:
        jpeg_width = int(compress_len.max())  # trim the growth headroom of the live file
    layout = ImageLayout(
        cameras, fmt, shapes, int(attribute(attrs, schema.ATTR_JPEG_QUALITY, 90)), max(jpeg_width, 1)
    )
    # A leftover from before the loop record existed has none: the copy must not invent one.
    loop_record = schema.LOOP_MODE in source
    events = _events_of_steps(source, n) if loop_record else None
    with h5py.File(target, "w", libver=SWMR_LIBVER) as out:  # the checksummed format, as the writer's
        create_episode(out, layout, metadata, length=n, jpeg_width=jpeg_width, loop_record=loop_record,
                       events=0 if events is None else len(events))
        for name, value in attrs.items():  # keep anything the writer knew that metadata does not model
            if name not in out.attrs:
                out.attrs[name] = value
        out.attrs[schema.ATTR_FRAMES_DROPPED] = attribute(attrs, schema.ATTR_FRAMES_DROPPED, 0)
        out.attrs[schema.ATTR_FINISHED] = False
        out.attrs[schema.ATTR_RECOVERED] = True
        step_paths = [schema.QPOS, schema.QVEL, schema.EFFORT, schema.ACTION, schema.TIMESTAMP, schema.CONTROL_SOURCE, schema.TICK_INDEX]
        step_paths += [schema.image_time_path(c) for c in cameras]
        step_paths += [path for path in (schema.SIM_TIME,) if path in source]
        step_paths += [schema.LOOP_MODE, schema.SAFETY_CLIPPED] if loop_record else []
        for path in step_paths:
            out[path][:] = source[path][:n]
        if events is not None and len(events):
            out[schema.LOOP_EVENTS][:] = events
        if compress_len is not None:
            out[schema.COMPRESS_LEN][:] = compress_len
        for c, camera in enumerate(cameras):
            src, dst = source[schema.image_path(camera)], out[schema.image_path(camera)]
            for start in range(0, n, COPY_BLOCK):
                end = min(start + COPY_BLOCK, n)
                if fmt is ImageFormat.RAW:
                    dst[start:end] = src[start:end]
                else:
                    dst[start:end] = src[start:end, :jpeg_width]


def _events_of_steps(source: h5py.File, n: int) -> np.ndarray:
    """The leftover's loop events up to its n-th step's tick: those written past it belong to
    steps the crash lost (the writer writes a commit's events before its timestamps)."""
    events = source[schema.LOOP_EVENTS][()]
    last_tick = int(source[schema.TICK_INDEX][n - 1])
    return events[events["tick"] <= last_tick]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        log.warning("Could not sync %s to disk: %s", path, error)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
