"""The house's import direction (DESIGN.md), as import-linter contracts in pyproject.toml:
app.ui -> app.studio -> model -> recordings -> robot; Qt only in app.ui; torch only in model;
model and recordings take only robot.types from robot. Checked transitively on the import graph
of the source, so it holds for code paths that tests never execute."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "model", "recordings", "robot")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"import-linter is not installed in {sys.prefix}: run ./studio.sh setup")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120)


def test_the_source_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("robot/safety.py", "import recordings.schema", "Layers"),
        ("model/flow.py", "import robot.sim.scene", "never a driver"),
        ("recordings/schema.py", "import PySide6.QtCore", "Qt only in the view"),
        ("app/studio/events.py", "import pyqtgraph", "Qt only in the view"),
        ("app/studio/history.py", "import torch", "torch only in model"),
        ("app/studio/events.py", "import app.ui.theme", "Layers"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, broken):
    """The contracts are not vacuous: one wrong import in a copy of the tree is caught."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "episodes"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # deliberately wrong\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout and "BROKEN" in result.stdout, result.stdout[-3000:]
