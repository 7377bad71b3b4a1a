"""model/ keeps to its layer (DESIGN.md): no Qt, no app code, no robot drivers or device SDKs.
It may take data vocabulary from `recordings` and `robot.types`, nothing else from `robot`."""

from __future__ import annotations

import ast
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[2] / "model"
FORBIDDEN_ROOTS = {"app", "PySide6", "PyQt5", "PyQt6", "pyqtgraph", "dynamixel_sdk", "pyrealsense2", "mujoco"}
ALLOWED_ROBOT = {"robot.types"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_model_imports_stay_inside_its_layer():
    offenders = []
    for path in sorted(MODEL_DIR.rglob("*.py")):
        for name in _imports(path):
            root = name.split(".")[0]
            if root in FORBIDDEN_ROOTS or (root == "robot" and name not in ALLOWED_ROBOT):
                offenders.append(f"{path.relative_to(MODEL_DIR)}: {name}")
    assert offenders == []
