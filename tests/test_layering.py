"""Imports point down the layers of DESIGN.md; connectors import etlkit, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# module -> the etlkit modules it may import (directly or under TYPE_CHECKING).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "schema": {"errors"},
    "runlog": set(),
    "nodes": {"errors", "schema"},
    "staging": {"errors"},
    "store": {"errors"},
    "pools": {"errors", "config"},
    "connections": {"errors", "config"},
    "validation": {"errors", "schema", "staging"},
    "testing": {"errors", "nodes", "schema"},
    "guard": {"errors", "nodes", "schema", "staging", "validation"},
    "querying": {"errors", "staging"},
    "sensors": {"errors", "nodes", "store", "connections"},
    "commands": {"errors", "nodes", "connections"},
    "notifications": {"errors", "connections", "config"},
    "graph": {"errors", "nodes", "schema"},
    "pictures": {"errors", "graph", "store"},
    "execution": {
        *("errors", "nodes", "schema", "staging", "validation", "graph", "guard", "runlog"),
        *("sensors", "store"),
    },
    "runs": {
        *("errors", "execution", "nodes", "staging", "runlog", "config", "store"),
        *("graph", "notifications", "connections"),
    },
    "pipeline": {
        *("errors", "nodes", "graph", "execution", "staging", "config", "schema", "runs"),
        "store",
    },
    "progress": {"execution"},
    "worker": {
        *("errors", "config", "pipeline", "runs", "store", "scheduling", "runlog"),
        *("connections", "notifications", "pools"),
    },
    "scheduling": {
        *("errors", "config", "nodes", "pipeline", "runs", "store", "execution", "graph"),
        *("sensors", "notifications", "connections", "runlog", "pools"),
    },
    "cli": {
        *("errors", "config", "pipeline", "graph", "execution", "progress", "nodes", "staging"),
        *("store", "runlog", "querying", "runs", "connections", "scheduling", "notifications"),
        "pools",
        "ui",
        "airflow_import",
        "pictures",
    },
    "__init__": {
        *("errors", "config", "execution", "nodes", "pipeline", "querying", "commands"),
        "sensors",
    },
    "__main__": {"cli"},
}


def etlkit_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "etlkit" and len(parts) > 1:
                found.add(parts[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "etlkit" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "etlkit").glob("*.py")), ids=lambda p: p.stem)
def test_etlkit_modules_import_only_lower_layers(path: Path) -> None:
    assert path.stem in ALLOWED, f"add etlkit/{path.name} to the layer table"
    assert etlkit_imports(path) - ALLOWED[path.stem] == set()


def test_etlkit_never_imports_connectors_or_pipelines() -> None:
    for path in (ROOT / "etlkit").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                assert name.split(".")[0] not in ("connectors", "pipelines"), path


def test_the_ui_is_imported_only_by_the_cli_and_imports_no_cli() -> None:
    for path in (ROOT / "etlkit").rglob("*.py"):
        imports = etlkit_imports(path)
        if path.parent.name == "ui":
            assert "cli" not in imports, path
        elif path.stem != "cli":
            assert "ui" not in imports, path


@pytest.mark.parametrize(
    "path", sorted((ROOT / "etlkit" / "airflow_import").glob("*.py")), ids=lambda p: p.stem
)
def test_airflow_import_uses_only_what_its_pipelines_need(path: Path) -> None:
    allowed = {"airflow_import", "errors", "nodes", "notifications", "config", "commands"}
    assert etlkit_imports(path) - allowed == set()
