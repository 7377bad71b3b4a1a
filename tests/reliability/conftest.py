"""Shared pieces of the reliability suite (issue 13: nothing a lab does to its files or disks takes
the studio down or loses an episode): damaging real files, a real small file system, and
processes killed with SIGKILL at chosen moments."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    """XOR one byte of a file in place."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ mask]))


def offset_of(path: Path, needle: bytes) -> int:
    """Where `needle` first occurs in the file (it must)."""
    offset = path.read_bytes().find(needle)
    assert offset >= 0, f"{needle!r} not found in {path.name}"
    return offset


@pytest.fixture
def small_filesystem(tmp_path):
    """mount(size) -> a folder on a fresh tmpfs of that size ("2M"): a disk that really fills up.
    Needs root and a kernel that lets this process mount; skips otherwise. `resize(size)`
    remounts it bigger ("the user freed some space")."""
    mounted: list[Path] = []

    class Filesystem:
        def mount(self, size: str) -> Path:
            if os.geteuid() != 0 or shutil.which("mount") is None:
                pytest.skip("a real small file system needs root (mount -t tmpfs); the RLIMIT_FSIZE test covers non-root")
            point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
            point.mkdir()
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
            mounted.append(point)
            return point

        def resize(self, point: Path, size: str) -> None:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(point)], check=True)

        def read_only(self, point: Path) -> None:
            subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)

    yield Filesystem()
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


class Paused:
    """A child process stopped at a chosen step of its work, ready to be killed."""

    def __init__(self, pid: int, read_fd: int):
        self.pid = pid
        self.read_fd = read_fd

    def wait_for(self, marker: bytes, timeout_s: float = 20.0) -> bytes:
        """Read the child's stderr until `marker` appears (or it exits); returns what was read."""
        seen = b""
        deadline = time.monotonic() + timeout_s
        os.set_blocking(self.read_fd, False)
        while marker not in seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"the child did not reach {marker!r}; it wrote {seen[-500:]!r}")
            try:
                chunk = os.read(self.read_fd, 4096)
            except BlockingIOError:
                time.sleep(0.002)
                continue
            if not chunk:
                raise AssertionError(f"the child ended before {marker!r}; it wrote {seen[-500:]!r}")
            seen += chunk
        return seen

    def kill(self) -> int:
        """SIGKILL, reap; returns the signal that ended it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(self.pid, 0)
        os.close(self.read_fd)
        return os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)


@pytest.fixture
def fork_child():
    """fork_child(work, env) -> Paused: runs work() in a forked copy of this process (modules
    already imported, so a kill test costs milliseconds) with `env` set and its stderr on a
    pipe. The child never returns into pytest: it exits with 0 after work(), 1 on an error."""
    children: list[Paused] = []

    def start(work, env: dict[str, str] | None = None) -> Paused:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(read_fd)
                os.dup2(write_fd, 2)
                sys.stderr = os.fdopen(2, "w", buffering=1)
                os.environ.update(env or {})
                work()
                code = 0
            except BaseException as error:  # noqa: BLE001 - reported on the pipe, then exit
                try:
                    sys.stderr.write(f"child failed: {type(error).__name__}: {error}\n")
                    sys.stderr.flush()
                except Exception:  # noqa: BLE001
                    pass
            finally:
                os._exit(code)
        os.close(write_fd)
        child = Paused(pid, read_fd)
        children.append(child)
        return child

    yield start
    for child in children:
        try:
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def run_py(*args: str, timeout: float = 120, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python run.py ...` in a child process (skips when the system libraries are missing)."""
    done = subprocess.run([sys.executable, "run.py", *args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if done.returncode == 3 and "system packages" in done.stderr:
        pytest.skip("run.py refuses to start without its system libraries")
    return done


@pytest.fixture(name="flip_byte")
def flip_byte_fixture():
    return flip_byte


@pytest.fixture(name="offset_of")
def offset_of_fixture():
    return offset_of


@pytest.fixture(name="run_py")
def run_py_fixture():
    return run_py
