"""The house's import direction (DESIGN.md): app -> model -> recordings -> robot.types.

robot imports none of our other packages; recordings and model take only robot.types from robot;
only app imports Qt; only model imports torch. Parsed from the source, so it holds for code paths
that tests never execute.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT = {"PySide6", "pyqtgraph", "shiboken6"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def allowed(package: str, module: str) -> bool:
    top = module.split(".")[0]
    if top in QT:
        return package == "app"
    if top == "torch":
        return package == "model"
    if top == "app":
        return package == "app"
    if top == "model":
        return package in ("app", "model")
    if top == "recordings":
        return package in ("app", "model", "recordings")
    if top == "robot":
        return package in ("app", "robot") or module == "robot.types" or module.startswith("robot.types.")
    return True


@pytest.mark.parametrize("package", ["robot", "recordings", "model", "app"])
def test_imports_follow_the_house_direction(package):
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if not allowed(package, module)
    ]
    assert not violations, "imports against app -> model -> recordings -> robot.types:\n" + "\n".join(violations)
