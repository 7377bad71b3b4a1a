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

import enum
import logging
import os
import collections
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from recordings import schema
from recordings.errors import FramesDropped, InvalidTick, RecordingError, RecordingWriteError
from recordings.images import encode_jpeg, image_problem
from recordings.locks import LockHeld, lock_exclusive, release
from recordings.labels import LabelState, reset_label_record
from recordings.loop_record import clipped_mask, event_rows, mode_code
from recordings.layout import MIN_JPEG_WIDTH, SWMR_LIBVER, ImageLayout, create_episode, set_text_attr, write_attrs
from recordings.metadata import EpisodeMetadata
from recordings.policy_tables import PolicyTables
from recordings.schema import ImageFormat, Label
from robot.types import STATE_DIM, LoopEvent, TickRecord

log = logging.getLogger(__name__)

#: How often an idle writer thread looks for new ticks: far below the flush interval, and 200
#: wake-ups a second cost nothing next to encoding.
POLL_INTERVAL_S = 0.005


@dataclass(frozen=True)
class WriterConfig:
    """How the writer stores an episode.

    jpeg_quality: 90 by default (ALOHA uses 50), because towel folds are fine texture the policy
    needs; a 640x480 frame is then ~50-150 kB. queue_size: ticks the writer may fall behind
    before it drops them (100 = 2 s at 50 Hz; every queued tick holds its frames in memory).
    flush_interval_s: the most time between two commits to disk; below 1 s so that a crash loses
    at most about a second including the time records spend queued and being encoded.
    """

    image_format: ImageFormat = ImageFormat.JPEG
    jpeg_quality: int = 90
    queue_size: int = 100
    flush_interval_s: float = 0.5

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "image_format", ImageFormat(self.image_format))
        except ValueError:
            raise ValueError(
                f"WriterConfig.image_format must be 'jpeg' or 'raw', got {self.image_format!r}"
            ) from None
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"WriterConfig.jpeg_quality must be an integer 1..100 (90 is good), got {self.jpeg_quality!r}")
        if not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ValueError(f"WriterConfig.queue_size must be a positive number of ticks (100 = 2 s at 50 Hz), got {self.queue_size!r}")
        if not 0 < self.flush_interval_s <= 1.0:
            raise ValueError(
                f"WriterConfig.flush_interval_s must be in (0, 1] s so a crash loses at most a second, "
                f"got {self.flush_interval_s!r}"
            )


class WriterState(str, enum.Enum):
    IDLE = "idle"  # nothing started yet
    RECORDING = "recording"
    FINISHING = "finishing"  # stop requested: draining the queue, closing, renaming
    FINISHED = "finished"  # the episode is saved at `path`
    ERROR = "error"  # stopped by an error; `last_error` says what to do
    DISCARDED = "discarded"


@dataclass(frozen=True)
class WriterStatus:
    """A snapshot for the GUI (any thread).

    frames_written: steps committed to disk (survive a crash); frames_received: ticks taken from
    the control loop; frames_dropped: ticks lost because the queue was full; queue_depth /
    queue_high_water / queue_capacity in ticks; bytes_written: size of the file on disk;
    duration_s: host time covered by the received ticks.
    """

    state: WriterState
    path: Path | None
    partial_path: Path | None
    frames_received: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    queue_depth: int = 0
    queue_high_water: int = 0
    queue_capacity: int = 0
    bytes_written: int = 0
    duration_s: float = 0.0
    last_error: RecordingError | None = None

    @property
    def recording(self) -> bool:
        return self.state is WriterState.RECORDING


@dataclass
class _Pending:
    """Per-step values waiting for the next commit (the frames are already in the file)."""

    qpos: np.ndarray
    qvel: np.ndarray
    effort: np.ndarray
    action: np.ndarray
    time_s: float
    image_times_s: list[float]
    jpeg_lengths: list[int]
    source: bytes
    tick_index: int
    sim_time_s: float
    mode: int
    clipped: np.ndarray


