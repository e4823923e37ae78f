"""One vocabulary: one RunState, one NodeState and one run-id function, wherever runs are made."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

from etlkit.engine import execution
from etlkit.storage import store

PACKAGE = Path(execution.__file__).resolve().parent.parent


def defined(name: str) -> list[str]:
    """The modules of etlkit that define `name` (a function, or an assigned alias)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = []
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            if name in names:
                found.append(str(path.relative_to(PACKAGE)))
    return found


def test_run_and_node_states_and_the_run_id_function_are_defined_once() -> None:
    assert defined("RunState") == ["storage/store/vocabulary.py"]
    assert defined("NodeState") == ["storage/store/vocabulary.py"]
    assert defined("new_run_id") == ["storage/store/vocabulary.py"]


def test_the_engine_reports_states_of_the_store_vocabulary() -> None:
    assert execution.RunState is store.RunState
    assert execution.NodeState is store.NodeState
    assert execution.new_run_id is store.new_run_id
    assert set(get_args(store.RunState)) >= {"running", "success", "failed", "cancelled"}


def test_a_run_id_is_sortable_and_names_its_creation_time() -> None:
    first = store.new_run_id(datetime(2025, 3, 1, 2, 0, tzinfo=UTC))
    later = store.new_run_id(datetime(2025, 3, 1, 2, 0, 1, tzinfo=UTC))

    assert first.startswith("20250301T020000Z-")
    assert first < later
