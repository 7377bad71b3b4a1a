"""The workbench's commands of `python run.py episodes` (beside list/check/recover/label):

    episodes qa      [EPISODE ...] [--verdict ok|warn|bad|unknown ...] [--names] [--json]
                     timing QA per episode (thresholds: qa.toml in the store); --names prints
                     only file names, e.g. for `run.py train --exclude $(... --verdict bad --names)`
    episodes trash   EPISODE ...          move episodes to the store's trash folder
    episodes restore NAME ...             put trashed episodes back (`--list` shows the trash)
    episodes export  EPISODE ... --format lerobot|mp4 --out PATH [--task TEXT] [--codec av1|h264]
                     a LeRobot v3.0 dataset of the episodes, or one MP4 per episode into PATH

EPISODE is an index, a file name of the store or a path; `all` means every usable episode.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from recordings.errors import RecordingError
from recordings.export.lerobot import export_lerobot
from recordings.export.mp4 import export_mp4
from recordings.index import StoreIndex
from recordings.qa import QaThresholds, Verdict, check_timing, load_thresholds
from recordings.store import EpisodeStore
from recordings.trash import move_to_trash, restore, trashed_episodes

COMMANDS = ("qa", "trash", "restore", "export")


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    qa = commands.add_parser("qa", parents=[common], help="timing QA verdict per episode (ok/warn/bad)")
    qa.add_argument("episodes", nargs="*", help="episodes (default: all)")
    qa.add_argument("--verdict", nargs="+", choices=[v.value for v in Verdict], default=None, help="only these verdicts")
    qa.add_argument("--names", action="store_true", help="print only the file names")
    trash = commands.add_parser("trash", parents=[common], help="move episodes to the store's trash (restorable)")
    trash.add_argument("episodes", nargs="+", help="episode indices, names or paths")
    back = commands.add_parser("restore", parents=[common], help="put trashed episodes back")
    back.add_argument("names", nargs="*", help="trash names, or the original names/indices (newest first)")
    back.add_argument("--list", action="store_true", help="list the trash")
    export = commands.add_parser("export", parents=[common], help="export episodes to LeRobot v3.0 or MP4")
    export.add_argument("episodes", nargs="+", help="episode indices, names or paths, or `all`")
    export.add_argument("--format", choices=("lerobot", "mp4"), required=True)
    export.add_argument("--out", type=Path, required=True, help="the dataset folder (lerobot) or a folder for the MP4s")
    export.add_argument("--task", default="unknown task", help="task of episodes that name none (ALOHA/ACT files)")
    export.add_argument("--codec", choices=("av1", "h264"), default=None, help="video codec (default: AV1, else H.264)")


def run(args: argparse.Namespace, store: EpisodeStore, out: TextIO) -> int:
    """Run one of COMMANDS; returns the exit status. RecordingError propagates to the caller."""
    if args.command == "qa":
        return _qa(args, store, out)
    if args.command == "trash":
        return _trash(args, store, out)
    if args.command == "restore":
        return _restore(args, store, out)
    return _export(args, store, out)


def _print(out: TextIO, as_json: bool, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text, file=out)


def _resolve(store: EpisodeStore, episodes: list[str]) -> list[Path]:
    if episodes == ["all"]:
        return [store.root / row.name for row in StoreIndex(store.root).refresh().rows if row.usable]
    return [store.resolve(int(item) if item.isdigit() else item) for item in episodes]


def qa_suffix(path: Path, thresholds: QaThresholds) -> str:
    """' - timing QA: bad (reasons)' for `episodes check` lines."""
    try:
        _, result = check_timing(path, thresholds)
    except RecordingError:
        return ""
    text = f" - timing QA: {result.verdict.value}"
    return text + (f" ({'; '.join(result.reasons)})" if result.reasons else "")


def _qa(args, store: EpisodeStore, out: TextIO) -> int:
    thresholds = load_thresholds(store.root)
    if args.episodes:
        paths = _resolve(store, args.episodes)
        index = StoreIndex(store.root)
        index.update(paths)
        wanted = {path.name for path in paths}
        rows = [row for row in index.refresh().rows if row.name in wanted]
    else:
        rows = [row for row in StoreIndex(store.root).refresh().rows if not row.unfinished]
    results = []
    for row in rows:
        qa = row.qa(thresholds)
        verdict = qa.verdict.value if qa is not None else "invalid"
        if args.verdict and verdict not in args.verdict:
            continue
        results.append({"name": row.name, "verdict": verdict, "reasons": list(qa.reasons) if qa else [row.problem],
                        "timing": row.timing.to_json() if row.timing else None})
    if args.names:
        _print(out, args.json, [r["name"] for r in results], " ".join(r["name"] for r in results))
        return 0
    if args.json:
        _print(out, True, {"store": str(store.root), "results": results}, "")
        return 0
    for item in results:
        reasons = "; ".join(r for r in item["reasons"] if r)
        print(f"{item['verdict'].upper():8} {item['name']}" + (f" - {reasons}" if reasons else ""), file=out)
    if not results:
        print(f"No episodes to judge in {store.root}", file=out)
    return 0


def _trash(args, store: EpisodeStore, out: TextIO) -> int:
    failed = 0
    moved = []
    for item in args.episodes:
        try:
            trashed = move_to_trash(store.root, store.resolve(int(item) if item.isdigit() else item))
        except RecordingError as error:
            failed += 1
            _print(out, args.json, {"episode": item, "error": str(error)}, f"Error: {error}")
            continue
        moved.append(store.root / trashed.original)
        _print(out, args.json, {"episode": trashed.original, "trash": trashed.name},
               f"{trashed.original} -> trash/{trashed.name} (restore with `episodes restore {trashed.original}`)")
    StoreIndex(store.root).update(moved)
    return 1 if failed else 0


def _restore(args, store: EpisodeStore, out: TextIO) -> int:
    if args.list or not args.names:
        items = trashed_episodes(store.root)
        data = [{"trash": i.name, "original": i.original, "trashed_at": i.trashed_at.isoformat()} for i in items]
        text = "\n".join(f"{i.name}  (was {i.original}, trashed {i.trashed_at:%Y-%m-%d %H:%M:%S} UTC)" for i in items)
        _print(out, args.json, data, text or f"The trash of {store.root} is empty")
        return 0
    failed = 0
    restored = []
    for name in args.names:
        try:
            path = restore(store.root, name)
        except RecordingError as error:
            failed += 1
            _print(out, args.json, {"name": name, "error": str(error)}, f"Error: {error}")
            continue
        restored.append(path)
        _print(out, args.json, {"name": name, "restored": str(path)}, f"restored {path.name}")
    StoreIndex(store.root).update(restored)
    return 1 if failed else 0


def _export(args, store: EpisodeStore, out: TextIO) -> int:
    paths = _resolve(store, args.episodes)
    if args.format == "lerobot":
        result = export_lerobot(paths, args.out, default_task=args.task, codec=args.codec)
        _print(out, args.json, {"dataset": str(result.root), "episodes": result.episodes, "frames": result.frames, "codec": result.codec},
               f"LeRobot v3.0 dataset {result.root}: {result.episodes} episodes, {result.frames} frames, {result.codec} video")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = export_mp4(path, args.out / (path.stem + ".mp4"), codec=args.codec or "h264")
        _print(out, args.json, {"episode": path.name, "mp4": str(target)}, f"{path.name} -> {target}")
    return 0
