"""The control loop: pacing, modes, E-stop, request queue, blending, faults, subscribers.

Most tests run against `FirstOrderRig`, a test double at the `Rig` seam: plain numpy joint
dynamics (each command moves the joints a fixed fraction toward it), no cameras. It is what the
loop sees of any rig - read() and command() - with knobs to make it slow or fail. The real MuJoCo
rig is exercised in tests/robot/test_teleop.py (jogging through the loop).
"""

import random
import threading
import time

import numpy as np
import pytest

from robot.aloha import start_pose
from robot.capabilities import Simulation
from robot.control_loop import ControlLoop, LoopConfig
from robot.rig import Rig
from robot.types import (
    GRIPPER_INDICES,
    STATE_DIM,
    ControlSource,
    JointLimits,
    Mode,
    Observation,
    Severity,
    SourceFault,
    zero_state,
)

MAX_STEP = 0.05  # rad per tick the double's limits allow


class FirstOrderRig(Rig, Simulation):
    """Joints follow commands with a first-order lag (a fraction `gain` per command). Simulated
    time counts commands; `simulated=False` makes it behave as a real rig (no sim time)."""

    camera_names = ()

    def __init__(self, simulated=True, rate_hz=50.0, gain=0.5, start=None):
        self.name = "numpy-double"
        self.simulated = simulated
        self.control_rate_hz = rate_hz
        self.gain = gain
        self.qpos = (start_pose() if start is None else np.asarray(start, np.float32)).astype(np.float64)
        self.commands: list[np.ndarray] = []
        self.command_delay_s: dict[int, float] = {}  # command number -> extra seconds it takes
        self.fail_reads = 0
        self.estops = 0
        self.estops_cleared = 0
        self.ticks = 0

    def connect(self):
        pass

    def disconnect(self):
        pass

    def read(self):
        if self.fail_reads:
            self.fail_reads -= 1
            raise OSError("There is no status packet")
        q = self.qpos.astype(np.float32)
        return Observation(qpos=q, qvel=zero_state(), effort=zero_state(), images={}, image_times_s={}, time_s=time.monotonic())

    def command(self, action):
        delay = self.command_delay_s.get(len(self.commands), 0.0)
        if delay:
            time.sleep(delay)
        action = np.asarray(action, dtype=np.float64)
        self.commands.append(action.copy())
        self.qpos += self.gain * (action - self.qpos)
        self.ticks += 1

    @property
    def sim_time_s(self):
        return self.ticks / self.control_rate_hz

    def set_render_thread(self, enabled):
        pass  # no cameras

    def render_stats(self):
        return None

    def joint_limits(self):
        low = np.full(STATE_DIM, -3.0)
        high = np.full(STATE_DIM, 3.0)
        low[list(GRIPPER_INDICES)] = 0.0
        high[list(GRIPPER_INDICES)] = 1.0
        return JointLimits(low=low, high=high, max_step=np.full(STATE_DIM, MAX_STEP))

    def on_estop(self):
        self.estops += 1

    def on_estop_cleared(self):
        self.estops_cleared += 1


class PoseSource:
    """An ActionSource that asks for one fixed pose (or whatever `action` is set to)."""

    kind = ControlSource.TELEOP

    def __init__(self, name, pose):
        self.name = name
        self.action = None if pose is None else np.asarray(pose, dtype=np.float32)
        self.started_with: list[np.ndarray] = []
        self.stops = 0
        self.fail_with: Exception | None = None
        self.done = False

    def start(self, observation):
        self.started_with.append(observation.qpos.copy())

    def next_action(self, observation):
        if self.fail_with is not None:
            raise self.fail_with
        return None if self.action is None else self.action.copy()

    def stop(self):
        self.stops += 1

    @property
    def finished(self):
        return self.done


def codes(loop):
    return [e.code for e in loop.snapshot(max_events=1000).events]


def run(loop, ticks):
    return [loop.tick_once() for _ in range(ticks)]


# ------------------------------------------------------------------------------------- pacing


