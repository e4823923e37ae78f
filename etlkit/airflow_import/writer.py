"""The pipeline file, the Markdown report and the etlkit.toml notifier stubs, as text."""

from __future__ import annotations

import ast
import json
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from etlkit.airflow_import.mapper import Attribute
from etlkit.airflow_import.model import Finding, NodeCode


def class_name(pipeline: str) -> str:
    """`daily_sales` -> `DailySales`."""
    return "".join(part[:1].upper() + part[1:] for part in pipeline.split("_") if part) or "Dag"


def _comment(text: str) -> str:
    """One line: a comment ends at its line's end, so nothing after it becomes code."""
    return " ".join(text.split())


def _doc(text: str) -> str:
    """Text for the docstring: no quote or backslash that could end it (and start code)."""
    return repr(re.sub(r'["\\\s]+', "_", text))


def pipeline_code(
    *,
    pipeline: str,
    dag_id: str,
    dag_file: str,
    report: str,
    attributes: Sequence[Attribute],
    nodes: Sequence[NodeCode],
    removed: Sequence[str],
    runtime: Iterable[str],
    sensors: Iterable[str],
    command: bool,
    timedelta_import: bool,
    imports: Mapping[str, str],
    constants: Mapping[str, ast.expr],
    functions: Sequence[tuple[ast.FunctionDef, str]],
    aliases: Iterable[str],
) -> str:
    """The source of the pipeline module."""
    lines = [
        f'"""Pipeline {pipeline}, imported from the Airflow DAG {_doc(dag_id)} in {_doc(dag_file)}',
        "by `etlkit import-airflow`.",
        "",
        "Each mapping decision is a comment. What could not be mapped is listed in",
        f"{_doc(report)} and left as Todo nodes that fail when run.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    if timedelta_import:
        lines += ["from datetime import timedelta", ""]
    lines.append("import etlkit as ek")
    if runtime:
        lines.append(f"from etlkit.airflow_import.runtime import {', '.join(sorted(runtime))}")
    if command:
        lines.append("from etlkit import Command")
    if sensors:
        lines.append(f"from etlkit import {', '.join(sorted(sensors))}")
    if imports:
        lines += ["", "# the DAG file's imports that its functions use"]
        lines += sorted(dict.fromkeys(imports.values()))
    if constants:
        lines.append("")
        lines += [f"{name} = {ast.unparse(value)}" for name, value in constants.items()]
    for definition, source in functions:
        where = f"# copied from {_comment(dag_file)}, line {definition.lineno}"
        lines += ["", "", where, source.rstrip()]
    alias_lines = [f"{name}_callable = {name}" for name in sorted(aliases)]
    if alias_lines:
        lines += ["", "# functions also named like nodes, by another name for the nodes"]
        lines += alias_lines
    lines += ["", "", f"class {class_name(pipeline)}(ek.Pipeline):"]
    lines.append(f"    name = {pipeline!r}  # the DAG {dag_id!r}")
    for attribute in attributes:
        lines.append(f"    {attribute.name} = {attribute.code}  # {_comment(attribute.comment)}")
    if removed:
        lines.append(f"    # dependencies only, no node: {_comment(', '.join(removed))}")
    for node in nodes:
        lines += ["", f"    # {_comment(node.comment)}", f"    {node.name} = {node.code}"]
    if not nodes:
        lines += ["", "    # the DAG has no task"]
    return "\n".join(lines) + "\n"


def function_source(source: str, definition: ast.FunctionDef) -> str:
    """The function's text without its decorators, dedented (a `@task` inside a `@dag`)."""
    start = definition.lineno - 1
    end = definition.end_lineno or definition.lineno
    text = "\n".join(source.splitlines()[start:end])
    return textwrap.dedent(text)


def report_text(
    *, dag_file: str, pipeline_file: str, findings: Sequence[Finding], markdown: bool
) -> str:
    """What could not be mapped, with the DAG file's lines and a suggestion for each."""
    ordered = sorted(findings, key=lambda f: f.line)
    if markdown:
        lines = [
            f"# Import of `{dag_file}`",
            "",
            f"Pipeline: `{pipeline_file}`.",
            "",
        ]
        if not ordered:
            return "\n".join([*lines, "Everything was mapped.", ""])
        lines += [
            f"{len(ordered)} item(s) to review:",
            "",
            "| DAG line | What | Suggestion |",
            "| ---: | --- | --- |",
        ]
        for f in ordered:
            lines.append(f"| {f.line} | {_cell(f.what)} | {_cell(f.suggestion)} |")
        return "\n".join(lines) + "\n"
    if not ordered:
        return f"{dag_file}: everything was mapped to {pipeline_file}"
    lines = [f"{dag_file}: mapped to {pipeline_file}, {len(ordered)} item(s) to review:"]
    lines += [f"  line {f.line}: {f.what}\n    -> {f.suggestion}" for f in ordered]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|")


def toml_tables(notifiers: Mapping[str, Mapping[str, Any]]) -> str:
    """`[notifiers.NAME]` tables for etlkit.toml (stubs to complete)."""
    chunks = []
    for name, table in notifiers.items():
        todo = "set host and sender" if table.get("kind") == "email" else "point url at it"
        lines = [
            f"# added by `etlkit import-airflow`: check every value ({todo})",
            f"[notifiers.{name}]",
        ]
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks) + ("\n" if chunks else "")
