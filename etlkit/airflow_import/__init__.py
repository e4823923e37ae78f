"""`etlkit import-airflow`: an Airflow DAG file turned into an etlkit pipeline file.

The DAG file is parsed (`parser`, syntax tree only: it is never imported or run, and Airflow
need not be installed; `declarations` creates the tasks, `edges` resolves task groups and finds
cycles) into a model of what it declares (`model`); its settings and tasks are mapped (`mapper`,
`tasks`, `operators`, `functions`, with `values` for literals and `templates` for Jinja) and
written (`writer`) as a pipeline module whose nodes come from `runtime`, with a report of what
needs a person. Rank 8 (tests/test_layering.py): it may import anything below the CLI; it uses
`errors`, the settings, the model's nodes and the runs' notifications. Only the CLI imports it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from etlkit.airflow_import.functions import callables_used
from etlkit.airflow_import.mapper import Attribute, Settings, map_settings
from etlkit.airflow_import.model import Dag, Finding, Nodes
from etlkit.airflow_import.parser import parse_dag_file
from etlkit.airflow_import.tasks import TaskMapper
from etlkit.airflow_import.values import Evaluator
from etlkit.airflow_import.writer import (
    function_source,
    pipeline_code,
    report_text,
    toml_tables,
)
from etlkit.errors import ConfigError


@dataclass(frozen=True)
class ImportResult:
    """What an import produced.

    Attributes:
        pipeline: the pipeline's name.
        pipeline_path: the pipeline file (written unless `check`).
        report_path: the Markdown report beside it (written unless `check`).
        code: the pipeline file's text.
        report: the report as plain text, for the terminal.
        findings: what needs a person (empty: everything was mapped).
        notifiers: the notifier stubs added to etlkit.toml, by name.
    """

    pipeline: str
    pipeline_path: Path
    report_path: Path
    code: str
    report: str
    findings: tuple[Finding, ...]
    notifiers: tuple[str, ...]


def import_dag(
    dag_file: Path,
    *,
    out_dir: Path,
    project_dir: Path,
    name: str | None = None,
    check: bool = False,
    force: bool = False,
) -> ImportResult:
    """Map the DAG of `dag_file` to a pipeline in `out_dir` (nothing is written with `check`).

    Raises:
        ConfigError: the file cannot be read, the name is not a Python identifier, or the
            pipeline file exists (without `force`).
        AirflowImportError: the DAG file is invalid (syntax error, cycle, dependency naming no
            task, ...); the message names the file and line.
    """
    dag = parse_dag_file(dag_file)
    pipeline = name or re.sub(r"\W", "_", dag.dag_id).strip("_").lower()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", pipeline):
        raise ConfigError(
            f"Pipeline name {pipeline!r} is not a lower-case Python identifier: pass --name"
        )
    pipeline_path = out_dir / f"{pipeline}.py"
    report_path = out_dir / f"{pipeline}.airflow-import.md"
    if not check and pipeline_path.exists() and not force:
        raise ConfigError(
            f"{pipeline_path} exists: pass --force to replace it, or --name for another name"
        )
    code, findings, settings, nodes = _generate(dag, dag_file, pipeline, out_dir, project_dir)
    report = report_text(
        dag_file=str(dag_file), pipeline_file=str(pipeline_path), findings=findings, markdown=False
    )
    if not check:
        out_dir.mkdir(parents=True, exist_ok=True)
        markdown = report_text(
            dag_file=dag_file.name,
            pipeline_file=pipeline_path.name,
            findings=findings,
            markdown=True,
        )
        _write(report_path, markdown)
        _write(pipeline_path, code)
        _add_pools(project_dir, nodes.pools, write=True)
    added = _add_notifiers(project_dir, settings.notifiers, write=not check)
    return ImportResult(
        pipeline, pipeline_path, report_path, code, report, tuple(findings), tuple(added)
    )


def _generate(
    dag: Dag, dag_file: Path, pipeline: str, out_dir: Path, project_dir: Path
) -> tuple[str, tuple[Finding, ...], Settings, Nodes]:
    """The pipeline's code and what needs a person, with the settings and nodes mapped."""
    report_path = out_dir / f"{pipeline}.airflow-import.md"
    evaluate = Evaluator(dag.names, dag.constants)
    settings = map_settings(dag, evaluate)
    mapper = TaskMapper(dag, evaluate, settings, dag_file.parent)
    nodes = mapper.map()
    attributes = list(settings.attributes)
    params = {**settings.params, **nodes.params}
    if params:
        attributes.append(_attribute("params", repr(params), "the DAG's params and templates'"))
    for event, entries in settings.callbacks.items():
        attributes.append(
            _attribute(f"on_{event}", f"[{', '.join(entries)}]", f"on_{event}_callback / email")
        )
    runtime = set(nodes.runtime)
    if settings.uses_callback:
        runtime.add("airflow_callback")
    definitions, imports, constants = callables_used(dag, nodes.functions | settings.callables)
    source = dag_file.read_text(encoding="utf-8")
    node_names = {node.name for node in nodes.nodes}
    used = nodes.functions | settings.callables
    findings = (*dag.findings, *settings.findings, *mapper.findings)
    code = pipeline_code(
        pipeline=pipeline,
        dag_id=dag.dag_id,
        dag_file=dag_file.name,
        report=report_path.name,
        attributes=attributes,
        nodes=nodes.nodes,
        removed=nodes.removed,
        runtime=runtime,
        sensors=nodes.sensors,
        command=nodes.command,
        timedelta_import=settings.uses_timedelta,
        imports={n: line for n, line in imports.items() if n not in {d.name for d in definitions}},
        constants=constants,
        functions=[(d, function_source(source, d)) for d in definitions],
        aliases=sorted(used & node_names),
    )
    pools = _add_pools(project_dir, nodes.pools, write=False)
    findings = (
        *findings,
        *_unimportable(
            dag_file, out_dir, {line: dag.import_lines.get(n, 1) for n, line in imports.items()}
        ),
        *(
            Finding(
                nodes.pools[pool],
                f"pool '{pool}'",
                f"set its size under [pools] in etlkit.toml ({pool} = 1 is added to start "
                "with; Airflow kept pool slots in its database)",
            )
            for pool in pools
        ),
    )
    return code, findings, settings, nodes


