"""The training job as a process the window starts, watches and stops, without Qt.

The window starts `python run.py train ...` detached (it may outlive the window), writes a
`job_started` line into the run folder's train.jsonl just before, and the job's process id into
job.json just after; the trainer then records itself there too (`model.run_folder`), so a job
started from a terminal is found the same way. The job's stderr goes to train.log; its stdout
(the same events the trainer appends to train.jsonl itself) is not kept.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from model.run_folder import STDERR_FILE, Event, JobRecord, append_event


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int, marker: str = "") -> bool:
    """Whether process `pid` runs and (where /proc tells) has `marker` among its arguments
    (as an argument of its own, or as the value of a `--flag=marker` one).

    The marker (the run folder) guards against a pid the system has since given to another
    process; a zombie counts as gone (a detached job's parent is init, which may reap it late).
    """
    if pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return False
            if marker:
                wanted = marker.encode()
                return any(arg == wanted or arg.endswith(b"=" + wanted)
                           for arg in (proc / "cmdline").read_bytes().split(b"\0"))
            return True
        except FileNotFoundError:
            return False
        except (OSError, IndexError):
            pass  # fall back to a signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def out_arg(argv: Sequence[str]) -> str:
    """The --out value of a train command line ("" when absent)."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return ""


#: Runs as `python -c LAUNCHER STDOUT_PATH STDERR_PATH PROGRAM ARGS...`: points stdout and stderr
#: at the given files (appending) and becomes the job with exec, keeping its pid. PySide6's
#: QProcess.startDetached() with output files does not hand back the pid (6.11 returns only a
#: bool), and the static form that does cannot redirect output; this joins the two.
LAUNCHER = (
    "import os, sys\n"
    "for fd, name in ((1, sys.argv[1]), (2, sys.argv[2])):\n"
    "    f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n"
    "    os.dup2(f, fd)\n"
    "    os.close(f)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def launch_command(run_dir: Path, argv: Sequence[str], python: str | None = None) -> tuple[str, list[str]]:
    """(program, arguments) that start `python argv...` with its stderr in the run folder's
    train.log. Its stdout is dropped: the trainer writes its events into train.jsonl itself."""
    python = python or sys.executable
    return python, ["-c", LAUNCHER, os.devnull, str(run_dir / STDERR_FILE), python, *argv]


def request_cancel(pid: int) -> None:
    """SIGTERM: the trainer finishes its step, writes a checkpoint, reports `cancelled`, exits 130."""
    os.kill(pid, signal.SIGTERM)


def started_marker(argv: Sequence[str], resume: bool) -> dict[str, Any]:
    """The line the window writes into train.jsonl before each start of the job."""
    return {"event": Event.JOB_STARTED.value, "time": round(time.time(), 3), "resume": resume, "argv": list(argv)}


def announce_start(run_dir: Path, argv: Sequence[str], resume: bool) -> None:
    """Before a start: the `job_started` line (OSError when the folder cannot be written)."""
    append_event(run_dir, started_marker(argv, resume))


def record_launch(run_dir: Path, pid: int, argv: Sequence[str], python: str, cwd: Path) -> None:
    """After a start: job.json with the process the window started (the trainer rewrites it with
    the same pid once it runs; the window needs it before)."""
    JobRecord(int(pid), tuple(argv), python, time.time(), this_host(), str(cwd)).save(run_dir)


def record_launch_failure(run_dir: Path, python: str) -> None:
    """The process could not be started at all: an error line, so the run shows why."""
    append_event(run_dir, {
        "event": Event.ERROR.value, "kind": "launch", "message": f"the training process could not be started ({python})",
        "what_to_do": "Check that the studio's Python environment is intact (`python run.py train --help` in a "
                      "terminal)."})