def test_paced_rate_is_50_hz_over_two_seconds():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(rate_hz=50.0, stats_window_s=5.0))
    starts = []
    loop.subscribe(lambda record: starts.append(record.observation.time_s))
    loop.start()
    time.sleep(2.0)
    loop.stop()
    assert not loop.running
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    # Never faster than the deadlines allow; slower only by what a starved CPU takes (CI met 35 Hz
    # at load 12 on 2 cores; the rate on a quiet machine is benchmarks/control_loop.py's to measure).
    assert 30.0 <= rate <= 50.0 * 1.03, f"achieved {rate:.2f} Hz"
    stats = loop.snapshot().stats
    assert stats.achieved_rate_hz == pytest.approx(rate, rel=0.05)
    assert stats.ticks == len(starts) == len(rig.commands)
    # Deadline pacing never bursts to catch up: a 2 s run gives at most 100 ticks, give or take the
    # edges (fewer only where the CPU was starved and whole periods were skipped).
    assert 60 <= len(starts) <= 103
    # How close to 20 ms the periods are depends on the machine's load (benchmarks/control_loop.py
    # measures it); here only that the figures are there and ordered.
    assert 0.0 <= stats.period_error_p50_ms <= stats.period_error_p99_ms


def test_overrun_rebases_the_schedule_without_a_burst_and_never_skips_a_sim_tick():
    rig = FirstOrderRig(simulated=True)
    period = 0.02
    # Commands 20..22 take 60 ms each: three ticks overrun by ~2 periods.
    rig.command_delay_s = {20: 0.06, 21: 0.06, 22: 0.06}
    loop = ControlLoop(rig, LoopConfig(rate_hz=50.0))
    records = []
    loop.subscribe(records.append)
    loop.start()
    time.sleep(1.5)
    loop.stop()
    periods = np.array([r.timings.period_s for r in records[1:]])
    stats = loop.snapshot().stats
    assert stats.late_ticks >= 3
    assert stats.missed_deadlines >= 3
    # No catch-up burst: no two ticks start closer than half a period (a late wake-up within
    # half a period keeps the schedule; anything later re-bases it).
    assert periods.min() > 0.45 * period, f"burst: shortest period {periods.min() * 1e3:.1f} ms"
    assert periods.max() > 0.06  # the slow ticks are visible in the record
    # Every tick commanded the simulated rig once and sim time counts ticks, not wall time.
    assert len(rig.commands) == len(records)
    assert records[-1].sim_time_s == pytest.approx(len(records) * period)
    assert [r.index for r in records] == list(range(len(records)))


# ------------------------------------------------------------------------------------- modes


def test_idle_reads_and_publishes_and_commands_only_a_simulated_rig():
    real = FirstOrderRig(simulated=False)
    loop = ControlLoop(real)
    records = run(loop, 3)
    assert real.commands == []
    assert all(r.mode is Mode.IDLE and r.source is ControlSource.NONE for r in records)
    np.testing.assert_allclose(records[-1].action, real.qpos, atol=1e-6)

    sim = FirstOrderRig(simulated=True)
    loop = ControlLoop(sim)
    run(loop, 3)
    assert len(sim.commands) == 3
    np.testing.assert_allclose(sim.commands[-1], start_pose(), atol=1e-6)  # holds where it was


def test_teleop_needs_a_source_and_starts_it_from_the_current_pose():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))
    loop.request_mode(Mode.TELEOP)
    run(loop, 1)
    assert loop.snapshot().mode is Mode.IDLE
    assert "request_refused" in codes(loop)

    target = start_pose()
    target[0] += 0.02
    source = PoseSource("fixed", target)
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    record = loop.tick_once()
    assert record.mode is Mode.TELEOP and record.source is ControlSource.TELEOP
    assert len(source.started_with) == 1
    np.testing.assert_allclose(source.started_with[0], start_pose(), atol=1e-6)
    np.testing.assert_allclose(record.action, target, atol=1e-6)
    snap = loop.snapshot()
    assert (snap.mode, snap.source_name, snap.source_kind) == (Mode.TELEOP, "fixed", ControlSource.TELEOP)


def test_hold_repeats_the_last_command_and_stops_the_source():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))
    target = start_pose() + 0.04
    target[list(GRIPPER_INDICES)] = 1.0
    source = PoseSource("fixed", target)
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    run(loop, 2)
    source.action = target + 0.5  # whatever it asks now must not reach the arm
    loop.request_mode(Mode.HOLD)
    records = run(loop, 5)
    assert source.stops == 1
    assert all(r.mode is Mode.HOLD and r.source is ControlSource.HOLD for r in records)
    for command in rig.commands[-5:]:
        np.testing.assert_allclose(command, target, atol=1e-6)


