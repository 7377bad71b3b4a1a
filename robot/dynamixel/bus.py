"""A Dynamixel Protocol 2.0 servo bus over dynamixel-sdk: typed reads and writes, group sync read
and write, retries within a per-call time budget, typed errors, statistics.

The SDK sits behind `SdkLink`, a small Protocol with the handful of calls the bus needs, so the
bus logic (retries, budgets, diagnosis, decoding) reads without SDK plumbing. `DynamixelSdkLink`
is the only implementation and the tests run it, the real SDK, against the pty emulator.

Threads: one bus belongs to one arm and is used by the control thread; every public method holds
`self._lock` for the whole transaction so a calibration or health poll from another thread can
never interleave packets. `emergency_torque_off` is the exception, made for a watchdog thread
(see its docstring).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from robot.dynamixel import control_table as ct
from robot.dynamixel.control_table import HardwareError, ServoModel
from robot.dynamixel.errors import CommError, ServoError, ServoMismatch, ServoNotResponding
from robot.dynamixel.protocol import ALERT_BIT, ERROR_TEXT, ErrorNumber, Instruction, instruction_packet, le_bytes

log = logging.getLogger(__name__)

COMM_SUCCESS = 0  # dynamixel-sdk's result code for a good transaction


# --- the SDK seam -------------------------------------------------------------------------------
class SdkLink(Protocol):
    """What the bus needs from dynamixel-sdk. Results are the SDK's communication result codes
    (0 = success, negative = timeout/corrupt/...) and the status packets' error bytes."""

    port_name: str

    def open(self, baud_rate: int) -> None: ...

    def close(self) -> None: ...

    def ping(self, servo_id: int) -> tuple[int, int, int]:
        """(model number, result, error byte)."""

    def read(self, servo_id: int, address: int, length: int) -> tuple[bytes, int, int]:
        """(data, result, error byte)."""

    def write(self, servo_id: int, address: int, data: bytes) -> tuple[int, int]:
        """(result, error byte)."""

    def sync_read(self, address: int, length: int, ids: Sequence[int], fast: bool) -> tuple[dict[int, tuple[int, bytes]], int]:
        """({id: (error byte, data)} for the servos that answered, in order, and the result).
        A normal sync read stops at the first servo that did not answer."""

    def sync_write(self, address: int, length: int, values: Mapping[int, bytes]) -> int: ...

    def reboot(self, servo_id: int) -> tuple[int, int]: ...

    def clear_input(self) -> None:
        """Drop whatever has arrived and not been read (late replies of a failed attempt)."""

    def write_raw(self, packet: bytes) -> None:
        """Put a ready-made packet on the wire, bypassing the SDK's state (emergencies only)."""

    def result_text(self, result: int) -> str: ...


