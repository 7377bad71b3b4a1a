"""Dynamixel Protocol 2.0 framing: CRC-16, byte stuffing, instruction and status packets.

This is our own implementation of the wire format (e-manual "Protocol 2.0"), used by the bus
emulator. The bus itself talks through dynamixel-sdk, so the two sides of every test are
independent implementations of the same spec: a framing bug on either side shows up as a failure.

Packet layout (all multi-byte fields little-endian):

    FF FF FD 00 | ID | LEN_L LEN_H | INST | [ERR] | PARAM... | CRC_L CRC_H

LEN counts INST, ERR (status packets only), the parameters and the two CRC bytes, *after* byte
stuffing. Stuffing: inside INST..PARAM, every "FF FF FD" gets an extra FD ("FF FF FD FD") so that a
receiver never mistakes data for a header. The CRC covers the stuffed packet from the first header
byte to the last parameter.

Fast Sync Read (0x8A) replies are the exception: one packet for all servos, never stuffed, with an
inner CRC after each servo's block that covers the whole packet up to that block.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC  # 253 (0xFD) and 255 are never IDs: they would look like a header
MIN_PACKET_BYTES = 10  # header(4) + id + len(2) + inst + crc(2)


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93


class ErrorNumber(enum.IntEnum):
    """Bits 0-6 of a status packet's error byte (one number, not flags)."""

    NONE = 0x00
    RESULT_FAIL = 0x01
    INSTRUCTION = 0x02
    CRC = 0x03
    DATA_RANGE = 0x04
    DATA_LENGTH = 0x05
    DATA_LIMIT = 0x06
    ACCESS = 0x07


#: Bit 7 of the status error byte: the servo has a hardware error (see Hardware_Error_Status).
ALERT_BIT = 0x80

ERROR_TEXT = {
    ErrorNumber.RESULT_FAIL: "the servo failed to process the instruction",
    ErrorNumber.INSTRUCTION: "undefined instruction, or Action without a Reg Write",
    ErrorNumber.CRC: "the servo received a packet with a bad CRC",
    ErrorNumber.DATA_RANGE: "value out of the register's range",
    ErrorNumber.DATA_LENGTH: "data shorter than the register",
    ErrorNumber.DATA_LIMIT: "value beyond the configured limit",
    ErrorNumber.ACCESS: "register is read-only, undefined, or EEPROM while torque is on",
}


def _make_crc_table() -> tuple[int, ...]:
    # CRC-16/BUYPASS: polynomial 0x8005, MSB first, no reflection, initial value 0.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The Protocol 2.0 CRC of `data`, continuing from `crc` (0 starts a packet)."""
    table = CRC_TABLE
    for b in data:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Add the stuffing byte after every FF FF FD in `body` (INST..PARAM of a packet).

    The header's FF FF FD precedes the body, so a body starting with "FD" after the header's
    "FF FF" can't happen: the byte before the body is the high length byte, never part of the match.
    """
    out = bytearray()
    for b in body:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-2] == 0xFF and out[-3] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Remove the stuffing byte from every FF FF FD FD in `body` (inverse of `stuff`)."""
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        b = body[i]
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-2] == 0xFF and out[-3] == 0xFF and i + 1 < n and body[i + 1] == 0xFD:
            i += 1  # skip the stuffing byte
        i += 1
    return bytes(out)


def _frame(servo_id: int, body: bytes) -> bytes:
    length = len(body) + 2
    head = HEADER + bytes((servo_id & 0xFF, length & 0xFF, length >> 8))
    crc = crc16(body, crc16(head))
    return head + body + bytes((crc & 0xFF, crc >> 8))


