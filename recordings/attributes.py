"""An episode file's root attributes, read so that a damaged file cannot hang the studio.

Text attributes stored as variable-length strings live in HDF5's global heap, which carries no
checksum. HDF5 (2.0) reads a damaged global heap collection in an endless loop
(`H5HG__cache_heap_deserialize`, found by benchmarks/fuzz_episodes.py --without-checksums): one
damaged file would freeze `episodes list`, `check` and the studio's episode view. This studio
has written fixed-length text attributes (inside the checksummed object header) since the
checksums came in; files written before, and by other tools, may still have variable-length
ones.

So: a file whose attributes are all fixed-size (ours, ALOHA's bools) is read here directly; a
file with a variable-length attribute has its attributes read by a helper process (one, reused,
started on first need), which is killed and replaced when it does not answer within
`TIMEOUT_S`; the file then reads as damaged (`AttributesHang`, an OSError like HDF5's own).
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

log = logging.getLogger(__name__)

#: A healthy file's attributes read in milliseconds; a busy machine may take a second.
TIMEOUT_S = 10.0
_ROOT = Path(__file__).resolve().parents[1]
_CACHE_SIZE = 256


class AttributesHang(OSError):
    """Reading a file's attributes did not finish: its unchecksummed global heap is damaged."""


def root_attributes(root: h5py.File) -> dict[str, Any]:
    """Every root attribute of an open file, as h5py returns them. Raises what h5py raises for
    a damaged file, or AttributesHang."""
    if not _has_variable_length(root):
        return {name: root.attrs[name] for name in root.attrs}
    path = Path(root.filename)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            cached = _HELPER.read(path)
            _CACHE[key] = cached
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
    if isinstance(cached, BaseException):
        raise cached
    return dict(cached)


def _has_variable_length(root: h5py.File) -> bool:
    """Whether any root attribute is variable-length (its type is read, not its data)."""
    for name in root.attrs:
        dtype = root.attrs.get_id(name).dtype
        if h5py.check_vlen_dtype(dtype) is not None or _vlen_string(dtype):
            return True
    return False


def _vlen_string(dtype: np.dtype) -> bool:
    info = h5py.check_string_dtype(dtype)
    return info is not None and info.length is None


class _Helper:
    """The helper process: path in, pickled attributes (or the error) out; replaced after a
    hang. Used under _LOCK, one request at a time."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return subprocess.Popen([sys.executable, "-m", "recordings.attributes"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=str(_ROOT), env=env)

    def read(self, path: Path) -> Mapping[str, Any] | BaseException:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        request = str(path).encode("utf-8")
        try:
            proc.stdin.write(struct.pack("<I", len(request)) + request)
            proc.stdin.flush()
            reply = _read_message(proc.stdout, TIMEOUT_S)
        except (OSError, EOFError, TimeoutError) as error:
            self.stop()
            if isinstance(error, TimeoutError):
                log.error("Reading the attributes of %s did not finish in %.0f s; the file is damaged", path.name, TIMEOUT_S)
                return AttributesHang(
                    f"reading its text attributes did not finish in {TIMEOUT_S:.0f} s (HDF5 loops on a damaged "
                    "global heap: the file is damaged)"
                )
            return OSError(f"the helper reading its attributes failed ({error})")
        status, value = pickle.loads(reply)  # from our own helper process
        if status == "ok":
            return value
        kind, message = value
        return {"KeyError": KeyError, "ValueError": ValueError, "TypeError": TypeError}.get(kind, OSError)(message)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_message(stream, timeout_s: float) -> bytes:
    header = _read_exactly(stream, 4, timeout_s)
    return _read_exactly(stream, struct.unpack("<I", header)[0], timeout_s)


def _read_exactly(stream, count: int, timeout_s: float) -> bytes:
    data = b""
    fd = stream.fileno()
    while len(data) < count:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise EOFError("the helper process ended")
        data += chunk
    return data


def _serve() -> int:
    """The helper process's loop (stdin: requests, stdout: replies)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return 0
        path = stdin.read(struct.unpack("<I", header)[0]).decode("utf-8")
        try:
            with h5py.File(path, "r", locking=False) as root:
                reply = ("ok", {name: root.attrs[name] for name in root.attrs})
        except Exception as error:  # noqa: BLE001 - sent back to the studio, which names the file
            reply = ("error", (type(error).__name__, str(error)))
        data = pickle.dumps(reply)
        stdout.write(struct.pack("<I", len(data)) + data)
        stdout.flush()


_LOCK = threading.Lock()
_CACHE: OrderedDict = OrderedDict()
_HELPER = _Helper()

if __name__ == "__main__":
    sys.exit(_serve())
