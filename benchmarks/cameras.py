"""Camera benchmarks: prints one JSON line per measurement.

    .venv/bin/python benchmarks/cameras.py [--seconds 5] [--cameras 3]

- read_latest: cost of the control thread's call (3 emulated RealSense 640x480@30 streaming);
- pacing: lateness of a 50 Hz deadline loop reading every camera each tick, with and without
  cameras streaming (GIL contention from the reader threads);
- reader_cpu: CPU per reader thread (and per emulated producer thread) at 640x480@30, colour and
  colour+depth (aligned); per-thread CPU from /proc/self/task/<tid>/stat;
- latency: capture -> available in read_latest() through software device + syncer + reader;
- opencv_file: reader CPU decoding a 640x480 MJPG file paced at 30 fps;
- failure_detection: with default settings, time from unplug to the first CameraStale (250 ms
  limit) and to CameraUnplugged.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from robot.cameras import (  # noqa: E402
    CameraStale,
    CameraUnplugged,
    EmulatedRealSenseConfig,
    OpenCVCameraConfig,
    make_camera,
)

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def emit(**record):
    print(json.dumps(record), flush=True)


def thread_cpu_s(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def pacing(cameras, seconds: float) -> dict:
    period = 0.02
    late = []
    next_t = time.monotonic() + period
    end = next_t + seconds
    while next_t < end:
        time.sleep(max(0.0, next_t - time.monotonic()))
        late.append(time.monotonic() - next_t)
        for camera in cameras:
            try:
                camera.read_latest()
            except CameraStale:
                pass
        next_t += period
    return {"late_p50_ms": 1e3 * percentile(late, 0.5), "late_p99_ms": 1e3 * percentile(late, 0.99),
            "late_max_ms": 1e3 * max(late)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cameras", type=int, default=3)
    args = parser.parse_args()

    emit(bench="pacing", cameras=0, **pacing([], args.seconds))

    for use_depth in (False, True):
        configs = [EmulatedRealSenseConfig(name=f"cam{i}", use_depth=use_depth) for i in range(args.cameras)]
        cameras = [make_camera(c) for c in configs]
        for camera in cameras:
            camera.connect()
        time.sleep(1.0)
        readers = threads_named("camera-")
        producers = threads_named("emulated-realsense-")
        before = {t.native_id: thread_cpu_s(t.native_id) for t in readers + producers}
        frames_before = [c.status().frames_received for c in cameras]
        t0 = time.monotonic()
        result = pacing(cameras, args.seconds)
        wall = time.monotonic() - t0
        after = {t.native_id: thread_cpu_s(t.native_id) for t in readers + producers}
        frames = sum(c.status().frames_received for c in cameras) - sum(frames_before)
        emit(bench="pacing", cameras=args.cameras, use_depth=use_depth, resolution="640x480", fps=30, **result)
        emit(
            bench="reader_cpu",
            use_depth=use_depth,
            reader_cpu_pct_each=100 * statistics.mean(after[t.native_id] - before[t.native_id] for t in readers) / wall,
            emulated_producer_cpu_pct_each=100
            * statistics.mean(after[t.native_id] - before[t.native_id] for t in producers)
            / wall,
            fps_measured_each=[round(c.status().fps_measured, 2) for c in cameras],
            frames=frames,
            frames_dropped=sum(c.status().frames_dropped for c in cameras),
        )
        if not use_depth:
            costs = []
            for _ in range(20000):
                start = time.perf_counter_ns()
                cameras[0].read_latest()
                costs.append(time.perf_counter_ns() - start)
            emit(bench="read_latest", p50_us=percentile(costs, 0.5) / 1e3, p99_us=percentile(costs, 0.99) / 1e3)
            latencies, seen = [], set()
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                frame = cameras[0].read_latest()
                if frame.frame_index not in seen:
                    seen.add(frame.frame_index)
                    latencies.append(time.monotonic() - frame.capture_time_s)
                time.sleep(0.0005)
            emit(bench="latency", what="capture -> seen by a 2 kHz poller", frames=len(latencies),
                 p50_ms=1e3 * percentile(latencies, 0.5), p99_ms=1e3 * percentile(latencies, 0.99))
        for camera in cameras:
            camera.disconnect()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        for i in range(300):
            writer.write(np.roll(base, 4 * i, axis=1))
        writer.release()
        with make_camera(OpenCVCameraConfig(name="cam_file", source=str(path), loop=True)) as camera:
            time.sleep(0.5)
            reader = threads_named("camera-cam_file")[0]
            c0, t0 = thread_cpu_s(reader.native_id), time.monotonic()
            time.sleep(args.seconds)
            cpu = thread_cpu_s(reader.native_id) - c0
            emit(bench="opencv_file", resolution="640x480", codec="MJPG", reader_cpu_pct=100 * cpu / (time.monotonic() - t0),
                 fps_measured=round(camera.status().fps_measured, 2))

    camera = make_camera(EmulatedRealSenseConfig(name="cam_unplug"))
    camera.connect()
    time.sleep(0.5)
    unplugged_at = time.monotonic()
    camera.unplug()
    first_stale = None
    while True:
        try:
            camera.read_latest()
        except CameraStale:
            first_stale = first_stale or time.monotonic()
        except CameraUnplugged:
            failed = time.monotonic()
            break
        time.sleep(0.005)
    emit(bench="failure_detection", settings="defaults", stale_after_ms=1e3 * (first_stale - unplugged_at),
         unplugged_error_after_s=failed - unplugged_at, reconnects=camera.status().reconnects)
    camera.disconnect()


if __name__ == "__main__":
    main()