def test_estop_latches_refuses_other_modes_and_clears_to_hold():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))
    source = PoseSource("fixed", start_pose() + np.float32(0.03))
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    run(loop, 3)
    held = rig.commands[-1].copy()

    loop.estop()
    record = loop.tick_once()
    assert record.mode is Mode.ESTOP and record.source is ControlSource.HOLD
    assert rig.estops == 1 and source.stops == 1
    np.testing.assert_allclose(rig.commands[-1], held, atol=1e-6)

    # Latched: mode requests are refused with an event; a second E-stop is harmless.
    for mode in (Mode.TELEOP, Mode.HOLD, Mode.IDLE, Mode.POLICY):
        loop.request_mode(mode)
    loop.estop()
    records = run(loop, 3)
    assert all(r.mode is Mode.ESTOP for r in records)
    assert codes(loop).count("request_refused") == 4
    assert rig.estops == 1
    for command in rig.commands[-3:]:
        np.testing.assert_allclose(command, held, atol=1e-6)
    estop_event = next(e for e in loop.snapshot().events if e.code == "estop")
    assert estop_event.severity == "error" and "Clear E-stop" in estop_event.what_to_do

    loop.clear_estop()
    record = loop.tick_once()
    assert record.mode is Mode.HOLD  # never straight back to motion
    assert rig.estops_cleared == 1
    loop.request_mode(Mode.TELEOP)
    record = loop.tick_once()
    assert record.mode is Mode.TELEOP and len(source.started_with) == 2


def test_request_mode_estop_is_the_same_as_estop():
    loop = ControlLoop(FirstOrderRig())
    loop.request_mode(Mode.ESTOP)
    assert loop.tick_once().mode is Mode.ESTOP


def test_requests_from_many_threads_while_running_never_break_the_loop():
    rig = FirstOrderRig(rate_hz=200.0)
    loop = ControlLoop(rig, LoopConfig(rate_hz=200.0, blend_s=0.05))
    sources = [PoseSource(f"s{i}", start_pose() + np.float32(0.01 * i)) for i in range(3)]
    snapshots = []
    errors = []

    def hammer(seed):
        rng = random.Random(seed)
        try:
            for _ in range(300):
                choice = rng.randrange(6)
                if choice == 0:
                    loop.request_mode(rng.choice([Mode.IDLE, Mode.TELEOP, Mode.HOLD, Mode.POLICY]))
                elif choice == 1:
                    loop.set_source(rng.choice(sources + [None]))
                elif choice == 2:
                    loop.estop()
                elif choice == 3:
                    loop.clear_estop()
                else:
                    snapshots.append(loop.snapshot())
                time.sleep(rng.random() * 0.002)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    loop.start()
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loop.estop()
    time.sleep(0.05)
    final = loop.snapshot(max_events=1000)
    loop.stop()
    assert errors == []
    assert final.mode is Mode.ESTOP
    assert "loop_error" not in [e.code for e in final.events]
    assert final.stats.ticks > 50
    # Whatever the interleaving, no command ever stepped more than the safety limit allows.
    steps = np.abs(np.diff(np.array(rig.commands), axis=0))
    assert steps.max() <= MAX_STEP + 1e-5
    # Every source that was started was also stopped (at most one left running, and it is
    # stopped by E-stop).
    assert sum(len(s.started_with) for s in sources) == sum(s.stops for s in sources)


# ------------------------------------------------------------------------------------- blending


def test_switching_to_a_far_source_ramps_from_the_current_pose_within_the_step_limit():
    rig = FirstOrderRig(gain=1.0)
    config = LoopConfig(rate_hz=50.0, blend_s=0.5, max_joint_speed_rad_s=100.0, max_gripper_speed_per_s=100.0)
    loop = ControlLoop(rig, config)
    near = PoseSource("near", start_pose())
    far_pose = start_pose() + np.float32(0.8)
    far_pose[list(GRIPPER_INDICES)] = 0.0
    far = PoseSource("far", far_pose)
    loop.set_source(near)
    loop.request_mode(Mode.TELEOP)
    run(loop, 30)
    before = rig.commands[-1].copy()
    loop.set_source(far)
    records = run(loop, 60)
    actions = np.array([before] + [r.action for r in records], dtype=np.float64)
    steps = np.abs(np.diff(actions, axis=0))
    assert steps.max() <= MAX_STEP + 1e-6
    # Starts at the current pose: the first tick after the switch barely moves (smoothstep).
    assert steps[0].max() < 0.01
    assert near.stops == 1 and len(far.started_with) == 1
    np.testing.assert_allclose(far.started_with[0], before, atol=1e-6)
    # And it gets there.
    np.testing.assert_allclose(actions[-1], far_pose, atol=1e-5)
    assert not loop.snapshot().blending


