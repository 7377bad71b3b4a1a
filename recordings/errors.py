"""Typed recording errors. Each message says what happened and what the user can do about it;
the GUI shows `str(error)` as it is."""

from __future__ import annotations

from pathlib import Path


class RecordingError(RuntimeError):
    """Something about recording or reading episodes needs the user's attention."""


class RecordingWriteError(RecordingError):
    """The episode file could not be written (disk full, file system gone, permissions).

    The recording has stopped; `frames_kept` frames are safe in `partial_path` and become an
    episode through `stop()` (which recovers them) or `python run.py episodes recover`.
    """

    def __init__(self, partial_path: Path, frames_kept: int, reason: str):
        self.partial_path = Path(partial_path)
        self.frames_kept = frames_kept
        self.reason = reason
        hint = ""
        lowered = reason.lower()
        if any(sign in lowered for sign in ("no space", "file too large", "errno 28", "errno 27", "quota")):
            hint = "The disk (or this file's size limit) is full: free some space first. "
        if frames_kept:
            kept = (
                f"The {frames_kept} frames written before the error are kept. {hint}"
                f"Then run `python run.py episodes recover` (or stop the recording in the studio) "
                f"to turn them into an episode."
            )
        else:
            kept = f"Nothing had been written yet, so nothing was lost but this take. {hint}Then record again."
        super().__init__(f"Recording stopped: could not write {self.partial_path.name} ({reason}). {kept}")

    def __reduce__(self):  # the writer process sends its errors to the studio pickled
        return (type(self), (self.partial_path, self.frames_kept, self.reason))


class FramesDropped(RecordingError):
    """The writer's queue was full, so ticks were not recorded (the control loop never waits)."""

    def __init__(self, count: int, queue_capacity: int):
        self.count = count
        self.queue_capacity = queue_capacity
        super().__init__(
            f"{count} control ticks were NOT recorded: the recorder fell more than {queue_capacity} "
            f"ticks behind (slow disk or CPU busy). The episode has gaps (see /tick_index); "
            f"consider discarding it. Close other programs, record raw images to a faster disk, "
            f"or lower the JPEG quality."
        )

    def __reduce__(self):
        return (type(self), (self.count, self.queue_capacity))


class InvalidTick(RecordingError):
    """A tick record could not be recorded (missing camera, wrong image shape or dtype)."""

    def __init__(self, tick_index: int, problem: str):
        self.tick_index = tick_index
        self.problem = problem
        super().__init__(
            f"Recording stopped at tick {tick_index}: {problem}. The frames before it are kept. "
            f"Check the rig's camera settings (names and resolution must not change during an episode)."
        )

    def __reduce__(self):
        return (type(self), (self.tick_index, self.problem))


class EpisodeFormatError(RecordingError):
    """A file is not a readable episode; `reasons` lists what is wrong with it."""

    def __init__(self, path: Path, reasons: list[str] | tuple[str, ...]):
        self.path = Path(path)
        self.reasons = tuple(reasons)
        super().__init__(f"{self.path.name} is not a valid episode: " + "; ".join(self.reasons))

    def __reduce__(self):
        return (_rebuild, (type(self), self.__dict__.copy(), self.args))


class UnfinishedEpisode(EpisodeFormatError):
    """The file is a recording that is still being written or was cut off by a crash."""

    def __init__(self, path: Path, in_progress: bool = False):
        self.in_progress = in_progress
        if in_progress:
            reason = "it is being recorded right now; wait until the recording stops"
        else:
            reason = (
                "it is an unfinished recording (the studio was stopped while recording); "
                "run `python run.py episodes recover` to turn it into an episode"
            )
        super().__init__(path, [reason])


class LeftOpenForWrite(UnfinishedEpisode):
    """A finished episode that a killed process left marked open for writing: HDF5 refuses to
    open it until the mark is cleared (`episodes recover FILE`); its data is most likely intact."""

    def __init__(self, path: Path):
        EpisodeFormatError.__init__(
            self,
            path,
            [
                "HDF5 refuses it: a process was killed while it had the file open for writing, which left "
                f"it marked open; run `python run.py episodes recover {Path(path).name}` to clear the mark"
            ],
        )
        self.in_progress = False


class RecoveryError(RecordingError):
    """A leftover recording could not be turned into an episode; it is kept untouched."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Could not recover {self.path.name}: {reason}. The file is kept as it was.")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def _rebuild(cls: type, state: dict, args: tuple) -> Exception:
    """An error with its attributes as they were, without running its __init__ again (for the
    errors whose __init__ takes other arguments than what it keeps)."""
    error = Exception.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error
