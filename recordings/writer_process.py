"""The episode writer in a process of its own: no h5py call and no JPEG encoding runs beside the
control loop.

Why: measured on the studio (benchmarks/control_loop.py --attribute), the writer thread's h5py
calls and encoding held the interpreter lock while the control thread waited to wake: with the
control thread at real-time priority, recording moved the period error p99 from 2 ms (no
recording) to 26 ms. In its own process the writer has its own interpreter lock.

    writer = ProcessEpisodeWriter(store_dir, camera_names, image_format="jpeg")
    loop.subscribe(writer.on_tick)        # control thread: copies the tick into shared memory
    writer.start(metadata); ...; writer.stop(label)   # same API as recordings.writer.EpisodeWriter
    writer.close()                        # ends the process (Session.close does it)

Processes and threads
---------------------
- Control thread (studio process): `on_tick` copies the tick into a `TickRing` slot (frames
  ~0.3 ms per 640x480 frame, no system call, never waits); a full ring drops the tick (counted,
  reported like the thread writer's full queue).
- Owner thread (studio worker, job main thread): `start`, `request_stop`, `stop`, `discard`,
  `close` send small pickled messages over a Unix socket and wait for the answer where the API
  returns one.
- Receiver thread (studio process, "episode-writer-link"): reads the process's status messages
  and notices its death: the socket ends the moment the process does, so a killed writer is seen
  at once (`WriterProcessDied`, state ERROR); the studio then holds the arm and shows it.
- The writer process (`python -m recordings.writer_process FD`): its main thread moves ticks from
  the ring into a `recordings.writer.EpisodeWriter`, whose own thread writes the file exactly as
  before - the same code writes the same bytes, the ALOHA layout and crash safety unchanged.

Crash safety: killed writer process: the file keeps what was flushed (<= flush_interval_s) and
`stop()` recovers it into an episode (or `episodes recover` later). Killed studio process: the
writer process sees its socket end, writes every tick already in the ring, lets the last flush
happen and exits, leaving the partial file for `episodes recover` (nothing lost).

Policy tables (`recordings.policy_tables`: rows of a few numbers per chunk and per step):
`on_policy_row` (control thread) only appends the row to the episode's deque; the link thread
sends what gathered as one ("rows", [(table, row), ...]) message every ROWS_INTERVAL_S, and
`request_stop` sends the rest just before the stop, on the same socket, so every row reaches the
process before its episode ends. `serve` hands each row to the process's file writer
(`EpisodeWriter.on_policy_row`), which writes the tables when it finishes the file, as in one
process (`set_policy_attrs` travels the same way). As with the thread writer, a recording cut
short by a crash keeps its frames but not these tables.

Loop events (`robot.types.LoopEvent`, a few a minute): the same way as the rows, as ("events",
[event, ...]); the process's writer writes them to /loop_events at its next flush, so a crash
keeps them like the steps (at most the last ROWS_INTERVAL_S + flush interval is lost). The
loop's mode and clipped joints of each tick travel in the ring slot with the tick.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.reduction import recvfds, sendfds
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import numpy as np

from recordings.errors import FramesDropped, RecordingError
from recordings.metadata import EpisodeMetadata
from recordings.schema import ImageFormat, Label
from recordings.tick_ring import DEFAULT_FRAME_BYTES, RingLayout, TickRing
from recordings.writer import EpisodeWriter, check_camera_names, remove_quietly, save_partial_after_error
from recordings.writer_status import WriterConfig, WriterState, WriterStatus
from robot.types import LoopEvent, TickRecord

log = logging.getLogger(__name__)

#: States in which the writer process has nothing to do until the next message.
DONE_STATES = (WriterState.FINISHED, WriterState.DISCARDED)
#: How often the writer process looks at the ring, and reports its status when it changed.
POLL_INTERVAL_S = 0.005
STATUS_INTERVAL_S = 0.1
#: How often the link thread sends the policy rows gathered by the control thread.
ROWS_INTERVAL_S = 0.1
#: How long the owner waits for the process to start (imports h5py, OpenCV) or answer.
START_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 30.0


class WriterProcessDied(RecordingError):
    """The writer process ended while recording (killed, out of memory, a crash)."""

    def __init__(self, partial_path: Path | None, frames_kept: int, exit_code: int | None):
        self.partial_path = None if partial_path is None else Path(partial_path)
        self.frames_kept = frames_kept
        self.exit_code = exit_code
        how = "was killed" if exit_code is not None and exit_code < 0 else f"ended (exit code {exit_code})"
        name = self.partial_path.name if self.partial_path is not None else "the episode file"
        super().__init__(
            f"The recorder process {how} while recording: the last steps (under a second) may be lost; "
            f"{frames_kept} steps are safe in {name}. Stop the recording to save them as an episode "
            f"(or discard it); the next recording starts a new recorder."
        )

    def __reduce__(self):
        return (type(self), (self.partial_path, self.frames_kept, self.exit_code))


@dataclass
class _Front:
    """The studio side of one episode. Control-thread fields: received, dropped, high_water,
    first/last_time_s. Receiver-thread fields: status (the process's last report), done."""

    path: Path
    partial_path: Path
    capacity: int
    accepting: bool = True
    state: WriterState = WriterState.RECORDING
    received: int = 0
    dropped: int = 0
    high_water: int = 0
    first_time_s: float | None = None
    last_time_s: float | None = None
    status: WriterStatus | None = None
    error: RecordingError | None = None
    label: Label = Label.UNKNOWN
    notes: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        self.done = threading.Event()
        # Policy rows and loop events: the control thread appends (table, row) / the event, the
        # link thread (or the owner at stop) takes them out and sends them to the process.
        self.rows: collections.deque[tuple[str, Mapping[str, Any]]] = collections.deque()
        self.events: collections.deque[LoopEvent] = collections.deque()


class ProcessEpisodeWriter:
    """`recordings.writer.EpisodeWriter`'s API with the file written by a process of its own.

    Arguments as EpisodeWriter's. The process starts with `start_process()` (the session calls it
    when it opens) or the first `start()`, and serves every later episode; a dead one is replaced
    at the next `start()`.
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
        self._front: _Front | None = None
        self._ring: TickRing | None = None
        self._frame_bytes: dict[str, int] = {}  # control thread, while idle: the largest frame seen
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._receiver: threading.Thread | None = None
        self._ring_sent = False
        self._policy_attrs: dict[str, Any] = {}

    # ------------------------------------------------------------------ control thread
    def on_tick(self, record: TickRecord) -> None:
        """Control-loop subscriber: copy the tick into the ring; never wait, never raise."""
        front, ring = self._front, self._ring
        if front is None or not front.accepting or ring is None:
            if front is None or front.state is not WriterState.RECORDING:
                self._note_frame_sizes(record)
            return
        depth = ring.in_flight
        if not ring.put(record):
            front.dropped += 1
            return
        front.received += 1
        time_s = record.observation.time_s
        if front.first_time_s is None:
            front.first_time_s = time_s
        front.last_time_s = time_s
        if depth >= front.high_water:
            front.high_water = depth + 1

    def on_policy_row(self, table: str, row: Mapping[str, Any]) -> None:
        """A row of a policy table ("chunks" or "steps") for the episode being recorded; any
        thread (the control thread): a deque append, never a socket call. Ignored when not
        recording."""
        front = self._front
        if front is None or not front.accepting:
            return
        front.rows.append((table, row))

    def on_loop_event(self, event: LoopEvent) -> None:
        """A control-loop event of the episode being recorded (see EpisodeWriter.on_loop_event);
        control thread: a deque append, sent by the link thread. Ignored when not recording."""
        front = self._front
        if front is None or not front.accepting:
            return
        front.events.append(event)

    def _note_frame_sizes(self, record: TickRecord) -> None:
        images = record.observation.images or {}
        for camera in self.camera_names:
            image = images.get(camera)
            nbytes = image.nbytes if isinstance(image, np.ndarray) else 0
            if nbytes > self._frame_bytes.get(camera, 0):
                self._frame_bytes[camera] = nbytes

    # ------------------------------------------------------------------ owner thread
    def start(self, metadata: EpisodeMetadata | None = None) -> Path:
        """Begin a new episode (see EpisodeWriter.start); starts the writer process if needed."""
        front = self._front
        if front is not None and front.state in (WriterState.RECORDING, WriterState.FINISHING):
            raise RecordingError(f"Already recording {front.path.name}: stop or discard it before starting another episode.")
        self._ensure_process()
        self._ensure_ring()
        meta = metadata or self.metadata
        # Ticks put after the last episode stopped are skipped: the process starts this episode
        # at the ring's current count (no tick is put before the answer, `_front` is not set).
        answer = self._ask(("start", meta, self._ring.produced))
        if isinstance(answer, BaseException):
            raise answer
        path, partial = answer
        self._front = _Front(Path(path), Path(partial), self.config.queue_size)
        log.info("Recording %s in the writer process (%s, %s)", path, self.config.image_format.value, ", ".join(self.camera_names))
        return self._front.path

    def set_policy_attrs(self, attrs: Mapping[str, Any]) -> None:
        """The /policy attributes of this and later episodes (see EpisodeWriter.set_policy_attrs);
        owner thread. Sent to the process now if it runs, else when it starts."""
        self._policy_attrs = dict(attrs)
        if self._conn is not None:
            try:
                self._send(("policy_attrs", self._policy_attrs))
            except RecordingError:  # the process died: its successor gets them when it starts
                log.info("the writer process is gone; the policy attributes go to the next one")

    def start_process(self) -> None:
        """Start the writer process ahead of the first `start()` (owner thread; idempotent), so
        that its imports do not compete with the control loop when recording begins."""
        self._ensure_process()

    def request_stop(self, label: Label | str = Label.UNKNOWN, notes: str | None = None, reason: str | None = None) -> None:
        """Stop taking ticks and let the process finish the file; returns at once."""
        parsed = Label.parse(label)
        for name, value in (("notes", notes), ("reason", reason)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be text, got {value!r}")
        front = self._require_front("stop")
        front.label, front.notes, front.reason = parsed, notes, reason
        front.accepting = False
        if front.state is WriterState.RECORDING:
            front.state = WriterState.FINISHING
        if front.error is None or not isinstance(front.error, WriterProcessDied):
            self._send_rows(front)  # before the stop: the process must have them when it finishes the file
            self._send(("stop", self._ring.produced, front.dropped, parsed, notes, reason))

    def stop(self, label: Label | str = Label.UNKNOWN, notes: str | None = None, timeout_s: float = 60.0,
             reason: str | None = None) -> Path:
        """Stop, drain, finalise and rename; returns the episode's path (see EpisodeWriter.stop).
        After the process died it recovers what reached the disk instead."""
        self.request_stop(label, notes, reason)
        front = self._front
        assert front is not None
        if not front.done.wait(timeout_s):
            raise RecordingError(
                f"The recorder is still writing {front.partial_path.name} after {timeout_s:.0f} s "
                f"(slow disk?). It keeps going; watch the recorder status."
            )
        if isinstance(front.error, WriterProcessDied):
            return self._recover_after_death(front)
        status = front.status
        if front.state is WriterState.FINISHED and status is not None and status.path is not None:
            front.path = status.path
            return status.path
        if front.error is not None:
            raise front.error
        raise RecordingError(f"Recording {front.path.name} ended as {front.state.value}; nothing to return.")

    def discard(self, timeout_s: float = 60.0) -> None:
        """Throw the current recording away (its file is deleted)."""
        front = self._require_front("discard")
        front.accepting = False
        if isinstance(front.error, WriterProcessDied):
            remove_quietly(front.partial_path)
            front.state = WriterState.DISCARDED
            return
        self._send(("discard",))
        if not front.done.wait(timeout_s):
            raise RecordingError(f"The recorder did not stop within {timeout_s:.0f} s; {front.partial_path.name} may remain.")
        if isinstance(front.error, WriterProcessDied):  # it died while discarding
            remove_quietly(front.partial_path)
            front.state = WriterState.DISCARDED

    def status(self) -> WriterStatus:
        """A snapshot of the current (or last) episode's recording state; any thread."""
        front = self._front
        if front is None:
            return WriterStatus(state=WriterState.IDLE, path=None, partial_path=None, queue_capacity=self.config.queue_size)
        reported = front.status
        error = front.error if front.error is not None else (reported.last_error if reported is not None else None)
        if error is None and front.dropped:
            error = FramesDropped(front.dropped, front.capacity)
        ring = self._ring
        duration = 0.0
        if front.first_time_s is not None and front.last_time_s is not None:
            duration = max(0.0, front.last_time_s - front.first_time_s)
        return WriterStatus(
            state=front.state,
            path=reported.path if reported is not None and reported.path is not None else front.path,
            partial_path=front.partial_path,
            frames_received=front.received,
            frames_written=reported.frames_written if reported is not None else 0,
            frames_dropped=front.dropped,
            queue_depth=(ring.in_flight if ring is not None else 0) + (reported.queue_depth if reported is not None else 0),
            queue_high_water=front.high_water,
            queue_capacity=front.capacity,
            bytes_written=reported.bytes_written if reported is not None else 0,
            duration_s=duration,
            last_error=error,
        )

    @property
    def process_id(self) -> int | None:
        """The writer process's id while it runs (tests kill it to check the recovery)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def close(self, timeout_s: float = 10.0) -> None:
        """End the writer process (an open recording is the caller's to stop first) and free the
        ring. Idempotent."""
        process, conn = self._process, self._conn
        if process is not None and process.poll() is None:
            try:
                self._send(("exit",))
            except RecordingError:
                pass
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error("The writer process did not end within %.0f s; killing it", timeout_s)
                process.kill()
                process.wait(5)
        if conn is not None:
            conn.close()
        if self._sock is not None:
            self._sock.close()
        if self._receiver is not None:
            self._receiver.join(5)
        self._process = self._conn = self._sock = self._receiver = None
        if self._ring is not None:
            ring, self._ring = self._ring, None
            ring.close()

    # ------------------------------------------------------------------ internals
    def _require_front(self, verb: str) -> _Front:
        front = self._front
        if front is None or front.state not in (WriterState.RECORDING, WriterState.FINISHING, WriterState.ERROR):
            raise RecordingError(f"Cannot {verb}: no episode is being recorded. Start a recording first.")
        return front

    def _ensure_process(self) -> None:
        if self._process is not None and self._process.poll() is None and self._conn is not None:
            return
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "recordings.writer_process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), cwd=_package_root(), stdin=subprocess.DEVNULL,
            )
        except OSError as error:
            ours.close()
            raise RecordingError(f"The recorder process could not start: {error}. Check the Python installation.") from error
        finally:
            theirs.close()
        self._sock = ours
        self._conn = Connection(os.dup(ours.fileno()))
        self._answers = queue.SimpleQueue()
        self._ring_sent = False
        self._receiver = threading.Thread(target=self._receive, name="episode-writer-link", daemon=True)
        self._receiver.start()
        config = self.config
        self._send(("config", str(self.store_dir), self.camera_names, self.metadata, config.image_format.value,
                    config.jpeg_quality, config.queue_size, config.flush_interval_s))
        if self._policy_attrs:
            self._send(("policy_attrs", self._policy_attrs))

    def _ensure_ring(self) -> None:
        sizes = tuple(max(self._frame_bytes.get(c, 0), DEFAULT_FRAME_BYTES) for c in self.camera_names)
        ring = self._ring
        if ring is None or any(size > have for size, have in zip(sizes, ring.layout.frame_bytes)):
            if ring is not None:
                self._ring = None
                ring.close()
            # As many slots as the thread writer's queue held ticks: the same bursts fit.
            ring = TickRing.create(RingLayout(self.config.queue_size, self.camera_names, sizes))
            self._ring = ring
            self._ring_sent = False
        if not self._ring_sent:
            with self._send_lock:
                self._conn.send(("ring", ring.layout))
                sendfds(self._sock, [ring.fd])
            self._ring_sent = True

    def _send(self, message: tuple) -> None:
        conn = self._conn
        if conn is None:
            raise RecordingError("The recorder process is not running; start a recording first.")
        try:
            with self._send_lock:
                conn.send(message)
        except OSError as error:
            raise RecordingError(f"The recorder process does not answer ({error}); stop and start the recording again.") from error

    def _send_rows(self, front: _Front) -> None:
        """Send the policy rows and loop events the control thread gathered (link thread, or
        owner at stop)."""
        conn = self._conn
        if conn is None:
            return
        for kind, gathered in (("rows", front.rows), ("events", front.events)):
            if not gathered:
                continue
            with self._send_lock:  # taken and sent as one step: items keep their order across senders
                items = []
                while gathered:
                    items.append(gathered.popleft())
                try:
                    conn.send((kind, items))
                except OSError:
                    pass  # the process is gone; the link thread reports it
                except Exception:  # one that does not pickle is a bug of its sender: keep recording
                    log.exception("%d %s were left out", len(items), "policy table rows" if kind == "rows" else "loop events")

    def _ask(self, message: tuple) -> Any:
        self._send(message)
        try:
            return self._answers.get(timeout=START_TIMEOUT_S if message[0] == "start" else ANSWER_TIMEOUT_S)
        except queue.Empty:
            raise RecordingError("The recorder process did not answer in time (the computer is very busy?); try again.") from None

    def _receive(self) -> None:
        """Link thread: status and answers from the process, its end when the socket ends (seen
        at once: poll returns and recv raises EOFError); policy rows to it every ROWS_INTERVAL_S."""
        conn, process = self._conn, self._process
        try:
            while True:
                if conn.poll(ROWS_INTERVAL_S):
                    kind, *payload = conn.recv()
                    front = self._front
                    if kind == "answer":
                        self._answers.put(payload[0])
                    elif kind == "status" and front is not None:
                        self._take_status(front, payload[0])
                    elif kind == "done" and front is not None:
                        self._take_done(front, *payload)
                front = self._front
                if front is not None and (front.rows or front.events):
                    self._send_rows(front)
        except (EOFError, OSError):
            pass
        except Exception:  # a bug of ours must not leave the recording silently stuck
            log.exception("the link to the writer process failed")
        exit_code = process.wait() if process is not None else None
        front = self._front
        if front is not None and not front.done.is_set() and front.state in (WriterState.RECORDING, WriterState.FINISHING, WriterState.ERROR):
            written = front.status.frames_written if front.status is not None else 0
            front.error = WriterProcessDied(front.partial_path, written, exit_code)
            front.accepting = False
            front.state = WriterState.ERROR
            log.error("%s", front.error)
            front.done.set()
        self._answers.put(RecordingError(f"The recorder process ended (exit code {exit_code}); try again."))

    @staticmethod
    def _take_status(front: _Front, status: WriterStatus) -> None:
        front.status = status
        if status.state is WriterState.ERROR and front.state is WriterState.RECORDING:
            # A bad tick or a failed write stopped the file: as the thread writer, stop taking
            # ticks and wait for stop() to save what was written.
            front.accepting = False
            front.state = WriterState.ERROR

    @staticmethod
    def _take_done(front: _Front, result: Path | RecordingError | None, status: WriterStatus) -> None:
        """The process finished the episode (stopped, saved, discarded) or failed to."""
        front.status = status
        if isinstance(result, BaseException):
            front.error = result
            front.state = WriterState.ERROR if status.state is not WriterState.DISCARDED else status.state
        else:
            front.state = status.state
            if result is not None:
                front.path = Path(result)
        front.done.set()

    def _recover_after_death(self, front: _Front) -> Path:
        error = front.error
        assert error is not None
        path, frames = save_partial_after_error(front.partial_path, error, front.label, front.notes, front.reason)
        front.path = path
        front.state = WriterState.FINISHED
        front.status = replace(front.status or WriterStatus(WriterState.FINISHED, path, front.partial_path),
                               state=WriterState.FINISHED, path=path, frames_written=frames)
        return path


# ---------------------------------------------------------------------- the writer process


def serve(conn: Connection, sock: socket.socket) -> None:
    """The writer process's main loop: messages from the studio, ticks from the ring into an
    `EpisodeWriter` (whose thread writes the file), status back every STATUS_INTERVAL_S."""
    writer: EpisodeWriter | None = None
    ring: TickRing | None = None
    carry = None  # a step the writer's queue had no room for yet
    stopping: tuple | None = None  # (produced, dropped, label, notes, reason) of a requested stop
    last_report: tuple[float, WriterStatus | None] = (0.0, None)

    studio_gone = False

    def answer(kind: str, *payload) -> None:
        nonlocal studio_gone
        try:
            conn.send((kind, *payload))
        except OSError:  # the studio process ended (killed) between two of its messages
            studio_gone = True

    while True:
        try:
            # Between episodes nothing comes through the ring: sleep until a message (or the
            # socket's end) instead of waking 200 times a second beside the control loop.
            status = writer.status() if writer is not None and ring is not None else None
            busy = stopping is not None or carry is not None or (
                status is not None and (status.state is not WriterState.IDLE and status.state not in DONE_STATES
                                        or status != last_report[1]))
            message = None if studio_gone else conn.recv() if conn.poll(POLL_INTERVAL_S if busy else None) else None
        except (EOFError, OSError):
            studio_gone = True
        if studio_gone:
            _finish_orphaned(writer, ring, carry)
            return
        if message is not None:
            kind = message[0]
            if kind == "config":
                store, cameras, metadata, image_format, quality, queue_size, flush_s = message[1:]
                writer = EpisodeWriter(store, cameras, metadata, image_format=image_format, jpeg_quality=quality,
                                       queue_size=queue_size, flush_interval_s=flush_s)
            elif kind == "ring":
                fds = recvfds(sock, 1)
                if ring is not None:
                    ring.close()
                ring = TickRing.attach(message[1], fds[0])
            elif kind == "start":
                carry, stopping = None, None
                if ring is not None:
                    ring.skip_to(message[2])
                try:
                    path = writer.start(message[1])
                    answer("answer", (path, writer.status().partial_path))
                except Exception as error:  # the studio shows it: keep it a RecordingError
                    answer("answer", error if isinstance(error, RecordingError) else RecordingError(str(error)))
            elif kind == "stop":
                stopping = message[1:]
            elif kind == "rows":
                for table, row in message[1]:
                    writer.on_policy_row(table, row)
            elif kind == "events":
                for event in message[1]:
                    writer.on_loop_event(event)
            elif kind == "policy_attrs":
                writer.set_policy_attrs(message[1])
            elif kind == "discard":
                stopping, carry = None, None
                while ring is not None and ring.take() is not None:
                    pass
                try:
                    writer.discard()
                    answer("done", None, writer.status())
                except RecordingError as error:
                    answer("done", error, writer.status())
            elif kind == "exit":
                if ring is not None:
                    ring.close()
                return
        if writer is None or ring is None:
            continue
        carry = _move_ticks(ring, writer, carry)
        if stopping is not None and carry is None and ring.consumed >= stopping[0]:
            produced, dropped, label, notes, reason = stopping
            stopping = None
            writer.note_dropped(dropped)
            try:
                result: Path | RecordingError = writer.stop(label, notes, reason=reason)
            except RecordingError as error:
                result = error
            answer("done", result, writer.status())
            last_report = (time.monotonic(), writer.status())
            continue
        now = time.monotonic()
        if now - last_report[0] >= STATUS_INTERVAL_S:
            status = writer.status()
            if status != last_report[1]:
                answer("status", status)
            last_report = (now, status)


def _move_ticks(ring: TickRing, writer: EpisodeWriter, carry):
    """Ticks from the ring into the writer's queue while it has room; returns a step left over."""
    while True:
        step = carry if carry is not None else ring.take()
        if step is None:
            return None
        if not writer.enqueue_step(step):
            return step
        carry = None


def _finish_orphaned(writer: EpisodeWriter | None, ring: TickRing | None, carry) -> None:
    """The studio process is gone (killed): write every tick it had put in the ring, let the
    writer flush them, and exit leaving the partial file for `episodes recover`."""
    if writer is not None and ring is not None and writer.status().recording:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            carry = _move_ticks(ring, writer, carry)
            status = writer.status()
            if carry is None and ring.in_flight == 0 and status.frames_written >= status.frames_received:
                break
            if not status.recording:
                break
            time.sleep(POLL_INTERVAL_S)
        log.warning("The studio process ended while recording; %d steps are in %s (run `episodes recover`)",
                    writer.status().frames_written, writer.status().partial_path)
    os._exit(0)  # like a killed process: the partial file and its lock are left to recovery


def main(argv: list[str]) -> NoReturn:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="writer process %(levelname)s %(name)s: %(message)s")
    # A file size limit (a quota) must reach the writer as an error it reports and recovers
    # from, like a full disk, not as the signal that kills it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    fd = int(argv[0])
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(fd))
    code = 0
    try:
        serve(conn, sock)
    except BaseException:  # a bug of ours: say it; the partial file is left for `episodes recover`
        log.exception("the writer process failed")
        code = 1
    # Never through the interpreter's shutdown: an episode writer thread frozen there may hold
    # h5py's global lock, and the shutdown's clean-up would wait for it for ever (seen when a
    # status report to a killed studio raised). A file is always left consistent (SWMR).
    sys.stderr.flush()
    os._exit(code)


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[1])


if __name__ == "__main__":
    main(sys.argv[1:])
