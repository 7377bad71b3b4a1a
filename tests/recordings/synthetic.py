"""Synthetic tick records (the real `robot.types` vocabulary with generated images) and a writer
process for the crash and disk-full tests.

Run as a script it records at 50 Hz into a store and prints one JSON line per event:
    python synthetic.py STORE --mode crash          record until killed
    python synthetic.py STORE --mode fsize LIMIT    record with RLIMIT_FSIZE=LIMIT bytes until the
                                                    writer reports the write error, then lift the
                                                    limit ("disk freed") and stop()
    python synthetic.py STORE --mode full           record until the disk (a small file system)
                                                    is full, stop() (which cannot save either),
                                                    and exit normally
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from robot.types import STATE_DIM, ControlSource, Mode, Observation, TickRecord, TickTimings  # noqa: E402

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def make_image(rng: np.random.Generator, shape: tuple[int, int], step: int) -> np.ndarray:
    """A smooth moving pattern with a little noise: compresses like a camera image."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = step * 0.3 + rng.uniform(0, 6.28)
    red = 127 + 100 * np.sin(x / 9.0 + phase)
    green = 127 + 100 * np.cos(y / 7.0 - phase)
    blue = 127 + 60 * np.sin((x + y) / 13.0)
    image = np.stack([red, green, blue], axis=-1) + rng.normal(0, 4, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_tick(
    index: int,
    time_s: float,
    rng: np.random.Generator,
    cameras: tuple[str, ...] = CAMERAS,
    shape: tuple[int, int] = (48, 64),
    source: ControlSource = ControlSource.TELEOP,
) -> TickRecord:
    images = {camera: make_image(rng, shape, index) for camera in cameras}
    observation = Observation(
        qpos=rng.standard_normal(STATE_DIM).astype(np.float32),
        qvel=rng.standard_normal(STATE_DIM).astype(np.float32),
        effort=rng.standard_normal(STATE_DIM).astype(np.float32),
        images=images,
        image_times_s={camera: time_s - 0.005 * (k + 1) for k, camera in enumerate(cameras)},
        time_s=time_s,
    )
    return TickRecord(
        index=index,
        observation=observation,
        action=rng.standard_normal(STATE_DIM).astype(np.float32),
        source=source,
        mode=Mode.TELEOP,
        timings=TickTimings(0.02, 0.0, 0.001, 0.001, 0.0, 0.001, 0.003),
    )


def _emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def main(argv: list[str]) -> int:
    from recordings.errors import RecordingError
    from recordings.writer import EpisodeWriter
    from recordings.writer_status import WriterState

    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--mode", choices=("crash", "fsize", "full"), required=True)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--format", default="jpeg")
    args = parser.parse_args(argv)

    if args.mode == "fsize":
        import resource
        import signal

        # Writes past the limit then fail with EFBIG instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.limit, hard))

    rng = np.random.default_rng(1)
    shape = (48, 64) if args.format == "jpeg" else (120, 160)
    writer = EpisodeWriter(args.store, CAMERAS, image_format=args.format, flush_interval_s=0.5)
    path = writer.start()
    _emit(event="started", path=str(path))
    period_s = 0.02
    next_s = time.monotonic()
    index = 0
    worst_on_tick_s = 0.0
    while True:
        now = time.monotonic()
        record = make_tick(index, now, rng, shape=shape)
        begin = time.perf_counter()
        writer.on_tick(record)
        worst_on_tick_s = max(worst_on_tick_s, time.perf_counter() - begin)
        _emit(event="tick", index=index, time_s=now)
        index += 1
        status = writer.status()
        if args.mode == "full" and status.state is WriterState.ERROR:
            _emit(event="error", error_type=type(status.last_error).__name__, message=str(status.last_error),
                  frames_written=status.frames_written, partial=str(status.partial_path))
            try:
                writer.stop("failure", notes="disk filled up")
            except RecordingError as error:  # still full: nothing can be saved now
                _emit(event="stop_failed", message=str(error))
            return 0
        if args.mode == "fsize" and status.state is WriterState.ERROR:
            import resource

            _emit(
                event="error",
                error_type=type(status.last_error).__name__,
                message=str(status.last_error),
                frames_written=status.frames_written,
                worst_on_tick_s=worst_on_tick_s,
                partial=str(status.partial_path),
            )
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the disk got freed
            saved = writer.stop("failure", notes="disk filled up")
            _emit(event="saved", path=str(saved), frames=writer.status().frames_written)
            return 0
        if index > 50 * 60:
            return 3  # never reached in the tests: a safety net against a runaway process
        next_s += period_s
        time.sleep(max(0.0, next_s - time.monotonic()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
