"""A tiny random Fast-WAM checkpoint whose de-normalised actions stay within 0.01 of the ALOHA start
pose (a pytest plugin of tests/conftest.py: model, evaluation and autonomy tests share it)."""

from __future__ import annotations

import numpy as np
import pytest

START_POSE = np.array([0, -0.96, 1.16, 0, -0.3, 0, 1.0] * 2, np.float32)


def _save_tiny(folder, action_horizon: int):
    import torch

    from model.checkpoint import NormStats, save_checkpoint
    from model.config import get_preset
    from model.encoders import build_encoders
    from model.fastwam import FastWAM

    torch.manual_seed(0)
    cfg = get_preset("tiny").replace(num_layers=1, action_horizon=action_horizon)
    stats = NormStats(qpos_mean=START_POSE.copy(), qpos_std=np.ones(14, np.float32),
                      action_mean=START_POSE.copy(), action_std=np.full(14, 0.003, np.float32))
    save_checkpoint(folder, FastWAM(cfg), cfg, stats, 1, build_encoders(cfg))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """8-action chunks: quick to sample, and short enough that tests see many chunk seams."""
    return _save_tiny(tmp_path_factory.mktemp("tiny_checkpoint"), 8)


@pytest.fixture(scope="session")
def tiny_checkpoint_h32(tmp_path_factory):
    """The preset's 32-action chunks (640 ms at 50 Hz): what real-time tests need, because the
    shared test machine can stall a policy thread for longer than an 8-action plan lasts."""
    return _save_tiny(tmp_path_factory.mktemp("tiny_checkpoint_h32"), 32)
