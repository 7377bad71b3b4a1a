"""What happened when, along an episode: control-source bands and event markers for a timeline.

Derived from what episodes record today:

    bands                runs of one control source (/control_source)
    intervention         a human took over from the policy (a run of `intervention` begins)
    hold                 the loop held position (a run of `hold` begins: no source, a source ran
                         dry, a rejected action or a safety stop - the file does not say which)
    lost ticks           ticks the recorder never got (gaps in /tick_index)
    stall                a step that came late (period past the QA's late-tick limit)
    camera fault         a camera's frame was missing, dropped before this step, or frozen

Not recorded yet, so not shown: E-stops and the loop's mode per step, safety-filter clipping
(`TickRecord.clipped`), and the loop's own events (`robot.control_loop.LoopEvent`). Recording them
needs new per-step datasets in the writer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from recordings.qa import QaThresholds, StepFlags, episode_timing
from recordings.reader import Episode


class MarkerKind(str, enum.Enum):
    INTERVENTION = "intervention"
    HOLD = "hold"
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
    step: int
    kind: MarkerKind
    text: str


@dataclass(frozen=True)
class Timeline:
    length: int
    bands: tuple[Band, ...]
    markers: tuple[Marker, ...]

    def markers_of(self, kind: MarkerKind) -> tuple[Marker, ...]:
        return tuple(marker for marker in self.markers if marker.kind is kind)


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


def episode_timeline(episode: Episode, thresholds: QaThresholds | None = None) -> Timeline:
    """Bands and markers of an opened episode (reads its small per-step arrays)."""
    n = episode.length
    sources = episode.control_sources
    if sources is None:
        return Timeline(n, (Band(0, n, "unknown"),) if n else (), ())
    names = [source.value for source in sources]
    _, flags = episode_timing(episode, thresholds)
    return Timeline(n, source_bands(names), timeline_markers(names, flags, episode.tick_indices))


def timeline_markers(sources: list[str], flags: StepFlags, tick_index: np.ndarray | None) -> tuple[Marker, ...]:
    markers: list[Marker] = []
    values = np.asarray(sources)
    for kind, source in ((MarkerKind.INTERVENTION, "intervention"), (MarkerKind.HOLD, "hold")):
        for step in _run_starts(values == source):
            markers.append(Marker(int(step), kind, f"{source} from step {int(step)}"))
    for step in np.flatnonzero(flags.lost_before):
        lost = int(tick_index[step] - tick_index[step - 1] - 1) if tick_index is not None else 0
        markers.append(Marker(int(step), MarkerKind.LOST_TICKS, f"{lost} ticks not recorded before step {int(step)}"))
    for step in _run_starts(flags.late):
        markers.append(Marker(int(step), MarkerKind.STALL, f"late tick at step {int(step)}"))
    for camera, fault in flags.camera_faults.items():
        for step in _run_starts(np.asarray(fault, dtype=bool)):
            markers.append(Marker(int(step), MarkerKind.CAMERA_FAULT, f"{camera}: frame missing, dropped or frozen at step {int(step)}"))
    return tuple(sorted(markers, key=lambda marker: marker.step))
