"""A Dynamixel Protocol 2.0 servo bus emulated on a pseudo-terminal.

`ServoBusEmulator` opens a pty pair; dynamixel-sdk's PortHandler (pyserial underneath) opens the
slave path (`emulator.port_name`) exactly as it would open /dev/ttyUSB0. The emulator thread
reads instruction packets from the master side, runs them against its `EmulatedServo`s and writes
status packets back, so the bus under test runs the real SDK end to end.

What it models (the servos' own rules and physics: see `servo`):
- Framing (`protocol`): header, CRC-16, byte stuffing both ways, status packets with the error
  byte and the alert bit (bit 7) while Hardware_Error_Status is non-zero; CRC errors answered
  with error 3.
- Instructions: ping (also broadcast), read, write, reg write/action, factory reset, reboot,
  clear, sync read/write, fast sync read (firmware >= 45), bulk read/write; Status_Return_Level;
  Secondary_ID shadows that obey the primary's ID without replying.
- Timing: a half-duplex wire at the servos' baud rate. An instruction of n bytes occupies the wire
  for n x 10 / baud seconds (8N1) after it arrives; each reply then follows after the servo's
  Return_Delay_Time and is handed to the host only when its last byte would have arrived. Sync
  read replies queue one after another. So a 14-servo cycle costs really more wire time at
  1 Mbps than at 4 Mbps; the host side (SDK, pyserial, Python) costs the same at both. USB
  latency (FTDI latency timer) is not modelled beyond `usb_latency_ms`, default 0.
- Baud mismatch: the host's termios speed on the pty is compared with the servos' Baud_Rate; on
  a mismatch the servos hear noise and stay silent, as on a real bus.
- Faults on request (`drop_replies`, `corrupt_replies`, `delay_replies`, `set_random_faults`,
  `set_silent`, `inject_hardware_error`, `set_supply_voltage`, `set_temperature`).

Thread ownership: the emulator thread owns the servos; other threads (tests, the GUI's emulated
rig) call the public methods, which take `self._lock`.
"""

from __future__ import annotations

import heapq
import logging
import os
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping

from robot.dynamixel import control_table as ct
from robot.dynamixel.control_table import HardwareError
from robot.dynamixel.emulator.faults import ReplyFaults
from robot.dynamixel.emulator.motions import JointMotion, Push
from robot.dynamixel.emulator.servo import EmulatedServo
from robot.dynamixel.protocol import (
    BROADCAST_ID,
    MIN_PACKET_BYTES,
    BadPacket,
    ErrorNumber,
    Instruction,
    Packet,
    PacketParser,
    fast_sync_read_reply,
    from_le,
    le_bytes,
    status_packet,
)

log = logging.getLogger(__name__)

BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


def _termios_speeds() -> dict[int, int]:
    speeds = {}
    for rate in set(ct.BAUD_RATE_CODES.values()) | {38_400, 230_400, 460_800, 921_600, 3_500_000}:
        const = getattr(termios, f"B{rate}", None)
        if const is not None:
            speeds[const] = rate
    return speeds


@dataclass
class EmulatorStats:
    """Counters since start (read a copy with `ServoBusEmulator.stats`; the replies_dropped,
    _corrupted and _delayed counts are the fault plan's, `faults.ReplyFaults`)."""

    packets_in: int = 0
    bad_packets_in: int = 0
    replies_out: int = 0
    replies_dropped: int = 0
    replies_corrupted: int = 0
    replies_delayed: int = 0
    instructions: dict[str, int] = field(default_factory=dict)


