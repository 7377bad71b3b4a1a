"""Playing an episode back: a clock that says which step is due, and frames decoded ahead of it.

`PlaybackClock` turns wall time into a step at 0.5x / 1x / 2x of the episode's control rate (no
threads; the caller's timer advances it). `FramePrefetcher` decodes every camera's frame of the
steps just ahead of the cursor on a pool of worker threads (one per core), at the size they are
shown at, so the GUI thread only draws. A frame is shown only once it is decoded, and the view's
cursor is the step of the frames on screen - never a step whose frames are still being decoded -
so the picture and the cursor always agree.

Threads: the workers and the caller share one `Episode`, each read under the prefetcher's read
lock (a reader is not thread-safe; h5py serialises its calls anyway, and a read of one JPEG row
is ~0.05 ms against ~1-2 ms to decode it). `seek`, `frames`, `latest`, `set_size` and `close`
are for one caller thread (the GUI's). cv2.imdecode and cv2.resize release the GIL, so the
workers decode beside the GUI thread and beside each other.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from recordings.errors import EpisodeFormatError
from recordings.reader import Episode

log = logging.getLogger(__name__)

SPEEDS: tuple[float, ...] = (0.5, 1.0, 2.0)


class PlaybackClock:
    """Which step is due. position: a float step in [0, length - 1]; rate_hz: steps per second
    at 1x (the control rate)."""

    def __init__(self, length: int, rate_hz: float, speed: float = 1.0):
        if length < 1:
            raise ValueError("An episode needs at least one step to play")
        self.length = int(length)
        self.rate_hz = float(rate_hz)
        self.speed = float(speed)
        self.position = 0.0
        self.playing = False

    @property
    def step(self) -> int:
        return int(self.position)

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"Playback speed must be positive, got {speed}")
        self.speed = float(speed)

    def play(self) -> None:
        if self.step >= self.length - 1:
            self.position = 0.0  # play at the end starts over
        self.playing = True

    def pause(self) -> None:
        self.playing = False

    def seek(self, step: int) -> int:
        self.position = float(min(max(int(step), 0), self.length - 1))
        return self.step

    def step_by(self, steps: int) -> int:
        self.playing = False
        return self.seek(self.step + steps)

    def advance(self, elapsed_s: float) -> int:
        """Move on by `elapsed_s` of wall time when playing; stops at the last step."""
        if self.playing and elapsed_s > 0:
            self.position = min(self.position + elapsed_s * self.rate_hz * self.speed, float(self.length - 1))
            if self.position >= self.length - 1:
                self.playing = False
        return self.step


@dataclass(frozen=True)
class FrameSet:
    """Every camera's frame at one step: camera -> (h, w, 3) uint8 RGB (the display size when
    the prefetcher has one, else the recorded size)."""

    step: int
    frames: Mapping[str, np.ndarray]
    size: tuple[int, int] | None


class FramePrefetcher:
    """Decodes the frames of steps [cursor, cursor + ahead) on `decode_threads` worker threads.

    size: (width, height) the frames are shown at (None keeps the recorded size); the cache holds
    at most `ahead + behind` steps (a step is ~0.5-1 MB at 480x640 x 3 cameras). Each worker takes
    the nearest step ahead of the cursor that is neither decoded nor taken, so the window fills in
    playback order; a step that leaves the window while it is decoded is dropped. `error` is set
    when a frame cannot be read (a damaged file); the workers then stop and the view says so.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        cameras: tuple[str, ...] | None = None,
        ahead: int = 24,
        behind: int = 8,
        size: tuple[int, int] | None = None,
        decode_threads: int | None = None,
    ):
        self.path = Path(path)
        self._episode = Episode.open(self.path)
        self.length = self._episode.length
        self.cameras = tuple(cameras) if cameras is not None else self._episode.camera_names
        self._widths = {camera: int(self._episode.frame(camera, 0).shape[1]) for camera in self.cameras} if self.length else {}
        self.ahead = max(int(ahead), 1)
        self.behind = max(int(behind), 0)
        self._size = size
        self._cursor = 0
        self._cache: OrderedDict[int, FrameSet] = OrderedDict()
        self._taken: set[int] = set()  # steps a worker is decoding now
        self._held = False  # True while the caller decodes a seek's step: the workers wait
        self._cond = threading.Condition()
        self._read_lock = threading.Lock()  # one reader for all threads
        self._closed = False
        self.error: str | None = None
        self.decoded = 0  # frame sets decoded by the workers so far (for benchmarks)
        workers = decode_threads if decode_threads is not None else len(os.sched_getaffinity(0))
        self._threads = [
            threading.Thread(target=self._run, name=f"frame-decode-{k}-{self.path.name}", daemon=True) for k in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    # ---- caller side ----
    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) the frames are decoded to; None: the recorded size."""
        return self._size

    def seek(self, step: int) -> None:
        """Decode from `step` on (drops what lies outside the new window)."""
        with self._cond:
            self._cursor = min(max(int(step), 0), self.length - 1)
            self._cond.notify_all()

    def set_size(self, size: tuple[int, int] | None) -> None:
        """Change the display size; frames decoded at another size are decoded again."""
        with self._cond:
            if size != self._size:
                self._size = size
                self._cache.clear()
                self._cond.notify_all()

    def frames(self, step: int) -> FrameSet:
        """The frame set of `step` now: from the cache, else decoded on the calling thread (a seek).

        A seek's step is decoded first, with the workers held (they would otherwise start on the
        same step and the ones after it, and on a loaded machine take the CPU the seek waits
        for); then the window moves to `step` and they decode ahead of it. Workers busy with a
        step of the old window finish that one step (~one decode) and drop it. Raises
        EpisodeFormatError for an unreadable frame."""
        step = min(max(int(step), 0), self.length - 1)
        with self._cond:
            found = self._cache.get(step)
            size = self._size
            if found is None:
                self._held = True
            else:
                self._cursor = step
                self._cond.notify_all()
        if found is not None:
            return found
        try:
            frame_set = self._decode(step, size)
        finally:
            with self._cond:
                self._held = False
                self._cursor = step
                self._cond.notify_all()
        with self._cond:
            if size == self._size:
                self._cache[step] = frame_set
        return frame_set

    def latest(self, due: int, after: int) -> FrameSet | None:
        """While playing: move the decode window to `due` and return the newest decoded step in
        (after, due], or None. Asking for exactly the due step would starve when decoding falls
        behind (the due step moves on before it is ready); this shows the newest ready one, so
        playback keeps time and drops frames instead of stalling."""
        with self._cond:
            if self._cursor != due:
                self._cursor = min(max(int(due), 0), self.length - 1)
                self._cond.notify_all()
            ready = [step for step in self._cache if after < step <= due]
            return self._cache[max(ready)] if ready else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)
        with self._read_lock:
            self._episode.close()

    def __enter__(self) -> "FramePrefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- workers ----
    def _in_window(self, step: int) -> bool:
        return self._cursor - self.behind <= step < self._cursor + self.ahead

    def _next_wanted(self) -> int | None:
        """Under the lock: the nearest step ahead of the cursor neither decoded nor taken; evicts
        what lies outside the window."""
        if self._held or self.error is not None:
            return None
        for key in [k for k in self._cache if not self._in_window(k)]:
            del self._cache[key]
        for step in range(self._cursor, min(self._cursor + self.ahead, self.length)):
            if step not in self._cache and step not in self._taken:
                return step
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self.error is not None or self._next_wanted() is not None)
                if self._closed or self.error is not None:
                    return
                step, size = self._next_wanted(), self._size
                self._taken.add(step)
            try:
                frame_set = self._decode(step, size)
            except (EpisodeFormatError, OSError, ValueError) as error:
                with self._cond:
                    self._taken.discard(step)
                    if not self._closed and self.error is None:
                        self.error = f"Cannot play {self.path.name} at step {step}: {error}"
                        log.error("%s", self.error)
                    self._cond.notify_all()
                return
            with self._cond:
                self._taken.discard(step)
                if size == self._size and self._in_window(step):
                    self._cache[step] = frame_set
                    self.decoded += 1
                self._cond.notify_all()

    def _decode(self, step: int, size: tuple[int, int] | None) -> FrameSet:
        """Any thread: read the step's rows (under the read lock) and decode them here."""
        with self._read_lock:
            if self._closed:
                raise OSError("the episode was closed")
            rows = {camera: self._episode.encoded_frame(camera, step) for camera in self.cameras}
        return FrameSet(step, {camera: decode_for_display(row, size, self._widths.get(camera)) for camera, row in rows.items()}, size)


