"""Protocol 2.0 framing against the e-manual's example packets and against dynamixel-sdk."""

import random

import pytest
from dynamixel_sdk import Protocol2PacketHandler

from robot.dynamixel.protocol import (
    BadPacket,
    Instruction,
    Packet,
    PacketParser,
    crc16,
    fast_sync_read_reply,
    instruction_packet,
    status_packet,
    stuff,
    unstuff,
)

# (packet without its CRC, CRC low, CRC high), from the e-manual's Protocol 2.0 page.
EMANUAL_PACKETS = [
    ("FF FF FD 00 01 03 00 01", 0x19, 0x4E),  # ping ID 1
    ("FF FF FD 00 01 07 00 55 00 06 04 26", 0x65, 0x5D),  # its status: model 1030, firmware 38
    ("FF FF FD 00 FE 03 00 01", 0x31, 0x42),  # broadcast ping
    ("FF FF FD 00 02 07 00 55 00 06 04 26", 0x6F, 0x6D),
    ("FF FF FD 00 01 07 00 02 84 00 04 00", 0x1D, 0x15),  # read Present_Position
    ("FF FF FD 00 01 08 00 55 00 A6 00 00 00", 0x8C, 0xC0),
    ("FF FF FD 00 01 09 00 03 74 00 00 02 00 00", 0xCA, 0x89),  # write Goal_Position 512
    ("FF FF FD 00 01 04 00 55 00", 0xA1, 0x0C),
    ("FF FF FD 00 01 03 00 08", 0x2F, 0x4E),  # reboot
    ("FF FF FD 00 FE 09 00 82 84 00 04 00 01 02", 0xCE, 0xFA),  # sync read
    ("FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00", 0x82, 0x87),  # sync write
    ("FF FF FD 00 FE 0D 00 92 01 90 00 02 00 02 92 00 01 00", 0x1A, 0x05),  # bulk read
]


@pytest.mark.parametrize("hex_body, lo, hi", EMANUAL_PACKETS)
def test_crc_matches_the_emanual_examples(hex_body, lo, hi):
    body = bytes.fromhex(hex_body)
    assert crc16(body) == lo | (hi << 8)
    assert Protocol2PacketHandler().updateCRC(0, list(body), len(body)) == lo | (hi << 8)


def test_builders_reproduce_the_emanual_packets_byte_for_byte():
    assert instruction_packet(1, Instruction.PING) == bytes.fromhex("FF FF FD 00 01 03 00 01 19 4E")
    assert instruction_packet(1, Instruction.WRITE, bytes.fromhex("74 00 00 02 00 00")) == bytes.fromhex(
        "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89")
    assert status_packet(1, 0, bytes.fromhex("06 04 26")) == bytes.fromhex("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D")
    assert status_packet(2, 0, bytes.fromhex("1F 08 00 00")) == bytes.fromhex(
        "FF FF FD 00 02 08 00 55 00 1F 08 00 00 BA BE")


def test_crc_continues_across_chunks():
    data = bytes(range(200))
    assert crc16(data[120:], crc16(data[:120])) == crc16(data)


def test_stuffing_adds_fd_after_every_header_pattern_and_lengthens_the_packet():
    body = bytes.fromhex("03 74 00 FF FF FD 00")
    assert stuff(body) == bytes.fromhex("03 74 00 FF FF FD FD 00")
    packet = instruction_packet(1, Instruction.WRITE, bytes.fromhex("74 00 FF FF FD 00"))
    assert packet[5] == 10  # LEN counts the stuffing byte: INST + 6 params + FD + CRC(2)
    assert b"\xff\xff\xfd\xfd" in packet


def test_stuffing_matches_the_sdk_and_round_trips():
    rng = random.Random(7)
    sdk = Protocol2PacketHandler()
    for _ in range(300):
        # Bodies dense in FF/FD so the header pattern shows up often, also at the edges.
        params = bytes(rng.choice((0xFF, 0xFD, 0x00, rng.randrange(256))) for _ in range(rng.randrange(0, 24)))
        ours = instruction_packet(1, Instruction.WRITE, params)
        tx = [0xFF, 0xFF, 0xFD, 0x00, 1, (len(params) + 3) & 0xFF, (len(params) + 3) >> 8, Instruction.WRITE, *params, 0, 0]
        theirs = sdk.addStuffing(tx)
        n = theirs[5] | (theirs[6] << 8)
        assert bytes(theirs[7 : 7 + n - 2]) == ours[7:-2]
        assert unstuff(stuff(bytes((Instruction.WRITE,)) + params)) == bytes((Instruction.WRITE,)) + params


def test_parser_reassembles_split_and_stuffed_packets_and_skips_garbage():
    params = bytes.fromhex("FF FF FD 00 01")
    stream = b"\x00\x13\xff" + status_packet(3, 0, params) + instruction_packet(4, Instruction.PING)
    parser = PacketParser()
    out = []
    for i in range(0, len(stream), 3):  # three bytes at a time, as a slow UART would deliver them
        out += parser.feed(stream[i : i + 3])
    assert out == [Packet(3, Instruction.STATUS, params, error=0), Packet(4, Instruction.PING, b"")]


def test_parser_reports_a_bad_crc_once_and_carries_on():
    good = instruction_packet(2, Instruction.PING)
    bad = bytearray(instruction_packet(1, Instruction.READ, bytes.fromhex("84 00 04 00")))
    bad[-1] ^= 0xFF
    out = PacketParser().feed(bytes(bad) + good)
    assert out == [BadPacket(1, Instruction.READ, "crc"), Packet(2, Instruction.PING, b"")]


def test_fast_sync_read_reply_has_cumulative_block_crcs_and_no_stuffing():
    blocks = [(1, 0, bytes.fromhex("FF FF FD 00")), (2, 0x80, bytes.fromhex("10 20 30 40"))]
    packet = fast_sync_read_reply(blocks)
    assert packet[4] == 0xFE and packet[7] == 0x55
    assert packet[5] | (packet[6] << 8) == 1 + 2 * (4 + 4)
    assert b"\xff\xff\xfd\xfd" not in packet  # fast replies are never stuffed
    first_crc_at = 8 + 2 + 4
    assert int.from_bytes(packet[first_crc_at : first_crc_at + 2], "little") == crc16(packet[:first_crc_at])
    assert int.from_bytes(packet[-2:], "little") == crc16(packet[:-2])
    # A missing second servo: LEN still counts it, so the packet ends short.
    short = fast_sync_read_reply(blocks[:1], expected_blocks=2)
    assert short[5] == packet[5] and len(short) < len(packet)


def test_instruction_packet_rejects_ids_that_look_like_a_header():
    with pytest.raises(ValueError, match="servo id"):
        instruction_packet(0xFD, Instruction.PING)
