"""`python run.py episodes ...`: look after an episode store from a terminal.

    episodes list    [--store DIR] [--json]                   the episodes, a table
    episodes check   [FILE ...] [--deep] [--store DIR] [--json]
                                                               is each file a valid episode?
                                                               (--deep: decode every frame)
    episodes recover [FILE ...] [--store DIR] [--json]         turn leftovers of interrupted
                                                               recordings into episodes, clear
                                                               HDF5's open-for-write mark
    episodes label   EPISODE success|failure|unknown [--reason TEXT] [--notes TEXT] [--store DIR]
    episodes qa|trash|restore|export ...                      see app.studio.jobs.episodes_review

The store defaults to recordings/episodes/ in the repository. Every file is treated on its own:
a damaged one is reported with its reason and what to do, and the others are still listed,
checked or recovered. Exit status: 0 all good, 1 some file is not a valid episode, needs
recovering or could not be recovered, 2 a usage error (including a --store that is missing or
not a folder). Text read from files (tasks, names, reasons) is printed with control characters
escaped, so a file cannot drive the terminal.
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
from recordings.recovery import RepairResult
from recordings.safe_text import printable
from recordings.schema import Label
from recordings.store import DEFAULT_STORE_DIR, EpisodeStore, EpisodeSummary, StorePathError, require_store_dir


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
    check.add_argument("--deep", action="store_true", help="read every array and decode every frame of every camera")
    recover = commands.add_parser("recover", parents=[common], help="turn leftovers of interrupted recordings into episodes")
    recover.add_argument("files", nargs="*", type=Path, help="leftover files (default: all of the store's)")
    label = commands.add_parser("label", parents=[common], help="set an episode's success label")
    label.add_argument("episode", help="episode index, file name in the store, or path")
    label.add_argument("label", choices=[item.value for item in Label])
    label.add_argument("--notes", default=None, help="replace the episode's notes")
    label.add_argument("--reason", default=None, help="why it failed (one of failure_reasons.txt in the store, or any text)")
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
        if args.command == "list" or not getattr(args, "files", None):
            require_store_dir(args.store)  # a typo in --store is an error, not "no episodes"
        if args.command == "list":
            return _list(store, args.json, out)
        if args.command == "check":
            return _check(store, args.files or None, args.frames, args.deep, args.json, out)
        if args.command == "recover":
            return _recover(store, args.files or None, args.json, out)
        if args.command in review.COMMANDS:
            return review.run(args, store, out)
        if args.command == "label":
            episode = int(args.episode) if args.episode.isdigit() else args.episode
            path = store.relabel(episode, args.label, args.notes, args.reason)
            said = args.label + (f" ({printable(args.reason)})" if args.reason else "")
            _print(out, args.json, {"path": str(path), "label": args.label, "reason": args.reason},
                   f"{printable(path.name)}: label set to {said}")
            return 0
    except StorePathError as error:
        _print(out, args.json, {"error": str(error)}, f"Error: {printable(error)}")
        return 2
    except ValueError as error:  # a note too long for the label record, text that is not text
        _print(out, args.json, {"error": str(error)}, f"Error: {printable(error)}")
        return 2
    except RecordingError as error:
        _print(out, args.json, {"error": str(error)}, f"Error: {printable(error)}")
        return 1
    return 2  # unreachable: argparse requires a known command


def _print(out: TextIO, as_json: bool, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text, file=out)


def _list(store: EpisodeStore, as_json: bool, out: TextIO) -> int:
    rows = store.summaries()
    status = 1 if any(r.needs_attention for r in rows) else 0
    if as_json:
        _print(out, True, {"store": str(store.root), "next_index": store.next_index(), "ok": status == 0,
                           "episodes": [r.to_json() for r in rows]}, "")
        return status
    if not rows:
        print(f"No episodes in {printable(store.root)}", file=out)
        return 0
    header = ("idx", "frames", "duration", "label", "task", "operator", "created", "status")
    table = [header] + [_row(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {0, 1, 2}
    for line in table:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip(), file=out)
    unfinished = sum(1 for r in rows if r.unfinished)
    damaged = sum(1 for r in rows if r.problem is not None and not r.unfinished)
    finished = len(rows) - unfinished - damaged
    total_s = sum(r.duration_s for r in rows if r.problem is None)
    summary = f"{finished} episode{'' if finished == 1 else 's'} ({total_s / 60:.1f} min) in {printable(store.root)}"
    if unfinished:
        summary += f"; {unfinished} unfinished (run `python run.py episodes recover`)"
    if damaged:
        summary += f"; {damaged} damaged (see INVALID above; `python run.py episodes check` tells more)"
    print(summary, file=out)
    return status


def _row(summary: EpisodeSummary) -> tuple[str, ...]:
    index = "" if summary.index is None else str(summary.index)
    if summary.problem is not None:
        status = ("UNFINISHED: " if summary.unfinished else f"INVALID {printable(summary.path.name)}: ") + summary.problem
        return (index, "-", "-", "-", "-", "-", "-", printable(status))
    notes = []
    if summary.recovered:
        notes.append("recovered")
    if summary.frames_dropped:
        notes.append(f"{summary.frames_dropped} ticks dropped")
    if summary.warning:
        notes.append(summary.warning)
    label = summary.label + (f": {summary.reason}" if summary.reason else "")
    return (
        index,
        str(summary.length),
        f"{summary.duration_s:.1f} s",
        _clip(label, 32),
        _clip(summary.task, 28),
        _clip(summary.operator, 16),
        _clip(summary.created.replace("T", " ")[:16], 16),
        printable(", ".join(notes) or "ok"),
    )


def _clip(text: str, width: int) -> str:
    """Escaped first (an escape sequence must not be cut in half), then clipped."""
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _check(store: EpisodeStore, files: list[Path] | None, frames: int, deep: bool, as_json: bool, out: TextIO) -> int:
    results: list[CheckResult] = store.check(files, spot_checks=max(frames, 1), deep=deep)
    thresholds = load_thresholds(store.root)
    all_ok = all(r.ok for r in results)
    if as_json:
        _print(out, True, {"ok": all_ok, "results": [r.to_json() for r in results]}, "")
        return 0 if all_ok else 1
    if not results:
        print(f"No episodes in {printable(store.root)}", file=out)
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
        print(printable(line), file=out)
    bad = sum(1 for r in results if not r.ok)
    if bad and len(results) > 1:
        print(f"{bad} of {len(results)} files need attention", file=out)
    return 0 if all_ok else 1


def _recover(store: EpisodeStore, files: list[Path] | None, as_json: bool, out: TextIO) -> int:
    outcomes = store.recover(files)
    failed = [o for o in outcomes if isinstance(o, RecoveryError) or (isinstance(o, RepairResult) and not o.ok)]
    if as_json:
        items = [
            {"source": str(o.path), "error": str(o)} if isinstance(o, RecoveryError) else o.to_json() for o in outcomes
        ]
        _print(out, True, {"ok": not failed, "results": items}, "")
        return 1 if failed else 0
    if not outcomes:
        print(f"Nothing to recover in {printable(store.root)}", file=out)
    for outcome in outcomes:
        if isinstance(outcome, RecoveryError):
            line = f"FAILED   {outcome}"
        elif isinstance(outcome, RepairResult):
            line = f"{'REPAIRED' if outcome.ok else 'FAILED  '} {outcome.message}"
        else:
            line = f"RECOVERED {outcome.message}"
        print(printable(line), file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
