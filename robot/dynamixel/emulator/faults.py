"""Faults injected into an emulated bus's replies on request: planned ones (the next n replies, of
one servo or of any, dropped, corrupted or delayed) and random ones (seeded drop/corrupt rates).

Owned by one `ServoBusEmulator`, which makes every call under its lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal


@dataclass
class _PlannedFault:
    kind: Literal["drop", "corrupt", "delay"]
    servo_id: int | None  # None: any servo
    remaining: int
    delay_s: float = 0.0


def _corrupt(packet: bytes) -> bytes:
    return packet[:-1] + bytes((packet[-1] ^ 0x5A,))  # a wrong CRC byte


class ReplyFaults:
    """What happens to each reply on its way to the host, and counts of what happened."""

    def __init__(self, seed: int = 0) -> None:
        self._planned: list[_PlannedFault] = []
        self._random: tuple[float, float] | None = None  # (drop, corrupt) probabilities
        self._rng = random.Random(seed)
        self.dropped = 0
        self.corrupted = 0
        self.delayed = 0

    def plan(self, kind: Literal["drop", "corrupt", "delay"], count: int, servo_id: int | None, delay_s: float = 0.0) -> None:
        """The next `count` replies (from `servo_id`, or any) suffer `kind`."""
        if count < 1:
            raise ValueError("a fault needs a count of at least 1")
        self._planned.append(_PlannedFault(kind, servo_id, count, delay_s))

    def set_random(self, drop: float, corrupt: float) -> None:
        self._random = (drop, corrupt)

    def apply(self, packet: bytes, servo_ids: tuple[int, ...]) -> tuple[bytes | None, float]:
        """(the reply as it reaches the host, None if never; its extra delay in s) for a reply
        carrying the blocks of `servo_ids`. At most one planned fault per reply, then the random one."""
        delay = 0.0
        for fault in list(self._planned):
            if fault.servo_id is not None and fault.servo_id not in servo_ids:
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._planned.remove(fault)
            if fault.kind == "drop":
                self.dropped += 1
                return None, 0.0
            if fault.kind == "corrupt":
                self.corrupted += 1
                packet = _corrupt(packet)
            elif fault.kind == "delay":
                self.delayed += 1
                delay += fault.delay_s
            break
        if self._random is not None:
            drop, corrupt = self._random
            r = self._rng.random()
            if r < drop:
                self.dropped += 1
                return None, 0.0
            if r < drop + corrupt:
                self.corrupted += 1
                packet = _corrupt(packet)
        return packet, delay
