"""What the control loop knew at each recorded step: its mode, the joints its safety filter
clipped, and its events. The conversions between `robot.types` (Mode, TickRecord.clipped,
LoopEvent) and the episode's /loop_mode, /safety_clipped and /loop_events (`recordings.schema`).

Writing: `mode_code` and `clipped_mask` run on the control thread for every tick (inside
`recordings.writer.tick_step`: a dict lookup and a 14-bool array); `event_row` runs on the writer
thread. Reading: `read_loop_events` turns the table back into `RecordedEvent`s.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from recordings import schema
from robot.types import JOINT_NAMES, STATE_DIM, LoopEvent, Mode, Severity

#: The HDF5 type of /loop_mode: an enum over uint8, so HDF5's own tools print the mode names.
LOOP_MODE_DTYPE = h5py.enum_dtype(dict(schema.LOOP_MODE_CODES), basetype=schema.LOOP_MODE_BASE_DTYPE)
_JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}
_MODES_BY_CODE = {code: Mode(value) for value, code in schema.LOOP_MODE_CODES.items()}


def mode_code(mode: Mode | str) -> int:
    """The /loop_mode code of a mode (ValueError for a value that is not a mode)."""
    return schema.LOOP_MODE_CODES[Mode(mode).value]


def mode_of(code: int) -> Mode | None:
    """The mode of a stored code; None for a code this studio does not know (a newer writer's)."""
    return _MODES_BY_CODE.get(int(code))


def clipped_mask(joints: tuple[str, ...] | list[str]) -> np.ndarray:
    """(14,) bool, True at the columns of the named joints. Unknown names are a bug of the
    sender: ValueError, which the writer turns into a bad tick."""
    mask = np.zeros(STATE_DIM, dtype=schema.CLIPPED_DTYPE)
    for name in joints:
        index = _JOINT_INDEX.get(name)
        if index is None:
            raise ValueError(f"the safety filter clipped an unknown joint {name!r}; joints are {list(JOINT_NAMES)}")
        mask[index] = True
    return mask


def clipped_joints(mask: np.ndarray) -> tuple[str, ...]:
    """Joint names of the True columns of a (14,) mask."""
    return tuple(JOINT_NAMES[i] for i in np.flatnonzero(mask))


def _text(value: str, size: int) -> bytes:
    """UTF-8 of `value` cut to `size` bytes at a character boundary (a cut character would read
    back as garbage)."""
    encoded = value.encode("utf-8")
    if len(encoded) <= size:
        return encoded
    return encoded[:size].decode("utf-8", "ignore").encode("utf-8")


def event_row(event: LoopEvent) -> tuple:
    """One row of /loop_events (a tuple in `schema.LOOP_EVENT_DTYPE`'s field order)."""
    severity = event.severity.value if isinstance(event.severity, Severity) else str(event.severity)
    return (
        int(event.tick),
        float(event.time_s),
        _text(severity, schema.LOOP_EVENT_DTYPE["severity"].itemsize),
        _text(event.code, schema.LOOP_EVENT_DTYPE["code"].itemsize),
        _text(event.message, schema.EVENT_MESSAGE_BYTES),
        _text(event.what_to_do, schema.EVENT_WHAT_TO_DO_BYTES),
    )


def event_rows(events: list[LoopEvent]) -> np.ndarray:
    """(N,) array of `schema.LOOP_EVENT_DTYPE`."""
    return np.array([event_row(event) for event in events], dtype=schema.LOOP_EVENT_DTYPE)


@dataclass(frozen=True)
class RecordedEvent:
    """A loop event as the episode keeps it. tick: the control tick (see /tick_index); step: the
    episode step it belongs to (the first step at or after its tick; the last step for an event
    after the last one); severity: None when the file holds a value this studio does not know."""

    tick: int
    step: int
    time_s: float
    severity: Severity | None
    code: str
    message: str
    what_to_do: str


def read_loop_events(table: np.ndarray, tick_indices: np.ndarray | None, length: int) -> tuple[RecordedEvent, ...]:
    """The events of a /loop_events table, each placed on its step by `tick_indices` (T,)."""
    events = []
    ticks = np.asarray(table["tick"], dtype=np.int64) if len(table) else np.zeros(0, dtype=np.int64)
    if tick_indices is not None and len(tick_indices):
        steps = np.searchsorted(np.asarray(tick_indices), ticks, side="left")
    else:
        steps = np.zeros(len(ticks), dtype=np.int64)
    last = max(length - 1, 0)
    known = {severity.value: severity for severity in Severity}
    for row, tick, step in zip(table, ticks, steps):
        events.append(
            RecordedEvent(
                tick=int(tick),
                step=int(min(step, last)),
                time_s=float(row["time_s"]),
                severity=known.get(schema.attr_text(row["severity"])),
                code=schema.attr_text(row["code"]),
                message=schema.attr_text(row["message"]),
                what_to_do=schema.attr_text(row["what_to_do"]),
            )
        )
    return tuple(events)
