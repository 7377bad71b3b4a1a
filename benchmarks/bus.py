"""Benchmark: one bimanual teleoperation cycle over the Dynamixel bus, through dynamixel-sdk, against
the protocol-level emulator (real ALOHA id layout: four buses, nine servos per arm including the
shoulder and elbow shadow motors).

Cycle = read both leaders (7 joints each, one sync read per arm) -> ALOHA mapping -> write both
followers (one sync write per arm). Variant "with_follower_state" also reads both followers
(the observation), as the rig's control tick does. Cycles run back to back on one thread, as the
control loop does, so `max_rate_hz` = 1 / mean cycle time is the fastest loop this bus allows.

The emulator runs in a child process (`python -m robot.dynamixel.emulator`), so its Python work
does not share this process's GIL; it charges wire time at the baud rate (10 bits per byte, half
duplex, replies after the request), so the 1 vs 4 Mbps difference is the wire's. What remains is
the host's cost (SDK, pyserial, pty, Python) and the emulator's reply latency, both of which a
real rig replaces with USB latency (not modelled; FTDI latency timer 1 ms adds up to ~1 ms per
reply on real hardware).

Prints one JSON line per configuration. Usage: .venv/bin/python benchmarks/bus.py [--cycles N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robot.dynamixel.arm import ArmConfig, ArmRole, FollowerArm, LeaderArm, TeleopMapping  # noqa: E402
from robot.dynamixel.bus import BusConfig  # noqa: E402
from robot.dynamixel.errors import DynamixelError  # noqa: E402

SIDES = ("left", "right")


def wire_bytes_per_cycle(fast: bool, with_follower_state: bool, joints: int = 7, block: int = 10) -> int:
    """Bytes on each wire per cycle (request + replies), summed over the four buses."""
    request = 10 + 4 + joints  # sync read: header..inst + addr/len + ids + crc
    reply = (8 + joints * (block + 4)) if fast else joints * (11 + block)
    read = request + reply
    write = 10 + 4 + joints * (1 + 4)
    reads = 4 if with_follower_state else 2
    return reads * read + 2 * write


def start_emulator(baud: int) -> tuple[subprocess.Popen, dict[str, str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "robot.dynamixel.emulator", "--baud", str(baud)], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the emulator process did not start; run `python -m robot.dynamixel.emulator` to see why")
    return proc, json.loads(line)


def run(baud: int, fast: bool, cycles: int, warmup: int = 50) -> list[dict]:
    proc, ports = start_emulator(baud)
    arms = []
    try:
        def config(name, role):
            # The reply timeout only matters when a reply is late; on a shared machine the emulator
            # process can be descheduled for a few ms, so use the FTDI default (16 ms) rather than
            # ALOHA's 1 ms to measure cycles, not retries. Retries are reported.
            bus = BusConfig(ports[name], baud_rate=baud, latency_timer_ms=16.0, call_budget_ms=100.0,
                            fast_sync_read="on" if fast else "off")
            # The servos' Bus_Watchdog is off: a stall of this shared machine would stop the
            # followers and turn the rest of the run into errors; stalls show in cycle_ms_max.
            return ArmConfig(name, role, bus, bus_watchdog_ms=0)

        leaders = [LeaderArm(config(f"leader_{s}", ArmRole.LEADER)) for s in SIDES]
        followers = [FollowerArm(config(f"follower_{s}", ArmRole.FOLLOWER)) for s in SIDES]
        arms = [*leaders, *followers]
        for arm in arms:
            arm.connect()
        for arm in followers:
            arm.set_torque(True)
        mapping = TeleopMapping()
        results = []
        for with_state in (False, True):
            times = np.empty(cycles)
            cpu = np.empty(cycles)
            failed = []
            for k in range(warmup + cycles):
                t0 = time.perf_counter()
                c0 = time.process_time()
                try:
                    for leader, follower in zip(leaders, followers):
                        action = mapping.action_from_leader(leader.read().joint_pos_rad)
                        follower.command(mapping.follower_command(action))
                    if with_state:
                        for follower in followers:
                            mapping.observation(follower.read())
                except DynamixelError as exc:  # counted and reported; the loop goes on as the rig's would
                    failed.append(str(exc))
                if k >= warmup:
                    times[k - warmup] = time.perf_counter() - t0
                    cpu[k - warmup] = time.process_time() - c0
            stats = [a.bus.stats for a in arms]
            mean = float(times.mean())
            wire = wire_bytes_per_cycle(fast, with_state)
            results.append({
                "bench": "bus_teleop_cycle",
                "variant": "with_follower_state" if with_state else "leaders_to_followers",
                "baud": baud,
                "fast_sync_read": fast,
                "cycles": cycles,
                # On a loaded machine p50/p99 measure the scheduler; min and p10 show what the
                # bus and the host code cost when this process gets the CPU.
                "cycle_ms_min": round(float(times.min()) * 1e3, 3),
                "cycle_ms_p10": round(float(np.percentile(times, 10)) * 1e3, 3),
                "cycle_ms_p50": round(float(np.percentile(times, 50)) * 1e3, 3),
                "cycle_ms_p99": round(float(np.percentile(times, 99)) * 1e3, 3),
                "cycle_ms_mean": round(mean * 1e3, 3),
                "cycle_ms_max": round(float(times.max()) * 1e3, 3),
                "max_rate_hz": round(1.0 / mean, 1),
                # CPU this process spent per cycle (SDK, pyserial, mapping): what the control
                # thread costs, whatever else the machine is doing.
                "host_cpu_ms_per_cycle": round(float(cpu.mean()) * 1e3, 3),
                "wire_ms_per_cycle": round(wire * 10 / baud * 1e3, 3),  # four buses, one after another
                "retries": sum(s.retries for s in stats),
                "failed_cycles": len(failed),
                "first_failure": failed[0] if failed else "",
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            })
        return results
    finally:
        for arm in reversed(arms):  # followers first: their Bus_Watchdog stops them if we dawdle
            try:
                arm.disconnect()
            except Exception as exc:  # a benchmark that fails to clean up still reports why
                print(json.dumps({"bench": "bus_teleop_cycle", "cleanup_error": str(exc)}), file=sys.stderr)
        proc.stdin.close()
        proc.wait(timeout=5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=1000)
    args = ap.parse_args()
    for baud in (1_000_000, 4_000_000):
        for fast in (True, False):
            try:
                for row in run(baud, fast, args.cycles):
                    print(json.dumps(row), flush=True)
            except DynamixelError as exc:  # e.g. connect failed: report the configuration and go on
                print(json.dumps({"bench": "bus_teleop_cycle", "baud": baud, "fast_sync_read": fast, "error": str(exc)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