def _unimportable(dag_file: Path, out_dir: Path, imports: Mapping[str, int]) -> list[Finding]:
    """A finding per module the pipeline imports that it could not import from `out_dir`
    (found neither there nor installed): the module beside the DAG needs copying."""
    found = []
    seen: set[str] = set()
    for line, number in sorted(imports.items()):
        module = line.split()[1].split(".")[0]
        if module in seen:
            continue
        seen.add(module)
        if not module or (out_dir / f"{module}.py").is_file() or (out_dir / module).is_dir():
            continue
        if importlib.util.find_spec(module) is not None:  # finds, never runs, a top-level one
            continue
        beside = dag_file.parent / f"{module}.py"
        found.append(
            Finding(
                number,
                f"the pipeline imports the module '{module}' (`{line}`), which is neither in "
                f"{out_dir} nor installed",
                f"copy {beside if beside.is_file() else module} beside the pipeline: the "
                "pipelines folder is importable",
            )
        )
    return found


def _attribute(name: str, code: str, comment: str) -> Attribute:
    return Attribute(name, code, comment)


def _write(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"Cannot write {path}: {exc}") from exc


def _add_pools(project_dir: Path, pools: dict[str, int], *, write: bool) -> list[str]:
    """Add the pools etlkit.toml lacks (one slot each); return their names."""
    from etlkit.settings.config import read_toml

    path = project_dir / "etlkit.toml"
    existing = read_toml(path).get("pools", {}) if path.is_file() else {}
    missing = sorted(pool for pool in pools if pool not in existing)
    if not missing or not write:
        return missing
    before = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = "".join(
        f"{pool} = 1  # added by `etlkit import-airflow`: set its size\n" for pool in missing
    )
    header = re.search(r"^\[pools\][ \t]*(#.*)?$", before, flags=re.MULTILINE)
    if header is not None:
        end = header.end() + 1
        text = before[:end] + lines + before[end:]
    else:
        separator = "\n" if before and not before.endswith("\n\n") else ""
        text = f"{before}{separator}[pools]\n{lines}"
    _write(path, text)
    return missing


def _add_notifiers(
    project_dir: Path, notifiers: dict[str, dict[str, object]], *, write: bool
) -> list[str]:
    """Append the notifier stubs etlkit.toml lacks; return their names."""
    from etlkit.settings.config import read_toml

    path = project_dir / "etlkit.toml"
    existing = read_toml(path).get("notifiers", {}) if path.is_file() else {}
    missing = {k: v for k, v in notifiers.items() if k not in existing}
    if missing and write:
        before = path.read_text(encoding="utf-8") if path.is_file() else ""
        separator = "\n" if before and not before.endswith("\n\n") else ""
        _write(path, before + separator + toml_tables(missing))
    return sorted(missing)


__all__ = ["ImportResult", "import_dag"]
