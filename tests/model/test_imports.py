"""model/ keeps to its layer (DESIGN.md): no Qt, no app code, no robot drivers or device SDKs.
It may take data vocabulary from `recordings` and `robot.types`, nothing else from `robot`. And
`import model` stays light: torch loads with the first module that uses it."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def _torch_after(*modules: str) -> str:
    """Import `modules` in a fresh interpreter, one by one; the first that brought torch in."""
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n"
            "    if 'torch' in sys.modules:\n"
            "        print(name)\n"
            "        break\n")
    result = subprocess.run([sys.executable, "-c", code, *modules], cwd=MODEL_DIR.parent, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_model_does_not_load_torch_until_a_torch_module_is_used():
    """The window reads run folders and the command line checks its flags through model's torch-free
    modules; torch (seconds to import) loads only with the first module that needs it."""
    assert _torch_after("model", "model.config", "model.errors", "model.run_folder", "model.train_options") == ""
    code = "import sys, model; model.FastWAMConfig; print('torch' in sys.modules); model.FastWAM; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=MODEL_DIR.parent, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "True"], result.stderr
