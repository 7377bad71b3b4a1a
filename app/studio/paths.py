"""Where the studio finds its own files: the repository root, the default rig file, run folders.

One place, so that the window, every `run.py` job and the tests agree on them.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_PY = REPO_ROOT / "run.py"
#: The simulated rig: what `python run.py` opens and what the headless jobs default to.
DEFAULT_RIG_FILE = REPO_ROOT / "configs" / "sim.toml"
#: Training runs (and the latent cache) go here unless told otherwise (git-ignored).
RUNS_ROOT = REPO_ROOT / "runs"
