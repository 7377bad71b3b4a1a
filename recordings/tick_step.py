"""One control tick as an episode stores it: `tick_step` checks a `TickRecord` and turns it into a
`TickStep` (or a `BadTick` that ends the recording), on the control thread (~20 us). The thread
writer's queue and the writer process's shared-memory ring (`recordings.tick_ring`) carry these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from recordings import schema
from recordings.images import image_problem
from recordings.loop_record import clipped_mask, mode_code
from robot.types import STATE_DIM, TickRecord


@dataclass(frozen=True)
class TickStep:
    """One tick as the file stores it, checked: state arrays (14,) in the file's dtype, one
    (H, W, 3) uint8 frame per camera (in `camera_names` order), the control source as the file's
    bytes, the loop's mode as its /loop_mode code and the clipped joints as a (14,) bool mask.
    What `tick_step` makes of a `TickRecord`, and what the writer process rebuilds from its
    shared-memory ring (`recordings.writer_process`)."""

    tick_index: int
    qpos: np.ndarray
    qvel: np.ndarray
    effort: np.ndarray
    action: np.ndarray
    images: tuple[np.ndarray, ...]
    time_s: float
    image_times_s: tuple[float, ...]
    source: bytes
    sim_time_s: float
    mode: int
    clipped: np.ndarray


@dataclass(frozen=True)
class BadTick:
    """A tick that cannot be recorded: the recording stops there with `InvalidTick`."""

    tick_index: int
    problem: str


def tick_step(record: TickRecord, camera_names: Sequence[str]) -> TickStep | BadTick:
    """Check a tick record and turn it into what the file stores (any thread; ~20 us)."""
    obs = record.observation
    state = {}
    for name, value in (("qpos", obs.qpos), ("qvel", obs.qvel), ("effort", obs.effort), ("action", record.action)):
        try:
            array = np.asarray(value, dtype=schema.STATE_DTYPE)
        except (TypeError, ValueError) as error:
            return BadTick(record.index, f"{name} is not numeric: {error}")
        if array.shape != (STATE_DIM,):
            return BadTick(record.index, f"{name} has shape {array.shape}, expected ({STATE_DIM},)")
        state[name] = array
    frames = []
    for camera in camera_names:
        image = obs.images.get(camera) if obs.images is not None else None
        if image is None:
            return BadTick(record.index, f"camera {camera!r} sent no frame (cameras in the tick: {sorted(obs.images or {})})")
        problem = image_problem(image)
        if problem:
            return BadTick(record.index, f"camera {camera!r}: {problem}")
        frames.append(image)
    image_times = obs.image_times_s or {}
    source = record.source.value if hasattr(record.source, "value") else str(record.source)
    try:
        mode, clipped = mode_code(record.mode), clipped_mask(record.clipped)
    except (ValueError, KeyError) as error:
        return BadTick(record.index, f"the loop's mode or clipped joints cannot be recorded: {error}")
    return TickStep(
        tick_index=int(record.index),
        images=tuple(frames),
        time_s=float(obs.time_s),
        image_times_s=tuple(float(image_times.get(camera, np.nan)) for camera in camera_names),
        source=source.encode("ascii", "replace")[: schema.CONTROL_SOURCE_DTYPE.itemsize],
        sim_time_s=np.nan if record.sim_time_s is None else float(record.sim_time_s),
        mode=mode,
        clipped=clipped,
        **state,
    )
