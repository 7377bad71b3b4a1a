"""`python run.py record`: one episode from any rig and source through the paced control loop.

    python run.py record --rig FILE --source scripted|leaders --seconds N [--store DIR] [--json]

A rig with real follower arms runs its opening ceremony first (followers to the start pose, the
operator squeezes both leaders), printing the rig's prompts. The rig, loop and writer are the
window's (`app.studio.session.open_session`); so are the sources (`app.studio.sources`).

On a terminal it shows the seconds recorded and a summary; piped or with `--json`, JSON lines (the
last: {"event": "summary", "episode", "label", "steps", "dropped", "rate_hz", "late_ticks"}).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from app.studio.jobs.common import JobError, check_arguments, task_outcome
from app.studio.jobs.console import Bar, Reporter, Shown, Summary, open_reporter
from app.studio.paths import DEFAULT_RIG_FILE
from app.studio.session import SessionError, open_session
from app.studio.sources import SourceFactory, SourceUnavailable
from recordings.errors import RecordingError
from robot.capabilities import Startable
from robot.rig import Rig, RigError
from robot.types import Mode

log = logging.getLogger(__name__)

#: The command line's names for the sources, and the studio's.
SOURCES = {"scripted": "demo", "leaders": "leaders"}


def run_opening_ceremony(rig: Rig, timeout_s: float = 60.0) -> None:
    """A Startable rig's safe start: followers ramp to the start pose, then the operator squeezes
    both leader grippers. The running control loop carries it out; this prints the rig's prompts
    until the arms are started. Other rigs return at once."""
    if not isinstance(rig, Startable):
        return
    rig.begin_start()
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


def wait_for_mode(loop, mode: Mode, timeout_s: float = 5.0) -> None:
    """Block until the running loop is in `mode` (JobError naming the mode it is in instead)."""
    deadline = time.monotonic() + timeout_s
    while (state := loop.state()).mode is not mode:
        if time.monotonic() > deadline:
            raise JobError(f"The control loop did not switch to {mode.value} within {timeout_s:.0f} s "
                           f"(it is in {state.mode.value}); see the log for why.")
        time.sleep(0.005)


def run_record(rig_path: Path, source_name: str, seconds: float, store: Path | None, task: str, operator: str,
               reporter: Reporter) -> Path:
    """One episode of `seconds` from `source_name` ("scripted" or "leaders")."""
    session = open_session(rig_path, store)
    loop, writer = session.loop, session.writer
    try:
        try:
            source = SourceFactory(session.rig, session.rig_file.control).make(SOURCES[source_name])
        except SourceUnavailable as exc:
            raise JobError(str(exc)) from exc
        loop.start()
        run_opening_ceremony(session.rig)
        loop.set_source(source)
        loop.request_mode(Mode.TELEOP)
        # Requests apply at the start of the next tick: record from the first tick that teleoperates,
        # not from the idle tick still under way.
        wait_for_mode(loop, Mode.TELEOP)
        path = writer.start(session.metadata(task, operator, notes=f"source={source_name}"))
        started = time.monotonic()
        next_report = started
        while (elapsed := time.monotonic() - started) < seconds:
            time.sleep(0.05)
            if loop.state().mode is Mode.ESTOP:
                break
            if time.monotonic() >= next_report:
                next_report += 0.5
                reporter.event("progress", elapsed_s=round(elapsed, 2), seconds=seconds,
                               frames=writer.status().frames_received)
        loop.request_mode(Mode.HOLD)
        loop.stop()
        label, notes = task_outcome(session.rig)
        writer.stop(label, notes=f"source={source_name}; {notes}".rstrip("; "))
        status = writer.status()
        stats = loop.snapshot(max_events=0).stats
        reporter.event("summary", episode=str(path), label=label.value, steps=status.frames_written,
                       dropped=status.frames_dropped, rate_hz=round(stats.achieved_rate_hz, 2), late_ticks=stats.late_ticks)
        return path
    finally:
        if writer.status().recording:
            writer.discard()
        session.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python run.py record", description="One episode from any rig and source (no window).")
    parser.add_argument("--rig", type=Path, default=DEFAULT_RIG_FILE, metavar="FILE")
    parser.add_argument("--source", default="scripted", choices=tuple(SOURCES))
    parser.add_argument("--seconds", type=float, required=True, metavar="N")
    parser.add_argument("--store", type=Path, default=None, metavar="DIR")
    parser.add_argument("--task", default="")
    parser.add_argument("--operator", default="")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout even on a terminal")
    return parser


class RecordView:
    """`run.py record` on a terminal: the seconds recorded as a bar, then a summary."""

    def show(self, name: str, fields) -> Shown:
        if name == "progress":
            return Shown(bar=Bar("recording", round(fields["elapsed_s"], 1), fields["seconds"],
                                 figures=f"{fields['frames']} steps"))
        if name == "summary":
            rows = [("episode", fields["episode"]), ("label", fields["label"]),
                    ("steps", f"{fields['steps']} ({fields['dropped']} dropped)"),
                    ("control rate", f"{fields['rate_hz']:g} Hz, {fields['late_ticks']} late ticks")]
            return Shown(summary=Summary("Episode recorded", rows, "ok" if not fields["dropped"] else "warning"))
        return Shown()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    problem = check_arguments(args.rig, args.store, args.task) or ("--seconds must be positive." if args.seconds <= 0 else "")
    if problem:
        print(f"record: {problem}", file=sys.stderr)
        return 2
    with open_reporter(json_lines=True if args.json else None, view=RecordView()) as reporter:
        try:
            run_record(args.rig, args.source, args.seconds, args.store, args.task, args.operator, reporter)
        except (JobError, SessionError, RigError, RecordingError, OSError) as exc:
            print(f"record failed: {exc}", file=sys.stderr)
            return 1
    return 0
