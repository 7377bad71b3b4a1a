"""Fast-WAM teleoperation studio.

    python run.py [--rig configs/sim.toml]         open the studio (the simulated rig by default)
    python run.py episodes list|check|recover ...  look after the episode store
    python run.py review [--store DIR]             the Episodes workbench in its own window
    python run.py demos --episodes N --seed S      scripted sim demonstrations, no window
    python run.py record --rig FILE --source S --seconds N   one episode from any rig, no window
    python run.py train --store DIR --out DIR --preset tiny      fine-tune Fast-WAM
    python run.py eval --checkpoint DIR --episodes N --seed S    the policy on the simulated towel task

`python run.py COMMAND --help` tells more about each.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

# Offscreen rendering for MuJoCo must be chosen before mujoco is imported anywhere.
os.environ.setdefault("MUJOCO_GL", "egl")

# Shared libraries the studio loads at run time, and the Debian package that provides each.
SYSTEM_LIBRARIES = {
    "EGL": ("libegl1 libegl-mesa0", "MuJoCo renders the cameras through EGL"),
    "GL": ("libgl1", "MuJoCo's rendering needs OpenGL"),
    "usb-1.0": ("libusb-1.0-0", "pyrealsense2 talks to RealSense cameras over libusb"),
}
WINDOW_LIBRARIES = {
    "xkbcommon-x11": ("libxkbcommon-x11-0", "Qt's X11 platform plugin"),
    "xcb-cursor": ("libxcb-cursor0", "Qt's X11 platform plugin"),
}


def missing_system_libraries(window: bool) -> list[str]:
    """Lines naming each missing shared library with its package and why it is needed."""
    wanted = dict(SYSTEM_LIBRARIES)
    if window and os.environ.get("QT_QPA_PLATFORM", "xcb") == "xcb":
        wanted.update(WINDOW_LIBRARIES)
    return [
        f"  {package:<28} {why} (library lib{lib} not found)"
        for lib, (package, why) in wanted.items()
        if ctypes.util.find_library(lib) is None
    ]


def main(argv: list[str]) -> int:
    command = argv[0] if argv and not argv[0].startswith("-") else "app"
    rest = argv[1:] if command != "app" or (argv and argv[0] == "app") else argv

    missing = missing_system_libraries(window=command in ("app", "review"))
    if missing:
        print("The studio needs system packages that are not installed:", file=sys.stderr)
        print("\n".join(missing), file=sys.stderr)
        packages = " ".join(sorted({line.split()[0] for line in missing}))
        print(f"Install them with: sudo apt-get install {packages}", file=sys.stderr)
        print("(or run ./studio.sh, which installs them when it can)", file=sys.stderr)
        return 3

    if command == "app":
        from app.ui.main import main as app_main

        return app_main(rest)
    if command == "review":
        from app.ui.workbench.main import main as review_main

        return review_main(rest)
    if command == "episodes":
        from app.studio.jobs.episodes import main as episodes_main

        return episodes_main(rest)
    if command == "demos":
        from app.studio.jobs.demos import main as demos_main

        return demos_main(rest)
    if command == "record":
        from app.studio.jobs.record import main as record_main

        return record_main(rest)
    if command == "train":
        from app.studio.jobs.train import main as train_main

        return train_main(rest)
    if command == "eval":
        from app.studio.jobs.evaluate import main as eval_main

        return eval_main(rest)
    print(__doc__, file=sys.stderr)
    print(f"Unknown command {command!r}.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
