"""What the control loop knew, recorded per episode (/loop_mode, /safety_clipped, /loop_events):
from the real loop on the MuJoCo rig through both writer paths, kept by a kill -9 of the writer
process, absent (unknown) in older files, and turned into the workbench's timeline markers."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest

from loop_scenario import JOG_JOINT, ScenarioSteps, record_scenario
from recordings import schema
from recordings.check import check_episode
from recordings.loop_record import clipped_joints
from recordings.reader import Episode
from recordings.recovery import recover_partial
from recordings.timeline import MarkerKind, episode_timeline
from recordings.writer import EpisodeWriter
from recordings.writer_status import WriterState
from recordings.writer_process import ProcessEpisodeWriter
from robot.types import ControlSource, LoopEvent, Mode, Severity
from writer_ticks import CAMERAS, camera_ticks, feed_with_events, loop_events

STEPS = ScenarioSteps()
ESTOP_STEP = STEPS.idle + STEPS.jog_into_limit + STEPS.dry + STEPS.jog_back  # the tick estop() took effect
DRY_STEP = STEPS.idle + STEPS.jog_into_limit


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """The scenario recorded twice from the real loop on the sim rig: thread writer, writer process."""
    root = tmp_path_factory.mktemp("scenario")
    return {kind: record_scenario(root / kind, process=kind == "process") for kind in ("thread", "process")}


def loop_content(path):
    with Episode.open(path) as episode:
        events = [(e.tick, e.step, e.severity, e.code, e.message) for e in episode.loop_events]
        return episode.loop_modes, episode.safety_clipped.copy(), events, episode.tick_indices.copy()


def test_the_real_loop_on_the_sim_rig_records_its_modes_clipping_and_events_the_same_on_both_paths(scenario):
    thread, process = loop_content(scenario["thread"]), loop_content(scenario["process"])
    modes, clipped, events, ticks = thread
    assert process[0] == modes and np.array_equal(process[1], clipped) and process[2] == events
    assert len(modes) == STEPS.total and np.array_equal(ticks, np.arange(STEPS.total))
    # The loop's own modes, as it went through them.
    assert modes[0] is Mode.IDLE and modes[STEPS.idle] is Mode.TELEOP
    assert set(modes[ESTOP_STEP:ESTOP_STEP + STEPS.estop]) == {Mode.ESTOP}
    assert set(modes[ESTOP_STEP + STEPS.estop:]) == {Mode.HOLD}
    # Jogged into its limit: the wrist is clipped there, and nothing but the jogged joint ever is.
    assert set(clipped_joints(clipped.any(axis=0))) == {JOG_JOINT}
    assert clipped[DRY_STEP - 1].any() and not clipped[DRY_STEP:DRY_STEP + STEPS.dry].any()
    codes = {(code, severity, tick) for tick, _, severity, code, _ in events}
    assert ("estop", Severity.ERROR, ESTOP_STEP) in codes
    assert ("estop", Severity.INFO, ESTOP_STEP + STEPS.estop) in codes  # cleared
    assert ("source_dry", Severity.WARNING, DRY_STEP) in codes
    assert any(code == "position_limit" and JOG_JOINT in message for _, _, _, code, message in events)
    assert check_episode(scenario["process"]).ok


def test_the_timeline_says_where_the_estop_the_clipping_and_the_hold_were_and_why(scenario):
    with Episode.open(scenario["process"]) as episode:
        timeline = episode_timeline(episode)
    assert timeline.loop_recorded
    (estop,) = timeline.markers_of(MarkerKind.ESTOP)
    assert (estop.step, estop.end) == (ESTOP_STEP, ESTOP_STEP + STEPS.estop)
    assert "E-stop pressed" in estop.text and f"cleared at step {ESTOP_STEP + STEPS.estop}" in estop.text
    clips = timeline.markers_of(MarkerKind.SAFETY_CLIP)
    assert clips and all(JOG_JOINT in m.text for m in clips)
    at_limit = [m for m in clips if "held at its limit" in m.text]
    assert len(at_limit) == 1 and at_limit[0].end == DRY_STEP  # pushed against the limit until the source ran dry
    holds = timeline.markers_of(MarkerKind.HOLD)
    # The E-stop's hold is told by the E-stop marker; the dry spell's hold says why.
    assert [(m.step, m.end) for m in holds] == [(DRY_STEP, DRY_STEP + STEPS.dry)]
    assert "the source ran dry" in holds[0].text
    assert [m.kind for m in timeline.markers_at(ESTOP_STEP + 3)] == [MarkerKind.ESTOP]
    assert not timeline.markers_of(MarkerKind.LOOP_EVENT)  # every warning is told by a marker above


def test_hold_reasons_from_the_loop_events(tmp_path):
    """Each way the loop holds, as the loop emits it, names its reason on the timeline."""
    ticks = camera_ticks(60)
    reasons = {10: ("unsafe_action", "safety stop"), 20: ("source_removed", "no source"),
               30: ("source_error", "the source failed"), 40: ("mode", "Hold chosen"), 50: (None, "why not recorded")}
    held = {t for start in reasons for t in range(start, start + 5)}
    ticks = [replace(t, source=ControlSource.HOLD if t.index in held else ControlSource.TELEOP, mode=Mode.TELEOP, clipped=())
             for t in ticks]
    events = {tick: LoopEvent(k + 1, 0.0, Severity.WARNING, code, f"{code} happened", "", tick)
              for k, (tick, (code, _)) in enumerate(reasons.items()) if code is not None}
    writer = EpisodeWriter(tmp_path, CAMERAS)
    writer.start()
    feed_with_events(writer, ticks, events, pause_s=0)
    with Episode.open(writer.stop()) as episode:
        holds = episode_timeline(episode).markers_of(MarkerKind.HOLD)
    assert [m.step for m in holds] == list(reasons)
    for marker, (code, reason) in zip(holds, reasons.values()):
        assert reason in marker.text and (code is None or f"{code} happened" in marker.text)


def test_a_killed_writer_process_leaves_the_loop_record_readable_after_recover(tmp_path):
    writer = ProcessEpisodeWriter(tmp_path, CAMERAS, flush_interval_s=0.2)
    try:
        writer.start()
        ticks, events = camera_ticks(150), loop_events(150, every=4)
        feed_with_events(writer, ticks[:100], events, pause_s=0.02)  # 2 s: several flushes
        assert writer.status().frames_written > 0
        partial = writer.status().partial_path
        os.kill(writer.process_id, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while writer.status().state is not WriterState.ERROR and time.monotonic() < deadline:
            time.sleep(0.01)
        result = recover_partial(partial)  # what `episodes recover` does
    finally:
        writer.close()
    assert check_episode(result.path).ok
    with Episode.open(result.path) as episode:
        n = len(episode)
        assert 0 < n <= 100
        assert episode.loop_modes == tuple(t.mode for t in ticks[:n])
        assert [clipped_joints(row) for row in episode.safety_clipped] == [t.clipped for t in ticks[:n]]
        kept = [(e.tick, e.code, e.message[:30]) for e in episode.loop_events]
    sent = [(e.tick, e.code, e.message[:30]) for e in events.values() if e.tick < 100]
    # A prefix of what was sent, none past the last step kept, and all but the last second's.
    assert kept == sent[: len(kept)] and all(tick < n for tick, _, _ in kept)
    assert all(tick in {k[0] for k in kept} for tick, _, _ in sent if tick < n - 50)


def test_an_older_file_without_the_loop_record_opens_with_it_unknown(tmp_path, act_file):
    writer = EpisodeWriter(tmp_path, CAMERAS)
    writer.start()
    ticks = camera_ticks(30)
    ticks = [replace(t, source=ControlSource.HOLD) if t.index >= 20 else t for t in ticks]
    feed_with_events(writer, ticks, loop_events(30), pause_s=0)
    path = writer.stop()
    with h5py.File(path, "r+") as root:  # the file as the writer made it before the loop record
        for name in schema.LOOP_DATASETS:
            del root[name]
    aloha, _ = act_file(name="episode_5.hdf5", folder=tmp_path, n=12, shape=(48, 64))
    for old in (path, aloha):
        assert check_episode(old).ok, check_episode(old).reasons
        with Episode.open(old) as episode:
            assert episode.loop_modes is None and episode.safety_clipped is None and episode.loop_events is None
            timeline = episode_timeline(episode)
        assert not timeline.loop_recorded
        assert not any(timeline.markers_of(kind) for kind in (MarkerKind.ESTOP, MarkerKind.SAFETY_CLIP, MarkerKind.LOOP_EVENT))
    with Episode.open(path) as episode:
        (hold,) = episode_timeline(episode).markers_of(MarkerKind.HOLD)
    assert hold.step == 20 and "does not record why" in hold.text


def test_check_refuses_a_loop_record_that_does_not_match_the_steps(tmp_path):
    writer = EpisodeWriter(tmp_path, CAMERAS)
    writer.start()
    feed_with_events(writer, camera_ticks(20), {}, pause_s=0)
    path = writer.stop()
    with h5py.File(path, "r+") as root:
        root[schema.LOOP_MODE].resize(15, axis=0)
        del root[schema.LOOP_EVENTS]
    reasons = " ".join(check_episode(path).reasons)
    assert "/loop_mode has shape (15,), expected (20,)" in reasons and "/loop_events missing" in reasons
