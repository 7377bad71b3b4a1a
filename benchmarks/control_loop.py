"""Benchmark: the control loop at 50 Hz in the studio, with cameras, the recorder, the window and
a policy's Python work, before and after a change, in one run.

    .venv/bin/python benchmarks/control_loop.py [--seconds 60] [--rig configs/sim.toml]
        [--image-format jpeg|raw] [--camera-size HxW] [--camera-fps F] [--cameras N]
        [--writer process|thread] [--window] [--policy-busy-ms MS] [--attribute]
        [--realtime-priority N] [--switch-interval-ms MS] [--pin] [--variants "NAME:ARGS;..."]

    # the issue-15 proof: sim, 3 cameras 480x640, JPEG, window painting, a busy policy thread,
    # the thread writer (before) against the writer process (after), 10 minutes each
    MUJOCO_GL=egl xvfb-run -a .venv/bin/python benchmarks/control_loop.py --seconds 600 \
        --camera-size 480x640 --camera-fps 30 --window --policy-busy-ms 15 --attribute \
        --variants "before:--writer thread;after:--writer process"
    # the emulated rig: add --rig configs/emulated.toml --emulator-process --emulator-priority 60
    # (the emulated servos at real-time priority answer like hardware on a loaded machine)

It runs the real studio (`app.studio.studio.Studio`, so the rig, loop, writer and history are
wired by `open_session` as in the app), optionally with its window (`--window`: needs a display,
xvfb-run or QT_QPA_PLATFORM=offscreen). On the sim the arm is jogged in a slow circle from the
GUI thread (20 Hz, as the jog keys would); on a rig with leader arms (aloha-emulated) the rig's
opening ceremony runs first and the leaders drive. Every tick is recorded.
`--policy-busy-ms 15` adds a thread doing 15 ms of pure-Python work every `--policy-period-ms`
(80 ms, one action chunk): the tiny policy's Python side (single-pass p50 <= 20 ms on this CPU,
benchmarks/inference.py), without torch, so it measures only what the interpreter lock costs.
`--attribute` adds `benchmarks/late_wakes.py`: every late wake of the control thread split into
CPU starvation and in-process waiting (the GIL), the latter attributed to threads and causes.
`--realtime-priority 50` runs the control thread with SCHED_FIFO, which removes starvation from
its wake-ups, so what is left is in-process; `--pin` puts it alone on CPU 1 and everything else
of ours on CPU 0 (a 4-core machine's split, simulated on 2 shared cores).

Prints JSON lines on stdout: "progress" every --report-s seconds, one "result" per run (achieved
rate, period error p50/p99/max, late ticks and missed periods, stage times, image age (tick time
minus the frame's capture time) p50/p99, recorder drops, queue high-water, end-of-episode save
time (stop and save as the studio does it, index and QA included), the late-wake table, the load
average), and with --variants one "comparison" line. Logging goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from app.studio.snapshot import Phase  # noqa: E402
from app.studio.studio import Studio  # noqa: E402
from benchmarks.late_wakes import LateWakeProbe  # noqa: E402
from robot.capabilities import HasLeaders, Simulation, Startable  # noqa: E402
from robot.real_rig import AlohaRig  # noqa: E402
from robot.real_rig_config import AlohaRigConfig  # noqa: E402
from robot.rig import RigError  # noqa: E402
from robot.rigs import open_rig  # noqa: E402
from robot.sim.config import SimRigConfig  # noqa: E402
from recordings.writer_status import WriterState  # noqa: E402
from robot.types import Severity, TickRecord  # noqa: E402


def emit(kind: str, **values) -> None:
    print(json.dumps({"kind": kind, **values}), flush=True)


def percentiles_ms(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    array = np.asarray(values_s) * 1e3
    return {
        "p50": round(float(np.percentile(array, 50)), 3),
        "p99": round(float(np.percentile(array, 99)), 3),
        "max": round(float(array.max()), 3),
    }


class TickLog:
    """A loop subscriber keeping only floats (cheap on the control thread)."""

    def __init__(self) -> None:
        self.periods_s: list[float] = []
        self.stages_s: dict[str, list[float]] = {"read": [], "source": [], "safety": [], "command": [], "total": []}
        self.image_age_s: list[float] = []
        self.sim_time_s = 0.0
        self.ticks = 0

    def __call__(self, record: TickRecord) -> None:
        t = record.timings
        if t.period_s > 0:
            self.periods_s.append(t.period_s)
        self.stages_s["read"].append(t.read_s)
        self.stages_s["source"].append(t.source_s)
        self.stages_s["safety"].append(t.safety_s)
        self.stages_s["command"].append(t.command_s)
        self.stages_s["total"].append(t.total_s)
        times = record.observation.image_times_s
        if times:
            self.image_age_s.append(record.observation.time_s - min(times.values()))
        self.sim_time_s = record.sim_time_s or 0.0
        self.ticks += 1


def override_cameras(rig, size: str | None, fps: float | None) -> None:
    """Set every camera of the (unconnected) rig to `size` ("HxW") and `fps`, in the rig's own
    config: the sim's image_height/width/camera_fps, or each camera config of a real rig."""
    if size is None and fps is None:
        return
    height = width = None
    if size is not None:
        try:
            height, width = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"--camera-size must be HEIGHTxWIDTH, e.g. 480x640, got {size!r}") from None
    config = rig.config
    if isinstance(config, SimRigConfig):  # sim (sim-leaders keeps it in .config too)
        changes = {} if height is None else {"image_height": height, "image_width": width}
        if fps is not None:
            changes["camera_fps"] = float(fps)
        rig.config = dataclasses.replace(config, **changes)
    elif isinstance(config, AlohaRigConfig):  # [[cameras]] tables
        changes = {} if height is None else {"height": height, "width": width}
        if fps is not None:
            changes["fps"] = int(round(fps))
        rig.config = dataclasses.replace(config, cameras=tuple(dataclasses.replace(c, **changes) for c in config.cameras))
    else:
        raise ValueError(f"--camera-size/--camera-fps: {rig.name} has no camera settings this benchmark knows")


