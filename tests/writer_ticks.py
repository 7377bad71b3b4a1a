"""Tick records and loop events as the control loop hands them to an episode writer, for the
writer tests (tests/recordings/test_writer_process.py, test_loop_record.py) and the subprocess
those tests start."""

from __future__ import annotations

import time

import numpy as np

from robot.types import JOINT_NAMES, STATE_DIM, ControlSource, LoopEvent, Mode, Observation, Severity, TickRecord, TickTimings

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
MODES = (Mode.TELEOP, Mode.TELEOP, Mode.HOLD, Mode.ESTOP, Mode.POLICY, Mode.IDLE)


def camera_ticks(count: int, height: int = 48, width: int = 64, seed: int = 0, start_s: float = 100.0) -> list[TickRecord]:
    """Ticks with textured frames (JPEG sizes vary), float64 state (the writer converts it),
    a missing image time and a sim time, as the rigs hand them over; every mode, and some
    joints clipped by the safety filter."""
    rng = np.random.default_rng(seed)
    ticks = []
    for index in range(count):
        images = {camera: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for camera in CAMERAS}
        time_s = start_s + index * 0.02
        observation = Observation(
            qpos=rng.standard_normal(STATE_DIM), qvel=rng.standard_normal(STATE_DIM),
            effort=rng.standard_normal(STATE_DIM), images=images,
            image_times_s={"cam_high": time_s - 0.03, "cam_left_wrist": time_s - 0.01}, time_s=time_s,
        )
        ticks.append(TickRecord(
            index=index, observation=observation, action=rng.standard_normal(STATE_DIM).astype(np.float32),
            source=ControlSource.TELEOP if index % 7 else ControlSource.POLICY, mode=MODES[(index // 10) % len(MODES)],
            timings=TickTimings(0.02, 0, 0, 0, 0, 0, 0), sim_time_s=index * 0.02,
            clipped=tuple(JOINT_NAMES[j] for j in range(STATE_DIM) if (index + j) % 5 == 0) if index % 3 else (),
        ))
    return ticks


def loop_events(count: int, every: int = 7) -> dict[int, LoopEvent]:
    """Loop events keyed by the tick they are emitted after: long, non-ASCII text included."""
    severities = (Severity.INFO, Severity.WARNING, Severity.ERROR)
    return {tick: LoopEvent(seq=k + 1, time_s=100.0 + tick * 0.02, severity=severities[k % 3], code=("estop", "source_dry", "position_limit")[k % 3],
                            message=f"event {k} at tick {tick}: " + "é" * (300 if k == 2 else 3), what_to_do="do this" * k, tick=tick)
            for k, tick in enumerate(range(3, count, every))}


def feed_with_events(writer, ticks, events: dict[int, LoopEvent], pause_s: float = 0.002) -> None:
    """As the control loop does: the tick's events are emitted (listener) before it is published."""
    for record in ticks:
        if record.index in events:
            writer.on_loop_event(events[record.index])
        writer.on_tick(record)
        time.sleep(pause_s)


def feed(writer, ticks, pause_s: float = 0.002) -> None:
    for record in ticks:
        writer.on_tick(record)
        time.sleep(pause_s)
