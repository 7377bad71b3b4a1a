"""`python run.py demos`: scripted towel folds on the simulated rig, one episode each, no window.

    python run.py demos --episodes N --seed S [--store DIR] [--rig configs/sim.toml] [--json]

Seeds S, S+1, ... lay the towel out; the simulation is stepped as fast as the CPU allows (no
real-time pacing; simulated time and the recorded data are the same as in real time) and each
episode is labelled success/failure by the towel-fold measure. The rig, loop and writer are the
window's (`app.studio.session.open_session`).

On a terminal it shows a progress bar and a summary; piped or with `--json`, JSON lines: one
{"event": "episode", ...} per episode and a final {"event": "summary", "episodes", "successes"}.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from app.studio.jobs.common import JobError, check_arguments, task_outcome
from app.studio.jobs.console import Bar, Line, Reporter, Shown, Summary, open_reporter
from app.studio.paths import DEFAULT_RIG_FILE
from app.studio.session import SessionError, open_session
from app.studio.sources import SourceFactory
from recordings.errors import RecordingError
from recordings.schema import Label
from robot.capabilities import Resettable, Simulation
from robot.rig import RigError
from robot.types import Mode

log = logging.getLogger(__name__)


def run_demos(episodes: int, seed: int, store: Path | None, rig_path: Path, max_seconds: float, operator: str,
              reporter: Reporter) -> list[dict]:
    """Record `episodes` scripted folds, stepping the sim as fast as it goes; one dict per episode,
    each also reported as an "episode" event."""
    # Unpaced stepping outruns a camera thread: render inside read(), so every frame is the state
    # at its due tick and an episode is reproducible from its seed.
    session = open_session(rig_path, store, render_thread=False)
    rig, writer = session.rig, session.writer
    if not (isinstance(rig, Simulation) and isinstance(rig, Resettable)):
        session.close()
        raise JobError(f"demos needs the simulated rig; {rig_path} opens {rig.name}.")
    sources = SourceFactory(rig, session.rig_file.control)
    results = []
    max_ticks = int(max_seconds * rig.control_rate_hz)
    reporter.event("start", episodes=episodes, seeds=[seed, seed + episodes - 1], store=str(session.store.root))
    try:
        for episode_seed in range(seed, seed + episodes):
            rig.reset_episode(episode_seed)
            # A fresh loop per episode: its hold pose is read from the reset arms.
            loop = session.new_loop()
            source = sources.make("demo")
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
            label, notes = task_outcome(rig)
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
            reporter.event("episode", **result)
    finally:
        if writer.status().recording:
            writer.discard()
        session.close()
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python run.py demos", description="Scripted towel folds on the simulated rig (no window).")
    parser.add_argument("--episodes", type=int, required=True, metavar="N")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="towel seed of the first episode (then S+1, ...)")
    parser.add_argument("--store", type=Path, default=None, metavar="DIR")
    parser.add_argument("--rig", type=Path, default=DEFAULT_RIG_FILE, metavar="FILE")
    parser.add_argument("--max-seconds", type=float, default=40.0, help="simulated seconds before an episode is cut off")
    parser.add_argument("--operator", default="scripted")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout even on a terminal")
    return parser


class DemosView:
    """`run.py demos` on a terminal: a bar over the episodes, a line per episode, a summary."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.successes = 0
        self.store = ""

    def show(self, name: str, fields) -> Shown:
        if name == "start":
            self.total, self.store = fields["episodes"], fields["store"]
            return Shown(lines=[Line(f"Recording {self.total} scripted folds into {fields['store']}", "note")],
                         bar=self._bar())
        if name == "episode":
            self.done += 1
            ok = fields["label"] == Label.SUCCESS.value
            self.successes += ok
            text = (f"seed {fields['seed']}: {fields['label']}, {fields['steps']} steps, {fields['wall_s']:.1f} s "
                    f"-> {fields['episode']}")
            return Shown(lines=[Line(text, "info" if ok else "warning")], bar=self._bar())
        if name == "summary":
            rows = [("episodes", str(fields["episodes"])), ("folded", str(fields["successes"])),
                    ("store", self.store)]
            return Shown(summary=Summary("Demonstrations recorded", rows, "ok"))
        return Shown()

    def _bar(self) -> Bar:
        return Bar("scripted folds", self.done, self.total, figures=f"{self.successes} folded")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    problem = check_arguments(args.rig, args.store) or ("--episodes must be at least 1." if args.episodes < 1 else "")
    if problem:
        print(f"demos: {problem}", file=sys.stderr)
        return 2
    with open_reporter(json_lines=True if args.json else None, view=DemosView()) as reporter:
        try:
            results = run_demos(args.episodes, args.seed, args.store, args.rig, args.max_seconds, args.operator, reporter)
        except (JobError, SessionError, RigError, RecordingError, OSError) as exc:
            print(f"demos failed: {exc}", file=sys.stderr)
            return 1
        successes = sum(r["label"] == Label.SUCCESS.value for r in results)
        reporter.event("summary", episodes=len(results), successes=successes)
    return 0