def test_safety_rate_limit_still_caps_a_short_blend():
    rig = FirstOrderRig(gain=1.0)
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))  # no blend at all
    far_pose = start_pose() + np.float32(1.0)
    far_pose[list(GRIPPER_INDICES)] = 1.0
    loop.set_source(PoseSource("far", far_pose))
    loop.request_mode(Mode.TELEOP)
    records = run(loop, 40)
    actions = np.array([start_pose()] + [r.action for r in records], dtype=np.float64)
    assert np.abs(np.diff(actions, axis=0)).max() <= MAX_STEP + 1e-6
    assert records[0].clipped  # the filter reported what it limited


def test_source_resuming_after_a_dry_spell_is_blended_in_again():
    rig = FirstOrderRig(gain=1.0)
    loop = ControlLoop(rig, LoopConfig(blend_s=0.4, max_joint_speed_rad_s=100.0))
    source = PoseSource("policy-like", start_pose())
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    run(loop, 25)
    source.action = None
    records = run(loop, 3)
    assert all(r.source is ControlSource.HOLD and r.mode is Mode.TELEOP for r in records)
    assert codes(loop).count("source_dry") == 1  # once per dry spell, not per tick
    jump = start_pose() + np.float32(0.3)
    jump[list(GRIPPER_INDICES)] = 1.0
    source.action = jump
    first = loop.tick_once()
    assert np.abs(first.action - start_pose()).max() < 0.01  # blended, not jumped
    assert first.source is ControlSource.TELEOP


# ------------------------------------------------------------------------------------- faults


def test_source_exception_holds_with_an_event_naming_the_source():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))
    source = PoseSource("leader arms", start_pose())
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    run(loop, 2)
    source.fail_with = RuntimeError("servo 7 stopped answering")
    record = loop.tick_once()
    assert record.source is ControlSource.HOLD
    assert loop.snapshot().mode is Mode.HOLD
    event = next(e for e in loop.snapshot().events if e.code == "source_error")
    assert "'leader arms'" in event.message and "servo 7 stopped answering" in event.message
    assert event.what_to_do
    run(loop, 3)  # keeps holding; the failed source is not called again
    assert loop.snapshot().mode is Mode.HOLD


def test_a_source_fault_holds_and_shows_its_own_what_to_do():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))
    source = PoseSource("policy", start_pose())
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    run(loop, 2)
    source.fail_with = SourceFault("Camera cam_high's newest image is 0.8 s old.", "Check the camera's cable.")
    record = loop.tick_once()
    assert record.source is ControlSource.HOLD and loop.snapshot().mode is Mode.HOLD
    event = next(e for e in loop.snapshot().events if e.code == "source_fault")
    assert "'policy' stopped: Camera cam_high's newest image is 0.8 s old." in event.message
    assert event.what_to_do == "Check the camera's cable." and event.severity is Severity.ERROR


def test_finished_source_holds_with_an_info_event():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))
    source = PoseSource("scripted demo", start_pose())
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    run(loop, 2)
    source.done = True
    source.action = None
    record = loop.tick_once()
    assert record.source is ControlSource.HOLD
    assert loop.snapshot().mode is Mode.HOLD
    assert "source_finished" in codes(loop)
    assert source.stops == 1


def test_nan_action_is_rejected_the_arm_holds_and_the_loop_goes_to_hold():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))
    source = PoseSource("policy", start_pose())
    loop.set_source(source)
    loop.request_mode(Mode.TELEOP)
    run(loop, 3)
    held = rig.commands[-1].copy()
    bad = start_pose()
    bad[9] = np.nan
    source.action = bad
    record = loop.tick_once()
    assert np.all(np.isfinite(rig.commands[-1]))
    np.testing.assert_allclose(rig.commands[-1], held, atol=1e-6)
    assert record.source is ControlSource.HOLD
    assert loop.snapshot().mode is Mode.HOLD
    event = next(e for e in loop.snapshot().events if e.code == "unsafe_action")
    assert "right_elbow" in event.message and "'policy'" in event.message