class DynamixelSdkLink:
    """`SdkLink` on dynamixel-sdk: PortHandler + Protocol2PacketHandler.

    The SDK computes every reply timeout as bytes x byte time + 2 x LATENCY_TIMER + 2 ms with a
    fixed 16 ms latency timer (its default for FTDI adapters). ALOHA sets the adapters' latency
    timer to 1 ms, so the port handler here takes the real value: a lost reply then costs ~4 ms
    instead of ~34 ms, which is what makes retries affordable inside a 20 ms control tick.
    """

    def __init__(self, port_name: str, latency_timer_ms: float = 1.0) -> None:
        import dynamixel_sdk as sdk  # imported here so the bus module loads without the SDK

        class _PortHandler(sdk.PortHandler):
            def setPacketTimeout(self, packet_length):  # noqa: N802 (SDK name)
                self.packet_start_time = self.getCurrentTime()
                self.packet_timeout = self.tx_time_per_byte * packet_length + 2.0 * latency_timer_ms + 2.0

        self._sdk = sdk
        self.port_name = port_name
        self._port = _PortHandler(port_name)
        self._ph = sdk.Protocol2PacketHandler()

    def open(self, baud_rate: int) -> None:
        try:
            opened = self._port.openPort() and self._port.setBaudRate(baud_rate)
        except Exception as exc:  # pyserial raises SerialException/OSError with the OS reason
            raise CommError(self.port_name, None, "", f"cannot open the port ({exc})") from exc
        if not opened:
            raise CommError(self.port_name, None, "", f"cannot set {baud_rate} baud on the port")

    def close(self) -> None:
        if self._port.is_open:
            self._port.closePort()

    def ping(self, servo_id: int) -> tuple[int, int, int]:
        return self._ph.ping(self._port, servo_id)

    def read(self, servo_id: int, address: int, length: int) -> tuple[bytes, int, int]:
        data, result, error = self._ph.readTxRx(self._port, servo_id, address, length)
        return bytes(data), result, error

    def write(self, servo_id: int, address: int, data: bytes) -> tuple[int, int]:
        return self._ph.writeTxRx(self._port, servo_id, address, len(data), list(data))

    def sync_read(self, address, length, ids, fast):
        ids = list(ids)
        result = self._ph.syncReadTx(self._port, address, length, ids, len(ids), fast)
        if result != COMM_SUCCESS:
            self._port.is_using = False
            return {}, result
        out: dict[int, tuple[int, bytes]] = {}
        if fast:
            # One packet: [ERR ID DATA CRC_L CRC_H] per servo; the SDK checked the packet CRC.
            raw, result, _ = self._ph.fastSyncReadRx(self._port, self._sdk.BROADCAST_ID, (length + 4) * len(ids))
            if result != COMM_SUCCESS:
                return out, result
            raw = bytes(raw)
            for k, sid in enumerate(ids):
                block = raw[k * (length + 4) : (k + 1) * (length + 4)]
                if len(block) < length + 2 or block[1] != sid:
                    return out, self._sdk.COMM_RX_CORRUPT
                out[sid] = (block[0], block[2 : 2 + length])
            return out, COMM_SUCCESS
        for sid in ids:
            data, result, error = self._ph.readRx(self._port, sid, length)
            if result != COMM_SUCCESS:
                return out, result
            out[sid] = (error, bytes(data))
        return out, COMM_SUCCESS

    def sync_write(self, address, length, values):
        param = []
        for sid, data in values.items():
            param.append(sid)
            param.extend(data)
        return self._ph.syncWriteTxOnly(self._port, address, length, param, len(param))

    def reboot(self, servo_id: int) -> tuple[int, int]:
        return self._ph.reboot(self._port, servo_id)

    def clear_input(self) -> None:
        if self._port.is_open:
            self._port.clearPort()

    def write_raw(self, packet: bytes) -> None:
        self._port.ser.write(packet)
        self._port.ser.flush()

    def result_text(self, result: int) -> str:
        return self._ph.getTxRxResult(result).replace("[TxRxResult] ", "").rstrip("!").lower()


# --- configuration and statistics ---------------------------------------------------------------
@dataclass(frozen=True)
class BusConfig:
    """One serial bus (one USB adapter, one arm).

    latency_timer_ms: the adapter's latency timer (FTDI: /sys/bus/usb-serial/devices/ttyUSB*/latency_timer);
      ALOHA sets 1 ms. It sets how long the SDK waits for a reply.
    retries: extra attempts after a failed transaction, while the call's budget lasts.
    call_budget_ms: the most one call (all attempts together) may take; at 50 Hz a tick is 20 ms
      and a bimanual rig makes two calls per arm per tick.
    fast_sync_read: use Fast Sync Read when every servo's firmware supports it ("auto"), always
      ("on") or never ("off").
    """

    port: str
    baud_rate: int = 1_000_000
    latency_timer_ms: float = 1.0
    retries: int = 2
    call_budget_ms: float = 12.0
    fast_sync_read: str = "auto"
    settle_ms: float = 0.5  # wait after a failure before dropping late bytes

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("BusConfig.port is empty: give the serial port, e.g. /dev/ttyDXL_puppet_left")
        if self.baud_rate not in ct.BAUD_RATE_CODES.values():
            raise ValueError(
                f"BusConfig.baud_rate {self.baud_rate} is not a Dynamixel rate; use one of "
                f"{sorted(ct.BAUD_RATE_CODES.values())} (ALOHA: 1000000)"
            )
        if not 0 < self.latency_timer_ms <= 255:
            raise ValueError(f"BusConfig.latency_timer_ms must be in (0, 255], got {self.latency_timer_ms}; FTDI default is 16, ALOHA uses 1")
        if self.retries < 0:
            raise ValueError(f"BusConfig.retries must be >= 0, got {self.retries}")
        if self.call_budget_ms <= 0:
            raise ValueError(f"BusConfig.call_budget_ms must be > 0, got {self.call_budget_ms}")
        if self.fast_sync_read not in ("auto", "on", "off"):
            raise ValueError(f"BusConfig.fast_sync_read must be 'auto', 'on' or 'off', got {self.fast_sync_read!r}")


