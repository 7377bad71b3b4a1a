"""The episode writer: a control-loop subscriber that records tick records to an HDF5 episode.

Threads:
- the control thread calls `on_tick(record)`: it only appends the record to a bounded queue (a
  deque the writer thread polls: about a microsecond) and never waits; when the queue is full
  the tick is counted as dropped and the writer reports `FramesDropped`.
- the writer thread (one per episode, started by `start()`) owns the HDF5 file: it validates the
  records, JPEG-encodes the frames (OpenCV releases the GIL) and appends them to resizable
  datasets.
- any thread may call `status()`; `start()`, `stop()`, `request_stop()` and `discard()` come from
  the owner (GUI or job), one at a time.

The studio records through `recordings.writer_process.ProcessEpisodeWriter`, which runs this
writer in a process of its own (HDF5 writes and encoding then never hold the control process's
interpreter lock) and feeds it checked `TickStep`s from shared memory (`enqueue_step`); this
class alone is the in-process variant (`[recording] writer_process = false`, unpaced jobs' tests).

Modules: this one holds the owner's API and the episode's session; `recordings.tick_step` the
check of a tick record, `recordings.episode_sink` the writer thread's file work, and
`recordings.writer_status` the settings and status both writers speak.

Crash safety: the file is written under `episode_{idx}.hdf5.partial` in HDF5's SWMR mode, which
keeps the file consistent on disk at every moment. Every `flush_interval_s` the writer writes the
pending steps, flushes, then writes their `/timestamp` and flushes again: a step counts as
written once its timestamp is on disk, so a killed process (kill -9, power cut of the process)
loses at most the steps of the last interval plus the queue, and `recordings.recovery` turns the
leftover into an episode. A finished episode is flushed, fsynced and renamed to
`episode_{idx}.hdf5`. While recording, the writer holds an exclusive `flock` on the partial file,
so recovery and readers keep their hands off a live recording.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py

from recordings import schema
from recordings.episode_sink import EpisodeSink, describe_write_error
from recordings.errors import FramesDropped, RecordingError, RecordingWriteError
from recordings.labels import LabelState, reset_label_record
from recordings.layout import SWMR_LIBVER, ImageLayout, set_text_attr, write_attrs
from recordings.locks import LockHeld, lock_exclusive, release
from recordings.metadata import EpisodeMetadata
from recordings.policy_tables import PolicyTables
from recordings.schema import ImageFormat, Label
from recordings.tick_step import BadTick, TickStep
from recordings.writer_status import WriterConfig, WriterState, WriterStatus
from robot.types import LoopEvent, TickRecord

log = logging.getLogger(__name__)



class _Session:
    """One episode's state. Fields are written by the thread named beside them; reads from other
    threads see a recent value (plain attribute reads are atomic under the GIL)."""

    def __init__(self, index: int, path: Path, partial_path: Path, metadata: EpisodeMetadata, capacity: int):
        self.index = index
        self.path = path  # final path; may change at rename if the name got taken (writer thread)
        self.partial_path = partial_path
        self.metadata = metadata
        # A deque, not a queue.Queue: append is ~0.1 us and wakes nobody (putting into a Queue
        # with a waiting reader costs the control thread ~20-50 us of futex wake-up); the writer
        # thread polls it instead. Only the control thread appends, only the writer pops.
        self.buffer: collections.deque[TickRecord | TickStep | BadTick] = collections.deque()
        self.capacity = capacity
        self.accepting = True  # owner thread clears it
        self.stop_requested = threading.Event()
        self.discard = False
        self.label = Label.UNKNOWN
        self.notes: str | None = None
        self.reason: str | None = None
        self.state = WriterState.RECORDING  # writer thread (owner sets FINISHING)
        self.error: RecordingError | None = None  # writer thread
        self.done = threading.Event()
        self._state_lock = threading.Lock()
        # control thread
        self.received = 0
        self.dropped = 0
        self.high_water = 0
        self.first_time_s: float | None = None
        self.last_time_s: float | None = None
        # writer thread
        self.committed = 0
        self.bytes_written = 0
        self.dropped_reported = 0
        self.lock_fd: int | None = None
        self.thread: threading.Thread | None = None
        # Policy rows: the control thread appends (table, row), the writer thread drains them
        # into `policy_tables`, written with the finished file (recordings.policy_tables).
        self.policy_rows: collections.deque[tuple[str, Mapping[str, Any]]] = collections.deque()
        self.policy_tables = PolicyTables()
        # Loop events: the control thread appends, the writer thread writes them at each commit.
        self.events: collections.deque[LoopEvent] = collections.deque()


    def set_state(self, state: WriterState, only_from: WriterState | None = None) -> None:
        """Change state atomically (owner and writer thread both change it)."""
        with self._state_lock:
            if only_from is None or self.state is only_from:
                self.state = state


def check_camera_names(camera_names: Sequence[str]) -> tuple[str, ...]:
    """The camera names as a tuple; ValueError (with the fix) when an episode cannot use them."""
    names = tuple(camera_names)
    if not names:
        raise ValueError(
            "EpisodeWriter: the rig has no cameras, but every episode records at least one camera "
            "(the episode format and the policy need images); give the rig a camera, e.g. "
            'camera_names = ["cam_high"] in the rig file'
        )
    if len(set(names)) != len(names) or any(not name or "/" in name for name in names):
        raise ValueError(f"EpisodeWriter: camera names must be distinct, non-empty and without '/': {list(camera_names)}")
    return names


class EpisodeWriter:
    """Records the tick records of the control loop into `episode_{idx}.hdf5` files of a store.

    One writer can record many episodes one after another (`start()` ... `stop()`); subscribe
    `on_tick` to the control loop once. The writer keeps references to the arrays of a record
    until they are written, so publishers must hand over fresh arrays each tick (never refill one
    in place).
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        camera_names: Sequence[str],
        metadata: EpisodeMetadata | None = None,
        *,
        image_format: ImageFormat | str = ImageFormat.JPEG,
        jpeg_quality: int = 90,
        queue_size: int = 100,
        flush_interval_s: float = 0.5,
    ):
        self.store_dir = Path(store_dir)
        self.camera_names = check_camera_names(camera_names)
        self.metadata = metadata or EpisodeMetadata()
        self.config = WriterConfig(
            image_format=image_format, jpeg_quality=jpeg_quality, queue_size=queue_size, flush_interval_s=flush_interval_s
        )
        self._session: _Session | None = None
        self._policy_attrs: dict[str, Any] = {}

    # ---- owner API ----
    def start(self, metadata: EpisodeMetadata | None = None) -> Path:
        """Begin a new episode at the store's next free index; returns the path it will have.

        Raises RecordingError if an episode is still being recorded or the store is not writable.
        """
        current = self._session
        if current is not None and current.state in (WriterState.RECORDING, WriterState.FINISHING):
            raise RecordingError(
                f"Already recording {current.path.name}: stop or discard it before starting another episode."
            )
        meta = (metadata or self.metadata).with_created_now()
        index, partial = self._reserve(meta)
        session = _Session(index, self.store_dir / schema.episode_filename(index), partial, meta, self.config.queue_size)
        session.lock_fd = _lock(partial)
        session.thread = threading.Thread(
            target=self._run, args=(session,), name=f"episode-writer-{index}", daemon=True
        )
        self._session = session
        session.thread.start()
        log.info("Recording %s (%s, %s)", session.path, self.config.image_format.value, ", ".join(self.camera_names))
        return session.path

    def on_tick(self, record: TickRecord) -> None:
        """Control-loop subscriber (control thread): enqueue the record, never wait, never raise."""
        session = self._session
        if session is None or not session.accepting:
            return
        buffer = session.buffer
        depth = len(buffer)
        if depth >= session.capacity:
            session.dropped += 1  # reported from the writer thread: logging may block on I/O
            return
        buffer.append(record)
        session.received += 1
        time_s = record.observation.time_s
        if session.first_time_s is None:
            session.first_time_s = time_s
        session.last_time_s = time_s
        if depth >= session.high_water:
            session.high_water = depth + 1

    def enqueue_step(self, step: TickStep | BadTick) -> bool:
        """Hand over a checked step (the writer process's ring reader; like `on_tick`, never
        waits). Returns False, counting nothing, when the queue is full: that caller keeps the
        step and offers it again, so ticks are dropped in one place only (its ring)."""
        session = self._session
        if session is None or not session.accepting:
            return True
        if len(session.buffer) >= session.capacity:
            return False
        session.buffer.append(step)
        session.received += 1
        return True

    def note_dropped(self, count: int) -> None:
        """Ticks of the current episode lost before they reached this writer (the writer
        process's ring was full); they count in `frames_dropped` and the file's attribute."""
        session = self._session
        if session is not None:
            session.dropped = max(session.dropped, int(count))

    def on_policy_row(self, table: str, row: Mapping[str, Any]) -> None:
        """A row of a policy table (`recordings.policy_tables`: "chunks" or "steps") for the episode
        being recorded; any thread (the control thread), never waits. Ignored when not recording."""
        session = self._session
        if session is None or not session.accepting:
            return
        session.policy_rows.append((table, row))

    def on_loop_event(self, event: LoopEvent) -> None:
        """A control-loop event (`ControlLoop.add_event_listener`) of the episode being recorded;
        control thread, a deque append. Written to /loop_events with the next commit. Ignored
        when not recording."""
        session = self._session
        if session is None or not session.accepting:
            return
        session.events.append(event)

    def set_policy_attrs(self, attrs: Mapping[str, Any]) -> None:
        """What the policy tables of this and later episodes are about (checkpoint, its hash,
        strategy and settings: scalars); owner thread. Written as /policy attributes of every
        episode in which the policy acted."""
        self._policy_attrs = dict(attrs)

    def request_stop(
        self, label: Label | str = Label.UNKNOWN, notes: str | None = None, reason: str | None = None
    ) -> None:
        """Stop taking ticks and let the writer thread finish the file; returns at once.

        notes / reason (why it failed): None keeps what the metadata said at start.
        Watch `status()` for FINISHED (then `status().path` is the episode) or ERROR.
        """
        parsed = Label.parse(label)
        for name, value in (("notes", notes), ("reason", reason)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be text, got {value!r}")
        session = self._require_session("stop")
        session.label, session.notes, session.reason = parsed, notes, reason
        session.accepting = False
        session.set_state(WriterState.FINISHING, only_from=WriterState.RECORDING)
        session.stop_requested.set()

    def stop(
        self,
        label: Label | str = Label.UNKNOWN,
        notes: str | None = None,
        timeout_s: float = 60.0,
        reason: str | None = None,
    ) -> Path:
        """Stop, drain the queue, finalise and rename; returns the episode's path.

        After a write error it recovers what was written instead. Raises RecordingError when
        nothing was recorded, when the frames could not be saved (the message says what to do),
        or when the writer did not finish within `timeout_s` (it keeps going in the background).
        """
        self.request_stop(label, notes, reason)
        session = self._session
        assert session is not None
        if not session.done.wait(timeout_s):
            raise RecordingError(
                f"The recorder is still writing {session.partial_path.name} after {timeout_s:.0f} s "
                f"(slow disk?). It keeps going; watch the recorder status."
            )
        if session.state is WriterState.FINISHED:
            return session.path
        if session.state is WriterState.ERROR and session.error is not None:
            return self._save_after_error(session)
        raise RecordingError(f"Recording {session.path.name} ended as {session.state.value}; nothing to return.")

    def discard(self, timeout_s: float = 60.0) -> None:
        """Throw the current recording away (its file is deleted). Not for finished episodes."""
        session = self._require_session("discard")
        session.discard = True
        session.accepting = False
        session.stop_requested.set()
        if not session.done.wait(timeout_s):
            raise RecordingError(f"The recorder did not stop within {timeout_s:.0f} s; {session.partial_path.name} may remain.")
        if session.state is WriterState.ERROR:
            # The writer thread gave up on the file; remove what it left.
            remove_quietly(session.partial_path)
            session.set_state(WriterState.DISCARDED)

    def status(self) -> WriterStatus:
        """A snapshot of the current (or last) episode's recording state; any thread."""
        session = self._session
        if session is None:
            return WriterStatus(state=WriterState.IDLE, path=None, partial_path=None, queue_capacity=self.config.queue_size)
        error = session.error
        if error is None and session.dropped:
            error = FramesDropped(session.dropped, session.capacity)
        duration = 0.0
        if session.first_time_s is not None and session.last_time_s is not None:
            duration = max(0.0, session.last_time_s - session.first_time_s)
        return WriterStatus(
            state=session.state,
            path=session.path,
            partial_path=session.partial_path,
            frames_received=session.received,
            frames_written=session.committed,
            frames_dropped=session.dropped,
            queue_depth=len(session.buffer),
            queue_high_water=session.high_water,
            queue_capacity=session.capacity,
            bytes_written=session.bytes_written,
            duration_s=duration,
            last_error=error,
        )

    # ---- internals (owner thread) ----
    def _require_session(self, verb: str) -> _Session:
        session = self._session
        if session is None or session.state not in (WriterState.RECORDING, WriterState.FINISHING, WriterState.ERROR):
            raise RecordingError(f"Cannot {verb}: no episode is being recorded. Start a recording first.")
        return session

    def _reserve(self, metadata: EpisodeMetadata) -> tuple[int, Path]:
        """Create `episode_{idx}.hdf5.partial` exclusively at the next free index (another writer
        in the same store may race us) with the metadata attributes, closed and consistent."""
        from recordings.store import next_free_index  # store imports this module

        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RecordingError(
                f"Cannot create the episode folder {self.store_dir}: {error.strerror or error}. "
                f"Choose a folder you can write to."
            ) from error
        for _ in range(100):
            index = next_free_index(self.store_dir)
            partial = self.store_dir / schema.partial_filename(index)
            try:
                with h5py.File(partial, "w-", libver=SWMR_LIBVER, locking=False) as root:
                    _write_start_attrs(root, self.camera_names, self.config, metadata)
                return index, partial
            except FileExistsError:
                continue
            except OSError as error:
                remove_quietly(partial)
                raise RecordingError(
                    f"Cannot create {partial}: {error}. Check that the episode folder is writable and the disk is not full."
                ) from error
        raise RecordingError(f"Could not reserve an episode index in {self.store_dir}: too many concurrent writers?")

    def _save_after_error(self, session: _Session) -> Path:
        """The writer stopped on an error: turn what reached the disk into an episode if we can."""
        error = session.error
        assert error is not None
        path, frames = save_partial_after_error(session.partial_path, error, session.label, session.notes, session.reason)
        session.path = path
        session.committed = frames
        session.set_state(WriterState.FINISHED)  # last_error still tells what happened
        return path

    # ---- writer thread ----
    def _run(self, session: _Session) -> None:
        sink = EpisodeSink(session, self.camera_names, self.config)
        try:
            sink.record_until_stopped()
            sink.close()
            if session.discard:
                _unlock(session)
                remove_quietly(session.partial_path)
                session.set_state(WriterState.DISCARDED)
                log.info("Discarded recording %s", session.partial_path.name)
            elif session.committed == 0:
                _unlock(session)
                remove_quietly(session.partial_path)
                session.error = RecordingError(
                    "Nothing was recorded: no control ticks arrived between start and stop "
                    "(is the recorder subscribed to the control loop?). No file was kept."
                )
                session.set_state(WriterState.ERROR)
            else:
                self._finalise(session)
                session.set_state(WriterState.FINISHED)
                log.info("Saved %s: %d frames, %.1f MB", session.path, session.committed, session.bytes_written / 1e6)
        except RecordingError as error:  # a bad tick: the file itself is healthy
            try:
                sink.commit_and_close()
                session.error = error
            except Exception as write_error:
                sink.abandon()
                session.error = RecordingWriteError(session.partial_path, session.committed, describe_write_error(write_error))
            session.set_state(WriterState.ERROR)
            log.error("%s", session.error)
        except Exception as error:  # OSError and h5py's errors: disk full, file system gone
            sink.abandon()
            session.error = RecordingWriteError(session.partial_path, session.committed, describe_write_error(error))
            session.set_state(WriterState.ERROR)
            log.error("%s", session.error, exc_info=True)
        finally:
            session.accepting = False
            session.buffer.clear()
            _unlock(session)
            if session.state is WriterState.ERROR and session.discard:
                remove_quietly(session.partial_path)
                session.set_state(WriterState.DISCARDED)
            session.done.set()

    def _finalise(self, session: _Session) -> None:
        """Final attributes, fsync, rename to `episode_{idx}.hdf5` (a free name)."""
        meta = session.metadata
        state = LabelState(
            session.label,
            meta.reason if session.reason is None else session.reason,
            meta.notes if session.notes is None else session.notes,
        )
        with h5py.File(session.partial_path, "r+", libver=SWMR_LIBVER, locking=False) as root:
            if self.config.image_format is ImageFormat.JPEG:
                # ALOHA pads every row to the longest frame; drop the growth headroom.
                longest = int(root[schema.COMPRESS_LEN][()].max())
                for camera in self.camera_names:
                    root[schema.image_path(camera)].resize(longest, axis=1)
            set_text_attr(root.attrs, schema.ATTR_LABEL, state.label.value)
            set_text_attr(root.attrs, schema.ATTR_NOTES, state.notes)
            set_text_attr(root.attrs, schema.ATTR_LABEL_REASON, state.reason)
            reset_label_record(root, state)
            root.attrs[schema.ATTR_FRAMES_DROPPED] = int(session.dropped)
            if session.policy_tables:
                session.policy_tables.write(root, self._policy_attrs)
            root.attrs[schema.ATTR_FINISHED] = True
        _fsync_path(session.partial_path)
        target = session.path
        if target.exists():  # someone put a file there meanwhile: never overwrite an episode
            from recordings.store import next_free_index

            target = self.store_dir / schema.episode_filename(next_free_index(self.store_dir))
            log.warning("%s appeared while recording; saving as %s instead", session.path.name, target.name)
        os.rename(session.partial_path, target)
        _fsync_path(target.parent)
        session.path = target
        session.bytes_written = target.stat().st_size


def save_partial_after_error(
    partial_path: Path, error: RecordingError, label: Label, notes: str | None, reason: str | None
) -> tuple[Path, int]:
    """A recording stopped by `error`: turn what reached the disk in `partial_path` into an
    episode labelled as asked; returns (its path, its steps). Raises `error` when nothing can
    be saved (no file, nothing recoverable)."""
    from recordings.recovery import recover_partial  # recovery reads what this module writes
    from recordings.store import set_label

    if not partial_path.exists():
        raise error
    try:
        result = recover_partial(partial_path)
    except RecordingError as recovery_error:
        log.error("Could not save the frames after the recording error: %s", recovery_error)
        raise error from recovery_error
    if result.path is None:
        raise error
    set_label(result.path, label, notes, reason)
    log.warning("Saved %d frames of the interrupted recording as %s", result.frames, result.path)
    return result.path, result.frames


def _write_start_attrs(root: h5py.File, camera_names: tuple[str, ...], config: WriterConfig, metadata: EpisodeMetadata) -> None:
    """The attributes a reserved file has before its first frame (image shapes come later)."""
    shapes = {camera: (0, 0, 3) for camera in camera_names}
    write_attrs(root, ImageLayout(camera_names, config.image_format, shapes, config.jpeg_quality), metadata)


def _lock(path: Path) -> int | None:
    """Hold the partial file's lock while recording; a crash releases it."""
    try:
        return lock_exclusive(path)
    except LockHeld as error:  # we just created the file exclusively: nobody else should hold it
        log.warning("%s; recording anyway", error)
        return None


def _unlock(session: _Session) -> None:
    fd, session.lock_fd = session.lock_fd, None
    release(fd)


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("Could not remove %s: %s", path, error)


def _fsync_path(path: Path) -> None:
    """Make a finished file (or a rename in a folder) durable; best effort on odd file systems."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        log.warning("Could not open %s to sync it to disk: %s", path, error)
        return
    try:
        os.fsync(fd)
    except OSError as error:
        log.warning("Could not sync %s to disk: %s", path, error)
    finally:
        os.close(fd)


__all__ = ["EpisodeWriter", "check_camera_names", "remove_quietly", "save_partial_after_error"]
