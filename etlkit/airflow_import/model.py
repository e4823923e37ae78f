"""What the parser found in a DAG file: the DAG's settings, its tasks, their edges, and what it
could not understand, each with its line in the DAG file. Arguments stay syntax trees (`ast`):
the mapper decides what each one means."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """Something of the DAG that needs a person: what it is, where, and what to do instead."""

    line: int
    what: str
    suggestion: str


@dataclass(frozen=True)
class TaskSpec:
    """One task: an operator instantiated, or a TaskFlow `@task` function called.

    Attributes:
        task_id: Airflow's task id (`group.task` inside a task group).
        operator: the operator's class name (`PythonOperator`), or `@task` / `@task.<kind>`.
        module: where the operator's class was imported from (`airflow.operators.python`).
        line: the line of the instantiation or call.
        kwargs: the operator's keyword arguments (for `@task`, the decorator's).
        function: the `@task` function's name (TaskFlow only).
        call_args: the values the `@task` function is called with.
        call_kwargs: the keyword values the `@task` function is called with.
        inputs: per argument (position as text, or keyword), the task whose return value it is.
    """

    task_id: str
    operator: str
    module: str
    line: int
    kwargs: Mapping[str, ast.expr] = field(default_factory=dict)
    function: str | None = None
    call_args: tuple[ast.expr, ...] = ()
    call_kwargs: Mapping[str, ast.expr] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Edge:
    """`upstream >> downstream`, written at `line`."""

    upstream: str
    downstream: str
    line: int


@dataclass(frozen=True)
class Dag:
    """One DAG of a file.

    Attributes:
        dag_id: its id.
        line: where it is declared.
        settings: `DAG(...)`'s (or `@dag(...)`'s) keyword arguments.
        default_args: the entries of its `default_args` dict.
        tasks: its tasks, in the order the file declares them.
        edges: its dependencies.
        findings: what could not be mapped.
        functions: the file's function definitions by name (callables to copy).
        imports: the file's imports that are not Airflow's, as source lines, by bound name.
        constants: module-level names bound to literal values.
        names: what each imported name stands for (`timedelta` -> `datetime.timedelta`).
        import_lines: the line of each import of `imports`, by bound name.
    """

    dag_id: str
    line: int
    settings: Mapping[str, ast.expr]
    default_args: Mapping[str, ast.expr]
    tasks: tuple[TaskSpec, ...]
    edges: tuple[Edge, ...]
    findings: tuple[Finding, ...]
    functions: Mapping[str, ast.FunctionDef]
    imports: Mapping[str, str]
    constants: Mapping[str, ast.expr]
    names: Mapping[str, str]
    import_lines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeCode:
    """One node of the pipeline: its attribute name, its code and the comment on it."""

    name: str
    code: str
    comment: str


@dataclass
class Nodes:
    """The nodes, what they need imported, and what could not be mapped."""

    nodes: list[NodeCode] = field(default_factory=list)
    runtime: set[str] = field(default_factory=set)  # names from etlkit.airflow_import.runtime
    sensors: set[str] = field(default_factory=set)  # FileSensor, RunSensor
    command: bool = False
    functions: set[str] = field(default_factory=set)  # the DAG's callables the nodes call
    params: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # empty operators
    pools: dict[str, int] = field(default_factory=dict)  # pool -> the first line using it
