"""The runtime policy: checkpoint folder in, de-normalised (H, 14) chunks out, NaN refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.checkpoint import NormStats, save_checkpoint
from model.encoders import build_encoders
from model.errors import PolicyOutputInvalid
from model.policy import FastWAMPolicy, PolicyInput


@pytest.fixture()
def checkpoint_dir(tmp_path, tiny_model):
    cfg = tiny_model.config
    stats = NormStats(
        qpos_mean=np.zeros(14, np.float32), qpos_std=np.ones(14, np.float32),
        action_mean=np.full(14, 10.0, np.float32), action_std=np.full(14, 0.01, np.float32),
    )
    save_checkpoint(tmp_path, tiny_model, cfg, stats, 5, build_encoders(cfg))
    return tmp_path


def _observation(task="fold the towel", size=(240, 320)):
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 255, (*size, 3), dtype=np.uint8) for c in ("cam_high", "cam_left_wrist", "cam_right_wrist", "cam_low")}
    # The control loop's Observation has qvel/effort too; only qpos, images and task are read.
    return SimpleNamespace(qpos=np.zeros(14, np.float32), qvel=np.zeros(14, np.float32),
                           effort=np.zeros(14, np.float32), images=images, task=task)


def test_predict_chunk(checkpoint_dir):
    policy = FastWAMPolicy.from_checkpoint(checkpoint_dir, device="cpu")
    assert policy.dtype == torch.float32
    chunk = policy.predict_chunk(_observation())
    assert chunk.shape == (32, 14) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    assert abs(chunk.mean() - 10.0) < 1.0  # de-normalised with the checkpoint's action stats
    policy.reset()
    again = policy.predict_chunk(PolicyInput(qpos=np.zeros(14), images=_observation().images, task="fold the towel"))
    np.testing.assert_allclose(chunk, again, atol=1e-5)  # reset() replays the same noise


def test_nan_output_is_refused(checkpoint_dir):
    policy = FastWAMPolicy.from_checkpoint(checkpoint_dir, device="cpu")
    with torch.no_grad():
        policy.model.action.head.bias[3] = float("nan")
    policy.sampler.refresh()
    with pytest.raises(PolicyOutputInvalid, match="non-finite"):
        policy.predict_chunk(_observation())


def test_bad_inputs_are_explained(checkpoint_dir):
    policy = FastWAMPolicy.from_checkpoint(checkpoint_dir, device="cpu")
    obs = _observation()
    obs.qpos = np.zeros(7)
    with pytest.raises(ValueError, match=r"shape \(14,\)"):
        policy.predict_chunk(obs)
    obs = _observation(task="")
    assert policy.predict_chunk(obs).shape == (32, 14)  # single-task model: the task is implied
