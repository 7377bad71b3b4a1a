"""Following a run folder from the window, without Qt: reading what the job appended as it grows
(`FileTail`), turning it into the run state, telling whether the job's process still lives, and
noticing a crash (its process gone without a final summary, cancelled or error event).
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from model.run_folder import EVENTS_FILE, JOB_FILE, STDERR_FILE, JobRecord, checkpoint_step, latest_checkpoint

from app.studio.paths import RUNS_ROOT
from app.studio.training.job import out_arg, process_alive, request_cancel, this_host
from app.studio.training.run_state import LogLine, Outcome, RunState


class FileTail:
    """The complete lines appended to a file since the last call (a partial last line waits).

    `max_bytes` bounds one call, so a long finished run's log is read over a few calls instead of
    holding the GUI thread. A file that shrinks (replaced) is read again from its start.
    """

    def __init__(self, path: Path, max_bytes: int = 512 * 1024) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.offset = 0
        self._partial = b""

    def read_lines(self) -> list[str]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(self.max_bytes)
        self.offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in lines]

    @property
    def at_end(self) -> bool:
        try:
            return self.path.stat().st_size <= self.offset
        except FileNotFoundError:
            return True


def find_runs(root: Path = RUNS_ROOT) -> list[Path]:
    """Run folders under `root` that a job ran in (they hold job.json: the window's runs and,
    since the trainer records itself, those started from a terminal), newest start first."""
    if not root.is_dir():
        return []
    found = []
    for entry in os.scandir(root):
        job = Path(entry.path) / JOB_FILE
        if entry.is_dir() and job.is_file():
            found.append((job.stat().st_mtime, Path(entry.path)))
    return [path for _, path in sorted(found, reverse=True)]


class RunFollower:
    """One run folder as the window follows it: reads what the job appended, tells whether its
    process still lives, and notices a crash. GUI thread only; `poll()` reads only new bytes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.state = RunState()
        self.job = JobRecord.load(self.run_dir)
        self._events = FileTail(self.run_dir / EVENTS_FILE)
        self._stderr = FileTail(self.run_dir / STDERR_FILE)
        self.stderr_tail: deque[str] = deque(maxlen=30)
        self.cancel_requested = False

    def job_alive(self) -> bool:
        job = self.job
        if job is None or job.host != this_host():
            return False
        return process_alive(job.pid, out_arg(job.argv))

    def poll(self) -> list[LogLine]:
        """New log lines (events rendered, then stderr), and the crash verdict when it applies."""
        out = self._read()
        if self.state.outcome is Outcome.RUNNING and not self.job_alive():
            # The process may have written its last lines just before it ended: read to the end.
            while not (self._events.at_end and self._stderr.at_end):
                out += self._read()
            if self.state.outcome is Outcome.RUNNING:
                # Asked to stop before its signal handler was in place (while Python starts), the
                # job ends at once: nothing was lost, so this is a stop, not a crash.
                out.append(self.state.mark_stopped_early() if self.cancel_requested else self.state.mark_crashed())
        return out

    def _read(self) -> list[LogLine]:
        processes = self.state.processes_started
        out = [line for text in self._events.read_lines() if (line := self.state.feed_line(text)) is not None]
        if self.state.processes_started != processes:
            # A trainer took the folder (maybe started elsewhere, e.g. from a terminal): it wrote
            # job.json before saying so, and that is the process to watch now.
            self.job = JobRecord.load(self.run_dir)
        for text in self._stderr.read_lines():
            if text.strip():
                self.stderr_tail.append(text)
                out.append(LogLine(text, "stderr"))
        return out

    @property
    def loading(self) -> bool:
        """More of the files is left to read (a long finished run is read over several polls)."""
        return not (self._events.at_end and self._stderr.at_end)

    def cancel(self) -> bool:
        """Ask the job to stop (it checkpoints first); False when there is no live job."""
        if self.job is None or not self.job_alive():
            return False
        request_cancel(self.job.pid)
        self.cancel_requested = True
        return True

    def resume_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.run_dir)

    def crash_report(self) -> str:
        """What the user reads after a crash: the job's last lines, its error output (a traceback,
        if Python got to print one), and the checkpoint Resume continues from."""
        parts = ["Its last lines:", *list(self.state.last_lines)[-5:]]
        if self.stderr_tail:
            parts += ["Its error output (train.log):", *list(self.stderr_tail)[-6:]]
        checkpoint = self.resume_checkpoint()
        parts.append(f"Resume continues from {checkpoint} (step {checkpoint_step(checkpoint)})." if checkpoint
                     else "There is no checkpoint yet: Resume starts the training again (a finished autoencoder is kept).")
        return "\n".join(parts)
