"""What the window costs the control loop: run the sim rig with the scripted demonstrator for N
seconds without a window, then with the window painting, and print one JSON line per run.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/gui_paint.py --seconds 10

Fields: loop rate achieved (Hz) and tick busy time (ms, p50/p99) from the control loop's own
statistics, the sim's real-time factor, paints per second, and the GUI thread's CPU time as a
fraction of wall time (the share of one core the window takes; under the GIL this is time the
control thread may have to wait for).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(window_on: bool, seconds: float, rig: Path, store: Path, source: str) -> dict:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.studio.studio import Studio
    from app.ui.main_window import StudioWindow

    app = QApplication.instance() or QApplication(["paint-benchmark"])
    studio = Studio(rig, store)
    window = StudioWindow(studio) if window_on else None
    if window is not None:
        window.show()
    studio.start()
    if not studio.wait_until_running(120):
        raise SystemExit("the rig did not start: " + "; ".join(e.message for e in studio.events.all()))
    studio.select_source(source)
    # Let the first second (renderer start-up, blending in) pass before measuring.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    ticks0 = studio.history.count
    paints0 = window.paint_count if window is not None else 0
    cpu0, wall0 = time.thread_time(), time.monotonic()
    QTimer.singleShot(int(seconds * 1000), app.quit)
    app.exec()
    cpu1, wall1 = time.thread_time(), time.monotonic()
    stats = studio.loop.snapshot().stats
    rig_status = studio.rig.status()
    result = {
        "benchmark": "studio_window",
        "window": window_on,
        "source": source,
        "seconds": round(wall1 - wall0, 2),
        "ticks": studio.history.count - ticks0,
        "loop_rate_hz": round((studio.history.count - ticks0) / (wall1 - wall0), 2),
        "busy_p50_ms": round(stats.busy_p50_ms, 2),
        "busy_p99_ms": round(stats.busy_p99_ms, 2),
        "real_time_factor": None if rig_status.real_time_factor is None else round(rig_status.real_time_factor, 3),
        "paints_per_s": round(((window.paint_count if window else 0) - paints0) / (wall1 - wall0), 1),
        "gui_thread_cpu_fraction": round((cpu1 - cpu0) / (wall1 - wall0), 3),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if window is not None:
        window.close()
        app.processEvents()
    if studio.snapshot().phase.value != "stopped":
        studio.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gui_paint.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rig", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "sim.toml")
    parser.add_argument("--store", type=Path, default=Path("/tmp/studio-paint-benchmark"))
    parser.add_argument("--source", default="demo", choices=("demo", "hold", "keyboard"))
    parser.add_argument("--only", choices=("window", "headless"), default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    modes = {"window": [True], "headless": [False], None: [False, True]}[args.only]
    for window_on in modes:
        print(json.dumps(run(window_on, args.seconds, args.rig, args.store, args.source)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
