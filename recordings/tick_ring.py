"""A ring of tick slots in shared memory: the control thread copies each tick in, the writer
process takes it out (`recordings.writer_process`).

The memory is an anonymous `memfd` (no name in /dev/shm to leak after a kill -9: it is freed
when the last process holding it exits), handed to the writer process over its socket. Layout,
computed the same way on both sides from `RingLayout`:

    header   64 bytes: int64 produced (ticks put, control thread), int64 consumed (ticks taken,
             writer process); each side only writes its own counter
    slots    `slots` records of `RingLayout.slot_dtype`: the tick's index, times, control source,
             loop mode code, clipped joints (14,) bool, state arrays (4, 14) float32, each
             frame's shape, and a problem text for a tick that cannot be recorded
    frames   per camera, `slots` x `frame_bytes` uint8

A slot is written completely before `produced` moves past it, and read completely before
`consumed` does (x86 keeps stores in order; the counters are aligned int64s).

Threads: `put` from the one producing thread (the control thread), `take` from the one consumer
(the writer process's main thread), `in_flight` from either.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np

from recordings import schema
from recordings.tick_step import BadTick, TickStep, tick_step
from robot.types import STATE_DIM, TickRecord

HEADER_BYTES = 64
PROBLEM_BYTES = 320
#: Frame size a ring allows when the cameras' frames are not known yet (1280x720 RGB); pages of
#: the memfd that are never written take no memory.
DEFAULT_FRAME_BYTES = 1280 * 720 * 3


@dataclass(frozen=True)
class RingLayout:
    """What both processes need to map the same ring: its slot count, the camera names (frame
    order) and the most bytes one frame of each camera may have."""

    slots: int
    camera_names: tuple[str, ...]
    frame_bytes: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.slots < 2 or len(self.frame_bytes) != len(self.camera_names):
            raise ValueError(f"a tick ring needs >= 2 slots and one frame size per camera, got {self}")

    @property
    def slot_dtype(self) -> np.dtype:
        n = len(self.camera_names)
        return np.dtype(
            [
                ("tick_index", np.int64),
                ("time_s", schema.TIME_DTYPE),
                ("sim_time_s", schema.TIME_DTYPE),
                ("image_times_s", schema.TIME_DTYPE, (n,)),
                ("state", schema.STATE_DTYPE, (4, STATE_DIM)),
                ("shapes", np.int32, (n, 3)),
                ("source", schema.CONTROL_SOURCE_DTYPE),
                ("mode", schema.LOOP_MODE_BASE_DTYPE),
                ("clipped", schema.CLIPPED_DTYPE, (STATE_DIM,)),
                ("bad", np.uint8),
                ("problem", f"S{PROBLEM_BYTES}"),
            ]
        )

    @property
    def slot_table_bytes(self) -> int:
        return _round_up(self.slots * self.slot_dtype.itemsize, 4096)

    @property
    def total_bytes(self) -> int:
        return HEADER_BYTES + self.slot_table_bytes + sum(_round_up(self.slots * b, 4096) for b in self.frame_bytes)


class TickRing:
    """One mapping of a ring (either side). `create` makes the memory, `attach` maps a received
    one; `fd` is what to hand to the other process; `close` unmaps and closes this side."""

    def __init__(self, layout: RingLayout, fd: int) -> None:
        self.layout = layout
        self.fd = fd
        self._map = mmap.mmap(fd, layout.total_bytes)
        buffer = memoryview(self._map)
        self._counters = np.frombuffer(buffer, dtype=np.int64, count=2, offset=0)
        self._slots = np.frombuffer(buffer, dtype=layout.slot_dtype, count=layout.slots, offset=HEADER_BYTES)
        self._frames = []
        offset = HEADER_BYTES + layout.slot_table_bytes
        for frame_bytes in layout.frame_bytes:
            pool = np.frombuffer(buffer, dtype=np.uint8, count=layout.slots * frame_bytes, offset=offset)
            self._frames.append(pool.reshape(layout.slots, frame_bytes))
            offset += _round_up(layout.slots * frame_bytes, 4096)

    @classmethod
    def create(cls, layout: RingLayout) -> "TickRing":
        fd = os.memfd_create("episode-tick-ring", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, layout.total_bytes)
            return cls(layout, fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, layout: RingLayout, fd: int) -> "TickRing":
        return cls(layout, fd)

    # ---- counters
    @property
    def produced(self) -> int:
        return int(self._counters[0])

    @property
    def consumed(self) -> int:
        return int(self._counters[1])

    @property
    def in_flight(self) -> int:
        return int(self._counters[0] - self._counters[1])

    def skip_to(self, produced: int) -> None:
        """Consumer: take nothing put before `produced` (a new episode starts there)."""
        self._counters[1] = produced

    # ---- producer (control thread)
    def put(self, record: TickRecord) -> bool:
        """Copy the tick into the next slot; False (nothing written) when the ring is full.

        A tick that cannot be recorded (missing camera, wrong dtype, a frame larger than the
        ring's) goes in as a problem, which ends the recording with `InvalidTick` there."""
        produced = int(self._counters[0])
        if produced - int(self._counters[1]) >= self.layout.slots:
            return False
        index = produced % self.layout.slots
        slot = self._slots[index]
        step = tick_step(record, self.layout.camera_names)
        if isinstance(step, TickStep):
            for camera, image, limit in zip(self.layout.camera_names, step.images, self.layout.frame_bytes):
                if image.nbytes > limit:
                    step = BadTick(step.tick_index, f"camera {camera!r}: frame of shape {image.shape} is larger than "
                                                    f"the recorder's frame buffer ({limit} bytes)")
                    break
        slot["tick_index"] = step.tick_index
        if isinstance(step, BadTick):
            slot["bad"] = 1
            slot["problem"] = step.problem.encode("utf-8", "replace")[:PROBLEM_BYTES]
        else:
            slot["bad"] = 0
            slot["time_s"] = step.time_s
            slot["sim_time_s"] = step.sim_time_s
            slot["image_times_s"] = step.image_times_s
            state = slot["state"]
            state[0], state[1], state[2], state[3] = step.qpos, step.qvel, step.effort, step.action
            slot["source"] = step.source
            slot["mode"] = step.mode
            slot["clipped"] = step.clipped
            for k, image in enumerate(step.images):
                slot["shapes"][k] = image.shape
                self._frames[k][index, : image.nbytes].reshape(image.shape)[...] = image
        self._counters[0] = produced + 1
        return True

    # ---- consumer (writer process)
    def take(self) -> TickStep | BadTick | None:
        """The oldest tick not yet taken, copied out of the ring (None when there is none)."""
        consumed = int(self._counters[1])
        if consumed >= int(self._counters[0]):
            return None
        index = consumed % self.layout.slots
        slot = self._slots[index].copy()
        if slot["bad"]:
            step: TickStep | BadTick = BadTick(int(slot["tick_index"]), slot["problem"].decode("utf-8", "replace"))
        else:
            images = []
            for k, shape in enumerate(slot["shapes"]):
                shape = tuple(int(v) for v in shape)
                count = int(np.prod(shape))
                images.append(self._frames[k][index, :count].reshape(shape).copy())
            state = slot["state"]
            step = TickStep(
                tick_index=int(slot["tick_index"]),
                qpos=state[0].copy(),
                qvel=state[1].copy(),
                effort=state[2].copy(),
                action=state[3].copy(),
                images=tuple(images),
                time_s=float(slot["time_s"]),
                image_times_s=tuple(float(v) for v in slot["image_times_s"]),
                source=bytes(slot["source"]),
                sim_time_s=float(slot["sim_time_s"]),
                mode=int(slot["mode"]),
                clipped=slot["clipped"].copy(),
            )
        self._counters[1] = consumed + 1
        return step

    def close(self) -> None:
        self._counters = self._slots = None
        self._frames = []
        try:
            self._map.close()
        except BufferError:  # a view still alive somewhere: the mapping goes with the process
            pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _round_up(value: int, to: int) -> int:
    return (value + to - 1) // to * to