def instruction_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete, stuffed instruction packet with its CRC."""
    if not 0 <= servo_id <= BROADCAST_ID or servo_id == 0xFD:
        raise ValueError(f"servo id must be 0..252 or 254 (broadcast), got {servo_id}")
    return _frame(servo_id, stuff(bytes((instruction,)) + bytes(params)))


def status_packet(servo_id: int, error: int, params: bytes = b"") -> bytes:
    """A complete, stuffed status packet (instruction 0x55) with its CRC."""
    return _frame(servo_id, stuff(bytes((Instruction.STATUS, error & 0xFF)) + bytes(params)))


def fast_sync_read_reply(blocks: list[tuple[int, int, bytes]], expected_blocks: int | None = None) -> bytes:
    """The single status packet answering a Fast Sync Read, built by the servos in turn.

    blocks: (servo_id, error, data) per responding servo, in the order of the request. The packet
    ID is broadcast; the first block's error sits in the usual error field; each block ends with
    the CRC of the packet so far (the last one is the packet CRC). Never stuffed.
    expected_blocks: how many servos the request named. The first servo writes LEN for all of
    them, so when a later one is missing the packet comes out shorter than its LEN says.
    """
    if not blocks:
        raise ValueError("a fast sync read reply needs at least one servo block")
    n = len(blocks) if expected_blocks is None else expected_blocks
    block_len = 4 + len(blocks[0][2])
    payload_len = 1 + n * block_len  # INST + (ERR ID DATA CRC) per servo
    packet = bytearray(HEADER + bytes((BROADCAST_ID, payload_len & 0xFF, payload_len >> 8, Instruction.STATUS)))
    for servo_id, error, data in blocks:
        packet += bytes((error & 0xFF, servo_id)) + bytes(data)
        crc = crc16(packet)
        packet += bytes((crc & 0xFF, crc >> 8))
    return bytes(packet)


@dataclass(frozen=True)
class Packet:
    """A received packet, unstuffed. `error` is None for instruction packets."""

    servo_id: int
    instruction: int
    params: bytes
    error: int | None = None


class PacketParser:
    """Incremental receiver: feed bytes as they arrive, take complete packets out.

    Garbage before a header is skipped. A packet with a bad CRC is reported once as a
    `BadPacket` entry (the sender should get a CRC error when it addressed one servo) and dropped.
    Not thread-safe: one owner (the emulator thread).
    """

    def __init__(self, max_length: int = 1024) -> None:
        self._buf = bytearray()
        self._max_length = max_length

    def feed(self, data: bytes) -> list["Packet | BadPacket"]:
        self._buf += data
        out: list[Packet | BadPacket] = []
        while True:
            start = self._find_header()
            if start < 0:
                # Keep a possible partial header at the end.
                keep = 3 if len(self._buf) >= 3 else len(self._buf)
                del self._buf[: len(self._buf) - keep]
                return out
            del self._buf[:start]
            if len(self._buf) < 7:
                return out
            servo_id = self._buf[4]
            length = self._buf[5] | (self._buf[6] << 8)
            if length < 3 or length > self._max_length or servo_id in (0xFD, 0xFF):
                del self._buf[:1]  # not a real header; resync
                continue
            total = 7 + length
            if len(self._buf) < total:
                return out
            raw = bytes(self._buf[:total])
            del self._buf[:total]
            crc = raw[-2] | (raw[-1] << 8)
            if crc16(raw[:-2]) != crc:
                out.append(BadPacket(servo_id=servo_id, instruction=raw[7], reason="crc"))
                continue
            body = unstuff(raw[7:-2])
            instruction = body[0]
            if instruction == Instruction.STATUS:
                out.append(Packet(servo_id, instruction, bytes(body[2:]), error=body[1] if len(body) > 1 else 0))
            else:
                out.append(Packet(servo_id, instruction, bytes(body[1:])))

    def _find_header(self) -> int:
        buf = self._buf
        i = buf.find(b"\xff\xff\xfd")
        while i >= 0:
            # "FF FF FD FD" is stuffed data, not a header; the reserved byte is never FD.
            if i + 3 >= len(buf) or buf[i + 3] != 0xFD:
                return i
            i = buf.find(b"\xff\xff\xfd", i + 1)
        return -1


@dataclass(frozen=True)
class BadPacket:
    """A frame that looked like a packet but failed its check (reason: 'crc')."""

    servo_id: int
    instruction: int
    reason: str


def le_bytes(value: int, size: int) -> bytes:
    """`value` as `size` little-endian bytes (two's complement for negatives)."""
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def from_le(data: bytes, signed: bool = False) -> int:
    """Little-endian bytes -> int."""
    return int.from_bytes(bytes(data), "little", signed=signed)
