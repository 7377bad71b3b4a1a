"""Evaluation on the simulated towel task: the statistics, and `run.py eval` on the real sim rig
(one short rollout of a tiny random policy, recorded with --save-dir)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.studio.evaluation import EvalTally, latency_summary, wilson_interval
from recordings.check import check_episode


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


def test_eval_command_on_the_sim_rig(tiny_checkpoint, tmp_path, capsys):
    from app.studio.jobs.evaluate import main
    from recordings.reader import Episode

    code = main(["--checkpoint", str(tiny_checkpoint), "--episodes", "1", "--seed", "3", "--max-seconds", "0.3",
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
        policy = saved.policy  # the runner's latency tables and what drove the arm
        assert policy.attrs["strategy"] == "ensemble" and policy.attrs["every"] == 4
        assert len(policy.attrs["checkpoint_hash"]) == 64 and policy.attrs["delay_ms"] == "0.0"
        assert policy.chunks["obs_tick"].tolist() == [0, 4, 8, 12] and (policy.chunks["skipped"] == 0).all()
        assert len(policy.steps["staleness_s"]) == 15
        assert set(policy.steps["obs_time_s"]) <= set(saved.timestamps.tolist())
    verdict = check_episode(episode["saved"])  # `episodes check` takes the policy tables in its stride
    assert verdict.ok and not verdict.warnings, verdict
    code = main(["--checkpoint", str(tmp_path / "nothing"), "--episodes", "1"])
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 4 and error["kind"] == "model"


def test_eval_under_a_simulated_delay_and_in_real_time(tiny_checkpoint, tiny_checkpoint_h32, tmp_path, capsys):
    from app.studio.jobs.evaluate import main
    from recordings.reader import Episode

    # 40 ms of simulated delay = 2 ticks: every chunk skips its first 2 actions, reproducibly.
    code = main(["--checkpoint", str(tiny_checkpoint), "--episodes", "1", "--seed", "3", "--max-seconds", "0.3",
                 "--strategy", "plain", "--execute", "4", "--delay-ms", "40", "--device", "cpu",
                 "--save-dir", str(tmp_path / "delayed")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert code == 0, lines
    episode, summary = lines[-2], lines[-1]
    assert episode["skipped_actions"] == 2 * episode["chunks"] and episode["dropped_chunks"] == 0
    assert summary["timing"] == "40.0 ms simulated delay" and summary["obs_to_command"]["p50_ms"] == 40.0
    with Episode.open(episode["saved"]) as saved:
        sources = [s.value for s in saved.control_sources]
        assert sources[:2] == ["hold", "hold"] and sources[2] == "policy"  # the first chunk acts at tick 2
        assert saved.policy.chunks["apply_tick"].tolist()[:2] == [2, 6]

    # Real time: the loop's thread paces the sim, the policy plans on its own thread.
    code = main(["--checkpoint", str(tiny_checkpoint_h32), "--episodes", "1", "--seed", "4", "--max-seconds", "1.0",
                 "--strategy", "rtc", "--real-time", "--device", "cpu"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert code == 0, lines
    episode, summary = lines[-2], lines[-1]
    assert summary["timing"] == "real time" and episode["chunks"] >= 3 and episode["ticks"] == 50
    assert summary["latency"]["p99_ms"] >= summary["latency"]["p50_ms"] > 0
    assert summary["obs_to_command"]["p50_ms"] >= summary["latency"]["p50_ms"]
    assert main(["--checkpoint", str(tiny_checkpoint), "--delay-ms", "soon"]) == 2
