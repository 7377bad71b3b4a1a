"""Fixtures for the servo-side tests: emulated ALOHA buses on ptys and buses over the real SDK.

Timeouts: the adapters' latency timer is 1 ms on a real rig; here the emulator thread shares two
busy CPU cores with the test process and other jobs, so the fixtures use 10 ms (a reply timeout
of ~22 ms) and generous call budgets. Tests that are about timeouts set their own values.

The emulator is a thread in the test process, and dynamixel-sdk waits for replies in a busy loop
that holds the GIL between its non-blocking reads; at CPython's default 5 ms switch interval the
emulator thread can wait that long for the GIL before it may answer. A 1 ms interval (for this
directory only) keeps the emulated servos' reply times near a real servo's.
"""

import os
import select
import sys
import termios
import time
import tty

import pytest

from robot.aloha import START_ARM_POSE_RAD
from robot.dynamixel.bus import BusConfig, DynamixelBus
from robot.dynamixel.emulator import ServoBusEmulator, arm_servos
from robot.dynamixel.layout import VIPERX_300_FOLLOWER, WIDOWX_250_LEADER
from robot.dynamixel.protocol import PacketParser

FOLLOWER_POSE = (*START_ARM_POSE_RAD, 0.5)


@pytest.fixture(autouse=True, scope="module")
def _responsive_emulator_thread():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    yield
    sys.setswitchinterval(before)


def relaxed_config(port: str, **overrides) -> BusConfig:
    values = dict(latency_timer_ms=10.0, retries=8, call_budget_ms=500.0)
    values.update(overrides)
    return BusConfig(port, **values)


@pytest.fixture
def follower_emulator():
    with ServoBusEmulator(arm_servos(VIPERX_300_FOLLOWER, FOLLOWER_POSE), name="follower") as em:
        yield em


@pytest.fixture
def leader_emulator():
    with ServoBusEmulator(arm_servos(WIDOWX_250_LEADER, FOLLOWER_POSE), name="leader") as em:
        yield em


def eventually(condition, timeout_s: float = 0.5) -> bool:
    """Poll `condition` until true: replies-less writes (sync write) land a moment later."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.fixture
def wait_for():
    return eventually


@pytest.fixture
def follower_bus(follower_emulator):
    layout = VIPERX_300_FOLLOWER
    names = {j.servo_id: j.name for j in layout.joints}
    bus = DynamixelBus(relaxed_config(follower_emulator.port_name), {i: layout.model_of(i) for i in layout.all_ids},
                       joint_names=names)
    bus.connect()
    yield bus
    bus.disconnect()


class RawPort:
    """The host side of an emulated bus without the SDK: our own packets in, parsed packets out."""

    def __init__(self, path: str, baud_rate: int = 1_000_000) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        attrs[4] = attrs[5] = getattr(termios, f"B{baud_rate}")  # the emulator checks the host's speed
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.parser = PacketParser()

    def send(self, packet: bytes) -> None:
        os.write(self.fd, packet)

    def receive(self, count: int = 1, timeout_s: float = 0.3) -> list:
        out: list = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                out += self.parser.feed(os.read(self.fd, 4096))
        return out

    def transact(self, packet: bytes, count: int = 1, timeout_s: float = 0.3) -> list:
        self.send(packet)
        return self.receive(count, timeout_s)

    def read_raw(self, timeout_s: float = 0.2) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], deadline - time.monotonic())
            if ready:
                data += os.read(self.fd, 4096)
        return data

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def raw_follower(follower_emulator):
    port = RawPort(follower_emulator.port_name)
    yield port
    port.close()


@pytest.fixture
def raw_port():
    """Factory: RawPort(path, baud_rate=1_000_000), closed after the test."""
    opened = []

    def make(path, baud_rate=1_000_000):
        opened.append(RawPort(path, baud_rate))
        return opened[-1]

    yield make
    for port in opened:
        port.close()


@pytest.fixture
def bus_config():
    """Factory: a BusConfig with the suite's relaxed timing (see module doc), overridable."""
    return relaxed_config
