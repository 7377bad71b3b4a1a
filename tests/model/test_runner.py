"""The policy runner (model/runner.py) with a real tiny Fast-WAM policy: delay compensation,
continuity at chunk seams (RTC against plain chunks), the faults that stop the policy, and the
real-time policy thread."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from model.checkpoint import NormStats, save_checkpoint
from model.config import get_preset
from model.encoders import build_encoders
from model.errors import PolicyFault
from model.execution import make_strategy
from model.fastwam import FastWAM
from model.policy import FastWAMPolicy
from model.runner import PolicyRunner, RunnerConfig
from policy_fixtures import START_POSE
from robot.types import ControlSource, JointLimits, Observation

torch.set_num_threads(1)
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
LIMITS = JointLimits(np.full(14, -3.2), np.full(14, 3.2), np.full(14, 0.1))
PERIOD = 0.02


def observation(tick: int, image_age_s: float = 0.0, cameras=CAMERAS, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 255, (60, 80, 3), np.uint8) for c in cameras}
    now = tick * PERIOD
    return Observation(START_POSE.copy(), np.zeros(14, np.float32), np.zeros(14, np.float32), images,
                       {c: now - image_age_s for c in cameras}, now)


@pytest.fixture(scope="module")
def policy(tiny_checkpoint):
    return FastWAMPolicy.from_checkpoint(tiny_checkpoint, device="cpu")


def recording(policy):
    """Keep every chunk the real policy returns, in order."""
    chunks = []
    real = policy.predict

    def predict(observation, task=None, guide=None):
        result = real(observation, task, guide)
        chunks.append(result.actions)
        return result

    policy.predict = predict
    return chunks


def run(runner, ticks, **obs):
    runner.start(observation(0, **obs))
    actions, kinds = [], []
    for t in range(ticks):
        actions.append(runner.next_action(observation(t, **obs)))
        kinds.append(runner.kind)
    return np.stack(actions), kinds


def test_simulated_delay_skips_the_actions_whose_time_passed(tiny_checkpoint):
    policy = FastWAMPolicy.from_checkpoint(tiny_checkpoint, device="cpu")
    chunks = recording(policy)
    runner = PolicyRunner(policy, make_strategy("plain", 8, every=4), LIMITS, RunnerConfig(delay_ms=60))
    steps = []
    runner.add_step_listener(steps.append)
    actions, kinds = run(runner, 16)
    # 60 ms = 3 ticks: the first chunk (asked at tick 0) acts from tick 3, its actions 0-2 skipped;
    # until then the runner holds the pose it started from, as HOLD steps.
    assert kinds[:3] == [ControlSource.HOLD] * 3 and set(kinds[3:]) == {ControlSource.POLICY}
    np.testing.assert_array_equal(actions[:3], np.stack([START_POSE] * 3))
    records = runner.records()
    assert [(r.obs_tick, r.apply_tick, r.skipped) for r in records[:3]] == [(0, 3, 3), (4, 7, 3), (8, 11, 3)]
    assert all(r.obs_to_command_s == pytest.approx(0.06) for r in records)
    # Each tick runs the newest plan's action for that very tick: never an action late.
    for t in range(3, 16):
        k = max(i for i, r in enumerate(records) if r.apply_tick <= t)
        np.testing.assert_array_equal(actions[t], chunks[k][t - records[k].obs_tick])
    assert [s.staleness_s for s in steps[:4]] == pytest.approx([0.06, 0.08, 0.10, 0.12])
    status = runner.status()
    assert status.state == "running" and status.plan_first_tick == 12 and status.queue_depth == 5
    assert status.inference.n == len(records) and status.inference.p99_ms >= status.inference.p50_ms > 0


def test_rtc_chunks_continue_the_plan_they_replace(tiny_checkpoint):
    """A new chunk against the plan it replaces, tick for tick: RTC's guided chunk reproduces the
    actions that ran while it was computed and stays close where it takes over; a plain chunk is an
    independent sample. Same policy, same noise seed, same delay (2 ticks)."""

    def deviations(strategy):
        policy = FastWAMPolicy.from_checkpoint(tiny_checkpoint, device="cpu")
        chunks = recording(policy)
        runner = PolicyRunner(policy, make_strategy(strategy, 8, every=4), LIMITS, RunnerConfig(delay_ms=40))
        run(runner, 40)
        records = runner.records()
        assert all(r.guided == (strategy == "rtc") for r in records[1:])
        frozen, seam = [], []
        for k in range(1, len(records)):
            new, old = records[k], records[k - 1]
            for tick in range(new.obs_tick, new.apply_tick + 1):  # the delay, then the first executed action
                gap = np.abs(chunks[k][tick - new.obs_tick] - chunks[k - 1][tick - old.obs_tick]).max()
                (seam if tick == new.apply_tick else frozen).append(gap)
        return np.array(frozen), np.array(seam)

    plain_frozen, plain_seam = deviations("plain")
    rtc_frozen, rtc_seam = deviations("rtc")
    assert rtc_frozen.mean() < 0.1 * plain_frozen.mean(), (rtc_frozen, plain_frozen)
    assert rtc_seam.mean() < 0.6 * plain_seam.mean(), (rtc_seam, plain_seam)


def test_ensemble_seams_move_by_a_fraction_of_the_new_plan(policy):
    runner = PolicyRunner(policy, make_strategy("ensemble", 8, every=2, decay=0.01), LIMITS, RunnerConfig(delay_ms=0))
    actions, _ = run(runner, 24)
    plain = PolicyRunner(policy, make_strategy("plain", 8, every=2), LIMITS, RunnerConfig(delay_ms=0))
    plain_actions, _ = run(plain, 24)
    assert np.abs(np.diff(actions, axis=0)).max() < np.abs(np.diff(plain_actions, axis=0)).max()


def test_no_action_due_is_a_fault_not_a_late_action(policy):
    # Every 8 of 8 with 2 ticks of delay: the chunk asked at tick 8 comes at tick 10, the plan ends at 7.
    runner = PolicyRunner(policy, make_strategy("plain", 8, every=8), LIMITS, RunnerConfig(delay_ms=40))
    runner.start(observation(0))
    for t in range(10):
        if t < 8:
            runner.next_action(observation(t))
            continue
        with pytest.raises(PolicyFault) as fault:
            runner.next_action(observation(t))
        assert fault.value.cause == "late" and "start autonomy again" in fault.value.what_to_do
        break
    assert runner.status().state == "fault" and runner.kind is ControlSource.HOLD


def test_stale_camera_and_policy_errors_stop_the_policy(policy):
    runner = PolicyRunner(policy, make_strategy("plain", 8, every=4), LIMITS, RunnerConfig())
    try:
        runner.start(observation(0))
        runner.next_action(observation(0))
        with pytest.raises(PolicyFault) as fault:
            runner.next_action(observation(1, image_age_s=0.8))
        assert fault.value.cause == "stale_camera" and "cam_high" in fault.value.message
        assert "camera" in fault.value.what_to_do
    finally:
        runner.close()
    runner = PolicyRunner(policy, make_strategy("plain", 8, every=4), LIMITS, RunnerConfig(delay_ms=0))
    runner.start(observation(0))
    runner.next_action(observation(1, image_age_s=0.8))  # simulated delay: the sim renders in step
    # A camera the checkpoint needs is missing: the policy raises, the runner turns it into a fault.
    runner.start(observation(0, cameras=CAMERAS[:2]))
    with pytest.raises(PolicyFault) as fault:
        runner.next_action(observation(0, cameras=CAMERAS[:2]))
    assert fault.value.cause == "policy_error" and "cam_right_wrist" in fault.value.message


def test_out_of_range_and_nan_chunks_are_refused(policy, tmp_path):
    tight = JointLimits(np.full(14, -3.2), START_POSE - 0.5, np.full(14, 0.1))  # below the start pose
    runner = PolicyRunner(policy, make_strategy("plain", 8), tight, RunnerConfig(delay_ms=0, range_margin=0.25))
    runner.start(observation(0))
    with pytest.raises(PolicyFault) as fault:
        runner.next_action(observation(0))
    assert fault.value.cause == "out_of_range" and "left_waist" in fault.value.message
    cfg = get_preset("tiny").replace(num_layers=1, action_horizon=8)
    broken = NormStats(START_POSE.copy(), np.ones(14, np.float32), START_POSE.copy(), np.full(14, np.nan, np.float32))
    save_checkpoint(tmp_path / "nan", FastWAM(cfg), cfg, broken, 1, build_encoders(cfg))
    nan_policy = FastWAMPolicy.from_checkpoint(tmp_path / "nan", device="cpu")
    runner = PolicyRunner(nan_policy, make_strategy("plain", 8), LIMITS, RunnerConfig(delay_ms=0))
    runner.start(observation(0))
    with pytest.raises(PolicyFault) as fault:
        runner.next_action(observation(0))
    assert fault.value.cause == "invalid_chunk" and "non-finite" in fault.value.message


def test_real_time_runner_plans_on_its_own_thread(tiny_checkpoint_h32):
    policy = FastWAMPolicy.from_checkpoint(tiny_checkpoint_h32, device="cpu")
    runner = PolicyRunner(policy, make_strategy("rtc", 32, every=8), LIMITS, RunnerConfig(rate_hz=50))
    try:
        runner.start(observation(0))
        kinds, started = [], time.monotonic()
        for t in range(40):
            tick_start = time.monotonic()
            runner.next_action(observation(t))
            kinds.append(runner.kind)
            assert time.monotonic() - tick_start < 0.01  # the control thread never runs the model
            time.sleep(max(0.0, started + (t + 1) * PERIOD - time.monotonic()))
        assert kinds[0] is ControlSource.HOLD and kinds[-1] is ControlSource.POLICY
        records = runner.records()
        assert len(records) >= 3 and all(r.apply_tick > r.obs_tick for r in records)
        assert all(r.inference_s > 0 and r.obs_to_command_s >= r.inference_s for r in records)
    finally:
        runner.close()
    # No first chunk in time: a fault, not an endless hold.
    slow = PolicyRunner(policy, make_strategy("plain", 32), LIMITS, RunnerConfig(first_chunk_timeout_s=1e-6))
    try:
        slow.start(observation(0))
        time.sleep(0.001)
        with pytest.raises(PolicyFault) as fault:
            for t in range(3):
                slow.next_action(observation(t))
        assert fault.value.cause in ("no_first_chunk",)
    finally:
        slow.close()


def test_the_policy_can_run_in_a_process_of_its_own(tiny_checkpoint_h32):
    from model.policy_process import PolicyProcess

    process = PolicyProcess(tiny_checkpoint_h32, device="cpu", threads=1)
    assert process.config.action_horizon == 32 and process.device == "cpu"
    runner = PolicyRunner(process, make_strategy("rtc", 32, every=8), LIMITS, RunnerConfig(rate_hz=50))
    first_plan = None
    try:
        runner.start(observation(0))
        kinds, started = [], time.monotonic()
        for t in range(40):
            tick_start = time.monotonic()
            action = runner.next_action(observation(t))
            kinds.append(runner.kind)
            # No model work here: copies into shared memory and a pipe message (the first tick
            # also creates the blocks; the shared test machine can stretch that).
            assert time.monotonic() - tick_start < 0.05 and action.shape == (14,)
            status = runner.status()
            if first_plan is None and status.plan is not None:
                first_plan = status.plan
            time.sleep(max(0.0, started + (t + 1) * PERIOD - time.monotonic()))
        assert kinds[-1] is ControlSource.POLICY
        records = runner.records()
        assert len(records) >= 3 and any(r.guided for r in records) and all(r.inference_s > 0 for r in records)
    finally:
        runner.close()
    # The process's first chunk is the in-process policy's for the same observation and seed.
    local = FastWAMPolicy.from_checkpoint(tiny_checkpoint_h32, device="cpu")
    np.testing.assert_allclose(first_plan, local.predict(observation(0)).actions, atol=1e-6)
    with pytest.raises(ValueError, match="real time only"):
        PolicyRunner(process, make_strategy("plain", 32), LIMITS, RunnerConfig(delay_ms=0))
