"""What happened when, along an episode: control-source bands and event markers for a timeline.

Derived from what the episode records:

    bands                runs of one control source (/control_source)
    intervention         a human took over from the policy (a run of `intervention` begins)
    hold                 the loop held position (a run of `hold` begins), with why when the file
                         has the loop record: no source, the source ran dry / failed / finished,
                         the safety filter rejected the action, a rig fault, the user chose Hold,
                         the E-stop (/loop_mode, /loop_events)
    E-stop               the loop's mode entered ESTOP (/loop_mode), until it left it; the text is
                         the E-stop event's message
    safety clipping      runs of steps whose action the safety filter limited (/safety_clipped),
                         naming the joints; runs fewer than CLIP_MERGE_STEPS apart are one
    loop event           any other warning or error the loop raised (/loop_events): a rig read
                         failure, a refused request, a subscriber error...
    lost ticks           ticks the recorder never got (gaps in /tick_index)
    stall                a step that came late (period past the QA's late-tick limit)
    camera fault         a camera's frame was missing, dropped or frozen

Files without the loop record (written before it existed, ALOHA's) get bands and the markers
that need no loop record; `Timeline.loop_recorded` is False and the hold markers say the file
does not know why.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from recordings.loop_record import RecordedEvent, clipped_joints
from recordings.qa import QaThresholds, StepFlags, episode_timing
from recordings.reader import Episode
from robot.types import Mode, Severity

#: Clipped runs closer than this (steps; 0.1 s at 50 Hz) are one marker: a teleoperator pushing
#: against a limit clips on and off every few ticks, which is one thing to look at, not twenty.
CLIP_MERGE_STEPS = 5


class MarkerKind(str, enum.Enum):
    INTERVENTION = "intervention"
    HOLD = "hold"
    ESTOP = "E-stop"
    SAFETY_CLIP = "safety clipping"
    LOOP_EVENT = "loop event"
    LOST_TICKS = "lost ticks"
    STALL = "stall"
    CAMERA_FAULT = "camera fault"


@dataclass(frozen=True)
class Band:
    """Steps [start, end) driven by one source ("unknown" for ALOHA files)."""

    start: int
    end: int
    source: str


@dataclass(frozen=True)
class Marker:
    """Something at `step`; a marker that lasts (E-stop, a clipping run) ends before `end`."""

    step: int
    kind: MarkerKind
    text: str
    end: int | None = None


@dataclass(frozen=True)
class Timeline:
    length: int
    bands: tuple[Band, ...]
    markers: tuple[Marker, ...]
    loop_recorded: bool = False  # the file has the loop's modes, clipping and events

    def markers_of(self, kind: MarkerKind) -> tuple[Marker, ...]:
        return tuple(marker for marker in self.markers if marker.kind is kind)

    def markers_at(self, step: int) -> tuple[Marker, ...]:
        """The markers that say something about `step`: those lasting over it, those at it."""
        return tuple(m for m in self.markers if (m.step <= step < m.end if m.end is not None else m.step == step))


@dataclass(frozen=True)
class LoopRecord:
    """What the loop knew, as the reader gives it: modes (T,), clipped (T, 14) bool, events."""

    modes: tuple[Mode | None, ...]
    clipped: np.ndarray
    events: tuple[RecordedEvent, ...]


def source_bands(sources: list[str] | tuple[str, ...]) -> tuple[Band, ...]:
    bands: list[Band] = []
    start = 0
    for t in range(1, len(sources) + 1):
        if t == len(sources) or sources[t] != sources[start]:
            bands.append(Band(start, t, sources[start]))
            start = t
    return tuple(bands)


def _run_starts(mask: np.ndarray) -> np.ndarray:
    """Steps where a run of True begins."""
    if not len(mask):
        return np.zeros(0, dtype=np.int64)
    before = np.concatenate(([False], mask[:-1]))
    return np.flatnonzero(mask & ~before)


def _runs(mask: np.ndarray, merge_gap: int = 0) -> list[tuple[int, int]]:
    """[start, end) of the runs of True, runs at most `merge_gap` False steps apart joined."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    runs = [(int(starts[0]), int(ends[0]))]
    for start, end in zip(starts[1:], ends[1:]):
        if start - runs[-1][1] <= merge_gap:
            runs[-1] = (runs[-1][0], int(end))
        else:
            runs.append((int(start), int(end)))
    return runs


def episode_timeline(episode: Episode, thresholds: QaThresholds | None = None) -> Timeline:
    """Bands and markers of an opened episode (reads its small per-step arrays)."""
    n = episode.length
    sources = episode.control_sources
    if sources is None:
        return Timeline(n, (Band(0, n, "unknown"),) if n else (), ())
    names = [source.value for source in sources]
    _, flags = episode_timing(episode, thresholds)
    modes = episode.loop_modes
    loop = None if modes is None else LoopRecord(modes, episode.safety_clipped, episode.loop_events)
    markers = timeline_markers(names, flags, episode.tick_indices, loop)
    return Timeline(n, source_bands(names), markers, loop_recorded=loop is not None)