#: JPEG decoding straight to 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling) costs a fraction of a
#: full decode; used only when the frame is shown at most that large.
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def decode_for_display(row: np.ndarray, size: tuple[int, int] | None, full_width: int | None = None) -> np.ndarray:
    """A JPEG row (1-D uint8) or a raw (H, W, 3) frame -> (h, w, 3) uint8 RGB at `size` (w, h);
    None keeps the recorded size. full_width: the recorded width, to pick a reduced-size JPEG
    decode (when the frame is shown at most 1/2, 1/4 or 1/8 as wide).

    The resize after a reduced decode shrinks by less than 2x, where bilinear has no aliasing to
    speak of and costs ~1/6 of INTER_AREA at a non-integer scale (0.3 vs 1.6 ms for 640->496)."""
    if row.ndim == 1:
        flag = cv2.IMREAD_COLOR
        if size is not None and full_width:
            flag = next((f for factor, f in _REDUCED if size[0] * factor <= full_width), cv2.IMREAD_COLOR)
        image = cv2.imdecode(row, flag)
        if image is None:
            raise ValueError(f"{row.size} bytes are not a decodable JPEG image")
    else:
        image = row
    if size is not None and (image.shape[1], image.shape[0]) != tuple(size):
        shrink = image.shape[1] > 2 * size[0] or image.shape[0] > 2 * size[1]  # a raw frame shown small
        image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image)
