"""What the Training panel's episode scan costs per file: prints one JSON line per repetition.

    .venv/bin/python benchmarks/episode_scan.py [--episodes 20] [--steps 50] [--height 240 --width 320]

Episodes are written by the real writer (JPEG, three cameras, noisy frames like a camera's) into
a temporary store. Measured per episode, in the same run:
- summary_ms: `EpisodeStore.summary` (layout and metadata), the scan's baseline;
- inputs_ms: `model.episode_inputs.read_episode_inputs` (one frame per camera decoded, the widths);
- scan_ms: `EpisodeScanner.scan` from cold (both), and its ratio to the baseline.
A rescan of unchanged files costs nothing (the scanner keeps rows by size and time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.studio.training.episode_rows import EpisodeScanner  # noqa: E402
from model.episode_inputs import read_episode_inputs  # noqa: E402
from recordings.metadata import EpisodeMetadata  # noqa: E402
from recordings.store import EpisodeStore  # noqa: E402
from recordings.writer import EpisodeWriter  # noqa: E402
from robot.types import STATE_DIM, ControlSource, Mode, Observation, TickRecord, TickTimings  # noqa: E402

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")


def write_store(store: Path, episodes: int, steps: int, height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (height, width, 3)).astype(np.int16)
    for _ in range(episodes):
        writer = EpisodeWriter(store, CAMERAS, EpisodeMetadata(task="fold the towel", sim=True, rig="bench"),
                               image_format="jpeg")
        writer.start()
        for t in range(steps):
            images = {c: np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8) for c in CAMERAS}
            zeros = np.zeros(STATE_DIM, np.float32)
            obs = Observation(qpos=zeros, qvel=zeros, effort=zeros, images=images,
                              image_times_s={c: 0.02 * t for c in CAMERAS}, time_s=0.02 * t, task="fold the towel")
            writer.on_tick(TickRecord(index=t, observation=obs, action=zeros, source=ControlSource.SCRIPTED,
                                      mode=Mode.TELEOP, timings=TickTimings(0.02, 0, 0, 0, 0, 0, 0)))
            while writer.status().queue_depth > 50:
                time.sleep(0.001)
        writer.stop("success")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/episode_scan.py", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="episode_scan_"))
    try:
        store = root / "store"
        write_store(store, args.episodes, args.steps, args.height, args.width)
        paths = EpisodeStore(store).episode_paths()
        for repeat in range(args.repeats):
            t0 = time.perf_counter()
            for path in paths:
                EpisodeStore(store).summary(path)
            t1 = time.perf_counter()
            for path in paths:
                read_episode_inputs(path)
            t2 = time.perf_counter()
            EpisodeScanner().scan(store)
            t3 = time.perf_counter()
            per = 1e3 / len(paths)
            print(json.dumps({"benchmark": "episode_scan", "repeat": repeat, "episodes": len(paths),
                              "image_hw": [args.height, args.width], "summary_ms": round((t1 - t0) * per, 2),
                              "inputs_ms": round((t2 - t1) * per, 2), "scan_ms": round((t3 - t2) * per, 2),
                              "scan_vs_summary": round((t3 - t2) / max(t1 - t0, 1e-9), 2)}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
