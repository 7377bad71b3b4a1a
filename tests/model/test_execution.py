"""The execution strategies' schedule (model/execution.py): which action each tick gets, what an
arriving chunk skips, ACT's weighted mean, RTC's soft mask and guide. Pure numpy, no model."""

from __future__ import annotations

import numpy as np
import pytest

from model.execution import (
    PlainChunks,
    RealTimeChunking,
    TemporalEnsemble,
    default_every,
    make_strategy,
    prefix_weights,
)

H = 8


def chunk(value: float, horizon: int = H) -> np.ndarray:
    """A chunk whose action i is value + i in every joint: easy to tell which action ran."""
    return (value + np.arange(horizon, dtype=np.float32))[:, None] * np.ones((1, 14), np.float32)


def test_plain_chunks_execute_k_then_replan_and_skip_what_passed():
    plain = PlainChunks(H, every=4)
    assert plain.wants_chunk(0)
    plain.note_request(0)
    assert plain.action(0) is None and not plain.wants_chunk(3) and plain.wants_chunk(4)
    assert plain.accept(chunk(0), first_tick=0, tick=0, index=0) == 0
    assert [plain.action(t)[0] for t in range(4)] == [0, 1, 2, 3]
    plain.note_request(4)
    # Planned at tick 4, usable at tick 6: its actions for ticks 4 and 5 are skipped; meanwhile the
    # previous plan bridged ticks 4 and 5.
    assert [plain.action(t)[0] for t in (4, 5)] == [4, 5]
    assert plain.accept(chunk(100), first_tick=4, tick=6, index=1) == 2
    assert plain.action(6)[0] == 102 and plain.action(7)[0] == 103
    assert plain.previous.index == 0 and plain.current.index == 1 and plain.remaining(6) == 6
    assert plain.action(12) is None  # the plan ran out: the runner turns this into a fault


def test_a_chunk_that_arrives_after_its_whole_horizon_is_dropped():
    plain = PlainChunks(H, every=4)
    plain.accept(chunk(0), 0, 0, 0)
    assert plain.accept(chunk(50), first_tick=1, tick=1 + H, index=1) == H
    assert plain.current.index == 0  # the old plan stays; nothing of the late one runs


def test_ensemble_is_the_weighted_mean_of_the_plans_covering_the_tick():
    ens = TemporalEnsemble(H, every=2, decay=0.5)
    plans = {}
    for k, first in enumerate(range(0, 12, 2)):
        plans[first] = chunk(10.0 * k)
        ens.accept(plans[first], first_tick=first, tick=first, index=k)
        if first == 0:
            assert ens.action(0)[0] == plans[0][0, 0]  # one plan: itself
    # Tick 9 is covered by the plans of ticks 2, 4, 6, 8 (tick 0's ended at 7); oldest weighs most.
    covering = np.array([plans[f][9 - f, 0] for f in (2, 4, 6, 8)])
    weights = np.exp(-0.5 * np.arange(4))
    assert ens.action(9)[0] == pytest.approx((weights * covering).sum() / weights.sum(), rel=1e-6)
    assert len(ens._plans) <= H // 2 + 1
    # A plan that arrived late covers only from its arrival on.
    late = TemporalEnsemble(H, every=2)
    late.accept(chunk(0), 0, 0, 0)
    late.accept(chunk(100), first_tick=2, tick=5, index=1)
    assert late.action(4)[0] == 4 and late.action(5)[0] != 5
    with pytest.raises(ValueError, match="decay"):
        TemporalEnsemble(H, 2, decay=float("nan"))


def test_rtc_guide_freezes_the_delay_and_decays_over_the_overlap():
    rtc = RealTimeChunking(H, every=2)
    assert rtc.guide(0, 2) is None  # nothing to continue yet
    rtc.accept(chunk(0), 0, 0, 0)
    guide = rtc.guide(first_tick=2, delay_ticks=2)
    # The new chunk's action i is for tick 2 + i: the current plan's action 2 + i, for 6 actions.
    np.testing.assert_array_equal(guide.prefix[:6, 0], np.arange(2, 8))
    assert np.all(guide.prefix[6:] == 0)
    assert guide.weights[:2].tolist() == [1.0, 1.0]
    assert np.all(np.diff(guide.weights[1:6]) < 0) and 0 < guide.weights[5] < 1
    assert np.all(guide.weights[6:] == 0) and guide.delay_ticks == 2


def test_prefix_weights_match_the_papers_mask():
    # start 2, overlap 6, horizon 10: 1 1 then c = 4/5 ... 1/5 through c (e^c - 1) / (e - 1), then 0.
    w = prefix_weights(2, 6, 10)
    c = np.array([4, 3, 2, 1]) / 5
    np.testing.assert_allclose(w, [1, 1, *(c * np.expm1(c) / (np.e - 1)), 0, 0, 0, 0], rtol=1e-6)
    assert prefix_weights(9, 4, 10)[:4].tolist() == [1, 1, 1, 1]  # the frozen part never passes the overlap


def test_defaults_and_bad_settings():
    assert default_every("plain", 32) == 16 and default_every("ensemble", 32) == 4 and default_every("rtc", 32) == 8
    assert make_strategy("rtc", 32).every == 8 and make_strategy("ensemble", 32, decay=0.2).decay == 0.2
    with pytest.raises(ValueError, match="unknown execution strategy"):
        make_strategy("fast", 32)
    with pytest.raises(ValueError, match="within 1 and the horizon 8"):
        PlainChunks(H, every=9)
    with pytest.raises(ValueError, match=r"must be \(8, A\)"):
        PlainChunks(H, 4).accept(np.zeros((4, 14)), 0, 0, 0)
