"""Sizes that keep the code walkable: modules, classes and functions stay small enough to read
at once (the targets are ~500, ~300 and ~60 lines; these limits leave a little slack so that a
test fails on drift, not on one more line). A function's docstring does not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted([*(ROOT / "etlkit").rglob("*.py"), *(ROOT / "connectors").rglob("*.py")])

MODULE_LINES = 550
CLASS_LINES = 350
FUNCTION_LINES = 70


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and len(body) > 1:
        body = body[1:]  # the docstring
    end = body[-1].end_lineno or body[-1].lineno
    return end - body[0].lineno + 1


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_classes_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    too_big = []
    if len(text.splitlines()) > MODULE_LINES:
        too_big.append(f"module: {len(text.splitlines())} lines (limit {MODULE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > CLASS_LINES:
                too_big.append(f"class {node.name}: {lines} lines (limit {CLASS_LINES})")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = _body_lines(node)
            if lines > FUNCTION_LINES:
                too_big.append(f"{node.name}(): {lines} lines (limit {FUNCTION_LINES})")
    assert too_big == [], "split by concept: " + "; ".join(too_big)