@dataclass(frozen=True)
class TickStep:
    """One tick as the file stores it, checked: state arrays (14,) in the file's dtype, one
    (H, W, 3) uint8 frame per camera (in `camera_names` order), the control source as the file's
    bytes, the loop's mode as its /loop_mode code and the clipped joints as a (14,) bool mask.
    What `tick_step` makes of a `TickRecord`, and what the writer process rebuilds from its
    shared-memory ring (`recordings.writer_process`)."""

    tick_index: int
    qpos: np.ndarray
    qvel: np.ndarray
    effort: np.ndarray
    action: np.ndarray
    images: tuple[np.ndarray, ...]
    time_s: float
    image_times_s: tuple[float, ...]
    source: bytes
    sim_time_s: float
    mode: int
    clipped: np.ndarray


@dataclass(frozen=True)
class BadTick:
    """A tick that cannot be recorded: the recording stops there with `InvalidTick`."""

    tick_index: int
    problem: str


def tick_step(record: TickRecord, camera_names: Sequence[str]) -> TickStep | BadTick:
    """Check a tick record and turn it into what the file stores (any thread; ~20 us)."""
    obs = record.observation
    state = {}
    for name, value in (("qpos", obs.qpos), ("qvel", obs.qvel), ("effort", obs.effort), ("action", record.action)):
        try:
            array = np.asarray(value, dtype=schema.STATE_DTYPE)
        except (TypeError, ValueError) as error:
            return BadTick(record.index, f"{name} is not numeric: {error}")
        if array.shape != (STATE_DIM,):
            return BadTick(record.index, f"{name} has shape {array.shape}, expected ({STATE_DIM},)")
        state[name] = array
    frames = []
    for camera in camera_names:
        image = obs.images.get(camera) if obs.images is not None else None
        if image is None:
            return BadTick(record.index, f"camera {camera!r} sent no frame (cameras in the tick: {sorted(obs.images or {})})")
        problem = image_problem(image)
        if problem:
            return BadTick(record.index, f"camera {camera!r}: {problem}")
        frames.append(image)
    image_times = obs.image_times_s or {}
    source = record.source.value if hasattr(record.source, "value") else str(record.source)
    try:
        mode, clipped = mode_code(record.mode), clipped_mask(record.clipped)
    except (ValueError, KeyError) as error:
        return BadTick(record.index, f"the loop's mode or clipped joints cannot be recorded: {error}")
    return TickStep(
        tick_index=int(record.index),
        images=tuple(frames),
        time_s=float(obs.time_s),
        image_times_s=tuple(float(image_times.get(camera, np.nan)) for camera in camera_names),
        source=source.encode("ascii", "replace")[: schema.CONTROL_SOURCE_DTYPE.itemsize],
        sim_time_s=np.nan if record.sim_time_s is None else float(record.sim_time_s),
        mode=mode,
        clipped=clipped,
        **state,
    )


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
        sink = _EpisodeSink(session, self.camera_names, self.config)
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
                session.error = RecordingWriteError(session.partial_path, session.committed, _describe(write_error))
            session.set_state(WriterState.ERROR)
            log.error("%s", session.error)
        except Exception as error:  # OSError and h5py's errors: disk full, file system gone
            sink.abandon()
            session.error = RecordingWriteError(session.partial_path, session.committed, _describe(error))
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


