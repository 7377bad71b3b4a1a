"""`python run.py episodes ...`: look after an episode store from a terminal.

    episodes list    [--store DIR] [--json]                   the episodes, a table
    episodes check   [FILE ...] [--store DIR] [--json]         is each file a valid episode?
    episodes recover [FILE ...] [--store DIR] [--json]         turn leftovers of interrupted
                                                               recordings into episodes
    episodes label   EPISODE success|failure|unknown [--notes TEXT] [--reason TEXT] [--store DIR]
    episodes qa|trash|restore|export ...                      see app.studio.jobs.episodes_review

The store defaults to recordings/episodes/ in the repository. Exit status: 0 all good, 1 a file
is not a valid episode or could not be recovered, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from app.studio.jobs import episodes_review as review
from recordings.check import CheckResult
from recordings.qa import load_thresholds
from recordings.errors import RecordingError, RecoveryError
from recordings.schema import Label
from recordings.store import DEFAULT_STORE_DIR, EpisodeStore, EpisodeSummary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py episodes",
        description="Look after the episode store: list, check, recover and label episodes.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store", type=Path, default=DEFAULT_STORE_DIR, help=f"the episode folder (default: {DEFAULT_STORE_DIR})"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", parents=[common], help="list the episodes with length, label and task")
    check = commands.add_parser("check", parents=[common], help="check that files are valid episodes")
    check.add_argument("files", nargs="*", type=Path, help="files to check (default: every file of the store)")
    check.add_argument("--frames", type=int, default=3, help="frames per camera to decode as a spot check (default 3)")
    recover = commands.add_parser("recover", parents=[common], help="turn leftovers of interrupted recordings into episodes")
    recover.add_argument("files", nargs="*", type=Path, help="leftover files (default: all of the store's)")
    label = commands.add_parser("label", parents=[common], help="set an episode's success label")
    label.add_argument("episode", help="episode index, file name in the store, or path")
    label.add_argument("label", choices=[item.value for item in Label])
    label.add_argument("--notes", default=None, help="replace the episode's notes")
    label.add_argument("--reason", default=None, help="failure reason (see failure_reasons.txt in the store)")
    review.add_commands(commands, common)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one `episodes` command; returns the exit status (never calls sys.exit)."""
    out = out or sys.stdout
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as stop:  # --help or a usage error (argparse already printed why)
        return stop.code if isinstance(stop.code, int) else 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    store = EpisodeStore(args.store)
    try:
        if args.command == "list":
            return _list(store, args.json, out)
        if args.command == "check":
            return _check(store, args.files or None, args.frames, args.json, out)
        if args.command == "recover":
            return _recover(store, args.files or None, args.json, out)
        if args.command in review.COMMANDS:
            return review.run(args, store, out)
        if args.command == "label":
            episode = int(args.episode) if args.episode.isdigit() else args.episode
            path = store.relabel(episode, args.label, args.notes, args.reason)
            _print(out, args.json, {"path": str(path), "label": args.label}, f"{path.name}: label set to {args.label}")
            return 0
    except RecordingError as error:
        _print(out, args.json, {"error": str(error)}, f"Error: {error}")
        return 1
    return 2  # unreachable: argparse requires a known command


def _print(out: TextIO, as_json: bool, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text, file=out)


def _list(store: EpisodeStore, as_json: bool, out: TextIO) -> int:
    rows = store.summaries()
    if as_json:
        _print(out, True, {"store": str(store.root), "next_index": store.next_index(), "episodes": [r.to_json() for r in rows]}, "")
        return 0
    if not rows:
        print(f"No episodes in {store.root}", file=out)
        return 0
    header = ("idx", "frames", "duration", "label", "task", "operator", "created", "status")
    table = [header] + [_row(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {0, 1, 2}
    for line in table:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip(), file=out)
    finished = sum(1 for r in rows if not r.unfinished)
    unfinished = len(rows) - finished
    total_s = sum(r.duration_s for r in rows if r.problem is None)
    summary = f"{finished} episode{'' if finished == 1 else 's'} ({total_s / 60:.1f} min) in {store.root}"
    if unfinished:
        summary += f"; {unfinished} unfinished (run `python run.py episodes recover`)"
    print(summary, file=out)
    return 0


def _row(summary: EpisodeSummary) -> tuple[str, ...]:
    index = "" if summary.index is None else str(summary.index)
    if summary.problem is not None:
        status = ("UNFINISHED: " if summary.unfinished else "INVALID: ") + summary.problem
        return (index, "-", "-", "-", "-", "-", "-", status)
    notes = []
    if summary.recovered:
        notes.append("recovered")
    if summary.frames_dropped:
        notes.append(f"{summary.frames_dropped} ticks dropped")
    return (
        index,
        str(summary.length),
        f"{summary.duration_s:.1f} s",
        summary.label,
        _clip(summary.task, 28),
        _clip(summary.operator, 16),
        summary.created.replace("T", " ")[:16],
        ", ".join(notes) or "ok",
    )


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _check(store: EpisodeStore, files: list[Path] | None, frames: int, as_json: bool, out: TextIO) -> int:
    results: list[CheckResult] = store.check(files, spot_checks=max(frames, 1))
    thresholds = load_thresholds(store.root)
    all_ok = all(r.ok for r in results)
    if as_json:
        _print(out, True, {"ok": all_ok, "results": [r.to_json() for r in results]}, "")
        return 0 if all_ok else 1
    if not results:
        print(f"No episodes in {store.root}", file=out)
    for result in results:
        if result.ok:
            line = f"OK       {result.path.name} ({result.length} frames)"
            if result.warnings:
                line += " - " + "; ".join(result.warnings)
            line += review.qa_suffix(result.path, thresholds)
        elif result.unfinished:
            line = f"UNFINISHED {result.path}: " + "; ".join(result.reasons)
        else:
            line = f"INVALID  {result.path}: " + "; ".join(result.reasons)
        print(line, file=out)
    return 0 if all_ok else 1


def _recover(store: EpisodeStore, files: list[Path] | None, as_json: bool, out: TextIO) -> int:
    outcomes = store.recover(files)
    failed = [o for o in outcomes if isinstance(o, RecoveryError)]
    if as_json:
        items = [
            {"source": str(o.path), "error": str(o)} if isinstance(o, RecoveryError) else o.to_json() for o in outcomes
        ]
        _print(out, True, {"ok": not failed, "results": items}, "")
        return 1 if failed else 0
    if not outcomes:
        print(f"Nothing to recover in {store.root}", file=out)
    for outcome in outcomes:
        print(f"FAILED   {outcome}" if isinstance(outcome, RecoveryError) else f"RECOVERED {outcome.message}", file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
