"""`python run.py review [--store DIR]`: the Episodes workbench in a window of its own.

`--episode N --step S [--play]` opens an episode at a step (and plays it); `--screenshot PATH
--after-s N` saves a picture of the window N seconds after the store is read, then quits (for
the README and for looking at the layout on a machine without a monitor, under Xvfb).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from recordings.store import DEFAULT_STORE_DIR

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py review", description="Find, watch, judge and export recorded episodes.")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE_DIR, metavar="DIR", help=f"episode store (default {DEFAULT_STORE_DIR})")
    parser.add_argument("--rig", type=Path, default=None, metavar="FILE", help="rig file for Replay (default: the simulated rig)")
    parser.add_argument("--episode", type=int, default=None, metavar="N", help="open episode N")
    parser.add_argument("--step", type=int, default=0, help="with --episode: show this step")
    parser.add_argument("--play", action="store_true", help="with --episode: start playing")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="PATH", help="save a PNG of the window and quit")
    parser.add_argument("--after-s", type=float, default=1.0, metavar="N", help="with --screenshot: seconds after the store is read")
    parser.add_argument("--size", default="1600x1000", help="window size WxH (default 1600x1000)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.store.is_dir():
        print(f"There is no episode store at {args.store}. Pass one with --store DIR.", file=sys.stderr)
        return 2
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"--size must be WIDTHxHEIGHT, e.g. 1600x1000, not {args.size!r}", file=sys.stderr)
        return 2

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.ui import theme
    from app.ui.workbench.workbench_widget import WorkbenchWidget

    app = QApplication.instance() or QApplication(["Episodes"])
    app.setStyleSheet(theme.STYLESHEET)
    widget = WorkbenchWidget(args.store, args.rig)
    widget.setWindowTitle(f"Episodes - {args.store}")
    widget.resize(width, height)
    widget.show()

    state = {"opened": False}

    def after_load() -> None:
        if not widget.loaded:
            return
        poll.stop()
        if args.episode is not None:
            name = f"episode_{args.episode}.hdf5"
            if not widget.table.select_name(name):
                log.error("%s is not in %s", name, args.store)
            else:
                widget.view.seek(args.step)
                if args.play:
                    widget.view.play()
        state["opened"] = True
        if args.screenshot is not None:
            QTimer.singleShot(int(args.after_s * 1000), grab)

    def grab() -> None:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        if widget.grab().save(str(args.screenshot)):
            log.info("Screenshot saved to %s (step %d on screen)", args.screenshot, widget.view.cursor)
        else:
            log.error("Could not save the screenshot to %s", args.screenshot)
        widget.close()

    poll = QTimer()
    poll.setInterval(50)
    poll.timeout.connect(after_load)
    poll.start()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
