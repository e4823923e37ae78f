"""The Python functions of a DAG: where each is defined, what it does that etlkit does
differently, whether it speaks DataFrames, and what a pipeline needs to copy it."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from etlkit.airflow_import.declarations import qualified
from etlkit.airflow_import.model import Dag

_FRAMES: Final = frozenset({"pl.DataFrame", "polars.DataFrame", "DataFrame"})


def find_definition(dag: Dag, dag_dir: Path, function: str) -> ast.FunctionDef | None:
    """The function's definition: in the DAG file, or in a module beside it (parsed too)."""
    if function in dag.functions:
        return dag.functions[function]
    target = dag.names.get(function, "")
    module, _, name = target.lstrip(".").rpartition(".")
    path = dag_dir.joinpath(*module.split(".")).with_suffix(".py")
    if not module or not path.is_file():
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError):
        return None
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def scan_function(definition: ast.FunctionDef) -> list[tuple[str, str]]:
    """What the function does that etlkit does differently: (what, suggestion) pairs."""
    attributes = {n.attr for n in ast.walk(definition) if isinstance(n, ast.Attribute)}
    names = {n.id for n in ast.walk(definition) if isinstance(n, ast.Name)}
    texts = [
        n.value
        for n in ast.walk(definition)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    found = []
    if attributes & {"xcom_pull", "xcom_push"}:
        found.append(
            (
                f"{definition.name} pushes or pulls XComs",
                "make this a node output: return the data from one node and read it in the "
                "next (a DataFrame from a Source or Transform, or a return value)",
            )
        )
    if "pickle" in names and any(t.startswith("/tmp") for t in texts):
        found.append(
            (
                f"{definition.name} passes pickles through /tmp",
                "return a DataFrame from a Source or Transform instead: etlkit keeps it "
                "staged by run id (Parquet), no pickle in /tmp",
            )
        )
    return found


def is_frame(annotation: ast.expr | None, names: Mapping[str, str]) -> bool:
    """Whether a type annotation names a polars DataFrame."""
    if annotation is None:
        return False
    resolved = qualified(annotation, dict(names))
    return ast.unparse(annotation) in _FRAMES or resolved in (
        "polars.DataFrame",
        "polars.dataframe.DataFrame",
    )


def callables_used(
    dag: Dag, functions: set[str]
) -> tuple[list[ast.FunctionDef], dict[str, str], dict[str, ast.expr]]:
    """What the generated file needs for `functions`: the DAG file's definitions to copy (with
    the helper functions they call), and the imports and module constants they use."""
    copied: dict[str, ast.FunctionDef] = {}
    wanted = sorted(functions)
    used: set[str] = set(functions)
    while wanted:
        name = wanted.pop(0)
        definition = dag.functions.get(name)
        if definition is None or name in copied:
            continue
        copied[name] = definition
        for node in ast.walk(definition):
            if isinstance(node, ast.Name) and node.id not in used:
                used.add(node.id)
                if node.id in dag.functions:
                    wanted.append(node.id)
    for node in [n for d in copied.values() for n in ast.walk(d)]:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            used.add(node.value.id)
    constants = {n: v for n, v in dag.constants.items() if n in used}
    for value in constants.values():  # `DELAY = timedelta(...)` needs its import too
        used.update(n.id for n in ast.walk(value) if isinstance(n, ast.Name))
    imports = {n: line for n, line in dag.imports.items() if n in used}
    ordered = [d for d in dag.functions.values() if d.name in copied]
    return ordered, imports, constants
