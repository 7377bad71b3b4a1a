"""The writer thread's side of an episode: `EpisodeSink` takes the checked ticks of a recording
session (`recordings.writer`), JPEG-encodes the frames, appends them to the SWMR file and commits
the per-step columns at every flush (see `recordings.writer` for the crash-safety order), and the
helpers that let go of a file after a failed write.

Thread: one sink per episode, used only by that episode's writer thread.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from recordings import schema
from recordings.errors import FramesDropped, InvalidTick
from recordings.images import encode_jpeg
from recordings.layout import MIN_JPEG_WIDTH, SWMR_LIBVER, ImageLayout, create_episode
from recordings.loop_record import event_rows
from recordings.schema import ImageFormat
from recordings.tick_step import BadTick, TickStep, tick_step
from recordings.writer_status import WriterConfig
from robot.types import LoopEvent, TickRecord

if TYPE_CHECKING:
    from recordings.writer import _Session

log = logging.getLogger(__name__)

#: How often an idle writer thread looks for new ticks: far below the flush interval, and 200
#: wake-ups a second cost nothing next to encoding.
POLL_INTERVAL_S = 0.005


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


class EpisodeSink:
    """The writer thread's side: validates records, encodes frames and appends them to the file."""

    def __init__(self, session: "_Session", camera_names: tuple[str, ...], config: WriterConfig):
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
        self.session.bytes_written = file_size(self.session.partial_path)

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
            abandon_handle(root, images)

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
            abandon_handle(root, {})
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
        session.bytes_written = file_size(session.partial_path)
        self.pending = []

    def _report_drops(self) -> None:
        session = self.session
        if session.dropped > session.dropped_reported:
            session.dropped_reported = session.dropped
            log.error("%s", FramesDropped(session.dropped, session.capacity))


def abandon_handle(root: h5py.File, datasets: dict) -> None:
    """Close a file whose last write failed (disk full, disk gone).

    Why the file is opened without a raw-data chunk cache (`EpisodeSink._open`): with one, the
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
        log.warning("Closing %s after the write error failed too: %s", name, describe_write_error(error))


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_HDF5_OS_ERROR = re.compile(r"errno = (\d+), error message = '([^']*)'")


def describe_write_error(error: BaseException) -> str:
    """A short reason: HDF5's messages bury the operating system's error in a long text."""
    text = str(error) or type(error).__name__
    found = _HDF5_OS_ERROR.search(text)
    if found:
        return f"{found.group(2)} (errno {found.group(1)})"
    first = text.splitlines()[0]
    return first if len(first) < 200 else first[:197] + "..."
