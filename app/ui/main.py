"""Entry point of the studio window: `python run.py [--rig FILE] [--store DIR]`.

`--screenshot PATH --after-s N` saves a picture of the window N seconds after the rig is up and
quits (for the README and for checking the layout on a machine without a monitor, under Xvfb).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from app.studio.paths import DEFAULT_RIG_FILE, REPO_ROOT

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Fast-WAM teleoperation studio: teleoperate and record demonstrations on a simulated or real ALOHA rig.",
    )
    parser.add_argument("--rig", type=Path, default=DEFAULT_RIG_FILE, metavar="FILE",
                        help=f"rig file (TOML); default {DEFAULT_RIG_FILE.relative_to(REPO_ROOT)}")
    parser.add_argument("--store", type=Path, default=None, metavar="DIR",
                        help="episode store folder; default: [recording] store_dir of the rig file")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="PATH",
                        help="save a PNG of the window and quit (see --after-s)")
    parser.add_argument("--after-s", type=float, default=8.0, metavar="N",
                        help="with --screenshot: seconds after the rig is up (default 8)")
    parser.add_argument("--source", choices=("keyboard", "leaders", "demo", "hold"), default=None,
                        help="select this action source as soon as the rig is up (on a real rig, a driving "
                             "source waits until the arms are started)")
    parser.add_argument("--start-arms", action="store_true",
                        help="real rigs: press Start arms as soon as the rig is up (followers move to the start pose)")
    parser.add_argument("--training", nargs="?", const="", default=None, metavar="RUN_DIR",
                        help="open with the Training panel shown; with a run folder the window started, follow it")
    parser.add_argument("--policy", type=Path, default=None, metavar="DIR",
                        help="open with the Policy panel shown and this checkpoint (or run folder: its best) loaded "
                             "once the rig is up")
    parser.add_argument("--autonomous", action="store_true",
                        help="with --policy: hand the arm to the policy as soon as it is loaded")
    parser.add_argument("--camera-age-limit-s", type=float, default=None, metavar="S",
                        help="with --policy: the Policy panel's camera age limit (the policy stops on older images)")
    parser.add_argument("--take-over-after-s", type=float, default=None, metavar="N",
                        help="with --autonomous: take over from the policy N seconds after it starts driving "
                             "(demonstrations and screenshots of an intervention)")
    parser.add_argument("--episodes", action="store_true",
                        help="open on the Episodes page (the workbench over the store) once the rig is up")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Open the window; returns the process exit code (0 on a normal close)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.rig.is_file():
        print(f"The rig file {args.rig} does not exist. Pass an existing one with --rig "
              f"(e.g. --rig {DEFAULT_RIG_FILE}).", file=sys.stderr)
        return 2
    if (args.autonomous or args.take_over_after_s is not None) and args.policy is None:
        print("--autonomous and --take-over-after-s need --policy DIR.", file=sys.stderr)
        return 2
    if args.screenshot is not None and args.after_s < 0:
        print("--after-s must be zero or more seconds.", file=sys.stderr)
        return 2
    # Before mujoco and Qt load: offscreen rendering for the sim cameras.
    os.environ.setdefault("MUJOCO_GL", "egl")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.studio.studio import Phase, Studio
    from app.ui.main_window import StudioWindow

    app = QApplication.instance() or QApplication(["Fast-WAM studio"])
    app.setApplicationName("Fast-WAM teleoperation studio")
    studio = Studio(args.rig, args.store)
    window = StudioWindow(studio)
    window.show()
    if args.training is not None:
        window.show_training(Path(args.training) if args.training else None)
    startup = studio.start()
    if args.episodes:
        _when_running(window, startup, window.show_episodes)
    if args.start_arms or args.source is not None:
        _schedule_start(window, studio, startup, args.start_arms, args.source)
    if args.policy is not None:
        if args.camera_age_limit_s is not None:
            window.policy.panel.image_age_spin.setValue(args.camera_age_limit_s)
        _schedule_policy(window, studio, startup, args.policy, args.autonomous, args.take_over_after_s)
    if args.screenshot is not None:
        _schedule_screenshot(window, startup, args.screenshot, args.after_s)

    # Ctrl+C in the terminal closes the window the normal way (asking about a recording). Python
    # runs signal handlers only between bytecodes, so a timer lets the interpreter in regularly.
    previous_sigint = signal.signal(signal.SIGINT, lambda *_: window.close())
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    try:
        code = app.exec()
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        if studio.snapshot().phase is not Phase.STOPPED:
            studio.shutdown()
    return code


def _schedule_start(window, studio, startup, start_arms: bool, source: str | None) -> None:
    """Once the rig runs: Start arms (if asked), then select `source` - on a real rig a driving
    source once the arms are started (the operator still squeezes the leaders)."""
    from PySide6.QtCore import QTimer

    state = {"asked_start": False}
    timer = QTimer(window)

    def poll() -> None:
        if not startup.done():
            return
        if not startup.result():
            timer.stop()
            return
        snap = studio.snapshot()
        real = snap.arms is not None
        if start_arms and real and not state["asked_start"]:
            state["asked_start"] = True
            window.start_arms()
        if source is None or (real and source != "hold" and source not in snap.available_sources):
            if source is None:
                timer.stop()
            return
        timer.stop()
        studio.select_source(source)

    timer.setInterval(100)
    timer.timeout.connect(poll)
    timer.start()


def _schedule_policy(window, studio, startup, path: Path, autonomous: bool, take_over_after_s: float | None) -> None:
    """Once the rig runs: show the Policy panel with `path` chosen and load it (the panel's
    settings); once loaded, hand it the arm if `autonomous`, and take over after a while if asked."""
    from PySide6.QtCore import QTimer

    state: dict = {"loading": None}
    timer = QTimer(window)

    def poll() -> None:
        if not startup.done():
            return
        if not startup.result():
            timer.stop()
            return
        if state["loading"] is None:
            window.policy.show(path)
            state["loading"] = studio.load_policy(path, window.policy.panel.settings())
            return
        if not state["loading"].done():
            return
        timer.stop()
        if state["loading"].result() and autonomous:
            window.policy.set_autonomous(True)
            if take_over_after_s is not None:
                QTimer.singleShot(int(take_over_after_s * 1000), window.policy.take_over)

    timer.setInterval(100)
    timer.timeout.connect(poll)
    timer.start()


def _when_running(window, startup, action) -> None:
    """Call `action()` on the GUI thread once the rig runs (not at all if it failed)."""
    from PySide6.QtCore import QTimer

    timer = QTimer(window)

    def poll() -> None:
        if startup.done():
            timer.stop()
            if startup.result():
                action()

    timer.setInterval(100)
    timer.timeout.connect(poll)
    timer.start()


def _schedule_screenshot(window, startup, path: Path, after_s: float) -> None:
    """Grab the window `after_s` seconds after the rig is running, then close it."""
    from PySide6.QtCore import QTimer

    state = {"armed": False}

    def poll() -> None:
        if not startup.done():
            return
        if not state["armed"]:
            state["armed"] = True
            QTimer.singleShot(int(after_s * 1000), grab)

    def grab() -> None:
        window.refresh()
        path.parent.mkdir(parents=True, exist_ok=True)
        if window.grab().save(str(path)):
            log.info("Screenshot saved to %s", path)
        else:
            log.error("Could not save the screenshot to %s", path)
        window.close()

    timer = QTimer(window)
    timer.setInterval(100)
    timer.timeout.connect(poll)
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
