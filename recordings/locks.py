"""Who owns a partial episode file: the writer holds an exclusive `flock` on it while recording
(a crashed process loses it), so recovery and readers can tell a live recording from a leftover.

POSIX only; on systems without `fcntl` nothing is locked and every partial looks like a leftover.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_HELD = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)


class LockHeld(OSError):
    """Someone (a writer, in any process) holds the file's lock."""


def lock_exclusive(path: str | os.PathLike) -> int | None:
    """Take the exclusive lock without waiting; returns the descriptor to close to release it,
    or None where locking is not possible (a warning is logged). Raises LockHeld if taken."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in _HELD:
            raise LockHeld(error.errno, f"{Path(path).name} is locked by a recording in progress") from error
        log.warning("Cannot lock %s (%s); a live recording there is not protected", Path(path).name, error)
        return None
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def recording_in_progress(path: str | os.PathLike) -> bool:
    """True while a writer (in any process, this one included) holds the file's lock."""
    try:
        fd = lock_exclusive(path)
    except LockHeld:
        return True
    except OSError:
        return False
    release(fd)
    return False