def start_emulator_process(baud_rate: int, priority: int = 0) -> tuple[subprocess.Popen, dict[str, str]]:
    """The four ALOHA servo buses served by `python -m robot.dynamixel.emulator` in a process of
    their own (scripted hands on the leaders); returns it and {arm id: pty port}. Closing its
    stdin ends it. `priority` 1..99 runs every thread of it under SCHED_FIFO: real servos answer
    from their own microcontrollers whatever the computer's load, and an emulator starved of CPU
    would otherwise be measured as the loop's lateness (its bus reads)."""
    process = subprocess.Popen([sys.executable, "-m", "robot.dynamixel.emulator", "--baud", str(baud_rate)],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise SystemExit("the servo emulator process did not start; run `python -m robot.dynamixel.emulator` to see why")
    if priority:
        try:
            for task in os.listdir(f"/proc/{process.pid}/task"):
                os.sched_setscheduler(int(task), os.SCHED_FIFO, os.sched_param(priority))
        except (PermissionError, OSError) as exc:
            process.kill()
            raise SystemExit(f"--emulator-priority {priority}: SCHED_FIFO is not permitted here ({exc}); "
                             "run as root or with CAP_SYS_NICE, or leave the option out") from exc
    return process, json.loads(line)


def keep_cameras(rig, count: int) -> None:
    """Keep the first `count` cameras of the (unconnected) rig."""
    config = rig.config
    if isinstance(config, SimRigConfig):
        rig.config = dataclasses.replace(config, camera_names=config.camera_names[:count])
    else:
        rig.config = dataclasses.replace(config, cameras=config.cameras[:count])
    rig.camera_names = rig.camera_names[:count]


def camera_settings(rig) -> tuple[list[int | None], float | None]:
    """([height, width], fps) of the rig's first camera."""
    config = rig.config
    if isinstance(config, SimRigConfig):
        return [config.image_height, config.image_width], config.camera_fps
    if isinstance(config, AlohaRigConfig) and config.cameras:
        return [config.cameras[0].height, config.cameras[0].width], config.cameras[0].fps
    return [None, None], None


class BusyPolicy:
    """A thread doing `busy_ms` of pure-Python work every `period_s`: what a policy runner's
    Python side (pre/post-processing, torch dispatch) costs the interpreter lock between chunks.

    The work is sized once in thread CPU time (robust to the other jobs on the cores)."""

    def __init__(self, busy_ms: float, period_s: float) -> None:
        self.busy_ms = busy_ms
        self.period_s = period_s
        self.chunks = 0
        self._stop = threading.Event()
        self._units = self._calibrate(busy_ms)
        self._thread = threading.Thread(target=self._run, name="busy-policy", daemon=True)

    @staticmethod
    def _work(units: int) -> float:
        total = 0.0
        for i in range(units):
            total += (i % 7) * 0.5
        return total

    def _calibrate(self, busy_ms: float) -> int:
        units = 20_000
        begin = time.thread_time()
        self._work(units)
        per_unit_s = max(1e-9, (time.thread_time() - begin) / units)
        return max(1, int(busy_ms / 1e3 / per_unit_s))

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            self._work(self._units)
            self.chunks += 1
            deadline += self.period_s
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rig", default=str(ROOT / "configs" / "sim.toml"), help="rig file (default: configs/sim.toml)")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall seconds to run (default 60)")
    parser.add_argument("--image-format", choices=("jpeg", "raw"), default=None, help="default: the rig file's")
    parser.add_argument("--jpeg-quality", type=int, default=None, help="default: the rig file's")
    parser.add_argument(
        "--cameras", type=int, default=None, help="sim only: use the first N cameras of the rig file (0: none) to separate rendering from the loop"
    )
    parser.add_argument(
        "--render-thread", choices=("on", "off"), default=None,
        help="sim only: render the cameras on their own thread or inside read() (default: the rig file's)",
    )
    parser.add_argument("--camera-size", default=None, metavar="HxW",
                        help="image height x width of every camera, e.g. 480x640 (default: the rig file's)")
    parser.add_argument("--camera-fps", type=float, default=None, help="frames per second of every camera (default: the rig file's)")
    parser.add_argument("--source", choices=("jog", "leaders"), default=None,
                        help="jog (sim) or the rig's leader arms (default: leaders where the rig has them)")
    parser.add_argument("--emulator-process", action="store_true",
                        help="emulated rigs: serve the servo buses from a separate process (`python -m "
                             "robot.dynamixel.emulator`) instead of threads of this one, as real servos would be")
    parser.add_argument("--emulator-priority", type=int, default=0,
                        help="with --emulator-process: SCHED_FIFO priority 1..99 for the emulator's threads, so the "
                             "emulated servos answer like hardware on a loaded machine (default 0: normal priority)")
    parser.add_argument("--no-record", action="store_true", help="leave the recorder out (to measure the loop alone)")
    parser.add_argument("--window", action="store_true",
                        help="open the studio window and let it paint (needs a display: xvfb-run, or QT_QPA_PLATFORM=offscreen)")
    parser.add_argument("--policy-busy-ms", type=float, default=0.0,
                        help="a thread doing this many ms of pure-Python work every --policy-period-ms (a policy's Python side)")
    parser.add_argument("--policy-period-ms", type=float, default=80.0, help="period of that work (default 80 ms: one chunk)")
    parser.add_argument("--attribute", action="store_true",
                        help="explain every late wake (starvation or in-process, and which threads): benchmarks/late_wakes.py")
    parser.add_argument("--realtime-priority", type=int, default=None,
                        help="the rig file's [control] realtime_priority for this run (0: normal; 1..99: SCHED_FIFO)")
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="the rig file's [control] switch_interval_ms for this run (the interpreter's; Python's default is 5 ms)")
    parser.add_argument("--writer", choices=("process", "thread"), default=None,
                        help="write episodes from a process of their own or a thread of this one (default: the rig file's)")
    parser.add_argument("--pin", action="store_true",
                        help="a core for the loop: the control thread on CPU 1, every other thread of ours (and the "
                             "writer process) on CPU 0 (a 4-core machine's split, simulated; use with --realtime-priority)")
    parser.add_argument("--variants", default=None,
                        help='run this script once per variant, one after the other, and compare: "NAME:ARGS;NAME:ARGS", '
                             'e.g. "before:--writer thread;after:--writer process" (the other arguments are shared)')
    parser.add_argument("--label", default="", help="a name for this run in the result line")
    parser.add_argument("--report-s", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--keep", default=None, help="record into this folder and keep the episode (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.variants:
        return run_variants(argv, args.variants)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    emulator_process = None
    problems: list[str] = []

    def open_tuned(path):
        """The rig file's rig with this run's overrides, before it connects (open_session's seam)."""
        nonlocal emulator_process
        rig, rig_file = open_rig(path)
        try:
            override_cameras(rig, args.camera_size, args.camera_fps)
        except ValueError as exc:
            problems.append(str(exc))
        if args.cameras is not None:
            keep_cameras(rig, max(0, args.cameras))
        if args.emulator_process:
            if not (isinstance(rig, AlohaRig) and rig.config.emulate):
                problems.append("--emulator-process works with the aloha-emulated rig only")
            else:
                emulator_process, ports = start_emulator_process(rig.config.settings.baud_rate, args.emulator_priority)
                rig.config = dataclasses.replace(rig.config, emulate=False, arms=tuple(
                    dataclasses.replace(a, port=ports[a.name]) for a in rig.config.arms))
        if args.render_thread is not None:
            if isinstance(rig, Simulation):
                rig.set_render_thread(args.render_thread == "on")
            else:
                problems.append("--render-thread works with the sim rig only")
        recording = dataclasses.replace(rig_file.recording, image_format=args.image_format or rig_file.recording.image_format,
                                        jpeg_quality=args.jpeg_quality or rig_file.recording.jpeg_quality)
        if args.writer is not None:
            recording = dataclasses.replace(recording, writer_process=args.writer == "process")
        control = rig_file.control
        if args.realtime_priority is not None:
            control = dataclasses.replace(control, realtime_priority=args.realtime_priority)
        if args.switch_interval_ms is not None:
            control = dataclasses.replace(control, switch_interval_ms=args.switch_interval_ms)
        if problems:
            raise RigError("; ".join(problems))
        return rig, dataclasses.replace(rig_file, recording=recording, control=control)

    if args.pin:
        os.sched_setaffinity(0, {0})  # this thread, and every thread and process started from now on
    app = None
    if args.window:
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance() or QApplication(["control-loop-benchmark"])
    temp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-control-loop-")
    store = Path(args.keep) if args.keep else Path(temp.name)
    studio = Studio(args.rig, store, rig_opener=open_tuned)
    window = None
    if app is not None:
        from app.ui.main_window import StudioWindow

        window = StudioWindow(studio)
        window.resize(1600, 1000)
        window.show()
    busy = BusyPolicy(args.policy_busy_ms, args.policy_period_ms / 1e3) if args.policy_busy_ms > 0 else None
    probe = None
    try:
        studio.start()
        if not pump_until(app, lambda: studio.phase in (Phase.RUNNING, Phase.FAILED, Phase.STOPPED), 180.0) or studio.phase is not Phase.RUNNING:
            messages = "; ".join(e.message for e in studio.events.all() if e.severity is Severity.ERROR)
            parser.error(problems[0] if problems else f"the rig did not start: {messages}")
        session = studio.session
        rig, rig_file = session.rig, session.rig_file
        writer = session.writer
        config = rig_file.control
        image_format, jpeg_quality = rig_file.recording.image_format, rig_file.recording.jpeg_quality
        source_name = args.source or ("leaders" if isinstance(rig, HasLeaders) else "jog")
        if source_name == "leaders" and not isinstance(rig, HasLeaders):
            parser.error(f"--source leaders needs a rig with leader arms; {rig.name} has none")
        ceremony_s = None
        if isinstance(rig, Startable) and session.capabilities.real_arms:
            # The real rig commands nothing until its opening ceremony is done; measure from then.
            begun = time.monotonic()
            studio.start_arms()
            if not pump_until(app, lambda: rig.started, 120.0):
                parser.error("the arms did not start within 120 s: " + "; ".join(e.message for e in studio.events.all()[-5:]))
            ceremony_s = round(time.monotonic() - begun, 2)
        ticks = TickLog()
        if args.pin:
            session.subscribe(PinOnce(1))
        session.subscribe(ticks)
        if args.attribute:
            probe = LateWakeProbe(config.period_s, gui_thread=window is not None)
            session.subscribe(probe)
        studio.select_source("keyboard" if source_name == "jog" else "leaders")
        if not args.no_record:
            if not wait_future(app, studio.start_recording("benchmark", "benchmark")):
                parser.error("the recording did not start: " + "; ".join(e.message for e in studio.events.all()[-3:]))
        if busy is not None:
            busy.start()
        # 5 cm/s: half the jog source's default top speed (robot.teleop.JogConfig.max_linear_mps).
        jog_fraction = 0.5
        started = time.monotonic()
        loop = studio.loop
        stats_before = loop.snapshot(max_events=0).stats
        next_report = [started + args.report_s]

        def every_50ms() -> None:
            # A slow horizontal circle of radius ~3 cm per arm, the two arms mirrored; speeds are
            # set at 20 Hz from this (the GUI) thread, as the window's jog keys would.
            now = time.monotonic()
            if source_name == "jog":
                phase = 2 * math.pi * (now - started) / 4.0
                studio.jog("left", (jog_fraction * math.cos(phase), jog_fraction * math.sin(phase), 0.0))
                studio.jog("right", (-jog_fraction * math.cos(phase), jog_fraction * math.sin(phase), 0.0))
            if now >= next_report[0]:
                snap = loop.snapshot()
                status = writer.status()
                emit(
                    "progress",
                    elapsed_s=round(now - started, 1),
                    achieved_rate_hz=round(snap.stats.achieved_rate_hz, 2),
                    period_error_p99_ms=round(snap.stats.period_error_p99_ms, 2),
                    late_ticks=snap.stats.late_ticks - stats_before.late_ticks,
                    queue_depth=status.queue_depth,
                    frames_written=status.frames_written,
                    load_average_1min=round(os.getloadavg()[0], 2),
                )
                next_report[0] += args.report_s

        run_for(app, args.seconds, every_50ms)
        wall_s = time.monotonic() - started
        if busy is not None:
            busy.stop()
        studio.stop_jogging()
        snap = loop.snapshot(max_events=1000)
        before_stop = writer.status()
        stopped = time.monotonic()
        finished_at = []

        def saved() -> bool:
            # The file is saved (renamed) when the writer says FINISHED; the studio then indexes
            # it and judges its timing (QA) before the stop returns.
            if not finished_at and writer.status().state is WriterState.FINISHED:
                finished_at.append(time.monotonic())
            return future.done()

        future = None if args.no_record else studio.stop_recording(True)
        if future is not None:
            pump_until(app, saved, 300.0)
        path = None if future is None else future.result(1.0)
        save_s = time.monotonic() - stopped
        file_saved_s = (finished_at[0] - stopped) if finished_at else None
        status = writer.status()
        rig_status = rig.status()
        render_stats = rig.render_stats() if isinstance(rig, Simulation) else None
        size = 0 if path is None else path.stat().st_size
        periods = ticks.periods_s[: ticks.ticks]
        errors_s = [abs(p - config.period_s) for p in periods]
        emit(
            "result",
            label=args.label,
            rig=rig.name,
            seconds=round(wall_s, 2),
            rate_hz=config.rate_hz,
            cameras=list(rig.camera_names),
            source=source_name,
            window=window is not None,
            paints=None if window is None else window.paint_count,
            policy_busy_ms=args.policy_busy_ms,
            policy_chunks=None if busy is None else busy.chunks,
            opening_ceremony_s=ceremony_s,
            image_size=camera_settings(rig)[0],
            camera_fps=camera_settings(rig)[1],
            render_thread=rig.config.render_thread if isinstance(rig.config, SimRigConfig) else None,
            image_format=image_format,
            jpeg_quality=jpeg_quality,
            ticks=ticks.ticks,
            expected_ticks=int(wall_s * config.rate_hz),
            achieved_rate_hz=round((len(periods)) / sum(periods), 3) if periods else 0.0,
            period_error_ms=percentiles_ms(errors_s),
            period_ms=percentiles_ms(periods),
            late_ticks=snap.stats.late_ticks - stats_before.late_ticks,
            missed_deadlines=snap.stats.missed_deadlines - stats_before.missed_deadlines,
            stage_ms={name: percentiles_ms(values) for name, values in ticks.stages_s.items()},
            real_time_factor=round(ticks.sim_time_s / wall_s, 4) if rig.simulated else None,
            camera_fps_measured={name: round(fps, 2) for name, fps in rig_status.camera_fps.items()},
            render_frames=None if render_stats is None else render_stats.frames_rendered,
            render_snapshots_dropped=None if render_stats is None else render_stats.snapshots_dropped,
            image_age_ms=percentiles_ms(ticks.image_age_s),
            recorder_queue_high_water=status.queue_high_water,
            recorder_queue_capacity=status.queue_capacity,
            recorder_queue_depth_at_stop=before_stop.queue_depth,
            save_s=round(save_s, 3),
            file_saved_s=None if file_saved_s is None else round(file_saved_s, 3),
            frames_received=status.frames_received,
            frames_written=status.frames_written,
            frames_dropped=status.frames_dropped,
            bytes_written=size,
            bytes_per_s=round(size / wall_s),
            episode=None if path is None else (str(path) if args.keep else path.name),
            emulator_process=emulator_process is not None,
            emulator_priority=args.emulator_priority if emulator_process is not None else None,
            writer="process" if rig_file.recording.writer_process else "thread",
            realtime_priority=config.realtime_priority,
            switch_interval_ms=round(sys.getswitchinterval() * 1e3, 3),
            late_wakes=None if probe is None else probe.summary(),
            loop_errors=[e.message for e in snap.events if e.severity is Severity.ERROR],
            cpu_count=os.cpu_count(),
            load_average_1min=round(os.getloadavg()[0], 2),
        )
    finally:
        if busy is not None:
            busy.stop()
        try:
            studio.shutdown(recording_label=None, timeout_s=60)
        finally:
            if probe is not None:
                probe.close()
            if window is not None:
                window.hide()  # close() would run the window's own shutdown dialog
            if emulator_process is not None:
                emulator_process.stdin.close()
                emulator_process.wait(10)
            if temp is not None:
                temp.cleanup()
    return 0


class PinOnce:
    """A loop subscriber that moves the control thread to one CPU at its first tick."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.done = False

    def __call__(self, record: TickRecord) -> None:
        if not self.done:
            self.done = True
            os.sched_setaffinity(0, {self.cpu})


def run_variants(argv: list[str], spec: str) -> int:
    """Run this script once per "NAME:ARGS" of `spec` (the other arguments shared), one after the
    other in fresh processes, print their result lines, then one "comparison" line."""
    shared, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--variants":
            skip = True
            continue
        if arg.startswith("--variants="):
            continue
        shared.append(arg)
    results = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, extra = part.partition(":")
        command = [sys.executable, str(Path(__file__).resolve()), *shared, *extra.split(), "--label", name]
        finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for line in finished.stdout.splitlines():
            print(line, flush=True)
            if '"kind": "result"' in line:
                results[name] = json.loads(line)
        if finished.returncode != 0:
            emit("variant_failed", label=name, returncode=finished.returncode)
    emit("comparison", variants={
        name: {
            "period_error_ms": r["period_error_ms"], "late_ticks": r["late_ticks"], "missed_deadlines": r["missed_deadlines"],
            "achieved_rate_hz": r["achieved_rate_hz"], "image_age_ms": r["image_age_ms"], "frames_dropped": r["frames_dropped"],
            "save_s": r["save_s"], "load_average_1min": r["load_average_1min"],
            "late_wakes": None if r["late_wakes"] is None else {k: r["late_wakes"][k] for k in (
                "late_wakes", "wake_late_ms", "late_ms_total", "starvation_ms_total", "in_process_ms_total", "late_wakes_in_process_over_threshold",
                "in_process_wakes_holder_starved", "in_process_ms_holder_starved", "causes_in_process_ms")},
        } for name, r in results.items()
    })
    return 0 if len(results) == len([p for p in spec.split(";") if p.strip()]) else 1


def pump_until(app, done, timeout_s: float) -> bool:
    """Wait for `done()` while the window (if any) keeps painting."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        if app is not None:
            app.processEvents()
        time.sleep(0.02)
    return done()


def wait_future(app, future):
    pump_until(app, future.done, 120.0)
    return future.result(1.0)


def run_for(app, seconds: float, every_50ms) -> None:
    """Call `every_50ms` at 20 Hz for `seconds`: from Qt's event loop when a window paints."""
    if app is None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            every_50ms()
            time.sleep(0.05)
        return
    from PySide6.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(every_50ms)
    timer.start(50)
    # exit, not quit: Qt 6 quit() first offers the window a close, which the studio window turns
    # into its own shutdown.
    QTimer.singleShot(int(seconds * 1000), lambda: app.exit(0))
    app.exec()
    timer.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
