"""Headless jobs: record episodes without a window (scripted collection, tests, CI).

    python run.py demos --episodes N --seed S [--store DIR] [--rig configs/sim.toml]
        N scripted towel folds on the simulated rig, one episode each, seeds S, S+1, ...
        The simulation is stepped as fast as the CPU allows (no real-time pacing; simulated time
        and the recorded data are the same as in real time) and each episode is labelled
        success/failure by the towel-fold measure.

    python run.py record --rig FILE --source scripted|leaders --seconds N [--store DIR]
        One episode from any rig and source through the real control loop at its real rate.

Both use the same pieces as the studio window: the rig from its rig file, `ControlLoop`, and
`EpisodeWriter` subscribed to the loop. No Qt is imported here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from recordings.errors import RecordingError
from recordings.metadata import EpisodeMetadata, validate_task
from recordings.schema import Label
from recordings.store import StorePathError, require_store_dir
from recordings.writer import EpisodeWriter
from robot.control_loop import ControlLoop
from robot.rig import Rig, RigError
from robot.rig_config import RigFile, RigFileError
from robot.rigs import open_rig
from robot.types import ActionSource, Mode

from app.studio.paths import DEFAULT_RIG_FILE

log = logging.getLogger(__name__)



class JobError(RuntimeError):
    """A job cannot run; the message says why and what to do."""


@dataclass
class RigSession:
    """A connected rig with its loop and writer (not started). Close with `close()`."""

    rig: Rig
    rig_file: RigFile
    loop: ControlLoop
    writer: EpisodeWriter

    def metadata(self, task: str, operator: str, notes: str = "") -> EpisodeMetadata:
        return EpisodeMetadata(
            task=task or self.rig_file.recording.task,
            operator=operator or self.rig_file.recording.operator,
            rig=self.rig.name,
            sim=self.rig.simulated,
            notes=notes,
            control_rate_hz=self.rig_file.control.rate_hz,
        )

    def close(self) -> None:
        self.loop.stop()
        self.rig.disconnect()


def open_session(rig_path: Path, store: Path | None) -> RigSession:
    """Open and connect the rig of `rig_path`; episodes go to `store` (default: the rig file's)."""
    try:
        rig, rig_file = open_rig(rig_path)
    except RigFileError as exc:
        raise JobError(f"The rig file cannot be used: {exc}") from exc
    store_dir = require_store_dir(store or rig_file.recording.store_dir, create=True)
    rig.connect()
    try:
        loop = ControlLoop(rig, rig_file.control)
        try:
            writer = EpisodeWriter(
                store_dir,
                rig.camera_names,
                image_format=rig_file.recording.image_format,
                jpeg_quality=rig_file.recording.jpeg_quality,
            )
        except ValueError as exc:  # e.g. a rig without cameras: nothing to record from
            raise JobError(f"{rig_path} cannot record: {exc}") from exc
        loop.subscribe(writer.on_tick)
    except Exception:
        rig.disconnect()
        raise
    return RigSession(rig, rig_file, loop, writer)


def make_source(session: RigSession, name: str) -> ActionSource:
    """The action source called `name` on this rig: "scripted" (the sim's towel-fold
    demonstrator) or "leaders" (the rig's leader arms)."""
    rig = session.rig
    if name == "scripted":
        if not rig.simulated:
            raise JobError(f"--source scripted needs the simulated rig; {rig.name} is real. Use --source leaders.")
        from robot.sim import ScriptedFoldDemonstrator

        return ScriptedFoldDemonstrator(rig)
    if name == "leaders":
        leader_source = getattr(rig, "leader_source", None)
        if leader_source is None:
            raise JobError(f"{rig.name} has no leader arms. Use a rig file with [[arms]] leaders, or --source scripted on the sim.")
        return leader_source()
    raise JobError(f"Unknown source {name!r}: choose scripted or leaders.")


def task_label(rig: Rig) -> tuple[Label, str]:
    """Success/failure from the rig's own task measure (the sim), else unknown."""
    evaluate = getattr(rig, "evaluate_task", None)
    if evaluate is None:
        return Label.UNKNOWN, ""
    result = evaluate()
    return (Label.SUCCESS if result.success else Label.FAILURE), f"fold_error_m={result.fold_error_m:.4f}"


def run_demos(episodes: int, seed: int, store: Path | None, rig_path: Path, max_seconds: float, operator: str) -> list[dict]:
    """Record `episodes` scripted folds, stepping the sim as fast as it goes; one dict per episode."""
    session = open_session(rig_path, store)
    rig, writer = session.rig, session.writer
    if not rig.simulated or not hasattr(rig, "reset_episode"):
        session.close()
        raise JobError(f"demos needs the simulated rig; {rig_path} opens {rig.name}.")
    # Unpaced stepping outruns a camera thread; render inside read() so every frame is the state
    # at its due tick and an episode is reproducible from its seed.
    rig.set_render_thread(False)
    results = []
    max_ticks = int(max_seconds * rig.control_rate_hz)
    try:
        for episode_seed in range(seed, seed + episodes):
            rig.reset_episode(episode_seed)
            # A fresh loop per episode: its hold pose is read from the reset arms. A loop kept from
            # the previous episode would start from that episode's last command (a jump back).
            loop = ControlLoop(rig, session.rig_file.control)
            unsubscribe = loop.subscribe(writer.on_tick)
            source = make_source(session, "scripted")
            loop.set_source(source)
            loop.request_mode(Mode.TELEOP)
            path = writer.start(session.metadata("", operator, notes=f"seed={episode_seed}; source=scripted"))
            started = time.monotonic()
            ticks = 0
            while not source.finished and ticks < max_ticks:
                loop.tick_once()
                ticks += 1
            loop.request_mode(Mode.HOLD)
            loop.tick_once()  # applies HOLD; recorded as the last step
            unsubscribe()
            label, notes = task_label(rig)
            writer.stop(label, notes=f"seed={episode_seed}; source=scripted; {notes}")
            result = {
                "episode": path.name,
                "seed": episode_seed,
                "label": label.value,
                "steps": writer.status().frames_written,
                "finished": source.finished,
                "wall_s": round(time.monotonic() - started, 2),
            }
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        if writer.status().recording:
            writer.discard()
        session.close()
    return results


def run_opening_ceremony(rig: Rig, timeout_s: float = 60.0) -> None:
    """A real rig's safe start (ALOHA's opening ceremony): followers ramp to the start pose, then
    the operator squeezes both leader grippers. The running control loop carries it out; this
    prints the rig's prompts until the arms are started. Rigs without one return at once."""
    begin = getattr(rig, "begin_start", None)
    if begin is None:
        return
    begin()
    deadline = time.monotonic() + timeout_s
    shown = ""
    while not rig.started:
        if rig.start_prompt != shown:
            shown = rig.start_prompt
            print(f"[{rig.name}] {shown}", file=sys.stderr, flush=True)
        if time.monotonic() > deadline:
            raise JobError(f"The arms did not start within {timeout_s:.0f} s ({shown}). "
                           "Check that both leader grippers are squeezed and the servos answer.")
        time.sleep(0.05)


def run_record(rig_path: Path, source_name: str, seconds: float, store: Path | None, task: str, operator: str) -> Path:
    """One episode of `seconds` from `source_name` through the paced control loop."""
    session = open_session(rig_path, store)
    loop, writer = session.loop, session.writer
    try:
        source = make_source(session, source_name)
        loop.start()
        run_opening_ceremony(session.rig)
        loop.set_source(source)
        loop.request_mode(Mode.TELEOP)
        # The mode changes on the loop's next tick: start recording once it has, so that the
        # first step is the source's and not the idle tick before it.
        deadline = time.monotonic() + 2.0
        while loop.snapshot(max_events=0).mode is not Mode.TELEOP and time.monotonic() < deadline:
            time.sleep(0.005)
        path = writer.start(session.metadata(task, operator, notes=f"source={source_name}"))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if loop.snapshot(max_events=0).mode is Mode.ESTOP:
                break
        loop.request_mode(Mode.HOLD)
        loop.stop()
        label, notes = task_label(session.rig)
        writer.stop(label, notes=f"source={source_name}; {notes}".rstrip("; "))
        status = writer.status()
        stats = loop.snapshot(max_events=0).stats
        print(json.dumps({
            "episode": str(path),
            "label": label.value,
            "steps": status.frames_written,
            "dropped": status.frames_dropped,
            "rate_hz": round(stats.achieved_rate_hz, 2),
            "late_ticks": stats.late_ticks,
        }), flush=True)
        return path
    finally:
        if writer.status().recording:
            writer.discard()
        session.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="Headless recording jobs (no window).")
    sub = parser.add_subparsers(dest="command", required=True)
    demos = sub.add_parser("demos", help="scripted towel folds on the simulated rig")
    demos.add_argument("--episodes", type=int, required=True, metavar="N")
    demos.add_argument("--seed", type=int, default=0, metavar="S", help="towel seed of the first episode (then S+1, ...)")
    demos.add_argument("--store", type=Path, default=None, metavar="DIR")
    demos.add_argument("--rig", type=Path, default=DEFAULT_RIG_FILE, metavar="FILE")
    demos.add_argument("--max-seconds", type=float, default=40.0, help="simulated seconds before an episode is cut off")
    demos.add_argument("--operator", default="scripted")
    record = sub.add_parser("record", help="one episode from any rig and source")
    record.add_argument("--rig", type=Path, default=DEFAULT_RIG_FILE, metavar="FILE")
    record.add_argument("--source", default="scripted", choices=("scripted", "leaders"))
    record.add_argument("--seconds", type=float, required=True, metavar="N")
    record.add_argument("--store", type=Path, default=None, metavar="DIR")
    record.add_argument("--task", default="")
    record.add_argument("--operator", default="")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "record" and args.task:
        try:
            validate_task(args.task, "--task")
        except ValueError as exc:
            print(f"record: {exc}", file=sys.stderr)
            return 2
    if args.store is not None:  # before the rig starts: a typo must not cost a rig start-up
        try:
            require_store_dir(args.store, create=True)
        except StorePathError as exc:
            print(f"{args.command}: {exc}", file=sys.stderr)
            return 2
    if not args.rig.is_file():
        print(f"The rig file {args.rig} does not exist; pass one with --rig (e.g. {DEFAULT_RIG_FILE}).", file=sys.stderr)
        return 2
    try:
        if args.command == "demos":
            if args.episodes < 1:
                print("--episodes must be at least 1.", file=sys.stderr)
                return 2
            results = run_demos(args.episodes, args.seed, args.store, args.rig, args.max_seconds, args.operator)
            successes = sum(r["label"] == Label.SUCCESS.value for r in results)
            print(json.dumps({"episodes": len(results), "successes": successes}), flush=True)
        else:
            if args.seconds <= 0:
                print("--seconds must be positive.", file=sys.stderr)
                return 2
            run_record(args.rig, args.source, args.seconds, args.store, args.task, args.operator)
    except StorePathError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    except (JobError, RigError, RecordingError, OSError) as exc:  # a full disk ends here, cleanly
        print(f"{args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0