class _EpisodeSink:
    """The writer thread's side: validates records, encodes frames and appends them to the file."""

    def __init__(self, session: _Session, camera_names: tuple[str, ...], config: WriterConfig):
        self.session = session
        self.camera_names = camera_names
        self.config = config
        self.root: h5py.File | None = None
        self.shapes: dict[str, tuple[int, int, int]] = {}
        self.images: dict[str, h5py.Dataset] = {}
        self.pending: list[_Pending] = []
        self.pending_events: list[LoopEvent] = []

    def record_until_stopped(self) -> None:
        session = self.session
        next_commit = time.monotonic() + self.config.flush_interval_s
        while True:
            stopping = session.stop_requested.is_set()
            try:
                record = session.buffer.popleft()
            except IndexError:
                record = None
                if not stopping:
                    time.sleep(POLL_INTERVAL_S)
            if record is not None and not session.discard:
                self._append(record)
            self._take_policy_rows()
            while session.events:
                self.pending_events.append(session.events.popleft())
            now = time.monotonic()
            if self.pending and now >= next_commit:
                self._commit()
                next_commit = now + self.config.flush_interval_s
                self._report_drops()
            if stopping and record is None:
                break
        if not session.discard:
            self._commit()
            self._report_drops()

    def _take_policy_rows(self) -> None:
        session = self.session
        while session.policy_rows:
            try:
                session.policy_tables.add(*session.policy_rows.popleft())
            except ValueError as error:  # a bug of the sender: the frames matter more than its row
                log.error("A policy table row was left out: %s", error)

    def close(self) -> None:
        if self.root is not None:
            root, self.root = self.root, None
            self.images = {}
            root.close()
        self.session.bytes_written = _size(self.session.partial_path)

    def commit_and_close(self) -> None:
        """Keep the steps before a bad tick: commit them and close the file normally."""
        if not self.session.discard:
            self._commit()
        self.close()

    def abandon(self) -> None:
        """After a failed write: let go of the file; what was committed stays on disk (SWMR)."""
        root, self.root = self.root, None
        images, self.images = self.images, {}
        if root is not None:
            _abandon_handle(root, images)

    # ---- one record ----
    def _append(self, item: TickRecord | TickStep | BadTick) -> None:
        session = self.session
        step = item if isinstance(item, (TickStep, BadTick)) else tick_step(item, self.camera_names)
        if isinstance(step, BadTick):
            raise InvalidTick(step.tick_index, step.problem)
        frames = list(step.images)
        for camera, image in zip(self.camera_names, frames):
            expected = self.shapes.get(camera)
            if expected is not None and image.shape != expected:
                raise InvalidTick(step.tick_index, f"camera {camera!r} changed its frame size from {expected} to {image.shape}")
        if self.root is None:
            self._open(frames)
        index = session.committed + len(self.pending)
        lengths = []
        for camera, image in zip(self.camera_names, frames):
            dataset = self.images[camera]
            if self.config.image_format is ImageFormat.RAW:
                dataset.resize(index + 1, axis=0)
                dataset[index] = image
                lengths.append(0)
            else:
                encoded = encode_jpeg(np.ascontiguousarray(image), self.config.jpeg_quality)
                if encoded.size > dataset.shape[1]:
                    # Grow by a quarter more than needed so a slowly growing size does not resize every frame.
                    dataset.resize(int(encoded.size * 1.25), axis=1)
                dataset.resize(index + 1, axis=0)
                dataset[index, : encoded.size] = encoded
                lengths.append(int(encoded.size))
        self.pending.append(
            _Pending(
                qpos=step.qpos,
                qvel=step.qvel,
                effort=step.effort,
                action=step.action,
                time_s=step.time_s,
                image_times_s=list(step.image_times_s),
                jpeg_lengths=lengths,
                source=step.source,
                tick_index=step.tick_index,
                sim_time_s=step.sim_time_s,
                mode=step.mode,
                clipped=step.clipped,
            )
        )

    def _open(self, frames: list[np.ndarray]) -> None:
        """First frame: now the image shapes are known, create the datasets and enter SWMR."""
        session = self.session
        self.shapes = {camera: tuple(image.shape) for camera, image in zip(self.camera_names, frames)}
        width = MIN_JPEG_WIDTH
        if self.config.image_format is ImageFormat.JPEG:
            # Chunk width from the first frame with headroom: most frames then fit one chunk.
            longest = max(encode_jpeg(np.ascontiguousarray(f), self.config.jpeg_quality).size for f in frames)
            width = max(MIN_JPEG_WIDTH, int(longest * 1.5 + 4095) // 4096 * 4096)
        layout = ImageLayout(self.camera_names, self.config.image_format, self.shapes, self.config.jpeg_quality, width)
        # rdcc_nbytes=0: no raw-data chunk cache, so every frame reaches the file inside the
        # write call that may fail, and no dirty chunk is left for a later close to flush (see
        # `_abandon_handle` for what such a flush does after a full disk).
        root = h5py.File(session.partial_path, "r+", libver=SWMR_LIBVER, locking=False, rdcc_nbytes=0)
        try:
            for name in list(root.keys()):
                del root[name]  # an earlier attempt may have failed half-way; start clean
            create_episode(root, layout, session.metadata, length=0)
            root.swmr_mode = True
        except Exception:
            _abandon_handle(root, {})
            raise
        self.root = root
        self.images = {camera: root[schema.image_path(camera)] for camera in self.camera_names}

    # ---- commit ----
    def _commit(self) -> None:
        """Write the pending steps, flush, then their timestamps, flush: see the module doc."""
        if not (self.pending or self.pending_events) or self.root is None:
            return
        root, pending, session = self.root, self.pending, self.session
        start, end = session.committed, session.committed + len(pending)
        if self.pending_events:
            # With the steps, before the flush that makes them count: kept by a crash with them.
            events = root[schema.LOOP_EVENTS]
            first = events.shape[0]
            events.resize(first + len(self.pending_events), axis=0)
            events[first:] = event_rows(self.pending_events)
            self.pending_events = []
        if not pending:
            root.flush()
            return
        columns = {
            schema.QPOS: np.stack([p.qpos for p in pending]),
            schema.QVEL: np.stack([p.qvel for p in pending]),
            schema.EFFORT: np.stack([p.effort for p in pending]),
            schema.ACTION: np.stack([p.action for p in pending]),
            schema.CONTROL_SOURCE: np.array([p.source for p in pending], dtype=schema.CONTROL_SOURCE_DTYPE),
            schema.TICK_INDEX: np.array([p.tick_index for p in pending], dtype=schema.TICK_INDEX_DTYPE),
            schema.SIM_TIME: np.array([p.sim_time_s for p in pending], dtype=schema.TIME_DTYPE),
            schema.LOOP_MODE: np.array([p.mode for p in pending], dtype=schema.LOOP_MODE_BASE_DTYPE),
            schema.SAFETY_CLIPPED: np.stack([p.clipped for p in pending]),
        }
        image_times = np.array([p.image_times_s for p in pending], dtype=schema.TIME_DTYPE)  # (n, n_cams)
        for i, camera in enumerate(self.camera_names):
            columns[schema.image_time_path(camera)] = image_times[:, i]
        for path, values in columns.items():
            dataset = root[path]
            dataset.resize(end, axis=0)
            dataset[start:end] = values
        if self.config.image_format is ImageFormat.JPEG:
            compress_len = root[schema.COMPRESS_LEN]
            compress_len.resize(end, axis=1)
            compress_len[:, start:end] = np.array([p.jpeg_lengths for p in pending], dtype=schema.COMPRESS_LEN_DTYPE).T
        root.flush()
        timestamps = root[schema.TIMESTAMP]
        timestamps.resize(end, axis=0)
        timestamps[start:end] = np.array([p.time_s for p in pending], dtype=schema.TIME_DTYPE)
        root.flush()
        session.committed = end
        session.bytes_written = _size(session.partial_path)
        self.pending = []

    def _report_drops(self) -> None:
        session = self.session
        if session.dropped > session.dropped_reported:
            session.dropped_reported = session.dropped
            log.error("%s", FramesDropped(session.dropped, session.capacity))


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


def _abandon_handle(root: h5py.File, datasets: dict) -> None:
    """Close a file whose last write failed (disk full, disk gone).

    Why the file is opened without a raw-data chunk cache (`_EpisodeSink._open`): with one, the
    chunks written since the last flush sit dirty in the cache; closing a dataset flushes them,
    the flush fails again, and HDF5 (2.0, via h5py 3.16) frees the dataset but keeps its id
    registered when the close fails. At exit HDF5's library shutdown closes that id a second
    time: a use-after-free and a segfault (exit 139) after the recording had already ended with
    a clear message. Without the cache nothing is left to flush, every close succeeds or fails
    cleanly, and what the disk holds is the file as of the last successful flush (SWMR keeps
    it consistent), which `recordings.recovery` turns into an episode.
    """
    datasets.clear()
    name = Path(root.filename).name
    try:
        root.close()
    except Exception as error:  # the metadata flush of the close may fail on the same disk
        log.warning("Closing %s after the write error failed too: %s", name, _describe(error))


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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


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


_HDF5_OS_ERROR = re.compile(r"errno = (\d+), error message = '([^']*)'")


def _describe(error: BaseException) -> str:
    """A short reason: HDF5's messages bury the operating system's error in a long text."""
    text = str(error) or type(error).__name__
    found = _HDF5_OS_ERROR.search(text)
    if found:
        return f"{found.group(2)} (errno {found.group(1)})"
    first = text.splitlines()[0]
    return first if len(first) < 200 else first[:197] + "..."


__all__ = ["EpisodeWriter", "WriterConfig", "WriterState", "WriterStatus"]
