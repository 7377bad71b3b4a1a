"""Episodes written the way ACT's `record_sim_episodes.py` (tonyzhaozh/act) writes them (a pytest
plugin of tests/conftest.py): the whole episode at the end, `attrs["sim"] = True`, one raw uint8
camera `top` chunked a frame at a time, /observations/qpos and qvel and /action as (T, 14)
float32 (h5py's default dtype there), and nothing else - no effort, no task, no label, no
timestamps.

Contents say which step they are: frame t of `top` is flat with value `act_frame_value(t)`, so a
canvas built from it can be checked exactly; qpos[t] = t/100 + 0.001 d, action[t] = qpos[t] + 0.01.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

ACT_CAMERA = "top"
ACT_SMALL_HW = (96, 128)  # where the size does not matter
ACT_REAL_HW = (480, 640)  # what ACT records


def act_frame_value(t: int, offset: int = 0) -> int:
    return (3 * t + offset) % 256


def act_qpos(length: int) -> np.ndarray:
    return (np.arange(length)[:, None] / 100.0 + 0.001 * np.arange(14)[None]).astype(np.float32)


def write_act_episode(path: Path, length: int = 60, hw: tuple[int, int] = ACT_SMALL_HW, offset: int = 0,
                      camera: str = ACT_CAMERA) -> Path:
    """One episode file as record_sim_episodes.py writes it (its data_dict, then one h5py.File)."""
    height, width = hw
    frames = np.empty((length, height, width, 3), np.uint8)
    for t in range(length):
        frames[t] = act_frame_value(t, offset)
    qpos = act_qpos(length)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", rdcc_nbytes=1024**2 * 2) as root:
        root.attrs["sim"] = True
        obs = root.create_group("observations")
        image = obs.create_group("images")
        image.create_dataset(camera, (length, height, width, 3), dtype="uint8", chunks=(1, height, width, 3))
        obs.create_dataset("qpos", (length, 14), dtype="float32")
        obs.create_dataset("qvel", (length, 14), dtype="float32")
        root.create_dataset("action", (length, 14), dtype="float32")
        root[f"/observations/images/{camera}"][...] = frames
        root["/observations/qpos"][...] = qpos
        root["/observations/qvel"][...] = np.gradient(qpos, axis=0) * 50.0
        root["/action"][...] = qpos + 0.01
    return path


def write_act_store(folder: Path, episodes: int = 3, length: int = 60, hw: tuple[int, int] = ACT_SMALL_HW) -> Path:
    """`episodes` files episode_0.hdf5 ... as ACT's script names them."""
    for index in range(episodes):
        write_act_episode(folder / f"episode_{index}.hdf5", length, hw, offset=40 * index)
    return folder


@pytest.fixture(scope="session")
def act_store(tmp_path_factory) -> Path:
    """Three 60-step ACT episodes of one 96x128 `top` camera."""
    return write_act_store(tmp_path_factory.mktemp("act") / "sim_transfer_cube_scripted")
