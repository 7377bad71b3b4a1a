"""Recorder benchmarks: prints one JSON line per measurement.

    .venv/bin/python benchmarks/recorder.py [--seconds 10] [--cameras 3] [--height 480 --width 640]

What it measures, with 640x480 camera-like frames (smooth texture plus sensor noise):
- on_tick: the control thread's cost of handing a tick to the writer (the only recorder work on
  the control thread);
- pacing: how late a 50 Hz deadline-paced loop thread wakes while the writer records (GIL
  contention from HDF5 and encoding), against the same loop with no recording;
- throughput: ticks per second the writer sustains when fed as fast as possible;
- stop: time from stop() to the renamed file after a recording, file size per second;
- recover: time to recover a leftover of the same length;
- read: Episode.frame() time per frame (what training's data loader pays).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recordings.reader import Episode  # noqa: E402
from recordings.recovery import recover_partial  # noqa: E402
from recordings.writer import EpisodeWriter  # noqa: E402
from robot.types import STATE_DIM, ControlSource, Mode, Observation, TickRecord, TickTimings  # noqa: E402

CAMERA_NAMES = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")


def emit(name: str, **fields) -> None:
    print(json.dumps({"benchmark": name, **fields}), flush=True)


def camera_like_frames(rng: np.random.Generator, count: int, height: int, width: int) -> list[np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for k in range(count):
        phase = k * 0.4
        image = np.stack(
            [
                127 + 90 * np.sin(x / 23.0 + phase) * np.cos(y / 31.0),
                127 + 80 * np.cos((x + y) / 41.0 - phase),
                110 + 70 * np.sin(y / 17.0 + phase / 2),
            ],
            axis=-1,
        )
        image += rng.normal(0, 6, image.shape)  # sensor noise: what makes real JPEGs big
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


class TickFactory:
    def __init__(self, cameras: tuple[str, ...], height: int, width: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.cameras = cameras
        self.pool = {camera: camera_like_frames(rng, 8, height, width) for camera in cameras}
        self.rng = rng

    def tick(self, index: int, time_s: float) -> TickRecord:
        images = {camera: frames[index % len(frames)] for camera, frames in self.pool.items()}
        state = self.rng.standard_normal((4, STATE_DIM)).astype(np.float32)
        observation = Observation(
            qpos=state[0], qvel=state[1], effort=state[2], images=images,
            image_times_s={camera: time_s for camera in self.cameras}, time_s=time_s,
        )
        return TickRecord(
            index=index, observation=observation, action=state[3], source=ControlSource.TELEOP,
            mode=Mode.TELEOP, timings=TickTimings(0.02, 0, 0, 0, 0, 0, 0),
        )


def paced_loop(seconds: float, factory: TickFactory, writer: EpisodeWriter | None, rate_hz: float = 50.0):
    """A 50 Hz deadline-paced loop like the control thread; returns (lateness_s, on_tick_s)."""
    period = 1.0 / rate_hz
    lateness, costs = [], []
    start = time.monotonic()
    deadline = start
    index = 0
    while deadline - start < seconds:
        now = time.monotonic()
        lateness.append(max(0.0, now - deadline))
        record = factory.tick(index, now)
        if writer is not None:
            begin = time.perf_counter()
            writer.on_tick(record)
            costs.append(time.perf_counter() - begin)
        index += 1
        deadline += period
        time.sleep(max(0.0, deadline - time.monotonic()))
    return np.array(lateness), np.array(costs)


def percentiles_us(values: np.ndarray) -> dict:
    if values.size == 0:
        return {}
    return {
        "p50_us": round(float(np.percentile(values, 50)) * 1e6, 1),
        "p99_us": round(float(np.percentile(values, 99)) * 1e6, 1),
        "max_us": round(float(values.max()) * 1e6, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, default=3, choices=range(1, 5))
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--formats", default="jpeg,raw")
    args = parser.parse_args(argv)
    cameras = CAMERA_NAMES[: args.cameras] if args.cameras != 3 else ("cam_high", "cam_left_wrist", "cam_right_wrist")
    factory = TickFactory(cameras, args.height, args.width)
    common = {"cameras": len(cameras), "height": args.height, "width": args.width, "cpus": os.cpu_count()}
    work = Path(tempfile.mkdtemp(prefix="recorder-bench-"))
    try:
        lateness, _ = paced_loop(min(args.seconds, 5.0), factory, None)
        emit("pacing_without_recording", **common, **{f"late_{k}": v for k, v in percentiles_us(lateness).items()})

        for image_format in args.formats.split(","):
            store = work / image_format
            writer = EpisodeWriter(store, cameras, image_format=image_format)
            writer.start()
            lateness, costs = paced_loop(args.seconds, factory, writer)
            status = writer.status()
            begin = time.perf_counter()
            path = writer.stop()
            stop_s = time.perf_counter() - begin
            size = path.stat().st_size
            emit(
                "record_50hz", **common, format=image_format, seconds=args.seconds,
                frames=status.frames_received, dropped=status.frames_dropped,
                queue_high_water=status.queue_high_water, stop_s=round(stop_s, 3),
                mb_per_s=round(size / 1e6 / args.seconds, 2),
                **{f"on_tick_{k}": v for k, v in percentiles_us(costs).items()},
                **{f"late_{k}": v for k, v in percentiles_us(lateness).items()},
            )

            # Throughput: feed as fast as the writer drains a big queue.
            writer = EpisodeWriter(work / f"{image_format}-burst", cameras, image_format=image_format, queue_size=100_000)
            writer.start()
            n = int(50 * min(args.seconds, 4.0))
            begin = time.perf_counter()
            for index in range(n):
                writer.on_tick(factory.tick(index, index * 0.02))
            writer.stop()
            elapsed = time.perf_counter() - begin
            emit("writer_throughput", **common, format=image_format, frames=n, ticks_per_s=round(n / elapsed, 1))

            # Recovery of a leftover as long as the 50 Hz recording.
            leftover = path.with_name(path.name + ".partial")
            shutil.copyfile(path, leftover)
            os.rename(leftover, work / leftover.name)
            begin = time.perf_counter()
            result = recover_partial(work / leftover.name)
            emit("recover", **common, format=image_format, frames=result.frames, seconds=round(time.perf_counter() - begin, 3))

            episode = Episode.open(path)
            rng = np.random.default_rng(0)
            steps = rng.integers(0, episode.length, 200)
            episode.frame(cameras[0], 0)
            begin = time.perf_counter()
            for t in steps:
                episode.frame(cameras[int(t) % len(cameras)], int(t))
            per_frame = (time.perf_counter() - begin) / len(steps)
            emit("read_frame", **common, format=image_format, ms_per_frame=round(per_frame * 1e3, 3))
            episode.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