@dataclass(frozen=True)
class BusStats:
    """A snapshot of a bus's health. Round-trip times are of successful calls (all attempts)."""

    port: str
    calls: int
    retries: int
    failures: int  # calls that raised after their retries
    timeouts: int  # failed attempts, by cause
    corrupt: int
    rtt_ms_p50: float
    rtt_ms_p99: float
    rtt_ms_max: float
    errors_per_s: float  # failed attempts per second over the last `window_s`
    window_s: float
    last_error: str = ""


@dataclass(frozen=True)
class PingResult:
    model_number: int
    firmware_version: int


@dataclass(frozen=True)
class StateReading:
    """One sync read of the state block (126..135) of some servos, in the order asked.

    position: (n,) int64 pulses; velocity: (n,) int64 in 0.229 rpm units; current: (n,) int64 raw
    (2.69 mA units, or 0.1 % load on models without current sensing); alerts: ids whose status
    had the hardware-alert bit; time_s: host monotonic time the reply arrived.
    """

    ids: tuple[int, ...]
    position: np.ndarray
    velocity: np.ndarray
    current: np.ndarray
    alerts: tuple[int, ...]
    time_s: float


class _Stats:
    def __init__(self, window_s: float = 10.0, keep: int = 2000) -> None:
        self.window_s = window_s
        self.calls = self.retries = self.failures = self.timeouts = self.corrupt = 0
        self.rtts_s: collections.deque[float] = collections.deque(maxlen=keep)
        self.fail_times: collections.deque[float] = collections.deque(maxlen=keep)
        self.last_error = ""


