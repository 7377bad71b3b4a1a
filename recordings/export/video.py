"""Writing MP4 video with PyAV: one stream, constant frame rate, frames given as RGB arrays.

Codecs: AV1 (libsvtav1, LeRobot's default) or H.264 (libx264). `pick_codec` takes the first of
those this PyAV build can encode. Frame i gets pts i in a 1/fps time base, so frame i is shown at
i / fps s exactly: LeRobot finds a frame by that timestamp.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from recordings.errors import RecordingError

# SVT-AV1 prints a banner per stream on stderr; warnings and errors still come through.
os.environ.setdefault("SVT_LOG", "2")

#: Encoder options per codec. g=2 (a key frame every 2 frames) as LeRobot uses, so a reader can
#: seek to any frame cheaply; crf 30 for AV1 is LeRobot's default, 23 is x264's own default.
CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libsvtav1": {"g": "2", "crf": "30", "preset": "12"},
    "libx264": {"g": "2", "crf": "23", "preset": "veryfast"},
}
CODEC_ALIASES = {"av1": "libsvtav1", "h264": "libx264"}


def pick_codec(preferred: str | None = None) -> str:
    """The encoder to use: `preferred` ('av1', 'h264' or an encoder name) or the first of AV1,
    H.264 available. Raises RecordingError naming what to install when none is."""
    wanted = [CODEC_ALIASES.get(preferred, preferred)] if preferred else list(CODEC_OPTIONS)
    for name in wanted:
        if name in av.codecs_available:
            return name
    raise RecordingError(
        f"This PyAV build cannot encode {' or '.join(wanted)}. Install the PyAV wheel from PyPI "
        f"(`pip install av`), which brings both AV1 (SVT-AV1) and H.264 (x264)."
    )


class VideoWriter:
    """An MP4 file being written. `write(rgb)` takes (height, width, 3) uint8 RGB frames of the
    size given at creation (even sizes: yuv420p halves the chroma). Not thread-safe."""

    def __init__(self, path: str | os.PathLike, fps: int, width: int, height: int, codec: str | None = None):
        if width % 2 or height % 2:
            raise ValueError(f"Video frames must have an even width and height for yuv420p, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.codec = pick_codec(codec)
        self.fps = int(fps)
        self.width, self.height = int(width), int(height)
        self.frames = 0
        try:
            self._container = av.open(str(self.path), "w")
        except OSError as error:
            raise RecordingError(f"Cannot create {self.path}: {error}") from error
        self._stream = self._container.add_stream(self.codec, rate=self.fps, options=CODEC_OPTIONS.get(self.codec, {}))
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = Fraction(1, self.fps)

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"Frame {self.frames} of {self.path.name} is {rgb.shape} {rgb.dtype}, expected ({self.height}, {self.width}, 3) uint8")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.fps)
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        try:
            self._mux(self._stream.encode())
        finally:
            container, self._container = self._container, None
            container.close()

    def size_bytes(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except OSError as error:
            raise RecordingError(f"Cannot write {self.path} ({error}). Is the disk full?") from error

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
