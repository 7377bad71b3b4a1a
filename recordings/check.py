"""Is this file a valid episode? Opening episode files read-only, and checking their layout,
lengths, dtypes and their images: a few spot-checked frames by default, every frame of every
camera with `deep=True` (what training runs before it starts). Works on ours and on ALOHA/ACT
files. A damaged file is a verdict with reasons, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from recordings import schema
from recordings.attributes import root_attributes
from recordings.errors import EpisodeFormatError, LeftOpenForWrite, UnfinishedEpisode
from recordings.hdf5_faults import DAMAGED_FIX, READ_ERRORS, attribute, describe, member, short
from recordings.images import decode_jpeg
from recordings.labels import read_record
from recordings.layout import attr_text, camera_names_of
from recordings.locks import recording_in_progress
from recordings.schema import Label
from robot.types import ControlSource

#: ALOHA re-records an episode whose mean loop rate is below 42 Hz of its 50 Hz; as a fraction
#: it applies to any control rate.
MIN_RATE_FRACTION = 42.0 / 50.0

_CONTROL_SOURCES = {source.value.encode("ascii") for source in ControlSource}
#: Frames read per HDF5 call by the deep check: few calls, bounded memory (64 raw 480x640 frames
#: are 59 MB).
DEEP_BLOCK = 64
#: Frames named per camera in a reason; the rest are counted.
NAMED_FRAMES = 5
#: Stands for an object that exists but cannot be opened (its reason is already given).
_DAMAGED = object()


def open_readonly(path: str | Path) -> h5py.File:
    """Open an episode file for reading, turning HDF5's errors into ones a user can act on.

    Raises UnfinishedEpisode for a live or crashed recording, EpisodeFormatError for a missing,
    truncated or non-HDF5 file.
    """
    path = Path(path)
    if not path.is_file():
        raise EpisodeFormatError(path, [f"there is no file at {path}"])
    if schema.partial_index(path.name) is not None:  # never an episode; HDF5 need not touch it
        raise UnfinishedEpisode(path, in_progress=recording_in_progress(path))
    # A writer renames a finished episode to its final name a moment before it lets go of the
    # file's lock, so a lock seen on a final name is given a second to go away.
    deadline = time.monotonic() + 1.0
    while True:
        try:
            return h5py.File(path, "r")
        except READ_ERRORS as error:
            text = str(error)
            if "unable to lock file" in text or "file locking flag values don't match" in text:
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise UnfinishedEpisode(path, in_progress=True) from error
            if "already open for write" in text:
                raise LeftOpenForWrite(path) from error
            if "truncated file" in text:
                raise EpisodeFormatError(path, [f"the file is truncated (cut off while copying or writing): {_short(text)}"]) from error
            if "file signature not found" in text:
                raise EpisodeFormatError(path, ["it is not an HDF5 file"]) from error
            raise EpisodeFormatError(path, [f"HDF5 cannot open it: {describe(error)}"]) from error


@dataclass(frozen=True)
class Structure:
    """What `structure_problems` learnt about a readable file (shapes only, no data read)."""

    length: int = 0
    camera_names: tuple[str, ...] = ()
    compressed: bool = False
    has_effort: bool = False
    has_extras: bool = False  # written by this studio (schema_version attr present)
    schema_version: int | None = None


def structure_problems(root: h5py.File) -> tuple[list[str], Structure]:
    """Layout, shapes and dtypes: everything that can be said without reading the data."""
    reasons: list[str] = []
    lengths: dict[str, int] = {}

    def opened(path: str):
        """The object, None if absent, or _DAMAGED (with a reason) if it cannot be opened."""
        try:
            return member(root, path)
        except READ_ERRORS as error:
            reasons.append(f"{path} cannot be opened: {describe(error)}")
            return _DAMAGED

    for path in schema.STATE_DATASETS + schema.OPTIONAL_STATE_DATASETS:
        item = opened(path)
        if item is _DAMAGED:
            continue
        if item is None:
            if path not in schema.OPTIONAL_STATE_DATASETS:
                reasons.append(f"{path} is missing")
            continue
        if not isinstance(item, h5py.Dataset):
            reasons.append(f"{path} is not a dataset")
            continue
        if item.ndim != 2 or item.shape[1] != schema.STATE_WIDTH:
            reasons.append(f"{path} has shape {item.shape}, expected (T, {schema.STATE_WIDTH})")
        if item.dtype.kind != "f":
            reasons.append(f"{path} has dtype {item.dtype}, expected float32")
        lengths[path] = item.shape[0] if item.ndim else 0
    length = lengths.get(schema.ACTION, lengths.get(schema.QPOS, 0))
    for path, n in lengths.items():
        if n != length:
            reasons.append(f"{path} has {n} steps but /action has {length}")
    if length == 0 and lengths:
        reasons.append("the episode has no steps")

    attrs = root_attributes(root)
    compress_attr = bool(attribute(attrs, schema.ATTR_COMPRESS, False))
    images = opened(schema.IMAGES_GROUP)
    cameras = camera_names_of(root, attrs) if isinstance(images, h5py.Group) else ()
    if images is _DAMAGED:
        pass
    elif not isinstance(images, h5py.Group):
        reasons.append(f"{schema.IMAGES_GROUP} is missing")
    elif not cameras:
        reasons.append(f"{schema.IMAGES_GROUP} holds no camera")
    compressed = compress_attr
    for camera in cameras:
        dataset = opened(schema.image_path(camera))
        if dataset is _DAMAGED:
            continue
        if not isinstance(dataset, h5py.Dataset):
            reasons.append(f"camera {camera!r} is listed but {schema.image_path(camera)} is missing")
            continue
        if dataset.dtype != np.uint8:
            reasons.append(f"{schema.image_path(camera)} has dtype {dataset.dtype}, expected uint8")
        if dataset.shape[0] != length:
            reasons.append(f"{schema.image_path(camera)} has {dataset.shape[0]} frames but /action has {length} steps")
        if dataset.ndim == 2:
            if not compress_attr:
                reasons.append(f"{schema.image_path(camera)} holds JPEG rows but the 'compress' attribute is not set")
            compressed = True
        elif dataset.ndim == 4:
            if dataset.shape[3] != 3:
                reasons.append(f"{schema.image_path(camera)} has shape {dataset.shape}, expected (T, H, W, 3)")
            if compress_attr:
                reasons.append(f"the 'compress' attribute is set but {schema.image_path(camera)} holds raw frames")
        else:
            reasons.append(f"{schema.image_path(camera)} has shape {dataset.shape}, expected (T, H, W, 3) or (T, bytes)")

    version = attribute(attrs, schema.ATTR_SCHEMA_VERSION)
    has_extras = version is not None
    if compressed and has_extras:
        compress_len = opened(schema.COMPRESS_LEN)
        if compress_len is _DAMAGED:
            pass
        elif compress_len is None:
            reasons.append(f"{schema.COMPRESS_LEN} is missing")
        elif compress_len.shape != (len(cameras), length):
            reasons.append(f"{schema.COMPRESS_LEN} has shape {compress_len.shape}, expected ({len(cameras)}, {length})")
    if has_extras:
        for path in (schema.TIMESTAMP, schema.CONTROL_SOURCE, schema.TICK_INDEX) + tuple(
            schema.image_time_path(camera) for camera in cameras
        ):
            item = opened(path)
            if item is _DAMAGED:
                continue
            if not isinstance(item, h5py.Dataset):
                reasons.append(f"{path} is missing")
            elif item.shape != (length,):
                reasons.append(f"{path} has shape {item.shape}, expected ({length},)")
        # The loop record is optional (older files have none), but all or nothing, and per step.
        loop = {path: opened(path) for path in schema.LOOP_DATASETS}
        present = [path for path, item in loop.items() if item is not None]
        if present and len(present) < len(loop):
            reasons.append(f"{', '.join(sorted(set(loop) - set(present)))} missing beside {', '.join(present)}")
        for path, expected in ((schema.LOOP_MODE, (length,)), (schema.SAFETY_CLIPPED, (length, schema.STATE_WIDTH))):
            item = loop[path]
            if isinstance(item, h5py.Dataset) and item.shape != expected:
                reasons.append(f"{path} has shape {item.shape}, expected {expected}")
        events = loop[schema.LOOP_EVENTS]
        if isinstance(events, h5py.Dataset) and (events.ndim != 1 or events.dtype.names is None
                                                 or not {"tick", "code"} <= set(events.dtype.names)):
            reasons.append(f"{schema.LOOP_EVENTS} is not a table of events (shape {events.shape}, dtype {events.dtype})")
    structure = Structure(
        length=length,
        camera_names=cameras,
        compressed=compressed,
        has_effort=schema.EFFORT in lengths,
        has_extras=has_extras,
        schema_version=int(version) if has_extras and np.ndim(version) == 0 else None,
    )
    return reasons, structure


def spot_steps(length: int, spot_checks: int) -> list[int]:
    """`spot_checks` steps spread evenly from the first to the last."""
    return sorted({int(round(x)) for x in np.linspace(0, length - 1, max(spot_checks, 1))}) if length else []


def content_problems(
    root: h5py.File, structure: Structure, spot_checks: int = 3, deep: bool = False
) -> tuple[list[str], list[str]]:
    """Reads the per-step arrays and decodes `spot_checks` frames per camera (first, last and
    evenly between), or every frame when `deep`. Returns (reasons the file is invalid, warnings
    worth showing). A dataset HDF5 cannot read is a reason naming it, not an exception."""
    reasons: list[str] = []
    warnings: list[str] = []
    n = structure.length
    try:  # every attribute, not only the ones asked for by name: they are stored in one heap
        root_attributes(root)
    except READ_ERRORS as error:
        reasons.append(f"the episode's metadata (root attributes) cannot be read: {describe(error)}")
    for path in schema.STATE_DATASETS + ((schema.EFFORT,) if structure.has_effort else ()):
        values = _read(root, path, reasons)
        if values is None:
            continue
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            reasons.append(f"{path} has {bad} NaN or infinite values")
    if not structure.has_effort:
        warnings.append("no /observations/effort (ALOHA sim files have none)")

    reasons += frame_problems(root, structure, None if deep else spot_steps(n, spot_checks))

    record = read_record(root)
    if record is not None and record.warning:
        (reasons if record.state is None else warnings).append(record.warning)
    if structure.has_extras:
        more, notes = _extras_problems(root, structure)
        reasons += more
        warnings += notes
    return reasons, warnings


def frame_problems(root: h5py.File, structure: Structure, steps: list[int] | None = None) -> list[str]:
    """Read and decode the frames at `steps` (None: every frame) of every camera. One reason per
    bad frame naming camera and frame (the first `NAMED_FRAMES` of a camera, then a count)."""
    reasons: list[str] = []
    n = structure.length
    indices = list(range(n)) if steps is None else [t for t in steps if 0 <= t < n]
    lengths = None
    if structure.compressed and structure.has_extras:
        lengths = _read(root, schema.COMPRESS_LEN, reasons)
        if lengths is None:
            return reasons
    for c, camera in enumerate(structure.camera_names):
        dataset = root[schema.image_path(camera)]
        bad: list[str] = []
        shape: tuple[int, ...] | None = None
        for t, row in _rows(dataset, indices):
            if isinstance(row, BaseException):
                bad.append(f"frame {t} of camera {camera!r} cannot be read: {describe(row)}")
                continue
            if dataset.ndim == 4:
                continue  # raw pixels: reading them is the check
            length = int(lengths[c, t]) if lengths is not None else None
            problem = _jpeg_problem(row, length)
            if problem is None:
                try:
                    image = decode_jpeg(row, length)
                except ValueError:
                    problem = "is not a decodable JPEG image"
                else:
                    if shape is None:
                        shape = image.shape
                    elif image.shape != shape:
                        problem = f"decodes to {image.shape[1]}x{image.shape[0]} pixels, the camera's other frames to {shape[1]}x{shape[0]}"
            if problem is not None:
                bad.append(f"frame {t} of camera {camera!r} {problem}")
        reasons += bad[:NAMED_FRAMES]
        if len(bad) > NAMED_FRAMES:
            reasons.append(f"{len(bad) - NAMED_FRAMES} more frames of camera {camera!r} are bad")
    return reasons


def _rows(dataset: h5py.Dataset, indices: list[int]):
    """(t, frame row or the exception reading it) for each index; consecutive indices are read a
    block at a time, and a block that fails is read again frame by frame to name the bad ones."""
    for start in range(0, len(indices), DEEP_BLOCK):
        chunk = indices[start : start + DEEP_BLOCK]
        if len(chunk) > 1 and chunk[-1] - chunk[0] == len(chunk) - 1:
            try:
                block = dataset[chunk[0] : chunk[-1] + 1]
            except READ_ERRORS:
                pass
            else:
                yield from zip(chunk, block)
                continue
        for t in chunk:
            try:
                yield t, dataset[t]
            except READ_ERRORS as error:
                yield t, error


def _jpeg_problem(row: np.ndarray, length: int | None) -> str | None:
    """What is wrong with a JPEG row before decoding it (libjpeg decodes a cut-off image with a
    grey bottom and a warning on stderr, so the end marker is checked here)."""
    if length is None:
        return None
    if not 0 < length <= row.shape[-1]:
        return f"has a recorded length of {length} bytes, but its row holds {row.shape[-1]}"
    if length < 4 or row[0] != 0xFF or row[1] != 0xD8:
        return "does not start like a JPEG image"
    if row[length - 2] != 0xFF or row[length - 1] != 0xD9:
        return "is cut off (the JPEG end marker is missing)"
    return None


def _read(root: h5py.File, path: str, reasons: list[str]) -> np.ndarray | None:
    try:
        return root[path][()]
    except READ_ERRORS as error:
        reasons.append(f"{path} cannot be read: {describe(error)}")
        return None


def _extras_problems(root: h5py.File, structure: Structure) -> tuple[list[str], list[str]]:
    """Our extras: metadata, timestamps, control sources and tick indices."""
    reasons: list[str] = []
    warnings: list[str] = []
    n = structure.length
    attrs = root_attributes(root)
    if structure.schema_version is not None and structure.schema_version > schema.SCHEMA_VERSION:
        warnings.append(
            f"written with episode format {structure.schema_version}; this studio knows up to "
            f"{schema.SCHEMA_VERSION}: update the studio"
        )
    label = attr_text(attribute(attrs, schema.ATTR_LABEL, Label.UNKNOWN.value))
    if label not in {item.value for item in Label}:
        reasons.append(f"success label {label!r} is not one of unknown/success/failure")
    if not bool(attribute(attrs, schema.ATTR_FINISHED, False)) and not bool(attribute(attrs, schema.ATTR_RECOVERED, False)):
        reasons.append("the recording was not closed properly (neither finished nor recovered)")
    if bool(attribute(attrs, schema.ATTR_RECOVERED, False)):
        warnings.append("recovered after a crash: the last second may be missing")
    dropped = int(np.asarray(attribute(attrs, schema.ATTR_FRAMES_DROPPED, 0)).reshape(-1)[0])
    if dropped:
        warnings.append(f"{dropped} control ticks were dropped while recording (gaps in /tick_index)")
    for camera in structure.camera_names:  # read whole: a damaged chunk fails its checksum here
        _read(root, schema.image_time_path(camera), reasons)
    stamps = _read(root, schema.TIMESTAMP, reasons)
    sim_times = _read(root, schema.SIM_TIME, reasons) if schema.SIM_TIME in root else None
    if stamps is not None:
        if sim_times is not None and n and np.all(np.isfinite(sim_times)):
            # A simulation keeps exact time in /sim_time whatever the host's pace; judge its rate there.
            stamps_for_rate = sim_times
        else:
            stamps_for_rate = stamps
        if n and not np.all(np.isfinite(stamps)):
            reasons.append(f"{schema.TIMESTAMP} has {int(np.count_nonzero(~np.isfinite(stamps)))} missing values")
        elif n > 1:
            steps_s = np.diff(stamps)
            if np.any(steps_s < 0):
                reasons.append(f"{schema.TIMESTAMP} goes backwards at {int(np.count_nonzero(steps_s < 0))} steps")
            elif stamps_for_rate[-1] > stamps_for_rate[0]:
                rate = (n - 1) / (stamps_for_rate[-1] - stamps_for_rate[0])
                expected = float(np.asarray(attribute(attrs, schema.ATTR_CONTROL_RATE_HZ, 50.0)).reshape(-1)[0])
                if rate < MIN_RATE_FRACTION * expected:
                    warnings.append(
                        f"mean rate {rate:.1f} Hz is below {MIN_RATE_FRACTION * expected:.0f} Hz "
                        f"(ALOHA re-records such episodes)"
                    )
    sources = _read(root, schema.CONTROL_SOURCE, reasons)
    if sources is not None:
        unknown = {bytes(value) for value in np.unique(sources)} - _CONTROL_SOURCES
        if unknown:
            reasons.append(
                f"{schema.CONTROL_SOURCE} holds unknown values {sorted(v.decode('ascii', 'replace') for v in unknown)}"
            )
    if schema.LOOP_MODE in root:
        modes = _read(root, schema.LOOP_MODE, reasons)
        _read(root, schema.SAFETY_CLIPPED, reasons)
        _read(root, schema.LOOP_EVENTS, reasons)
        if modes is not None:
            unknown = sorted(set(np.unique(modes).tolist()) - set(schema.LOOP_MODE_CODES.values()))
            if unknown:
                warnings.append(f"{schema.LOOP_MODE} holds mode codes {unknown} this studio does not know (shown as unknown)")
    ticks = _read(root, schema.TICK_INDEX, reasons)
    if ticks is not None and n > 1:
        gaps = np.diff(ticks)
        if np.any(gaps <= 0):
            reasons.append(f"{schema.TICK_INDEX} does not increase at {int(np.count_nonzero(gaps <= 0))} steps")
        elif np.any(gaps > 1):
            warnings.append(f"{int(np.sum(gaps - 1))} control ticks are missing between recorded steps")
    return reasons, warnings


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one file. ok: usable episode; reasons: why not; warnings: worth knowing."""

    path: Path
    ok: bool
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    length: int | None = None
    unfinished: bool = False  # a leftover recording: `recover` may turn it into an episode

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "length": self.length,
            "unfinished": self.unfinished,
        }


def check_episode(path: str | Path, spot_checks: int = 3, deep: bool = False) -> CheckResult:
    """Check one file; never raises for a bad file (the reasons say what is wrong).

    spot_checks: frames per camera decoded (first, last, evenly between); deep: read every
    array and decode every frame of every camera instead (seconds per episode, what training
    runs up front so that a bad frame is found before an hour of training, not during it).
    """
    path = Path(path)
    try:
        root = open_readonly(path)
    except UnfinishedEpisode as error:
        return CheckResult(path, False, error.reasons, unfinished=True)
    except EpisodeFormatError as error:
        return CheckResult(path, False, error.reasons)
    length = None
    try:
        with root:
            reasons, structure = structure_problems(root)
            length = structure.length
            warnings: list[str] = []
            if not reasons:
                more, warnings = content_problems(root, structure, spot_checks, deep=deep)
                reasons += more
    except READ_ERRORS as error:  # the structure itself is damaged: a checksum, a cut-off copy
        return CheckResult(path, False, (f"{describe(error)}: {DAMAGED_FIX}",), length=length)
    return CheckResult(path, not reasons, tuple(reasons), tuple(warnings), length)


def _short(text: str, limit: int = 200) -> str:
    return short(text, limit)
