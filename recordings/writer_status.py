"""What the episode writers (`recordings.writer.EpisodeWriter`, `recordings.writer_process.
ProcessEpisodeWriter`) are set with and report: their settings, state and status snapshot."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from recordings.errors import RecordingError
from recordings.schema import ImageFormat


@dataclass(frozen=True)
class WriterConfig:
    """How the writer stores an episode.

    jpeg_quality: 90 by default (ALOHA uses 50), because towel folds are fine texture the policy
    needs; a 640x480 frame is then ~50-150 kB. queue_size: ticks the writer may fall behind
    before it drops them (100 = 2 s at 50 Hz; every queued tick holds its frames in memory).
    flush_interval_s: the most time between two commits to disk; below 1 s so that a crash loses
    at most about a second including the time records spend queued and being encoded.
    """

    image_format: ImageFormat = ImageFormat.JPEG
    jpeg_quality: int = 90
    queue_size: int = 100
    flush_interval_s: float = 0.5

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "image_format", ImageFormat(self.image_format))
        except ValueError:
            raise ValueError(
                f"WriterConfig.image_format must be 'jpeg' or 'raw', got {self.image_format!r}"
            ) from None
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"WriterConfig.jpeg_quality must be an integer 1..100 (90 is good), got {self.jpeg_quality!r}")
        if not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ValueError(f"WriterConfig.queue_size must be a positive number of ticks (100 = 2 s at 50 Hz), got {self.queue_size!r}")
        if not 0 < self.flush_interval_s <= 1.0:
            raise ValueError(
                f"WriterConfig.flush_interval_s must be in (0, 1] s so a crash loses at most a second, "
                f"got {self.flush_interval_s!r}"
            )


class WriterState(str, enum.Enum):
    IDLE = "idle"  # nothing started yet
    RECORDING = "recording"
    FINISHING = "finishing"  # stop requested: draining the queue, closing, renaming
    FINISHED = "finished"  # the episode is saved at `path`
    ERROR = "error"  # stopped by an error; `last_error` says what to do
    DISCARDED = "discarded"


@dataclass(frozen=True)
class WriterStatus:
    """A snapshot for the GUI (any thread).

    frames_written: steps committed to disk (survive a crash); frames_received: ticks taken from
    the control loop; frames_dropped: ticks lost because the queue was full; queue_depth /
    queue_high_water / queue_capacity in ticks; bytes_written: size of the file on disk;
    duration_s: host time covered by the received ticks.
    """

    state: WriterState
    path: Path | None
    partial_path: Path | None
    frames_received: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    queue_depth: int = 0
    queue_high_water: int = 0
    queue_capacity: int = 0
    bytes_written: int = 0
    duration_s: float = 0.0
    last_error: RecordingError | None = None

    @property
    def recording(self) -> bool:
        return self.state is WriterState.RECORDING
