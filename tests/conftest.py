"""Suite-wide set-up: headless rendering and Qt, and the repository root on sys.path."""

import os
import sys
from pathlib import Path

# Before anything imports mujoco or Qt: offscreen rendering (EGL, llvmpipe here) and no display.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Shared fixtures (episodes written by the real writer) for every test folder.
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
pytest_plugins = ("episode_fixtures", "policy_fixtures", "act_episodes", "review_fixtures")
