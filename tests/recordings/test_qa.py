"""Timing QA on real episode files with synthetic timing faults: a slow loop, dropped camera
frames, a stall, lost ticks; and the lab's thresholds file."""

from __future__ import annotations

import numpy as np
import pytest

from recordings.qa import QaSettingsError, QaThresholds, Verdict, check_timing, load_thresholds, measure_timing, judge

N = 120


def steady(rate_hz=50.0, n=N, start=100.0):
    return start + np.arange(n) / rate_hz


def test_a_clean_episode_is_ok(timed_episode):
    metrics, result = check_timing(timed_episode(steady()))
    assert result.verdict is Verdict.OK, result.reasons
    assert metrics.rate_hz == pytest.approx(50.0)
    assert metrics.late_ticks == metrics.lost_ticks == 0
    assert all(camera.dropped == 0 and camera.repeated == 0 for camera in metrics.cameras)
    assert metrics.cameras[0].age_p99_ms == pytest.approx(5.0, abs=0.1)  # make_tick: capture 5 ms before


def test_a_slow_loop_is_bad_by_alohas_rule(timed_episode):
    metrics, result = check_timing(timed_episode(steady(40.0)))  # 40 Hz of a 50 Hz loop < 42 Hz
    assert metrics.rate_hz == pytest.approx(40.0)
    assert result.verdict is Verdict.BAD
    assert "below 42 Hz" in result.reasons[0]


def test_a_slightly_slow_loop_warns(timed_episode):
    _, result = check_timing(timed_episode(steady(46.0)))
    assert result.verdict is Verdict.WARN
    assert "46.0 Hz" in result.reasons[0]


def test_dropped_camera_frames(timed_episode):
    times = steady()
    camera_times = times - 0.005
    # cam_high loses 10 frames in a row: it keeps showing the frame from before the gap.
    camera_times[50:60] = camera_times[49]
    path = timed_episode(times, image_times={"cam_high": camera_times})
    metrics, result = check_timing(path)
    high = next(c for c in metrics.cameras if c.name == "cam_high")
    assert high.repeated == 10
    assert high.dropped == 10
    assert high.longest_freeze_s == pytest.approx(0.2, abs=1e-6)
    assert result.verdict is Verdict.BAD  # 10 of 120 frames dropped > 5 %
    assert any("cam_high: 10 frames dropped" in reason for reason in result.reasons)
    others = [c for c in metrics.cameras if c.name != "cam_high"]
    assert all(c.dropped == 0 for c in others)


def test_a_stall_is_bad_and_shows_as_late_ticks(timed_episode):
    times = steady()
    times[70:] += 0.5  # the loop stood still for half a second
    metrics, result = check_timing(timed_episode(times))
    assert metrics.longest_gap_s == pytest.approx(0.52)
    assert metrics.late_ticks == 1
    assert result.verdict is Verdict.BAD
    assert any("stalled for 0.52 s" in reason for reason in result.reasons)


def test_lost_ticks_are_bad(timed_episode):
    ticks = np.arange(N)
    ticks[60:] += 3  # three ticks never reached the recorder
    times = 100.0 + ticks / 50.0
    metrics, result = check_timing(timed_episode(times, ticks=ticks))
    assert metrics.lost_ticks == 3
    assert result.verdict is Verdict.BAD


def test_jitter_warns(timed_episode):
    rng = np.random.default_rng(0)
    times = steady() + rng.uniform(0, 0.008, N)  # up to 8 ms late each tick
    metrics, result = check_timing(timed_episode(times))
    assert 5.0 < metrics.jitter_p99_ms < 15.0
    assert result.verdict is Verdict.WARN


def test_an_aloha_file_has_unknown_timing(act_file):
    path, _ = act_file(n=10, shape=(48, 64))
    metrics, result = check_timing(path)
    assert not metrics.has_timestamps
    assert result.verdict is Verdict.UNKNOWN


def test_thresholds_from_the_store_file(tmp_path):
    assert load_thresholds(tmp_path) == QaThresholds()
    (tmp_path / "qa.toml").write_text("[timing]\nrate_bad_fraction = 0.9\nrate_warn_fraction = 0.95\n")
    limits = load_thresholds(tmp_path)
    metrics, _ = measure_timing(steady(44.0), 50.0)
    assert judge(metrics).verdict is Verdict.WARN  # ALOHA's 42 Hz rule
    assert judge(metrics, limits).verdict is Verdict.BAD  # the lab's stricter 45 Hz
    (tmp_path / "qa.toml").write_text("[timing]\nrate_bad_fraction = 0.9\nbogus = 1\n")
    with pytest.raises(QaSettingsError, match="unknown threshold.*bogus"):
        load_thresholds(tmp_path)
    (tmp_path / "qa.toml").write_text(QaThresholds().to_toml())
    assert load_thresholds(tmp_path) == QaThresholds()


def test_metrics_survive_json(timed_episode):
    from recordings.qa import TimingMetrics

    metrics, _ = check_timing(timed_episode(steady(40.0)))
    assert TimingMetrics.from_json(metrics.to_json()) == metrics