# --- the bus ------------------------------------------------------------------------------------
class DynamixelBus:
    """Servos on one serial port.

    servos: id -> model for every servo on this bus that the rig uses (primaries and shadows);
    `connect()` pings each and refuses a bus whose servos don't match.
    joint_names: optional id -> joint name, only for error messages.
    """

    def __init__(
        self,
        config: BusConfig,
        servos: Mapping[int, ServoModel],
        *,
        joint_names: Mapping[int, str] | None = None,
        link: SdkLink | None = None,
    ) -> None:
        if not servos:
            raise ValueError(f"bus {config.port}: no servos given")
        self.config = config
        self.servos = dict(servos)
        self.joint_names = dict(joint_names or {})
        self._link = link if link is not None else DynamixelSdkLink(config.port, config.latency_timer_ms)
        self._lock = threading.RLock()  # held for whole transactions
        self._stats_lock = threading.Lock()  # statistics and alerts only, so the GUI never waits on the wire
        self._stats = _Stats()
        self._connected = False
        self._firmware: dict[int, int] = {}
        self._alerts: set[int] = set()
        self._patience: tuple[int, float] | None = None  # (retries, budget ms) while connecting

    @property
    def port(self) -> str:
        return self.config.port

    @property
    def connected(self) -> bool:
        return self._connected

    # -- lifecycle --
    def connect(self) -> None:
        """Open the port and check that every expected servo answers with the expected model.

        Raises CommError naming the first servo that does not answer, ServoMismatch when a model
        number differs. Idempotent.
        """
        with self._lock:
            if self._connected:
                return
            self._link.open(self.config.baud_rate)
            # Connecting is not real-time: a servo still booting, or a first packet after the port
            # opened, gets more patience than a control tick could give.
            self._patience = (max(self.config.retries, 5), max(self.config.call_budget_ms, 1000.0))
            try:
                for sid, model in self.servos.items():
                    found = self.ping(sid)
                    if found.model_number != model.model_number:
                        other = ct.MODELS_BY_NUMBER.get(found.model_number)
                        raise ServoMismatch(self.port, sid, model.name,
                                            other.name if other else f"model number {found.model_number}")
                    self._firmware[sid] = found.firmware_version
            except BaseException:
                self._link.close()
                raise
            finally:
                self._patience = None
            self._connected = True
            log.info("bus %s: %d servos answering at %d baud (fast sync read: %s)", self.port, len(self.servos),
                     self.config.baud_rate, self.fast_sync_read_supported(self.servos))

    def disconnect(self) -> None:
        with self._lock:
            self._link.close()
            self._connected = False

    def __enter__(self) -> "DynamixelBus":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def fast_sync_read_supported(self, ids: Iterable[int]) -> bool:
        if self.config.fast_sync_read == "off":
            return False
        if self.config.fast_sync_read == "on":
            return True
        return all(self._firmware.get(i, 0) >= ct.FAST_SYNC_READ_MIN_FIRMWARE for i in ids)

    # -- single-servo calls --
    def ping(self, servo_id: int) -> PingResult:
        """Model number and firmware version of one servo (the SDK's ping returns both)."""

        def attempt():
            model, result, error = self._link.ping(servo_id)
            return (model,), result, error

        (model,), error = self._call(attempt, servo_id, "")
        firmware = self._read_raw(servo_id, 6, 1, "Firmware_Version")[0]
        return PingResult(model, firmware)

    def read(self, servo_id: int, register: str) -> int:
        """One register of one servo, decoded (signed where the register is)."""
        reg = self._model(servo_id).register(register)
        return _decode(self._read_raw(servo_id, reg.address, reg.size, register), reg)

    def write(self, servo_id: int, register: str, value: int) -> None:
        """Write one register and check the servo's answer (raises ServoError on refusal)."""
        reg = self._model(servo_id).register(register)
        data = le_bytes(int(value), reg.size)

        def attempt():
            result, error = self._link.write(servo_id, reg.address, data)
            return (), result, error

        self._call(attempt, servo_id, register)

    def reboot(self, servo_id: int) -> None:
        """Reboot one servo (clears a hardware error; torque comes back off, RAM to defaults)."""

        def attempt():
            result, error = self._link.reboot(servo_id)
            return (), result, error

        self._call(attempt, servo_id, "reboot")
        with self._stats_lock:
            self._alerts.discard(servo_id)

    def _read_raw(self, servo_id: int, address: int, length: int, register: str) -> bytes:
        def attempt():
            data, result, error = self._link.read(servo_id, address, length)
            if result == COMM_SUCCESS and len(data) != length:
                return (data,), _RESULT_SHORT, error
            return (data,), result, error

        (data,), _ = self._call(attempt, servo_id, register)
        return data

    # -- group calls --
    def sync_read(self, register: str, ids: Sequence[int]) -> dict[int, int]:
        """One register of several servos (same model family), decoded."""
        reg = self._model(ids[0]).register(register)
        blocks = self.sync_read_block(reg.address, reg.size, ids, register)
        return {sid: _decode(data, reg) for sid, data in blocks.items()}

    def read_state(self, ids: Sequence[int]) -> StateReading:
        """Present current/load, velocity and position of `ids` in one sync read (the control
        loop's read). Uses Fast Sync Read where the firmware supports it."""
        blocks = self.sync_read_block(ct.STATE_BLOCK_ADDRESS, ct.STATE_BLOCK_SIZE, ids, "Present_Position")
        t = time.monotonic()
        raw = np.frombuffer(b"".join(blocks[i] for i in ids), dtype="<i2,<i4,<i4")
        with self._stats_lock:
            alerts = tuple(i for i in ids if i in self._alerts)
        return StateReading(
            ids=tuple(ids),
            position=raw["f2"].astype(np.int64),
            velocity=raw["f1"].astype(np.int64),
            current=raw["f0"].astype(np.int64),
            alerts=alerts,
            time_s=t,
        )

    def sync_read_block(self, address: int, length: int, ids: Sequence[int], register: str = "") -> dict[int, bytes]:
        """Raw bytes [address, address+length) of each servo in `ids`, with retries.

        On failure the servo that stopped the read is named: a normal sync read fails at the first
        servo that does not answer. A Fast Sync Read is one packet and can't say who is missing, so
        when one fails the same attempt falls back to a normal sync read, which either recovers
        the data or names the servo.
        """
        ids = list(ids)
        if not ids:
            return {}
        fast = self.fast_sync_read_supported(ids)
        register = register or f"address {address}"

        def attempt():
            got, result = self._link.sync_read(address, length, ids, fast)
            if fast and result != COMM_SUCCESS:
                self._record_failure(f"fast sync read: {self._link.result_text(result)}", result)
                self._count("retries")
                time.sleep(self.config.settle_ms * 1e-3)
                self._link.clear_input()
                got, result = self._link.sync_read(address, length, ids, False)
            if result != COMM_SUCCESS:
                return next((i for i in ids if i not in got), None), result, 0
            for sid, (error, data) in got.items():
                self._note_alert(sid, error)
                number = error & ~ALERT_BIT
                if number or len(data) != length:
                    raise ServoError(self.port, sid, register, number, _error_text(number) if number else "short reply")
            return got, result, 0

        got, _ = self._call(attempt, None, register, culprit_on_failure=True)
        return {sid: data for sid, (_, data) in got.items()}

    def sync_write(self, register: str, values: Mapping[int, int]) -> None:
        """Write one register on several servos in one packet (no replies, so no retries: a
        lost goal is replaced by the next tick's). Shadows follow their primary by themselves."""
        if not values:
            return
        reg = self._model(next(iter(values))).register(register)
        payload = {sid: le_bytes(int(v), reg.size) for sid, v in values.items()}
        with self._lock:
            t0 = time.monotonic()
            result = self._link.sync_write(reg.address, reg.size, payload)
            self._count("calls")
            if result != COMM_SUCCESS:
                self._record_failure(self._link.result_text(result), result)
                raise CommError(self.port, None, register, f"sync write failed: {self._link.result_text(result)}")
            self._record_rtt(t0)

    def set_torque(self, ids: Iterable[int], enabled: bool) -> None:
        """Torque on/off for `ids` (one sync write; shadows follow their primaries)."""
        self.sync_write("Torque_Enable", {i: int(enabled) for i in ids})

    @contextlib.contextmanager
    def torque_disabled(self, ids: Sequence[int]) -> Iterator[None]:
        """Torque off for the block (to write EEPROM settings), restored as it was in `finally`."""
        ids = list(ids)
        before = self.sync_read("Torque_Enable", ids)
        self.set_torque(ids, False)
        try:
            yield
        finally:
            on = [i for i in ids if before.get(i)]
            if on:
                self.set_torque(on, True)

    def emergency_torque_off(self, ids: Iterable[int], lock_timeout_s: float = 0.05) -> bool:
        """Cut torque from another thread (watchdog, atexit) even if the owner is stuck.

        Takes the bus lock if it can within `lock_timeout_s` and sends a sync write. If the lock
        is held (the control thread hangs inside a transaction, e.g. in the SDK's receive loop),
        writes a prebuilt torque-off sync-write packet straight to the port: a stuck owner is not
        transmitting, so nothing is interleaved. Returns True when a packet went out.
        """
        ids = list(ids)
        packet = instruction_packet(
            0xFE, Instruction.SYNC_WRITE, le_bytes(64, 2) + le_bytes(1, 2) + b"".join(bytes((i, 0)) for i in ids)
        )
        got = self._lock.acquire(timeout=lock_timeout_s)
        try:
            self._link.write_raw(packet)
            return True
        except Exception:  # a closed or unplugged port: nothing more can be done from here
            log.exception("emergency torque off on %s failed", self.port)
            return False
        finally:
            if got:
                self._lock.release()

    # -- statistics and alerts --
    @property
    def stats(self) -> BusStats:
        with self._stats_lock:
            s = self._stats
            rtts = np.asarray(s.rtts_s, dtype=np.float64) * 1e3
            now = time.monotonic()
            recent = sum(1 for t in s.fail_times if now - t <= s.window_s)
            return BusStats(
                port=self.port,
                calls=s.calls,
                retries=s.retries,
                failures=s.failures,
                timeouts=s.timeouts,
                corrupt=s.corrupt,
                rtt_ms_p50=float(np.percentile(rtts, 50)) if rtts.size else math.nan,
                rtt_ms_p99=float(np.percentile(rtts, 99)) if rtts.size else math.nan,
                rtt_ms_max=float(rtts.max()) if rtts.size else math.nan,
                errors_per_s=recent / s.window_s,
                window_s=s.window_s,
                last_error=s.last_error,
            )

    def alerts(self) -> tuple[int, ...]:
        """Servos whose last status packet carried the hardware-alert bit (read
        Hardware_Error_Status to know why; a reboot clears it)."""
        with self._stats_lock:
            return tuple(sorted(self._alerts))

    def _count(self, name: str) -> None:
        with self._stats_lock:
            setattr(self._stats, name, getattr(self._stats, name) + 1)

    def _record_rtt(self, t0: float) -> None:
        with self._stats_lock:
            self._stats.rtts_s.append(time.monotonic() - t0)

    def _note_alert(self, servo_id: int, error: int) -> None:
        with self._stats_lock:
            if error & ALERT_BIT:
                if servo_id not in self._alerts:
                    log.warning("bus %s: servo %d raised its hardware alert", self.port, servo_id)
                self._alerts.add(servo_id)
            else:
                self._alerts.discard(servo_id)

    # -- the retry loop --
    def _call(self, attempt, servo_id: int | None, register: str, culprit_on_failure: bool = False):
        """Run `attempt` (-> (values, result, error byte)) until it succeeds, the retries run out
        or the call's time budget is spent. Returns (values, error byte).

        culprit_on_failure: a failed attempt's values are the id of the servo that did not answer
        (group reads), used to name it in the error.
        """
        with self._lock:
            retries, budget_ms = self._patience or (self.config.retries, self.config.call_budget_ms)
            t0 = time.monotonic()
            deadline = t0 + budget_ms * 1e-3
            self._count("calls")
            tries = 0
            culprit = servo_id
            missing: collections.Counter[int] = collections.Counter()
            while True:
                tries += 1
                values, result, error = attempt()
                if result == COMM_SUCCESS:
                    if servo_id is not None:
                        self._note_alert(servo_id, error)
                        number = error & ~ALERT_BIT
                        if number:
                            raise ServoError(self.port, servo_id, register, number, _error_text(number))
                    self._record_rtt(t0)
                    return values, error
                if culprit_on_failure and values is not None:
                    # Name the servo missing most often, not just last time: a hiccup of the host
                    # can make a healthy servo look late once.
                    missing[values] += 1
                    culprit = max(missing, key=lambda i: (missing[i], i == values))
                detail = self._link.result_text(result) if result != _RESULT_SHORT else "reply shorter than asked"
                self._record_failure(detail, result)
                if tries > retries or time.monotonic() >= deadline:
                    break
                self._count("retries")
                # Late bytes of the failed attempt must not be taken for the next one's reply.
                time.sleep(self.config.settle_ms * 1e-3)
                self._link.clear_input()
            self._count("failures")
            elapsed_ms = (time.monotonic() - t0) * 1e3
            detail = f"{detail} ({tries} attempt{'s' if tries > 1 else ''} in {elapsed_ms:.1f} ms)"
            if culprit is not None and self._connected:
                raise ServoNotResponding(self.port, culprit, register, detail, self.joint_names.get(culprit, ""))
            raise CommError(self.port, culprit, register, detail)

    def _record_failure(self, detail: str, result: int) -> None:
        with self._stats_lock:
            s = self._stats
            s.fail_times.append(time.monotonic())
            s.last_error = detail
            if result == -3001:  # COMM_RX_TIMEOUT
                s.timeouts += 1
            else:
                s.corrupt += 1

    def _model(self, servo_id: int) -> ServoModel:
        try:
            return self.servos[servo_id]
        except KeyError:
            raise KeyError(f"servo {servo_id} is not configured on bus {self.port}; known ids: {sorted(self.servos)}") from None


_RESULT_SHORT = -3900  # our own code: the SDK said success but the data was short


def _error_text(number: int) -> str:
    try:
        return ERROR_TEXT[ErrorNumber(number)]
    except (ValueError, KeyError):
        return "unknown error"


def _decode(data: bytes, reg: ct.Register) -> int:
    return int.from_bytes(data[: reg.size], "little", signed=reg.signed)


def hardware_error_of(bus: DynamixelBus, servo_id: int) -> HardwareError:
    """The decoded Hardware_Error_Status of one servo."""
    return HardwareError(bus.read(servo_id, "Hardware_Error_Status"))
