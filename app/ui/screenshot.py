"""Regenerate the studio screenshot under a virtual X screen:

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb .venv/bin/python -m app.ui.screenshot artifacts/studio.png --after-s 12

It opens the real window on the simulated rig, lets the scripted demonstrator fold for a while
(so the towel is seen moving in all three camera views), saves a PNG and quits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.ui.main import main as app_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.ui.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, nargs="?", default=Path("artifacts/studio.png"))
    parser.add_argument("--after-s", type=float, default=12.0)
    parser.add_argument("--rig", type=Path, default=None)
    parser.add_argument("--source", default="demo", choices=("keyboard", "demo", "hold"))
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--training", type=Path, default=None, metavar="RUN_DIR",
                        help="show the Training panel following this run folder")
    parser.add_argument("--policy", type=Path, default=None, metavar="DIR",
                        help="show the Policy panel with this checkpoint loaded and driving the arm")
    parser.add_argument("--camera-age-limit-s", type=float, default=None, metavar="S",
                        help="with --policy: the policy's camera age limit (a loaded machine renders slowly)")
    parser.add_argument("--take-over-after-s", type=float, default=None, metavar="N",
                        help="with --policy: take over N s after the policy starts driving (an intervention)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # A policy drives from the held pose: the demonstrator would only be interrupted.
    source = "hold" if args.policy is not None else args.source
    forwarded = ["--screenshot", str(args.path), "--after-s", str(args.after_s), "--source", source]
    if args.rig is not None:
        forwarded += ["--rig", str(args.rig)]
    if args.store is not None:
        forwarded += ["--store", str(args.store)]
    if args.training is not None:
        forwarded += ["--training", str(args.training)]
    if args.policy is not None:
        forwarded += ["--policy", str(args.policy), "--autonomous"]
        if args.take_over_after_s is not None:
            forwarded += ["--take-over-after-s", str(args.take_over_after_s)]
        if args.camera_age_limit_s is not None:
            forwarded += ["--camera-age-limit-s", str(args.camera_age_limit_s)]
    return app_main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
