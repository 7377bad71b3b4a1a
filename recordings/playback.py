"""Playing an episode back: a clock that says which step is due, and frames decoded ahead of it.

`PlaybackClock` turns wall time into a step at 0.5x / 1x / 2x of the episode's control rate (no
threads; the caller's timer advances it). `FramePrefetcher` decodes every camera's frame of the
steps just ahead of the cursor on its own worker thread, optionally resized to the size they are
shown at, so the GUI thread only draws. A frame is shown only once it is decoded, and the view's
cursor is the step of the frames on screen - never a step whose frames are still being decoded -
so the picture and the cursor always agree.

Threads: the prefetcher's worker owns its `Episode` (readers are not thread-safe) and the decode
pool; `seek`, `frames`, `latest` and `close` are for one caller thread (the GUI's), which has a
reader of its own for the frames of a seek. cv2.imdecode and
cv2.resize release the GIL, so decoding runs beside the GUI thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
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
    """Decodes the frames of steps [cursor, cursor + ahead) on a worker thread.

    size: (width, height) to resize each frame to (None keeps the recorded size); the cache holds
    at most `ahead + behind` steps. `error` is set when a frame cannot be read (a damaged file);
    the worker then stops and the view says so.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        cameras: tuple[str, ...] | None = None,
        ahead: int = 24,
        behind: int = 8,
        size: tuple[int, int] | None = None,
        decode_threads: int = 2,
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
        self._cond = threading.Condition()
        self._closed = False
        self._caller: Episode | None = None  # the calling thread's reader, for seeks
        self.error: str | None = None
        self.decoded = 0  # frame sets decoded so far (for benchmarks)
        self._pool = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="frame-decode")
        self._thread = threading.Thread(target=self._run, name=f"prefetch-{self.path.name}", daemon=True)
        self._thread.start()

    # ---- caller side ----
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
        """The frame set of `step` now: from the cache, else decoded on the calling thread (a seek:
        handing it to the worker and waiting would cost thread wake-ups on a busy machine). Also
        moves the decode window to `step`. Raises EpisodeFormatError for an unreadable frame."""
        with self._cond:
            if self._cursor != step:
                self._cursor = min(max(int(step), 0), self.length - 1)
                self._cond.notify_all()
            found = self._cache.get(step)
            size = self._size
        if found is not None:
            return found
        if self._caller is None:
            self._caller = Episode.open(self.path)  # the worker's reader is the worker's alone
        rows = {camera: self._caller.encoded_frame(camera, step) for camera in self.cameras}
        frame_set = FrameSet(step, {c: _decode_one(row, size, self._widths.get(c)) for c, row in rows.items()}, size)
        with self._cond:
            if size == self._size and step not in self._cache:
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
        self._thread.join(timeout=5.0)
        self._pool.shutdown(wait=True)
        self._episode.close()
        if self._caller is not None:
            self._caller.close()

    def __enter__(self) -> "FramePrefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- worker ----
    def _next_wanted(self) -> tuple[int, tuple[int, int] | None] | None:
        """Under the lock: the nearest step ahead of the cursor not yet decoded; evicts the rest."""
        low, high = self._cursor - self.behind, self._cursor + self.ahead
        for key in [k for k in self._cache if not low <= k < high]:
            del self._cache[key]
        for step in range(self._cursor, min(high, self.length)):
            if step not in self._cache:
                return step, self._size
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._next_wanted() is not None)
                if self._closed:
                    return
                wanted = self._next_wanted()
            if wanted is None:
                continue
            step, size = wanted
            try:
                frame_set = self._decode(step, size)
            except RuntimeError:  # the decode pool was shut down under us (interpreter exit)
                return
            except (EpisodeFormatError, OSError, ValueError) as error:
                with self._cond:
                    self.error = f"Cannot play {self.path.name} at step {step}: {error}"
                    self._cond.notify_all()
                log.error("%s", self.error)
                return
            with self._cond:
                if size == self._size and self._cursor - self.behind <= step < self._cursor + self.ahead:
                    self._cache[step] = frame_set
                    self.decoded += 1
                    self._cond.notify_all()

    def _decode(self, step: int, size: tuple[int, int] | None) -> FrameSet:
        rows = {camera: self._episode.encoded_frame(camera, step) for camera in self.cameras}
        futures = {camera: self._pool.submit(_decode_one, row, size, self._widths.get(camera)) for camera, row in rows.items()}
        return FrameSet(step, {camera: future.result() for camera, future in futures.items()}, size)


#: JPEG decoding straight to 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling) costs a fraction of a
#: full decode; used when the frame is shown at most that large.
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def _decode_one(row: np.ndarray, size: tuple[int, int] | None, full_width: int | None = None) -> np.ndarray:
    """A JPEG row (1-D uint8) or a raw (H, W, 3) frame -> RGB, resized to `size` (w, h).
    full_width: the recorded width, to pick a reduced-size JPEG decode."""
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
        image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)
