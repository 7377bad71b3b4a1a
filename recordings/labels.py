"""An episode's label (success / failure / unknown), failure reason and free note, changed after the
fact without ever putting the episode's frames at risk.

Why not rewrite the HDF5 attributes: opening the file for writing sets HDF5's open-for-write
flag in the superblock, and changing a text attribute rewrites object headers and the global
heap in several writes. A process killed in between (a closed laptop lid, a kill -9) leaves a
file HDF5 refuses to open, or one whose root object header is half-written: a label edit could
cost the episode.

What is done instead: the file holds a fixed `/label_record` dataset (contiguous uint8, 2 slots
of `SLOT_BYTES`), created with the episode. Each slot holds one complete label state:

    magic b"FWLB" (4)  format (1)  pad (3)  sequence number (8, LE)  payload length (4, LE)
    CRC-32 of sequence + length + payload (4, LE)  payload: JSON {label, reason, notes} (UTF-8)

The current state is the valid slot with the highest sequence number. An edit writes the *other*
slot (one `pwrite` within the record, never touching HDF5's metadata, never opening the file
through HDF5 for writing), then fsyncs. A kill at any instant leaves either the old slot as the
newest valid one (the edit did not happen) or the new one (it did); a torn write fails its
CRC and is ignored. Two edits of one file are serialised by a POSIX lock on the file (HDF5's
own readers hold `flock` locks, which do not conflict, so an episode open in the studio can be
labelled).

Files without the record (written before it existed, by ALOHA's tools, or by hand) get it once,
copy-on-write: the file is copied beside itself, the record added to the copy, the copy fsynced
and renamed over the original (atomic). A kill leaves the original untouched or the finished
copy in place, plus at most a hidden temporary file that the next edit removes.

The HDF5 attributes `success_label` / `notes` / `label_reason` keep what the recorder wrote;
the record wins wherever both exist (`read_label_state`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from recordings import schema
from recordings.attributes import root_attributes
from recordings.errors import EpisodeFormatError, RecordingError
from recordings.hdf5_faults import READ_ERRORS, attribute, describe, member
from recordings.schema import Label, attr_text

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: edits are not serialised between processes
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SLOT_BYTES = 4096
SLOTS = 2
MAGIC = b"FWLB"
FORMAT = 1
_HEADER = struct.Struct("<4sB3xQII")  # magic, format, sequence, payload length, crc32
MAX_PAYLOAD_BYTES = SLOT_BYTES - _HEADER.size

#: Set to a step name ("locked", "torn", "written", "copied", "modified") to make a label edit
#: stop there for a while: the kill tests use it to kill the process at exactly that moment.
PAUSE_ENV = "FASTWAM_LABEL_PAUSE"
_TEMP_INFIX = ".label-"
_IN_PROCESS = threading.Lock()


@dataclass(frozen=True)
class LabelState:
    """One label state. reason: why it failed (from the lab's list), notes: free text."""

    label: Label = Label.UNKNOWN
    reason: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", Label.parse(self.label))
        for name in ("reason", "notes"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"the label's {name} must be text, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, str]:
        return {"label": self.label.value, "reason": self.reason, "notes": self.notes}

    def changed(self, label: Label | str, notes: str | None = None, reason: str | None = None) -> "LabelState":
        """A new state: `label` always, `notes`/`reason` when given ("" clears, None keeps)."""
        return LabelState(
            Label.parse(label),
            self.reason if reason is None else reason,
            self.notes if notes is None else notes,
        )


@dataclass(frozen=True)
class RecordReading:
    """What the two slots of a record say. state: the newest valid one (None if neither is);
    sequence / slot: its number and place; interrupted: the other slot holds a write that may be
    newer but is invalid (an edit that was cut off, or damage) - the state shown is the one
    before it; stale_damaged: the other slot held an older state and is damaged (harmless: the
    next edit overwrites it)."""

    state: LabelState | None
    sequence: int = 0
    slot: int | None = None
    interrupted: bool = False
    stale_damaged: bool = False

    @property
    def warning(self) -> str | None:
        if self.interrupted and self.state is None:
            return "the label record is damaged (no readable copy); set the label again with `episodes label`"
        if self.interrupted:
            return (
                "the last label edit did not complete (or the label record is damaged); the label shown is "
                "the one before it: set it again with `episodes label` if needed"
            )
        if self.stale_damaged:
            return "an older copy in the label record is damaged; the current label is intact"
        return None


# ---- slots ----
def encode_slot(state: LabelState, sequence: int) -> np.ndarray:
    """(SLOT_BYTES,) uint8: one slot holding `state` with `sequence`. Raises ValueError when the
    reason and notes do not fit."""
    payload = json.dumps(state.to_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"the label's reason and notes take {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} fit: shorten the notes"
        )
    crc = zlib.crc32(struct.pack("<QI", sequence, len(payload)) + payload)
    slot = np.zeros(SLOT_BYTES, dtype=np.uint8)
    header = _HEADER.pack(MAGIC, FORMAT, sequence, len(payload), crc)
    slot[: len(header)] = np.frombuffer(header, dtype=np.uint8)
    slot[len(header) : len(header) + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
    return slot


class _Invalid:
    """A slot holding a started but invalid write; sequence: what its header says, None when
    the header itself is unreadable."""

    def __init__(self, sequence: int | None):
        self.sequence = sequence


def _decode_slot(raw: bytes) -> tuple[LabelState, int] | None | _Invalid:
    """(state, sequence) for a valid slot; None for a never-written one (all zero); _Invalid for
    a slot holding a started but invalid write."""
    if not any(raw):
        return None
    magic, fmt, sequence, length, crc = _HEADER.unpack_from(raw)
    if magic != MAGIC or fmt != FORMAT or length > MAX_PAYLOAD_BYTES:
        return _Invalid(None)
    payload = raw[_HEADER.size : _HEADER.size + length]
    if zlib.crc32(struct.pack("<QI", sequence, length) + payload) != crc:
        return _Invalid(sequence)
    try:
        data = json.loads(payload.decode("utf-8"))
        return LabelState(data["label"], data.get("reason", ""), data.get("notes", "")), sequence
    except (ValueError, KeyError, TypeError):
        return _Invalid(sequence)


def decode_record(raw: bytes | np.ndarray) -> RecordReading:
    """The two slots' bytes (2 * SLOT_BYTES) -> what they say."""
    raw = bytes(np.asarray(raw, dtype=np.uint8).reshape(-1)) if not isinstance(raw, bytes) else raw
    best: tuple[LabelState, int, int] | None = None
    invalid: list[_Invalid] = []
    for slot in range(SLOTS):
        decoded = _decode_slot(raw[slot * SLOT_BYTES : (slot + 1) * SLOT_BYTES])
        if isinstance(decoded, _Invalid):
            invalid.append(decoded)
        elif decoded is not None and (best is None or decoded[1] > best[1]):
            best = (decoded[0], decoded[1], slot)
    if best is None:
        return RecordReading(None, interrupted=bool(invalid))
    # An invalid slot whose (unchecked) header says it is older than the valid one is an old
    # copy gone bad; anything else may be the newer edit that was cut off.
    newer = [item for item in invalid if item.sequence is None or item.sequence > best[1]]
    return RecordReading(best[0], best[1], best[2], interrupted=bool(newer), stale_damaged=len(newer) < len(invalid))


# ---- inside HDF5 (creating a file, reading one that is open) ----
def create_label_record(root: h5py.File, state: LabelState) -> None:
    """Add `/label_record` holding `state` (a new file, or one being finished: not SWMR yet)."""
    record = np.zeros((SLOTS, SLOT_BYTES), dtype=np.uint8)
    record[0] = encode_slot(state, 1)
    # Contiguous and written now, so its bytes have a fixed place in the file from here on.
    root.create_dataset(schema.LABEL_RECORD, data=record, chunks=None)


def reset_label_record(root: h5py.File, state: LabelState) -> None:
    """Set the record of a file that is open for writing anyway (the writer finishing it)."""
    record = np.zeros((SLOTS, SLOT_BYTES), dtype=np.uint8)
    record[0] = encode_slot(state, 1)
    root[schema.LABEL_RECORD][...] = record


def state_from_attrs(attrs: Mapping[str, Any]) -> LabelState:
    """The label as the recorder wrote it into the attributes (unknown label strings read as
    unknown; `check` reports them)."""
    try:
        label = Label(attr_text(attribute(attrs, schema.ATTR_LABEL, Label.UNKNOWN.value)) or Label.UNKNOWN.value)
    except ValueError:
        label = Label.UNKNOWN
    return LabelState(
        label,
        attr_text(attribute(attrs, schema.ATTR_LABEL_REASON, "")),
        attr_text(attribute(attrs, schema.ATTR_NOTES, "")),
    )


def read_record(root: h5py.File) -> RecordReading | None:
    """The record of an open file, or None when it has none (older files, ALOHA's)."""
    dataset = member(root, schema.LABEL_RECORD)
    if dataset is None:
        return None
    if not isinstance(dataset, h5py.Dataset) or dataset.shape != (SLOTS, SLOT_BYTES) or dataset.dtype != np.uint8:
        return RecordReading(None, interrupted=True)
    return decode_record(dataset[()])


def read_label_state(root: h5py.File) -> tuple[LabelState, str | None]:
    """(the episode's label state, a warning or None): the record's newest valid slot, else the
    attributes."""
    reading = read_record(root)
    if reading is None:
        return state_from_attrs(root_attributes(root)), None
    if reading.state is None:
        return state_from_attrs(root_attributes(root)), reading.warning
    return reading.state, reading.warning


# ---- editing a finished episode ----
@dataclass(frozen=True)
class _Geometry:
    inode: int
    offset: int | None  # byte offset of the record (None: the file has none yet)
    current: LabelState  # from the attributes (used when the record holds no valid slot)


def write_label(
    path: str | os.PathLike, label: Label | str, notes: str | None = None, reason: str | None = None
) -> LabelState:
    """Change the label of the finished episode at `path` (notes/reason: None keeps, "" clears);
    returns the new state. Raises ValueError for a bad label or text, EpisodeFormatError for a
    file that is not a readable episode, RecordingError when the file cannot be written."""
    path = Path(path)
    parsed = Label.parse(label)
    for name, value in (("notes", notes), ("reason", reason)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {value!r}")
    with _IN_PROCESS:  # POSIX locks are per process: threads of one process queue here
        return _write_label(path, parsed, notes, reason)


def _write_label(path: Path, parsed: Label, notes: str | None, reason: str | None) -> LabelState:
    from recordings.check import open_readonly  # check reads labels too

    _remove_stale_temporaries(path)
    for _ in range(5):  # another process may replace the file while we wait for the lock
        root = open_readonly(path)
        try:
            geometry = _geometry(root, path)
        except READ_ERRORS as error:
            raise EpisodeFormatError(path, [describe(error)]) from error
        finally:
            root.close()
        fd = _open_for_edit(path)
        try:
            _lock(fd)
            if os.fstat(fd).st_ino != geometry.inode or _inode(path) != geometry.inode:
                continue  # replaced meanwhile (copy-on-write by another edit): look again
            if geometry.offset is None:
                return _add_record(path, geometry.current.changed(parsed, notes, reason))
            return _write_slot(path, fd, geometry, parsed, notes, reason)
        finally:
            os.close(fd)  # releases the lock
    raise RecordingError(f"Could not relabel {path.name}: the file kept changing while waiting for it. Try again.")


def _geometry(root: h5py.File, path: Path) -> _Geometry:
    current = state_from_attrs(root_attributes(root))
    dataset = member(root, schema.LABEL_RECORD)
    offset = None
    if dataset is not None:
        plist = dataset.id.get_create_plist()
        if (
            not isinstance(dataset, h5py.Dataset)
            or dataset.shape != (SLOTS, SLOT_BYTES)
            or dataset.dtype != np.uint8
            or plist.get_layout() != h5py.h5d.CONTIGUOUS
            or plist.get_nfilters()
            or dataset.id.get_offset() is None
        ):
            raise EpisodeFormatError(path, [f"{schema.LABEL_RECORD} is not a label record this studio wrote"])
        offset = int(dataset.id.get_offset())
    return _Geometry(os.fstat(root.id.get_vfd_handle()).st_ino, offset, current)


def _write_slot(path: Path, fd: int, geometry: _Geometry, label: Label, notes, reason) -> LabelState:
    assert geometry.offset is not None
    raw = os.pread(fd, SLOTS * SLOT_BYTES, geometry.offset)
    if len(raw) != SLOTS * SLOT_BYTES:
        raise EpisodeFormatError(path, ["the file is truncated (the label record is cut off)"])
    reading = decode_record(raw)
    base = reading.state or geometry.current
    state = base.changed(label, notes, reason)
    # Overwrite the slot that does not hold the current state (a torn or older one).
    target = 0 if reading.slot is None else 1 - reading.slot
    slot = encode_slot(state, reading.sequence + 1).tobytes()
    _pause("locked")
    try:
        where = geometry.offset + target * SLOT_BYTES
        if os.environ.get(PAUSE_ENV) == "torn":  # the kill tests' torn write: half, pause, rest
            cut = len(slot.rstrip(b"\0")) // 2  # half of the checksummed bytes
            os.pwrite(fd, slot[:cut], where)
            os.fsync(fd)
            _pause("torn")
            os.pwrite(fd, slot[cut:], where + cut)
        else:
            written = os.pwrite(fd, slot, where)
            if written != SLOT_BYTES:
                raise OSError(errno.EIO, f"short write ({written} of {SLOT_BYTES} bytes)")
        _pause("written")
        os.fsync(fd)
    except OSError as error:
        raise RecordingError(
            f"Could not relabel {path.name}: {error.strerror or error}. The label is unchanged "
            f"(still {base.label.value}); check the disk and try again."
        ) from error
    return state


def _add_record(path: Path, state: LabelState) -> LabelState:
    """Copy-on-write: the file gets its label record once (see the module doc)."""
    from recordings.layout import set_text_attr  # layout creates records with this module

    temporary = path.with_name(f".{path.name}{_TEMP_INFIX}{os.getpid()}.tmp")
    try:
        shutil.copyfile(path, temporary)
        shutil.copymode(path, temporary)
        _pause("copied")
        with h5py.File(temporary, "r+", locking=False) as root:
            create_label_record(root, state)
            for name, value in (
                (schema.ATTR_LABEL, state.label.value),
                (schema.ATTR_NOTES, state.notes),
                (schema.ATTR_LABEL_REASON, state.reason),
            ):  # the copy is private until renamed: its attributes can follow too
                set_text_attr(root.attrs, name, value)
        _fsync(temporary)
        _pause("modified")
        os.replace(temporary, path)
        _fsync(path.parent)
    except (OSError, *READ_ERRORS) as error:
        temporary.unlink(missing_ok=True)
        space = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        hint = (
            f"it needs room for one more copy of the file ({path.stat().st_size / 1e6:.0f} MB) once: free some space"
            if space
            else "check that the folder is writable"
        )
        raise RecordingError(
            f"Could not relabel {path.name}: adding its label record failed ({error}); {hint}. The episode is unchanged."
        ) from error
    return state


def _open_for_edit(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR)
    except PermissionError as error:
        raise RecordingError(f"Could not relabel {path.name}: the file is read-only ({error.strerror}). "
                             "Make it writable (or copy the store somewhere writable) first.") from error
    except FileNotFoundError as error:
        raise EpisodeFormatError(path, [f"there is no file at {path}"]) from error
    except OSError as error:
        raise RecordingError(f"Could not relabel {path.name}: {error}") from error


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.lockf(fd, fcntl.LOCK_EX)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Copies left by an edit that was killed before its rename (their process is gone)."""
    prefix = f".{path.name}{_TEMP_INFIX}"
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        pid_text = entry.name[len(prefix) : -len(".tmp")]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            try:
                os.unlink(entry.path)
                log.info("Removed %s, left by a label edit that was interrupted", entry.name)
            except OSError as error:
                log.warning("Could not remove %s: %s", entry.name, error)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pause(step: str) -> None:
    if os.environ.get(PAUSE_ENV) == step:
        sys.stderr.write(f"label edit paused at {step}\n")
        sys.stderr.flush()
        time.sleep(600)


__all__ = [
    "LabelState",
    "RecordReading",
    "create_label_record",
    "decode_record",
    "encode_slot",
    "read_label_state",
    "read_record",
    "reset_label_record",
    "state_from_attrs",
    "write_label",
]
