"""Benchmark: the control loop on a rig at 50 Hz with cameras, recording to HDF5.

    .venv/bin/python benchmarks/control_loop.py [--seconds 60] [--rig configs/sim.toml]
        [--image-format jpeg|raw] [--jpeg-quality Q] [--cameras N] [--render-thread on|off]
        [--camera-size HxW] [--camera-fps F] [--source jog|leaders] [--no-record] [--keep DIR]

    # the emulated real rig: 3 cameras at 480x640/30 fps, driven by the (scripted) leader arms
    .venv/bin/python benchmarks/control_loop.py --rig configs/emulated.toml --camera-size 480x640 --camera-fps 30

Source: on the sim (default) the arm is jogged by `EndEffectorJogSource` in a slow circle (set
from the main thread, as the GUI would), so camera images change and the IK runs every tick. On
a rig with leader arms (`leader_source()`: aloha, aloha-emulated, sim-leaders) the default is the
leaders; a rig with an opening ceremony (`begin_start`) runs it first, with the loop running, as
`run.py record` does (`app.studio.jobs.demos.run_opening_ceremony`), and the measurement starts when the arms
are started. --camera-size/--camera-fps override every camera of the rig file (sim: [sim]
image_height/width and camera_fps; real rigs: each [[cameras]] width/height/fps).
Every tick is recorded by `recordings.writer.EpisodeWriter` (a loop subscriber; its own thread
encodes and writes).

Prints JSON lines on stdout: a "progress" line every --report-s seconds and one "result" line:
achieved rate, period error p50/p99/max, late ticks and missed deadlines, the real-time factor
(simulated seconds per wall second), the recorder's queue high-water mark, frames written and
dropped, and bytes per second written; for the sim also how it rendered (render thread or
inside read()), the render rate, snapshots the render thread dropped, and the image age (tick
reading time minus the frame's capture time) p50/p99/max. Logging goes to stderr.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from app.studio.jobs.record import run_opening_ceremony  # noqa: E402
from app.studio.session import SessionError, open_session  # noqa: E402
from app.studio.sources import SourceFactory  # noqa: E402
from robot.capabilities import HasLeaders, Simulation, Startable  # noqa: E402
from robot.real_rig import AlohaRig, AlohaRigConfig  # noqa: E402
from robot.rig import RigError  # noqa: E402
from robot.rigs import open_rig  # noqa: E402
from robot.sim.config import SimRigConfig  # noqa: E402
from robot.types import Mode, Severity, TickRecord  # noqa: E402


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


def start_emulator_process(baud_rate: int) -> tuple[subprocess.Popen, dict[str, str]]:
    """The four ALOHA servo buses served by `python -m robot.dynamixel.emulator` in a process of
    their own (scripted hands on the leaders); returns it and {arm id: pty port}. Closing its
    stdin ends it."""
    process = subprocess.Popen([sys.executable, "-m", "robot.dynamixel.emulator", "--baud", str(baud_rate)],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise SystemExit("the servo emulator process did not start; run `python -m robot.dynamixel.emulator` to see why")
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
    parser.add_argument("--no-record", action="store_true", help="leave the recorder out (to measure the loop alone)")
    parser.add_argument("--report-s", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--keep", default=None, help="record into this folder and keep the episode (default: a temporary folder)")
    args = parser.parse_args(argv)
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
                emulator_process, ports = start_emulator_process(rig.config.settings.baud_rate)
                rig.config = dataclasses.replace(rig.config, emulate=False, arms=tuple(
                    dataclasses.replace(a, port=ports[a.name]) for a in rig.config.arms))
        if args.render_thread is not None and not isinstance(rig, Simulation):
            problems.append("--render-thread works with the sim rig only")
        recording = dataclasses.replace(rig_file.recording, image_format=args.image_format or rig_file.recording.image_format,
                                        jpeg_quality=args.jpeg_quality or rig_file.recording.jpeg_quality)
        if problems:
            raise RigError("; ".join(problems))
        return rig, dataclasses.replace(rig_file, recording=recording)

    temp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-control-loop-")
    store = Path(args.keep) if args.keep else Path(temp.name)
    try:
        session = open_session(args.rig, store, render_thread=None if args.render_thread is None else args.render_thread == "on",
                               rig_opener=open_tuned)
    except SessionError as exc:
        parser.error(problems[0] if problems else str(exc))
    rig, rig_file, loop, writer = session.rig, session.rig_file, session.loop, session.writer
    image_format, jpeg_quality = rig_file.recording.image_format, rig_file.recording.jpeg_quality
    source_name = args.source or ("leaders" if isinstance(rig, HasLeaders) else "jog")
    try:
        config = rig_file.control
        sources = SourceFactory(rig, config)
        if source_name == "leaders" and not isinstance(rig, HasLeaders):
            parser.error(f"--source leaders needs a rig with leader arms; {rig.name} has none")
        jog = sources.jog if source_name == "jog" else None
        ticks = TickLog()
        ceremony_s = None
        if isinstance(rig, Startable):
            # The real rig commands nothing until its opening ceremony is done; measure from then.
            loop.start()
            begun = time.monotonic()
            run_opening_ceremony(rig)
            ceremony_s = round(time.monotonic() - begun, 2)
        loop.subscribe(ticks)
        loop.set_source(sources.make("keyboard" if jog is not None else "leaders"))
        loop.request_mode(Mode.TELEOP)
        if not args.no_record:
            writer.start(session.metadata(operator="benchmark"))
        loop.start()  # idempotent when the ceremony started it
        started = time.monotonic()
        stats_before = loop.snapshot(max_events=0).stats
        next_report = started + args.report_s
        # A slow horizontal circle of radius ~3 cm per arm, the two arms mirrored; speeds are set
        # at 20 Hz from this thread like a GUI would.
        while (now := time.monotonic()) - started < args.seconds:
            phase = 2 * math.pi * (now - started) / 4.0
            speed = 0.05
            if jog is not None:
                jog.set_velocity("left", (speed * math.cos(phase), speed * math.sin(phase), 0.0))
                jog.set_velocity("right", (-speed * math.cos(phase), speed * math.sin(phase), 0.0))
            if now >= next_report:
                snap = loop.snapshot()
                status = writer.status()
                emit(
                    "progress",
                    elapsed_s=round(now - started, 1),
                    achieved_rate_hz=round(snap.stats.achieved_rate_hz, 2),
                    period_error_p99_ms=round(snap.stats.period_error_p99_ms, 2),
                    late_ticks=snap.stats.late_ticks - stats_before.late_ticks,
                    real_time_factor=None if rig.status().real_time_factor is None else round(rig.status().real_time_factor, 3),
                    queue_depth=status.queue_depth,
                    frames_written=status.frames_written,
                )
                next_report += args.report_s
            time.sleep(0.05)
        loop.stop()
        wall_s = time.monotonic() - started
        stopped = time.monotonic()
        before_stop = writer.status()
        path = None if args.no_record else writer.stop()
        drain_s = time.monotonic() - stopped
        status = writer.status()
        snap = loop.snapshot(max_events=1000)
        rig_status = rig.status()
        render_stats = rig.render_stats() if isinstance(rig, Simulation) else None
        size = 0 if path is None else path.stat().st_size
        periods = ticks.periods_s
        errors_s = [abs(p - config.period_s) for p in periods]
        emit(
            "result",
            rig=rig.name,
            seconds=round(wall_s, 2),
            rate_hz=config.rate_hz,
            cameras=list(rig.camera_names),
            source=source_name,
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
            render_fps=round(max(rig_status.camera_fps.values(), default=0.0), 2),
            camera_fps_measured={name: round(fps, 2) for name, fps in rig_status.camera_fps.items()},
            render_frames=None if render_stats is None else render_stats.frames_rendered,
            render_snapshots_dropped=None if render_stats is None else render_stats.snapshots_dropped,
            image_age_ms=percentiles_ms(ticks.image_age_s),
            recorder_queue_high_water=status.queue_high_water,
            recorder_queue_capacity=status.queue_capacity,
            recorder_queue_depth_at_stop=before_stop.queue_depth,
            recorder_drain_s=round(drain_s, 2),
            frames_received=status.frames_received,
            frames_written=status.frames_written,
            frames_dropped=status.frames_dropped,
            bytes_written=size,
            bytes_per_s=round(size / wall_s),
            episode=None if path is None else (str(path) if args.keep else path.name),
            emulator_process=emulator_process is not None,
            loop_errors=[e.message for e in snap.events if e.severity is Severity.ERROR],
            cpu_count=os.cpu_count(),
            load_average_1min=round(os.getloadavg()[0], 2),
        )
    finally:
        if writer.status().recording:
            writer.discard()
        session.close()
        if emulator_process is not None:
            emulator_process.stdin.close()
            emulator_process.wait(10)
        if temp is not None:
            temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
