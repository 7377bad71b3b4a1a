"""`python -m robot.dynamixel.emulator`: the four ALOHA buses in a process of their own (the
benchmarks run the servos there so that their Python work does not share the host's GIL)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from robot.dynamixel.emulator.aloha import aloha_buses


def main(argv: list[str] | None = None) -> int:
    """`python -m robot.dynamixel.emulator`: serve the four ALOHA buses until stdin closes or
    SIGTERM; prints {"leader_left": "/dev/pts/N", ...} as one JSON line once they are up."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--baud", type=int, default=1_000_000)
    ap.add_argument("--usb-latency-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    buses = aloha_buses(baud_rate=args.baud, usb_latency_ms=args.usb_latency_ms)
    for bus in buses.values():
        bus.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    sys.stdout.write(json.dumps({name: bus.port_name for name, bus in buses.items()}) + "\n")
    sys.stdout.flush()
    waiter = threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True)
    waiter.start()
    done.wait()
    for bus in buses.values():
        bus.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
