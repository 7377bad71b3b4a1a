"""model/ imports no Qt, no robot drivers (for now nothing from robot/ at all) and no app code."""

from __future__ import annotations

import ast
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[2] / "model"
FORBIDDEN = ("robot", "app", "recordings", "PySide6", "PyQt5", "PyQt6", "pyqtgraph", "dynamixel_sdk", "pyrealsense2")


def test_model_imports_stay_inside_its_layer():
    offenders = []
    for path in sorted(MODEL_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
