"""The rank table of DESIGN.md, enforced: imports only go down.

Every module of `etlkit/` belongs to a unit (its package, or itself for a top-level module); every
unit has a rank. A module may import its own unit and units of a lower rank, in every form: `import
etlkit.x`, `from etlkit.x import y`, `from etlkit import x`, relative imports, imports inside
functions and under `TYPE_CHECKING`. `from etlkit import Name` of a public name is an import of
the `etlkit` facade, the top rank. Connectors import only the SDK (`etlkit.connector`) and
`etlkit.errors`; etlkit never imports `connectors` or `pipelines`. No two modules import each
other, directly or around a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ETLKIT = ROOT / "etlkit"

#: Lowest first. A unit may import only units of a strictly lower rank (and itself).
RANKS: dict[str, int] = {
    "errors": 0,
    "settings": 1,
    "storage": 2,
    "model": 3,
    "checks": 4,
    "connector": 4,
    "testing": 4,
    "engine": 5,
    "runs": 6,
    "scheduling": 7,
    "ui": 8,
    "airflow_import": 8,
    "cli": 9,
    "etlkit": 10,  # the facade, etlkit/__init__.py: `import etlkit as ek`
    "__main__": 10,
}

#: What connector modules may import of etlkit.
CONNECTOR_SDK = {"etlkit.connector", "etlkit.errors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str | None = None) -> Iterator[tuple[str, int]]:
    """Every module `path` (module `name`) imports, dotted and absolute, with the line, in every
    import form."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from etlkit import engine` imports a module, `from etlkit import Pipeline` a name
                candidate = f"{base}.{alias.name}"
                yield (candidate if _is_module(candidate) else base), node.lineno


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def unit_of(dotted: str) -> str | None:
    """The rank table's unit of an etlkit module, or None for a module outside etlkit."""
    parts = dotted.split(".")
    if parts[0] != "etlkit":
        return None
    return parts[1] if len(parts) > 1 else "etlkit"


ETLKIT_FILES = sorted(ETLKIT.rglob("*.py"))
CONNECTOR_FILES = sorted((ROOT / "connectors").rglob("*.py"))


def test_every_unit_has_a_rank() -> None:
    units = {unit_of(module_name(path)) for path in ETLKIT_FILES}
    assert units - set(RANKS) == set(), "add the new package or module to RANKS"
    assert set(RANKS) - units == set(), "a unit in RANKS no longer exists"


@pytest.mark.parametrize("path", ETLKIT_FILES, ids=lambda p: str(p.relative_to(ETLKIT)))
def test_imports_only_go_down(path: Path) -> None:
    own = unit_of(module_name(path))
    assert own is not None
    wrong = []
    for target, line in imported_modules(path):
        unit = unit_of(target)
        if unit is None:
            assert target.split(".")[0] not in ("connectors", "pipelines"), (path, line)
            continue
        if unit != own and RANKS[unit] >= RANKS[own]:
            wrong.append(f"line {line}: {target} ({unit}, rank {RANKS[unit]})")
    assert wrong == [], f"{own} (rank {RANKS[own]}) may import only lower ranks: {wrong}"


@pytest.mark.parametrize("path", CONNECTOR_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_connectors_import_only_the_sdk(path: Path) -> None:
    wrong = [
        f"line {line}: {target}"
        for target, line in imported_modules(path)
        if unit_of(target) is not None and target not in CONNECTOR_SDK
    ]
    assert wrong == [], f"connectors may import only {sorted(CONNECTOR_SDK)} of etlkit: {wrong}"


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in [*ETLKIT_FILES, *CONNECTOR_FILES]:
        own = module_name(path)
        graph[own] = {
            target
            for target, _ in imported_modules(path)
            if target.split(".")[0] in ("etlkit", "connectors") and target != own
        }
    # a package's __init__ is imported with any of its modules: an edge to the package is real,
    # but one from a package to its own modules (re-exports) is not a cycle of the code's making
    cycles = []
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append([*trail[trail.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            if not module.startswith(target + ".") and not target.startswith(module + "."):
                visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == [], f"import cycles: {cycles}"


def test_the_rank_table_catches_every_import_form(tmp_path: Path) -> None:
    """The scanner itself: each form of an upward import is seen."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import etlkit.engine.execution\n"
        "from etlkit import runs\n"
        "from etlkit import Pipeline\n"
        "from ..cli import main\n"
        "def late():\n"
        "    from etlkit.scheduling.clock import Clock\n"
    )
    found = {unit_of(target) for target, _ in imported_modules(probe, "etlkit.model.probe")}
    assert found == {"engine", "runs", "etlkit", "cli", "scheduling"}