def timeline_markers(sources: list[str], flags: StepFlags, tick_index: np.ndarray | None,
                     loop: LoopRecord | None = None) -> tuple[Marker, ...]:
    markers: list[Marker] = []
    values = np.asarray(sources)
    for step, end in _runs(values == "intervention"):
        markers.append(Marker(step, MarkerKind.INTERVENTION, f"intervention from step {step}", end))
    explained: set[int] = set()  # ids of the events a marker already tells
    for step, end in _runs(values == "hold"):
        if loop is None:
            markers.append(Marker(step, MarkerKind.HOLD, f"hold from step {step} (this file does not record why)", end))
            continue
        if loop.modes[step] is Mode.ESTOP:
            continue  # the E-stop marker at this step says it
        reason, event = hold_reason(step, loop)
        if event is not None:
            explained.add(id(event))
        detail = f" ({event.message.rstrip('.')})" if event is not None and event.message else ""
        markers.append(Marker(step, MarkerKind.HOLD, f"hold from step {step}: {reason}{detail}", end))
    if loop is not None:
        markers += _loop_markers(loop, explained)
    for step in np.flatnonzero(flags.lost_before):
        lost = int(tick_index[step] - tick_index[step - 1] - 1) if tick_index is not None else 0
        markers.append(Marker(int(step), MarkerKind.LOST_TICKS, f"{lost} ticks not recorded before step {int(step)}"))
    for step in _run_starts(flags.late):
        markers.append(Marker(int(step), MarkerKind.STALL, f"late tick at step {int(step)}"))
    for camera, fault in flags.camera_faults.items():
        for step in _run_starts(np.asarray(fault, dtype=bool)):
            markers.append(Marker(int(step), MarkerKind.CAMERA_FAULT, f"{camera}: frame missing, dropped or frozen at step {int(step)}"))
    return tuple(sorted(markers, key=lambda marker: marker.step))


#: Event code -> why the loop held, most telling first (a fault emits its own event and then a
#: "mode" event for the change to Hold: the fault is the reason).
HOLD_REASONS: dict[str, str] = {
    "estop": "E-stop",
    "unsafe_action": "safety stop: the safety filter rejected the action",
    "source_fault": "the source stopped",
    "source_error": "the source failed",
    "rig_read": "reading the rig failed",
    "rig_command": "commanding the rig failed",
    "loop_error": "the loop hit an internal error",
    "source_dry": "the source ran dry",
    "source_finished": "the source finished",
    "source_removed": "no source",
    "mode": "Hold chosen",
}


def hold_reason(step: int, loop: LoopRecord) -> tuple[str, RecordedEvent | None]:
    """Why the loop held from `step`, and the event that says so (None when none does).

    The events of the hold's first step tell it (the loop emits them in the tick it holds); a
    source that finished with a last action holds one step later, so the step before counts too.
    """
    if loop.modes[step] is Mode.ESTOP:
        event = next((e for e in loop.events if e.code == "estop" and e.step == step), None)
        return HOLD_REASONS["estop"], event
    nearby = [e for e in loop.events if step - 1 <= e.step <= step and e.code in HOLD_REASONS]
    for code in HOLD_REASONS:
        found = [e for e in nearby if e.code == code and (e.step == step or code == "source_finished")]
        if found:
            return HOLD_REASONS[code], found[0]
    return "why not recorded (no loop event at that step)", None


def _loop_markers(loop: LoopRecord, explained: set[int]) -> list[Marker]:
    markers: list[Marker] = []
    modes = np.array([mode is Mode.ESTOP for mode in loop.modes], dtype=bool)
    for start, end in _runs(modes):
        event = next((e for e in loop.events if e.code == "estop" and e.severity is Severity.ERROR
                      and start - 1 <= e.step <= start), None)
        if event is not None:
            explained.add(id(event))
        why = f" ({event.message.rstrip('.')})" if event is not None else ""
        cleared = f"; cleared at step {end}" if end < len(loop.modes) else "; not cleared before the end"
        markers.append(Marker(start, MarkerKind.ESTOP, f"E-stop at step {start}{why}{cleared}", end))
    clipped = np.asarray(loop.clipped, dtype=bool)
    for start, end in _runs(clipped.any(axis=1), CLIP_MERGE_STEPS):
        joints = ", ".join(clipped_joints(clipped[start:end].any(axis=0)))
        limits = [e for e in loop.events if e.code == "position_limit" and start <= e.step < end]
        for event in limits:
            explained.add(id(event))
        steps = f"step {start}" if end - start == 1 else f"steps {start}-{end - 1}"
        text = f"safety filter limited {joints} ({steps})"
        if limits:
            text += ": " + " ".join(event.message for event in limits)
        markers.append(Marker(start, MarkerKind.SAFETY_CLIP, text, end))
    for event in loop.events:
        if id(event) in explained or event.severity not in (Severity.WARNING, Severity.ERROR) or event.code == "estop":
            continue
        markers.append(Marker(event.step, MarkerKind.LOOP_EVENT, f"step {event.step}, {event.code}: {event.message}"))
    return markers
