"""Chunked execution of a real (tiny, random) policy: plain chunks and ACT's temporal ensembling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.chunking import ChunkedPolicySource
from model.policy import FastWAMPolicy, PolicyInput
from policy_fixtures import START_POSE

torch.set_num_threads(1)


def test_chunked_source_executes_k_then_replans(tiny_checkpoint):
    policy = FastWAMPolicy.from_checkpoint(tiny_checkpoint, device="cpu")
    source = ChunkedPolicySource(policy, execute=3)
    rng = np.random.default_rng(0)
    obs = PolicyInput(qpos=START_POSE, images={c: rng.integers(0, 255, (60, 80, 3), np.uint8)
                                               for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")})
    source.start(obs)
    actions = [source.next_action(obs) for _ in range(7)]
    assert source.chunks == 3 and len(source.latencies_s) == 3  # ticks 0, 3, 6 re-plan
    policy.reset()
    first = policy.predict_chunk(obs)
    np.testing.assert_array_equal(np.stack(actions[:3]), first[:3])  # the same seeded noise after reset
    assert np.abs(np.stack(actions) - START_POSE).max() < 0.1
    with pytest.raises(ValueError, match="horizon 8"):
        ChunkedPolicySource(policy, execute=9)


def test_temporal_ensembling_averages_the_plans_covering_each_tick(tiny_checkpoint):
    policy = FastWAMPolicy.from_checkpoint(tiny_checkpoint, seed=3)
    horizon = policy.config.action_horizon  # 8
    rng = np.random.default_rng(1)
    obs = PolicyInput(qpos=START_POSE, images={c: rng.integers(0, 255, (60, 80, 3), np.uint8)
                                               for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")})
    plans = []
    real = policy.predict_chunk
    policy.predict_chunk = lambda o: plans.append(real(o)) or plans[-1]
    source = ChunkedPolicySource(policy, execute=2, ensemble=True, ensemble_decay=0.5)
    source.start(obs)
    actions = [source.next_action(obs) for _ in range(12)]
    assert source.chunks == 6  # ticks 0, 2, ..., 10
    np.testing.assert_allclose(actions[0], plans[0][0], rtol=0, atol=1e-7)  # one plan: itself
    # Tick 9 is covered by the plans of ticks 2, 4, 6 and 8 (the plan of tick 0 ended at 7).
    covering = [plans[k][9 - 2 * k] for k in (1, 2, 3, 4)]
    weights = np.exp(-0.5 * np.arange(4))
    np.testing.assert_allclose(actions[9], (weights[:, None] * covering).sum(0) / weights.sum(), rtol=1e-6, atol=1e-7)
    assert len(source._plans) <= horizon // 2
    with pytest.raises(ValueError, match="ensemble_decay"):
        ChunkedPolicySource(policy, execute=2, ensemble=True, ensemble_decay=float("nan"))
