"""Timing QA: did the control loop and the cameras keep time while an episode was recorded?

From what every episode of ours records (`/timestamp`, `/tick_index`, `/sim_time` and each
camera's capture times) this measures:

    achieved control rate     (steps - 1) / time covered, in Hz
    period jitter p99         99th percentile of |period - 1/rate|, in ms
    late ticks                periods longer than 1/rate + `late_tick_ms`
    lost ticks                gaps in /tick_index (ticks the recorder never got)
    longest gap               the longest period, in s (a stall)
    per camera                repeated frames (same capture time as the step before), dropped
                              frames (a gap between two new frames longer than 1.5 of the camera's
                              own median frame interval counts the frames that should have been
                              there), the longest freeze (s without a new frame) and the
                              observation age (step time - capture time) p99 and max, in ms

`TimingMetrics` holds those numbers (the store index caches them); `judge(metrics, thresholds)`
turns them into a verdict - ok / warn / bad, or unknown for files without timestamps (ALOHA/ACT)
- with the reasons. Thresholds come from `qa.toml` in the store (see `QaThresholds`); the default
is ALOHA's rule (re-record below 42 Hz of a 50 Hz loop) plus limits on the rest.

A simulation keeps exact time in /sim_time whatever the host's pace, so its timing is judged there
(as `recordings.check` does): camera capture times (host times) are carried over to the sim clock
by interpolating between the steps' host and sim times, so a camera's age and gaps read in sim
seconds too.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from recordings.errors import RecordingError
from recordings.reader import Episode

#: The lab's thresholds live in this file of the store (optional; defaults otherwise).
THRESHOLDS_FILE = "qa.toml"
#: A gap between two new camera frames this many times the camera's median interval means frames
#: were dropped (1.5: a jittery 30 fps camera never trips it, one lost frame always does).
DROP_GAP_FACTOR = 1.5


class QaSettingsError(RecordingError, ValueError):
    """The store's qa.toml cannot be used; the message names the file, the key and the fix."""


class Verdict(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    BAD = "bad"
    UNKNOWN = "unknown"  # nothing to judge by: an ALOHA/ACT file has no timestamps

    @property
    def rank(self) -> int:
        return {Verdict.UNKNOWN: 0, Verdict.OK: 1, Verdict.WARN: 2, Verdict.BAD: 3}[self]


@dataclass(frozen=True)
class QaThresholds:
    """Limits for `judge`, from the `[timing]` table of the store's qa.toml. A value past a
    `*_warn*` limit makes the episode `warn`, past a `*_bad*` limit `bad`.

    rate fractions are of the episode's own control rate (ALOHA: 42 of 50 Hz = 0.84);
    times in ms or s as named; fractions of the episode's steps.
    """

    rate_bad_fraction: float = 42.0 / 50.0  # ALOHA re-records below 42 Hz of a 50 Hz loop
    rate_warn_fraction: float = 0.96  # 48 Hz of 50: the loop is struggling
    jitter_p99_warn_ms: float = 5.0
    jitter_p99_bad_ms: float = 15.0
    late_tick_ms: float = 10.0  # half a 50 Hz period past the deadline
    late_ticks_warn_fraction: float = 0.01
    late_ticks_bad_fraction: float = 0.05
    lost_ticks_bad: int = 1  # any tick the recorder lost leaves a hole in the data
    stall_bad_s: float = 0.25  # a gap this long: the arm moved on while nothing was recorded
    dropped_frames_warn_fraction: float = 0.01
    dropped_frames_bad_fraction: float = 0.05
    repeated_frames_warn_fraction: float = 0.6  # a 30 fps camera on a 50 Hz loop repeats 40 %
    camera_freeze_bad_s: float = 0.5
    obs_age_p99_warn_ms: float = 50.0
    obs_age_p99_bad_ms: float = 100.0

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"QA threshold {item.name} must be a number >= 0, got {value!r}")
        pairs = [("rate_bad_fraction", "rate_warn_fraction")]
        for bad, warn in pairs:
            if getattr(self, bad) > getattr(self, warn):
                raise ValueError(f"QA threshold {bad} ({getattr(self, bad)}) must not exceed {warn} ({getattr(self, warn)})")

    @classmethod
    def from_toml(cls, text: str, source: str = THRESHOLDS_FILE) -> "QaThresholds":
        """Parse a qa.toml; raises ValueError naming the file, the key and the fix."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise QaSettingsError(f"{source} is not valid TOML ({error}); fix it or delete it to use the defaults") from None
        table = data.get("timing", {})
        if not isinstance(table, dict):
            raise QaSettingsError(f"{source}: [timing] must be a table of thresholds")
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise QaSettingsError(f"{source}: unknown threshold(s) {unknown} in [timing]; known: {sorted(known)}")
        try:
            return cls(**table)
        except ValueError as error:
            raise QaSettingsError(f"{source}: {error}") from None

    def to_toml(self) -> str:
        lines = [
            "# Timing QA thresholds of this episode store (run.py episodes check, the Episodes view).",
            "# Past a *_warn* limit an episode is 'warn', past a *_bad* limit 'bad'. Delete a line for its default.",
            "[timing]",
        ]
        lines += [f"{item.name} = {getattr(self, item.name)!r}" for item in dataclasses.fields(self)]
        return "\n".join(lines) + "\n"


def load_thresholds(store_dir: str | os.PathLike) -> QaThresholds:
    """The store's thresholds (qa.toml), or the defaults when it has none.
    Raises ValueError when the file exists but is wrong (the message says how)."""
    path = Path(store_dir) / THRESHOLDS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return QaThresholds()
    return QaThresholds.from_toml(text, str(path))


@dataclass(frozen=True)
class CameraTiming:
    """One camera's timing over an episode. Counts are steps; times as named."""

    name: str
    repeated: int = 0
    dropped: int = 0
    missing: int = 0  # steps without a capture time (the camera sent nothing)
    longest_freeze_s: float = 0.0
    age_p99_ms: float = float("nan")
    age_max_ms: float = float("nan")


