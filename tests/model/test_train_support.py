"""Helpers shared by the dataset and training tests (no tests here): episodes written by the
real `recordings` writer whose contents say which step they are, and a tiny training config.

Frame of camera k at step t: a flat image of value `frame_value(t, k)` (raw format, so exact after
the canvas resize); qpos[t] = t + 0.01 d; action[t] = 1000 + t + 0.01 d (d = dimension).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")

#: Model overrides that make `tiny` fast enough for the test suite: one layer, narrow experts,
#: a 64x96 canvas (4x6 latent, 6 tokens a frame), 8-step action chunks, a 16-wide autoencoder.
TEST_MODEL_OVERRIDES = [
    "num_layers=1", "num_heads=2", "attn_head_dim=24", "text_dim=16",
    "video.hidden_dim=32", "video.ffn_dim=64", "video.freq_dim=16", "video.in_dim=8",
    "action.hidden_dim=16", "action.ffn_dim=32", "action.freq_dim=16",
    "canvas_hw=[64,96]", "action_horizon=8", "encoder.vae_channels=[16,16,16]",
]


def frame_value(t: int, camera_index: int) -> int:
    return (t * 5 + camera_index * 60) % 256


def qpos_of(t: int) -> np.ndarray:
    return (t + 0.01 * np.arange(14)).astype(np.float32)


def action_of(t: int) -> np.ndarray:
    return (1000.0 + t + 0.01 * np.arange(14)).astype(np.float32)


def write_episode(store: Path, length: int, label: str = "success", task: str = "fold the towel",
                  shape: tuple[int, int] = (48, 64), cameras=CAMERAS, offset: int = 0, repeat: int = 1,
                  sources=None) -> Path:
    """One episode through the real EpisodeWriter (raw frames). `offset` shifts frame values so
    episodes differ in content; `repeat` > 1 shows each frame that many steps (a camera slower
    than the control rate, as the sim's 25 fps at 50 Hz); `sources`: each step's ControlSource
    (default: scripted)."""
    from recordings.metadata import EpisodeMetadata
    from recordings.writer import EpisodeWriter
    from robot.types import ControlSource, Mode, Observation, TickRecord, TickTimings

    writer = EpisodeWriter(store, cameras, EpisodeMetadata(task=task, sim=True, rig="test"), image_format="raw")
    writer.start()
    for t in range(length):
        shown = t - t % repeat
        images = {c: np.full((*shape, 3), frame_value(shown + offset, k), np.uint8) for k, c in enumerate(cameras)}
        obs = Observation(qpos=qpos_of(t), qvel=np.zeros(14, np.float32), effort=np.zeros(14, np.float32),
                          images=images, image_times_s={c: 10.0 + 0.02 * t for c in cameras}, time_s=10.0 + 0.02 * t,
                          task=task)
        source = ControlSource.SCRIPTED if sources is None else sources[t]
        writer.on_tick(TickRecord(index=t, observation=obs, action=action_of(t), source=source,
                                  mode=Mode.TELEOP, timings=TickTimings(0.02, 0, 0, 0, 0, 0, 0)))
        while writer.status().queue_depth > 50:
            time.sleep(0.001)
    return writer.stop(label)


def make_store(root: Path, lengths=(40, 33, 30, 36), labels=None, tasks=None) -> Path:
    store = root / "store"
    for i, length in enumerate(lengths):
        label = labels[i] if labels else "success"
        task = tasks[i] if tasks else "fold the towel"
        write_episode(store, length, label=label, task=task, offset=17 * i)
    return store


def run_train(args: list[str], cwd: Path = ROOT, timeout_s: float = 120.0, torchrun: int = 0) -> tuple[int, list[dict], str]:
    """`python run.py train` in a subprocess (plain, or under torchrun with `torchrun` processes,
    as the README says to run it on several GPUs); returns (exit code, JSON lines from stdout,
    stderr). stdout is a pipe, so the command prints JSON lines."""
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}",
               str(ROOT / "run.py"), "train", *args]
    else:
        cmd = [sys.executable, str(ROOT / "run.py"), "train", *args]
    env = {"PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MUJOCO_GL": "egl"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)
    lines = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            lines.append(json.loads(line))
    return proc.returncode, lines, proc.stderr
