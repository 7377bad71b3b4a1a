"""HDF5's "file is open for writing" mark, read and cleared without HDF5 (what `h5clear -s` does).

A process that opens an HDF5 file for writing sets status flags in the superblock (format
versions 2 and 3, which our files use) and clears them when it closes the file. A process killed
in between leaves them set, and from then on HDF5 refuses every plain open of the file ("file is
already open for write ... may use <h5clear file>"), although nothing else may be wrong. h5py
has no way to clear them, and the HDF5 command-line tools are not part of this studio, so the
superblock is patched here: flags to 0, checksum recomputed.

Superblock v2/v3 (HDF5 File Format Specification, section II.A), at offset 0 or a power of two
from 512 on (after a user block):

    signature (8)  version (1)  size of offsets O (1)  size of lengths (1)  status flags (1)
    base address (O)  extension address (O)  end-of-file address (O)  root object header (O)
    checksum (4): Jenkins' lookup3 hash of everything before it
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Status flag bits (v3): the file is open for writing / for SWMR writing.
WRITE_ACCESS = 0x01
SWMR_WRITE_ACCESS = 0x04

_MASK = 0xFFFFFFFF


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 `hashlittle` over `data`, as HDF5's H5_checksum_lookup3 computes it
    (bytes read little-endian whatever the machine)."""

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & _MASK

    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    offset = 0
    while length > 12:
        a = (a + int.from_bytes(data[offset : offset + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[offset + 4 : offset + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[offset + 8 : offset + 12], "little")) & _MASK
        # mix(a, b, c)
        a = (a - c) & _MASK; a ^= rot(c, 4); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= rot(a, 6); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= rot(b, 8); b = (b + a) & _MASK  # noqa: E702
        a = (a - c) & _MASK; a ^= rot(c, 16); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= rot(a, 19); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= rot(b, 4); b = (b + a) & _MASK  # noqa: E702
        offset += 12
        length -= 12
    if length == 0:
        return c
    tail = data[offset:] + bytes(12 - length)  # the missing bytes add nothing
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    # final(a, b, c)
    c ^= b; c = (c - rot(b, 14)) & _MASK  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & _MASK  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & _MASK  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & _MASK  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & _MASK  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & _MASK  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & _MASK  # noqa: E702
    return c


@dataclass(frozen=True)
class Superblock:
    """Where a v2/v3 superblock sits and what its status flags say."""

    offset: int  # byte offset of the signature in the file
    version: int
    flags: int
    size: int  # bytes including the checksum
    checksum_ok: bool

    @property
    def open_for_write(self) -> bool:
        return bool(self.flags & (WRITE_ACCESS | SWMR_WRITE_ACCESS))


def read_superblock(path: str | os.PathLike) -> Superblock | None:
    """The superblock of `path` if it is version 2 or 3 (None for v0/v1, which carry no status
    flags HDF5 acts on, and for files that are not HDF5)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        for offset in _candidate_offsets(size):
            handle.seek(offset)
            head = handle.read(12)
            if head[:8] != SIGNATURE:
                continue
            version, offsets_size = head[8], head[9]
            if version not in (2, 3) or offsets_size not in (2, 4, 8):
                return None
            total = 12 + 4 * offsets_size + 4
            handle.seek(offset)
            block = handle.read(total)
            if len(block) < total:
                return None
            stored = struct.unpack("<I", block[-4:])[0]
            return Superblock(offset, version, block[11], total, lookup3(block[:-4]) == stored)
    return None


def clear_write_flags(path: str | os.PathLike) -> bool:
    """Clear the open-for-write flags of a v2/v3 superblock; returns False when there was nothing
    to clear. The caller makes sure no process has the file open (see `recordings.locks`).

    Raises ValueError when the superblock's own checksum does not match (then the file is
    damaged beyond this repair and is left as it was).
    """
    path = Path(path)
    block = read_superblock(path)
    if block is None or not block.open_for_write:
        return False
    if not block.checksum_ok:
        raise ValueError(f"the superblock of {path.name} fails its checksum; the file is damaged, not just left open")
    with open(path, "r+b") as handle:
        handle.seek(block.offset)
        data = bytearray(handle.read(block.size))
        data[11] = 0
        data[-4:] = struct.pack("<I", lookup3(bytes(data[:-4])))
        # One write of < 100 bytes inside the first page: a kill leaves the old or the new block.
        handle.seek(block.offset)
        handle.write(bytes(data))
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _candidate_offsets(size: int):
    yield 0
    offset = 512
    while offset + len(SIGNATURE) <= size:
        yield offset
        offset *= 2