def test_read_failures_hold_report_once_and_recover():
    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(blend_s=0.0))
    loop.set_source(PoseSource("fixed", start_pose()))
    loop.request_mode(Mode.TELEOP)
    run(loop, 2)
    rig.fail_reads = 5
    assert run(loop, 5) == [None] * 5
    record = loop.tick_once()
    assert record is not None and record.mode is Mode.HOLD
    read_events = [e for e in loop.snapshot().events if e.code == "rig_read"]
    assert len(read_events) == 2  # the failure once, the recovery once
    assert "There is no status packet" in read_events[0].message


def test_a_failing_subscriber_is_isolated_and_reported_once():
    rig = FirstOrderRig()
    loop = ControlLoop(rig)
    seen = []

    def broken(record):
        raise ValueError("disk full")

    loop.subscribe(broken)
    unsubscribe = loop.subscribe(seen.append)
    run(loop, 10)
    assert len(seen) == 10
    snap = loop.snapshot()
    assert snap.stats.subscriber_errors == 10
    errors = [e for e in snap.events if e.code == "subscriber_error"]
    assert len(errors) == 1 and "disk full" in errors[0].message
    unsubscribe()
    run(loop, 2)
    assert len(seen) == 10


def test_tick_records_carry_timings_and_events_are_incremental():
    rig = FirstOrderRig()
    loop = ControlLoop(rig)
    records = run(loop, 3)
    timings = records[-1].timings
    assert timings.total_s >= timings.read_s + timings.source_s + timings.safety_s + timings.command_s - 1e-9
    assert timings.period_s > 0 and records[0].timings.period_s == 0.0
    assert records[-1].observation.qpos.shape == (STATE_DIM,) and records[-1].action.dtype == np.float32
    loop.request_mode(Mode.HOLD)
    loop.tick_once()
    first = loop.events_since(0)
    assert first and all(e.seq > 0 for e in first)
    assert loop.events_since(first[-1].seq) == ()
    assert loop.snapshot().rig.name == "numpy-double"


def test_loop_refuses_a_sim_rig_built_for_another_rate():
    with pytest.raises(ValueError, match="rate_hz = 30"):
        ControlLoop(FirstOrderRig(simulated=True, rate_hz=30.0), LoopConfig(rate_hz=50.0))


def test_tick_once_is_refused_while_the_thread_runs():
    loop = ControlLoop(FirstOrderRig())
    with loop:
        with pytest.raises(RuntimeError, match="stopped loop"):
            loop.tick_once()


def test_realtime_priority_gives_the_control_thread_sched_fifo_or_says_why_not():
    """Where the process may (root, CAP_SYS_NICE) the control thread runs with SCHED_FIFO; where
    it may not, the loop runs all the same and a warning event says what to do."""
    import os

    rig = FirstOrderRig()
    loop = ControlLoop(rig, LoopConfig(realtime_priority=10))
    policies = []
    loop.subscribe(lambda record: policies.append(os.sched_getscheduler(0)) if not policies else None)
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while not policies and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        loop.stop()
    refused = [e for e in loop.snapshot(max_events=50).events if e.code == "realtime"]
    if refused:
        assert policies == [os.SCHED_OTHER]
        assert "could not get real-time priority" in refused[0].message and "CAP_SYS_NICE" in refused[0].what_to_do
    else:
        assert policies == [os.SCHED_FIFO]
    with pytest.raises(ValueError, match="realtime_priority must be an integer 0..99"):
        LoopConfig(realtime_priority=100)


def test_refused_realtime_priority_is_a_warning_and_the_loop_runs(tmp_path):
    """Without the capability (setpriv drops CAP_SYS_NICE, as for a lab user) the refusal is a
    warning event with what to do, and the loop ticks at normal priority."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    script = (
        "import os, sys, time; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])\n"
        # A real-time policy inherited from the test process would let the loop keep one without
        # the capability (the kernel allows an RT thread to change its RT priority downwards).
        "os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))\n"
        "from test_control_loop import FirstOrderRig\n"
        "from robot.control_loop import ControlLoop, LoopConfig\n"
        "loop = ControlLoop(FirstOrderRig(), LoopConfig(realtime_priority=10)); loop.start(); time.sleep(0.5); loop.stop()\n"
        "snap = loop.snapshot(max_events=200)\n"
        "print(snap.stats.ticks, [(e.severity.value, e.code) for e in snap.events if e.code == 'realtime'])\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(["setpriv", "--bounding-set", "-sys_nice", sys.executable, "-c", script, str(root), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ticks, events = done.stdout.split(" ", 1)
    assert int(ticks) >= 10
    assert events.strip() == "[('warning', 'realtime')]"
