"""Recording control: start, stop (with a label) and discard an episode of the session's writer, and
the recorder's problems as events.

Threads: `start`, `stop`, `discard` and `close` run on the studio's worker thread (they wait on the
writer thread); `check_writer` on the monitor thread; `status` on any thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from app.studio.events import EventLog, Severity
from app.studio.snapshot import RecordingStatus
from recordings.errors import FramesDropped, RecordingError
from recordings.index import StoreIndex
from recordings.qa import Verdict, load_thresholds
from recordings.metadata import EpisodeMetadata
from recordings.schema import Label
from recordings.store import EpisodeStore
from recordings.writer import EpisodeWriter
from recordings.writer_status import WriterState, WriterStatus
from recordings.writer_process import ProcessEpisodeWriter, WriterProcessDied

log = logging.getLogger(__name__)

#: Writer states in which there is an episode to stop or discard.
OPEN_STATES = (WriterState.RECORDING, WriterState.FINISHING, WriterState.ERROR)


class RecordingControl:
    """Start/stop/discard of one writer, with what happened in `events`. `on_writer_died` is
    called (monitor thread) once when the writer's process dies while recording: the studio holds
    the arm there, so a demonstration does not go on unrecorded."""

    def __init__(self, writer: ProcessEpisodeWriter | EpisodeWriter, events: EventLog,
                 on_writer_died: Callable[[], None] = lambda: None) -> None:
        self.writer = writer
        self.events = events
        self._on_writer_died = on_writer_died
        self._lock = threading.Lock()
        self._last_saved = ""
        self._error_seen: object = None  # monitor thread
        self._dropped_reported = 0  # monitor thread

    @property
    def last_saved(self) -> str:
        with self._lock:
            return self._last_saved

    def status(self) -> WriterStatus:
        return self.writer.status()

    def snapshot(self, busy: str, episode_count: int | None) -> RecordingStatus:
        """What the recording panel shows now; `busy` names a request the studio is carrying out."""
        status = self.writer.status()
        return RecordingStatus(
            active=status.recording,
            failed=status.state is WriterState.ERROR,
            busy=busy or ("saving the episode…" if status.state is WriterState.FINISHING else ""),
            elapsed_s=status.duration_s if status.recording else 0.0,
            frames=status.frames_received,
            frames_dropped=status.frames_dropped,
            episode_count=episode_count,
            last_saved=self.last_saved,
        )

    def report_unfinished(self, store: EpisodeStore) -> None:
        """An event naming the leftovers of killed recordings in `store`, with the fix."""
        partials = store.partial_paths()
        if partials:
            names = ", ".join(p.name for p in partials[:3]) + ("…" if len(partials) > 3 else "")
            self.events.add(Severity.WARNING, "recorder",
                            f"{len(partials)} unfinished recording(s) from an earlier session: {names}.",
                            "Run `python run.py episodes recover` to turn them into episodes.")

    def is_recording(self) -> bool:
        return self.writer.status().state in (WriterState.RECORDING, WriterState.FINISHING)

    def start(self, metadata: EpisodeMetadata) -> bool:
        try:
            path = self.writer.start(metadata)
        except (RecordingError, OSError) as exc:
            self.events.add(Severity.ERROR, "recorder", f"Recording did not start: {exc}",
                            "Check that the store folder exists, is writable and has free space.")
            return False
        self._error_seen = None
        self._dropped_reported = 0
        self.events.add(Severity.INFO, "recorder", f"Recording {path.name} (task: {metadata.task}).")
        return True

    def stop(self, label: Label, notes: str | None) -> Path | None:
        if self.writer.status().state not in OPEN_STATES:
            self.events.add(Severity.WARNING, "recorder", "Nothing to stop: no episode is being recorded.", "Start a recording first.")
            return None
        try:
            path = self.writer.stop(label, notes)
        except RecordingError as exc:
            self.events.add(Severity.ERROR, "recorder", f"The episode was not saved: {exc}", "")
            return None
        final = self.writer.status()
        text = f"Saved {path.name}: {label.value}, {final.frames_written} steps, {final.duration_s:.1f} s."
        severity, text = index_and_judge(path, text)
        with self._lock:
            self._last_saved = text
        self.events.add(severity, "recorder", text)
        return path

    def discard(self) -> bool:
        try:
            self.writer.discard()
        except RecordingError as exc:
            self.events.add(Severity.ERROR, "recorder", f"Discarding failed: {exc}", "")
            return False
        self.events.add(Severity.INFO, "recorder", "The recording was discarded; nothing was saved.")
        return True

    def close(self, label: Label | str | None) -> None:
        """On shutdown: save an open episode with `label`, or discard it when `label` is None."""
        if self.writer.status().state not in OPEN_STATES:
            return
        try:
            if label is None:
                self.writer.discard()
                self.events.add(Severity.INFO, "recorder", "The recording was discarded on closing.")
            else:
                path = self.writer.stop(label)
                self.events.add(Severity.INFO, "recorder", f"Saved {path.name} on closing.")
        except RecordingError as exc:
            self.events.add(Severity.ERROR, "recorder", f"On closing: {exc}", "")

    def check_writer(self) -> None:
        """Turn the writer's latest problem into an event, once (monitor thread)."""
        status = self.writer.status()
        error = status.last_error
        if error is None:
            return
        if isinstance(error, FramesDropped):
            # Report when drops first appear and then on each further 50, not every frame.
            if status.frames_dropped >= self._dropped_reported + (1 if self._dropped_reported == 0 else 50):
                self._dropped_reported = status.frames_dropped
                self.events.add(Severity.WARNING, "recorder", str(error))
            return
        if error is not self._error_seen:
            self._error_seen = error
            if isinstance(error, WriterProcessDied):
                self._on_writer_died()
            self.events.add(Severity.ERROR, "recorder", str(error), "Press Stop to keep the frames written so far, or Discard.")


def index_and_judge(path: Path, saved_text: str) -> tuple[Severity, str]:
    """Put a just-saved episode into the store index (the Episodes view lists it at once) and add
    its timing QA verdict to the saved message; a bad verdict is a warning."""
    try:
        row = StoreIndex(path.parent).update_one(path)
        result = row.qa(load_thresholds(path.parent))
    except RecordingError as exc:  # a damaged qa.toml: the episode is saved all the same
        return Severity.WARNING, f"{saved_text} Timing QA not judged: {exc}"
    if result is None:
        return Severity.INFO, saved_text
    if result.verdict is Verdict.BAD:
        return Severity.WARNING, f"{saved_text} Timing QA: bad ({'; '.join(result.reasons[:2])}); consider recording it again."
    return Severity.INFO, f"{saved_text} Timing QA: {result.verdict.value}."