# --- the bus --------------------------------------------------------------------------------------
class ServoBusEmulator:
    """Servos on one emulated serial bus, served from a pty by a background thread.

    Use as a context manager or call `start()`/`stop()`. `port_name` is the path to hand to
    dynamixel-sdk. All servos share one baud rate (that of the first servo's Baud_Rate).
    """

    def __init__(
        self,
        servos: Iterable[EmulatedServo],
        *,
        name: str = "emulated bus",
        usb_latency_ms: float = 0.0,
        idle_advance_ms: float = 20.0,
        reboot_time_ms: float = 30.0,
        seed: int = 0,
    ) -> None:
        self.servos: list[EmulatedServo] = list(servos)
        if not self.servos:
            raise ValueError("an emulated bus needs at least one servo")
        ids = [s.servo_id for s in self.servos]
        if len(set(ids)) != len(ids):
            raise ValueError(f"servo ids on one bus must be unique, got {ids}")
        self.name = name
        self.usb_latency_s = usb_latency_ms * 1e-3
        self._idle_advance_s = idle_advance_ms * 1e-3
        self._reboot_s = reboot_time_ms * 1e-3
        self._lock = threading.RLock()
        self._faults = ReplyFaults(seed)
        self._stats = EmulatorStats()
        self._out: list[tuple[float, int, bytes]] = []  # heap of (due time, seq, bytes)
        self._seq = 0
        self._wire_free_t = 0.0
        self._last_packet_t = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._master_fd = -1
        self._slave_fd = -1
        self.port_name = ""
        self._speeds = _termios_speeds()
        self._warned_baud = False
        self._crash: BaseException | None = None

    # -- lifecycle --
    def start(self) -> "ServoBusEmulator":
        if self._thread is not None:
            return self
        self._master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)  # no echo, no CR/LF translation before the SDK opens it
        self.port_name = os.ttyname(self._slave_fd)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"dxl-emulator {self.name}", daemon=True)
        self._thread.start()
        log.info("%s serving %d servos on %s at %d baud", self.name, len(self.servos), self.port_name, self.baud_rate)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._thread = None
        for fd in (self._master_fd, self._slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master_fd = self._slave_fd = -1
        if self._crash is not None:
            raise RuntimeError(f"{self.name} crashed: {self._crash!r}") from self._crash

    def __enter__(self) -> "ServoBusEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def baud_rate(self) -> int:
        return self.servos[0].baud_rate

    # -- inspection and faults (any thread) --
    def servo(self, servo_id: int) -> EmulatedServo:
        """The servo with this id (its state as of the last packet; see `read_register`)."""
        for s in self.servos:
            if s.servo_id == servo_id:
                return s
        raise KeyError(f"no emulated servo with id {servo_id} on {self.name}")

    def read_register(self, servo_id: int, name: str) -> int:
        """A register as the servo would report it now."""
        with self._lock:
            self._advance_all(time.monotonic())
            return self.servo(servo_id).get(name)

    def write_register(self, servo_id: int, name: str, value: int) -> None:
        """Set a register behind the bus's back (test set-up), without any checks."""
        with self._lock:
            self._advance_all(time.monotonic())
            self.servo(servo_id).set(name, value)

    def set_position_rad(self, servo_id: int, position_rad: float) -> None:
        with self._lock:
            self._advance_all(time.monotonic())
            self.servo(servo_id).place(position_rad)

    def position_rad(self, servo_id: int) -> float:
        with self._lock:
            self._advance_all(time.monotonic())
            return self.servo(servo_id).position_rad

    def attach_motion(self, servo_id: int, motion: JointMotion | None) -> None:
        """A hand moving this servo whenever its torque is off (leader arms)."""
        with self._lock:
            self._advance_all(time.monotonic())
            self.servo(servo_id).attach_motion(motion)

    def attach_push(self, servo_id: int, push: Push | None) -> None:
        """A hand grabbing this servo's joint even while its torque is on (None: it lets go)."""
        with self._lock:
            self._advance_all(time.monotonic())
            self.servo(servo_id).attach_push(push)

    def drop_replies(self, count: int = 1, servo_id: int | None = None) -> None:
        """The next `count` replies (from `servo_id`, or any) never reach the host."""
        with self._lock:
            self._faults.plan("drop", count, servo_id)

    def corrupt_replies(self, count: int = 1, servo_id: int | None = None) -> None:
        """The next `count` replies arrive with a wrong CRC."""
        with self._lock:
            self._faults.plan("corrupt", count, servo_id)

    def delay_replies(self, delay_ms: float, count: int = 1, servo_id: int | None = None) -> None:
        """The next `count` replies arrive `delay_ms` late."""
        with self._lock:
            self._faults.plan("delay", count, servo_id, delay_ms * 1e-3)

    def set_random_faults(self, drop: float = 0.0, corrupt: float = 0.0) -> None:
        """Drop/corrupt each reply with these probabilities (seeded; for soak tests and benchmarks)."""
        with self._lock:
            self._faults.set_random(drop, corrupt)

    def set_silent(self, servo_id: int, silent: bool = True) -> None:
        """The servo stops hearing and answering anything (unplugged cable, dead board)."""
        with self._lock:
            self.servo(servo_id).silent = silent

    def inject_hardware_error(self, servo_id: int, bits: HardwareError) -> None:
        """Set Hardware_Error_Status bits; a bit in Shutdown(63) also cuts the torque."""
        with self._lock:
            self._advance_all(time.monotonic())
            self.servo(servo_id).raise_hardware_error(bits)

    def set_supply_voltage(self, supply_v: float) -> None:
        """The power supply of the whole bus (a sagging or wrong supply)."""
        with self._lock:
            self._advance_all(time.monotonic())
            for s in self.servos:
                s.supply_v = supply_v

    def set_temperature(self, servo_id: int, temperature_c: float) -> None:
        with self._lock:
            self._advance_all(time.monotonic())
            self.servo(servo_id).set_temperature(temperature_c)

    @property
    def stats(self) -> EmulatorStats:
        with self._lock:
            f = self._faults
            return replace(self._stats, instructions=dict(self._stats.instructions),
                           replies_dropped=f.dropped, replies_corrupted=f.corrupted, replies_delayed=f.delayed)

    # -- the thread --
    def _run(self) -> None:
        parser = PacketParser()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = self._idle_advance_s
                if self._out:
                    timeout = max(0.0, min(timeout, self._out[0][0] - now))
                readable, _, _ = select.select([self._master_fd], [], [], timeout)
                now = time.monotonic()
                if readable:
                    try:
                        data = os.read(self._master_fd, 4096)
                    except OSError:
                        data = b""
                    if data:
                        items = parser.feed(data)
                        if items:
                            with self._lock:
                                for item in items:
                                    self._handle(item, now)
                self._flush_due(time.monotonic())
                if not readable:
                    with self._lock:
                        self._advance_all(time.monotonic())
        except BaseException as exc:  # surfaced by stop(); a dead emulator must not look like silent servos
            log.exception("%s crashed", self.name)
            self._crash = exc

    def _advance_all(self, now: float) -> None:
        for s in self.servos:
            s.advance(now, self._last_packet_t)

    def _flush_due(self, now: float) -> None:
        while self._out and self._out[0][0] <= now:
            _, _, data = heapq.heappop(self._out)
            try:
                os.write(self._master_fd, data)
            except OSError:
                return

    def _host_baud(self) -> int | None:
        try:
            speed = termios.tcgetattr(self._slave_fd)[4]
        except termios.error:
            return None
        return self._speeds.get(speed)

    def _byte_s(self) -> float:
        return BITS_PER_BYTE / self.baud_rate

    # -- packet handling (emulator thread, under the lock) --
    def _handle(self, item: Packet | BadPacket, now: float) -> None:
        host_baud = self._host_baud()
        if host_baud is not None and host_baud != self.baud_rate:
            if not self._warned_baud:
                log.warning("%s: host opened the port at %d baud, servos run at %d: they hear noise",
                            self.name, host_baud, self.baud_rate)
                self._warned_baud = True
            return
        self._stats.packets_in += 1
        raw_len = MIN_PACKET_BYTES + (len(item.params) if isinstance(item, Packet) else 0)
        start = max(now, self._wire_free_t)
        t_received = start + raw_len * self._byte_s()
        self._wire_free_t = t_received
        if isinstance(item, BadPacket):
            self._stats.bad_packets_in += 1
            target = self._primary(item.servo_id)
            if target is not None and item.servo_id != BROADCAST_ID:
                self._reply(target, t_received, ErrorNumber.CRC)
            return
        if item.error is not None:
            return  # another device's status packet; servos ignore those
        self._advance_all(now)
        self._last_packet_t = now
        try:
            name = Instruction(item.instruction).name
        except ValueError:
            name = f"0x{item.instruction:02X}"
        self._stats.instructions[name] = self._stats.instructions.get(name, 0) + 1
        handler = _HANDLERS.get(item.instruction)
        if handler is None:
            target = self._primary(item.servo_id)
            if target is not None:
                self._reply(target, t_received, ErrorNumber.INSTRUCTION)
            return
        handler(self, item, t_received)

    def _alive(self, s: EmulatedServo, t: float) -> bool:
        return not s.silent and t >= s.rebooting_until

    def _primary(self, servo_id: int) -> EmulatedServo | None:
        for s in self.servos:
            if s.servo_id == servo_id and self._alive(s, time.monotonic()):
                return s
        return None

    def _addressed(self, servo_id: int, t: float) -> tuple[EmulatedServo | None, list[EmulatedServo]]:
        """(the servo whose ID matches, servos obeying it through Secondary_ID without replying)."""
        primary = None
        shadows = []
        for s in self.servos:
            if not self._alive(s, t):
                continue
            if s.servo_id == servo_id:
                primary = s
            elif s.secondary_id == servo_id:
                shadows.append(s)
        return primary, shadows

    def _reply(self, servo: EmulatedServo, t_ready: float, error: int, params: bytes = b"", *, level: int = 2) -> float:
        """Queue a status packet if the servo's Status_Return_Level (0: ping only, 1: + reads,
        2: all) allows replies of `level`; returns when the wire is free again."""
        if servo.get("Status_Return_Level") < level:
            return t_ready
        packet = status_packet(servo.servo_id, servo.status_error(error), params)
        return self._queue(packet, (servo.servo_id,), t_ready + servo.return_delay_s)

    def _queue(self, packet: bytes, servo_ids: tuple[int, ...], t_start: float) -> float:
        t_start = max(t_start, self._wire_free_t)
        t_end = t_start + len(packet) * self._byte_s()
        self._wire_free_t = t_end
        packet, extra_delay = self._faults.apply(packet, servo_ids)
        if packet is None:
            return t_end
        self._stats.replies_out += 1
        self._seq += 1
        heapq.heappush(self._out, (t_end + self.usb_latency_s + extra_delay, self._seq, packet))
        return t_end

    # -- instructions --
    def _ping(self, p: Packet, t: float) -> None:
        def params(s: EmulatedServo) -> bytes:
            return le_bytes(s.get("Model_Number"), 2) + bytes((s.get("Firmware_Version"),))

        if p.servo_id == BROADCAST_ID:
            for s in sorted(self.servos, key=lambda s: s.servo_id):
                if self._alive(s, t):
                    t = self._reply(s, t, ErrorNumber.NONE, params(s), level=0)
            return
        primary, _ = self._addressed(p.servo_id, t)
        if primary is not None:  # ping to a Secondary_ID gets no answer (rule 4)
            self._reply(primary, t, ErrorNumber.NONE, params(primary), level=0)

    def _read(self, p: Packet, t: float) -> None:
        if len(p.params) != 4:
            self._reply_if(p.servo_id, t, ErrorNumber.DATA_LENGTH)
            return
        address, length = from_le(p.params[0:2]), from_le(p.params[2:4])
        primary, _ = self._addressed(p.servo_id, t)
        if primary is None or p.servo_id == BROADCAST_ID:
            return
        err, data = primary.read(address, length)
        self._reply(primary, t, err, data, level=1)

    def _write(self, p: Packet, t: float) -> None:
        if len(p.params) < 3:
            self._reply_if(p.servo_id, t, ErrorNumber.DATA_LENGTH)
            return
        address, data = from_le(p.params[0:2]), p.params[2:]
        if p.servo_id == BROADCAST_ID:
            for s in self.servos:
                if self._alive(s, t):
                    s.write(address, data)
            return
        primary, err = self._write_addressed(p.servo_id, address, data, t)
        if primary is not None:
            self._reply(primary, t, err)

    def _reg_write(self, p: Packet, t: float) -> None:
        address, data = from_le(p.params[0:2]), p.params[2:]
        if p.servo_id == BROADCAST_ID:
            for s in self.servos:
                if self._alive(s, t):
                    s.register_write(address, data)
            return
        primary, shadows = self._addressed(p.servo_id, t)
        for s in shadows:
            s.register_write(address, data)
        if primary is not None:
            self._reply(primary, t, primary.register_write(address, data))

    def _action(self, p: Packet, t: float) -> None:
        if p.servo_id == BROADCAST_ID:
            for s in self.servos:
                if self._alive(s, t):
                    s.action()
            return
        primary, shadows = self._addressed(p.servo_id, t)
        for s in shadows:
            s.action()
        if primary is not None:
            self._reply(primary, t, primary.action())

    def _reboot(self, p: Packet, t: float) -> None:
        targets = (
            [s for s in self.servos if self._alive(s, t)]
            if p.servo_id == BROADCAST_ID
            else [s for s in [self._addressed(p.servo_id, t)[0]] if s is not None]
        )
        for s in targets:
            if p.servo_id != BROADCAST_ID:
                self._reply(s, t, ErrorNumber.NONE)
            s.reboot(time.monotonic(), self._reboot_s)

    def _factory_reset(self, p: Packet, t: float) -> None:
        option = p.params[0] if p.params else 0xFF
        if p.servo_id == BROADCAST_ID:
            if option == 0xFF:
                return  # refused by firmware 42+: it would give every servo ID 1
            for s in self.servos:
                if self._alive(s, t) and not s.torque_on:
                    s.factory_reset(option)
            return
        primary, _ = self._addressed(p.servo_id, t)
        if primary is None:
            return
        if primary.torque_on:
            self._reply(primary, t, ErrorNumber.ACCESS)
            return
        self._reply(primary, t, ErrorNumber.NONE)
        primary.factory_reset(option)

    def _clear(self, p: Packet, t: float) -> None:
        primary, _ = self._addressed(p.servo_id, t)
        if primary is None or p.servo_id == BROADCAST_ID:
            return
        if p.params[:5] != bytes((0x01, 0x44, 0x58, 0x4C, 0x22)):
            self._reply(primary, t, ErrorNumber.DATA_RANGE)
            return
        self._reply(primary, t, primary.clear_multi_turn())

    def _sync_read(self, p: Packet, t: float, fast: bool = False) -> None:
        if p.servo_id != BROADCAST_ID or len(p.params) < 5:
            return
        address, length = from_le(p.params[0:2]), from_le(p.params[2:4])
        ids = list(p.params[4:])
        blocks: list[tuple[int, int, bytes]] = []
        for sid in ids:
            primary, _ = self._addressed(sid, t)
            if primary is None:
                if fast:
                    break  # the chain stops: later servos wait for a block that never comes
                continue
            err, data = primary.read(address, length)
            if fast:
                if primary.get("Firmware_Version") < ct.FAST_SYNC_READ_MIN_FIRMWARE or primary.get("Status_Return_Level") < 1:
                    break  # old firmware treats 0x8A as unknown and never joins the chain
                blocks.append((sid, primary.status_error(err), data if not err else bytes(length)))
            else:
                t = self._reply(primary, t, err, data, level=1)
        if fast and blocks:
            delay = sum(self.servo(sid).return_delay_s for sid, _, _ in blocks)
            # Servos after a missing one never transmit: the packet ends short of its LEN.
            packet = fast_sync_read_reply(blocks, expected_blocks=len(ids))
            self._queue(packet, tuple(sid for sid, _, _ in blocks), t + delay)

    def _fast_sync_read(self, p: Packet, t: float) -> None:
        self._sync_read(p, t, fast=True)

    def _sync_write(self, p: Packet, t: float) -> None:
        if p.servo_id != BROADCAST_ID or len(p.params) < 5:
            return
        address, length = from_le(p.params[0:2]), from_le(p.params[2:4])
        body = p.params[4:]
        if length <= 0 or len(body) % (length + 1):
            return
        for i in range(0, len(body), length + 1):
            sid, data = body[i], body[i + 1 : i + 1 + length]
            self._write_addressed(sid, address, data, t)

    def _bulk_read(self, p: Packet, t: float) -> None:
        if p.servo_id != BROADCAST_ID or len(p.params) % 5:
            return
        for i in range(0, len(p.params), 5):
            sid = p.params[i]
            address, length = from_le(p.params[i + 1 : i + 3]), from_le(p.params[i + 3 : i + 5])
            primary, _ = self._addressed(sid, t)
            if primary is None:
                continue
            err, data = primary.read(address, length)
            t = self._reply(primary, t, err, data, level=1)

    def _bulk_write(self, p: Packet, t: float) -> None:
        if p.servo_id != BROADCAST_ID:
            return
        body = p.params
        i = 0
        while i + 5 <= len(body):
            sid = body[i]
            address, length = from_le(body[i + 1 : i + 3]), from_le(body[i + 3 : i + 5])
            data = body[i + 5 : i + 5 + length]
            i += 5 + length
            self._write_addressed(sid, address, data, t)

    def _write_addressed(self, servo_id: int, address: int, data: bytes, t: float) -> tuple[EmulatedServo | None, int]:
        """Write to the servo with this ID and to those obeying it through Secondary_ID (each
        servo's write touches only itself, so the order is free); (that servo, its error)."""
        primary, shadows = self._addressed(servo_id, t)
        for s in shadows:
            s.write(address, data, via_secondary=True)
        return primary, (primary.write(address, data) if primary is not None else ErrorNumber.NONE)

    def _reply_if(self, servo_id: int, t: float, error: int) -> None:
        if servo_id != BROADCAST_ID:
            primary, _ = self._addressed(servo_id, t)
            if primary is not None:
                self._reply(primary, t, error)


_HANDLERS: Mapping[int, Callable[[ServoBusEmulator, Packet, float], None]] = {
    Instruction.PING: ServoBusEmulator._ping,
    Instruction.READ: ServoBusEmulator._read,
    Instruction.WRITE: ServoBusEmulator._write,
    Instruction.REG_WRITE: ServoBusEmulator._reg_write,
    Instruction.ACTION: ServoBusEmulator._action,
    Instruction.FACTORY_RESET: ServoBusEmulator._factory_reset,
    Instruction.REBOOT: ServoBusEmulator._reboot,
    Instruction.CLEAR: ServoBusEmulator._clear,
    Instruction.SYNC_READ: ServoBusEmulator._sync_read,
    Instruction.FAST_SYNC_READ: ServoBusEmulator._fast_sync_read,
    Instruction.SYNC_WRITE: ServoBusEmulator._sync_write,
    Instruction.BULK_READ: ServoBusEmulator._bulk_read,
    Instruction.BULK_WRITE: ServoBusEmulator._bulk_write,
}