@dataclass(frozen=True)
class TimingMetrics:
    """What `measure_timing` found; `steps` == 0 with `has_timestamps` False for ALOHA files."""

    steps: int
    has_timestamps: bool
    nominal_rate_hz: float
    rate_hz: float = float("nan")
    jitter_p99_ms: float = float("nan")
    late_ticks: int = 0
    lost_ticks: int = 0
    longest_gap_s: float = float("nan")
    cameras: tuple[CameraTiming, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cameras"] = [dataclasses.asdict(c) for c in self.cameras]
        return {key: _json_number(value) for key, value in data.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TimingMetrics":
        cameras = tuple(CameraTiming(**{k: _from_json_number(v) for k, v in c.items()}) for c in data.get("cameras", ()))
        values = {k: _from_json_number(v) for k, v in data.items() if k != "cameras"}
        return cls(**values, cameras=cameras)


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    if isinstance(value, list):
        return [{k: _json_number(v) for k, v in item.items()} if isinstance(item, dict) else item for item in value]
    return value


def _from_json_number(value: Any) -> Any:
    return float("nan") if value is None else value


@dataclass(frozen=True)
class StepFlags:
    """Per-step findings for a timeline: (T,) bool arrays.

    late: the period ending at this step was late; lost_before: ticks were lost just before this
    step; camera_faults: camera -> steps whose frame was dropped-before, missing or frozen past
    `camera_freeze_bad_s`.
    """

    late: np.ndarray
    lost_before: np.ndarray
    camera_faults: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class QaResult:
    verdict: Verdict
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "reasons": list(self.reasons)}


def measure_timing(
    times_s: np.ndarray | None,
    nominal_rate_hz: float,
    tick_index: np.ndarray | None = None,
    image_times_s: Mapping[str, np.ndarray] | None = None,
    host_times_s: np.ndarray | None = None,
    thresholds: QaThresholds | None = None,
) -> tuple[TimingMetrics, StepFlags]:
    """Measure the timing of one episode.

    times_s: (T,) seconds of each step on the clock the loop's timing is judged on (sim time
    for a simulation, else host time), None when the file has none. host_times_s: (T,) host
    seconds of each observation (for camera ages; defaults to times_s). image_times_s: camera ->
    (T,) host capture times. thresholds: only `late_tick_ms` and `camera_freeze_bad_s` matter here.
    """
    limits = thresholds or QaThresholds()
    if times_s is None:
        n = 0 if tick_index is None else len(tick_index)
        empty = np.zeros(n, dtype=bool)
        return TimingMetrics(steps=n, has_timestamps=False, nominal_rate_hz=nominal_rate_hz), StepFlags(empty, empty)
    times = np.asarray(times_s, dtype=np.float64)
    n = len(times)
    host = times if host_times_s is None else np.asarray(host_times_s, dtype=np.float64)
    period_s = 1.0 / nominal_rate_hz
    late = np.zeros(n, dtype=bool)
    lost_before = np.zeros(n, dtype=bool)
    rate = jitter = longest = float("nan")
    late_count = lost = 0
    if n > 1 and np.all(np.isfinite(times)):
        periods = np.diff(times)
        span = times[-1] - times[0]
        rate = (n - 1) / span if span > 0 else float("nan")
        jitter = float(np.percentile(np.abs(periods - period_s), 99) * 1e3)
        late[1:] = periods > period_s + limits.late_tick_ms / 1e3
        late_count = int(late.sum())
        longest = float(periods.max())
    if tick_index is not None and n > 1:
        gaps = np.diff(np.asarray(tick_index, dtype=np.int64))
        lost_before[1:] = gaps > 1
        lost = int(np.sum(np.clip(gaps - 1, 0, None)))
    cameras = []
    faults: dict[str, np.ndarray] = {}
    mapped = host is not times and len(host) > 1 and np.all(np.diff(host) > 0) and np.all(np.isfinite(times))
    for name, captured in (image_times_s or {}).items():
        captured = np.asarray(captured, dtype=np.float64)
        if mapped:
            # Capture times are host times; a simulation stepped faster or slower than real time
            # is judged on its own clock, so carry each capture over to the step clock.
            finite = np.isfinite(captured)
            captured = captured.copy()
            captured[finite] = np.interp(captured[finite], host, times)
        camera, fault = _camera_timing(name, captured, times, limits.camera_freeze_bad_s)
        cameras.append(camera)
        faults[name] = fault
    metrics = TimingMetrics(
        steps=n,
        has_timestamps=True,
        nominal_rate_hz=float(nominal_rate_hz),
        rate_hz=float(rate),
        jitter_p99_ms=jitter,
        late_ticks=late_count,
        lost_ticks=lost,
        longest_gap_s=longest,
        cameras=tuple(cameras),
    )
    return metrics, StepFlags(late, lost_before, faults)


def _camera_timing(name: str, captured: np.ndarray, host: np.ndarray, freeze_bad_s: float) -> tuple[CameraTiming, np.ndarray]:
    n = len(captured)
    finite = np.isfinite(captured)
    fault = ~finite
    missing = int(fault.sum())
    if n < 2 or finite.sum() < 2:
        return CameraTiming(name, missing=missing), fault
    repeated_mask = np.zeros(n, dtype=bool)
    repeated_mask[1:] = (np.diff(captured) == 0) & finite[1:] & finite[:-1]
    # Dropped frames: gaps between distinct capture times against the camera's own interval.
    new_steps = np.flatnonzero(finite & ~repeated_mask)
    distinct = captured[new_steps]
    dropped = 0
    if len(distinct) > 2:
        intervals = np.diff(distinct)
        typical = float(np.median(intervals))
        if typical > 0:
            long_gaps = intervals > DROP_GAP_FACTOR * typical
            dropped = int(np.sum(np.maximum(np.round(intervals[long_gaps] / typical) - 1, 1)))
            fault[new_steps[1:][long_gaps]] = True
    # Freeze: the longest time the camera showed the same frame (host time of the steps).
    longest_freeze = 0.0
    if len(new_steps):
        boundaries = np.append(new_steps, n)
        for start, end in zip(boundaries[:-1], boundaries[1:]):
            held_s = float(host[end - 1] - host[start]) if end - 1 > start else 0.0
            if held_s > longest_freeze:
                longest_freeze = held_s
            if held_s > freeze_bad_s:
                fault[start:end] = True
    ages = (host - captured)[finite] * 1e3
    return (
        CameraTiming(
            name,
            repeated=int(repeated_mask.sum()),
            dropped=dropped,
            missing=missing,
            longest_freeze_s=longest_freeze,
            age_p99_ms=float(np.percentile(ages, 99)) if ages.size else float("nan"),
            age_max_ms=float(ages.max()) if ages.size else float("nan"),
        ),
        fault,
    )


def judge(metrics: TimingMetrics, thresholds: QaThresholds | None = None) -> QaResult:
    """The verdict on measured timing, worst finding first in the reasons."""
    limits = thresholds or QaThresholds()
    if not metrics.has_timestamps:
        return QaResult(Verdict.UNKNOWN, ("no timestamps in this file (an ALOHA/ACT recording): timing unknown",))
    findings: list[tuple[Verdict, str]] = []
    n = max(metrics.steps, 1)
    nominal = metrics.nominal_rate_hz

    def check(value: float, warn: float | None, bad: float | None, text: str) -> None:
        if not math.isfinite(value):
            return
        if bad is not None and value > bad:
            findings.append((Verdict.BAD, text))
        elif warn is not None and value > warn:
            findings.append((Verdict.WARN, text))

    if math.isfinite(metrics.rate_hz):
        if metrics.rate_hz < limits.rate_bad_fraction * nominal:
            findings.append((Verdict.BAD, f"control rate {metrics.rate_hz:.1f} Hz is below {limits.rate_bad_fraction * nominal:.0f} Hz (ALOHA re-records such episodes)"))
        elif metrics.rate_hz < limits.rate_warn_fraction * nominal:
            findings.append((Verdict.WARN, f"control rate {metrics.rate_hz:.1f} Hz is below {limits.rate_warn_fraction * nominal:.0f} Hz"))
    elif metrics.steps > 1:
        findings.append((Verdict.BAD, "the step times are missing or do not advance"))
    check(metrics.jitter_p99_ms, limits.jitter_p99_warn_ms, limits.jitter_p99_bad_ms, f"period jitter p99 {metrics.jitter_p99_ms:.1f} ms")
    check(metrics.late_ticks / n, limits.late_ticks_warn_fraction, limits.late_ticks_bad_fraction,
          f"{metrics.late_ticks} late ticks ({100 * metrics.late_ticks / n:.1f} %)")
    if metrics.lost_ticks >= max(limits.lost_ticks_bad, 1):
        findings.append((Verdict.BAD, f"{metrics.lost_ticks} control ticks were not recorded (gaps in /tick_index)"))
    check(metrics.longest_gap_s, None, limits.stall_bad_s, f"the loop stalled for {metrics.longest_gap_s:.2f} s")
    for camera in metrics.cameras:
        if camera.missing:
            findings.append((Verdict.BAD, f"{camera.name}: {camera.missing} steps without a frame"))
        check(camera.dropped / n, limits.dropped_frames_warn_fraction, limits.dropped_frames_bad_fraction,
              f"{camera.name}: {camera.dropped} frames dropped")
        check(camera.repeated / n, limits.repeated_frames_warn_fraction, None,
              f"{camera.name}: {camera.repeated} repeated frames ({100 * camera.repeated / n:.0f} %)")
        check(camera.longest_freeze_s, None, limits.camera_freeze_bad_s, f"{camera.name}: froze for {camera.longest_freeze_s:.2f} s")
        check(camera.age_p99_ms, limits.obs_age_p99_warn_ms, limits.obs_age_p99_bad_ms,
              f"{camera.name}: frames {camera.age_p99_ms:.0f} ms old (p99) when observed")
    if not findings:
        return QaResult(Verdict.OK, ())
    findings.sort(key=lambda item: -item[0].rank)
    return QaResult(findings[0][0], tuple(text for _, text in findings))


def episode_timing(episode: Episode, thresholds: QaThresholds | None = None) -> tuple[TimingMetrics, StepFlags]:
    """Measure an opened episode (reads its small per-step arrays, no frames)."""
    rate = episode.metadata.control_rate_hz
    stamps = episode.timestamps
    if stamps is None:
        return measure_timing(None, rate, tick_index=np.zeros(episode.length), thresholds=thresholds)
    sim = episode.sim_times
    images = {camera: episode.image_times(camera) for camera in episode.camera_names}
    return measure_timing(
        sim if sim is not None else stamps,
        rate,
        tick_index=episode.tick_indices,
        image_times_s={k: v for k, v in images.items() if v is not None},
        host_times_s=stamps,
        thresholds=thresholds,
    )


def check_timing(path: str | os.PathLike, thresholds: QaThresholds | None = None) -> tuple[TimingMetrics, QaResult]:
    """Open, measure and judge one episode file. Raises EpisodeFormatError for a bad file."""
    with Episode.open(path) as episode:
        metrics, _ = episode_timing(episode, thresholds)
    return metrics, judge(metrics, thresholds)
