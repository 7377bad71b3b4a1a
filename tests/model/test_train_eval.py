"""Evaluation: the Wilson interval, chunked execution of a real policy, and `run.py eval` on the
real simulated rig (one short rollout, recorded with --save-dir)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.checkpoint import NormStats, save_checkpoint
from model.config import get_preset
from model.encoders import build_encoders
from model.evaluate import ChunkedPolicySource, EvalTally, latency_summary, wilson_interval
from model.fastwam import FastWAM
from model.policy import FastWAMPolicy, PolicyInput

torch.set_num_threads(1)

START_POSE = np.array([0, -0.96, 1.16, 0, -0.3, 0, 1.0] * 2, np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random tiny model whose de-normalised actions stay within 0.01 of the start pose."""
    torch.manual_seed(0)
    cfg = get_preset("tiny").replace(num_layers=1, action_horizon=8)
    stats = NormStats(qpos_mean=START_POSE.copy(), qpos_std=np.ones(14, np.float32),
                      action_mean=START_POSE.copy(), action_std=np.full(14, 0.003, np.float32))
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(folder, FastWAM(cfg), cfg, stats, 1, build_encoders(cfg))
    return folder


def test_wilson_interval():
    # Reference values of the Wilson score interval (z = 1.96).
    np.testing.assert_allclose(wilson_interval(0, 10), (0.0, 0.27753), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(5, 10), (0.23659, 0.76341), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(10, 10), (0.72247, 1.0), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(40, 50), (0.66963, 0.88757), atol=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    tally = EvalTally()
    for ok, err in ((True, 0.01), (False, 0.2), (True, 0.03)):
        tally.add(ok, err, [0.01, 0.03])
    summary = tally.summary()
    assert summary["success_rate"] == round(2 / 3, 4) and summary["fold_error_m_mean"] == 0.08
    assert summary["latency"] == latency_summary([0.01, 0.03] * 3) and summary["latency"]["p50_ms"] == 20.0


def test_chunked_source_executes_k_then_replans(checkpoint):
    policy = FastWAMPolicy.from_checkpoint(checkpoint, device="cpu")
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


def test_temporal_ensembling_averages_the_plans_covering_each_tick(checkpoint):
    policy = FastWAMPolicy.from_checkpoint(checkpoint, seed=3)
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


def test_eval_command_on_the_sim_rig(checkpoint, tmp_path, capsys):
    from app.studio.jobs.evaluate import main
    from recordings.reader import Episode

    code = main(["--checkpoint", str(checkpoint), "--episodes", "1", "--seed", "3", "--max-seconds", "0.3",
                 "--check-every-s", "0.1", "--execute", "4", "--save-dir", str(tmp_path / "rollouts"), "--device", "cpu"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert code == 0, lines
    episode, summary = lines[-2], lines[-1]
    assert episode["event"] == "episode" and episode["seed"] == 3 and episode["ticks"] == 15 and episode["chunks"] == 4
    assert not episode["success"] and episode["fold_error_m"] > 0.1  # nothing folded the towel
    assert summary["event"] == "summary" and summary["episodes"] == 1 and summary["success_ci95"][1] > 0.5
    assert summary["latency"]["n"] == 4 and summary["latency"]["p50_ms"] > 0
    with Episode.open(episode["saved"]) as saved:
        assert saved.length == 16 and saved.label.value == "failure"  # 15 policy ticks + the HOLD tick
        assert "eval seed=3" in saved.metadata.notes
        sources = {s.value for s in saved.control_sources}
        assert "policy" in sources
    code = main(["--checkpoint", str(tmp_path / "nothing"), "--episodes", "1"])
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 4 and error["kind"] == "model"
