"""Creating the tasks a DAG file declares: operators, TaskFlow calls (with the values passed
between them), `@task_group` calls (flattened, `group.task` ids) and dynamic task mapping.

A mixin of the parser (`parser._Parser`), which reads statements and dependencies and calls these
when an expression declares a task.
"""

from __future__ import annotations

import ast
from abc import ABC, abstractmethod
from pathlib import Path

from etlkit.airflow_import.model import Edge, Finding, TaskSpec
from etlkit.errors import AirflowImportError


def qualified(expr: ast.expr, names: dict[str, str]) -> str:
    """`expr`'s dotted name with its import resolved (`python.PythonOperator` and all)."""
    if isinstance(expr, ast.Name):
        return names.get(expr.id, expr.id)
    if isinstance(expr, ast.Attribute):
        return f"{qualified(expr.value, names)}.{expr.attr}"
    return ""


class TaskDeclarations(ABC):
    """The tasks of the DAG being read, by id, and how to add one."""

    path: Path
    source: str
    names: dict[str, str]
    taskflow: dict[str, ast.FunctionDef]
    task_groups: dict[str, tuple[ast.FunctionDef, dict[str, ast.expr]]]
    groups: dict[str, list[str]]
    tasks: dict[str, TaskSpec]
    edges: list[Edge]
    findings: list[Finding]
    calls: dict[str, int]

    def error(self, line: int, problem: str) -> AirflowImportError:
        return AirflowImportError(str(self.path), line, problem)

    @abstractmethod
    def keywords(self, call: ast.Call) -> dict[str, ast.expr]: ...

    @abstractmethod
    def statement(self, stmt: ast.stmt, group: str) -> None: ...

    @abstractmethod
    def expr(self, expr: ast.expr, group: str) -> list[str] | None: ...

    def task_group_call(self, function: str, call: ast.Call, group: str) -> str:
        """A `@task_group` function called: its tasks, flattened with its id as prefix."""
        func, kwargs = self.task_groups[function]
        given = kwargs.get("group_id")
        base = given.value if isinstance(given, ast.Constant) else function
        name = f"{group}.{base!s}" if group else str(base)
        if name in self.groups:
            count = self.calls.get(name, 0) + 1
            self.calls[name] = count
            name = f"{name}__{count}"
        self.groups[name] = []
        if call.args or call.keywords:
            self.findings.append(
                Finding(
                    call.lineno,
                    f"arguments of the @task_group '{function}' call",
                    "etlkit flattens the group: pass the values to its tasks instead",
                )
            )
        for stmt in func.body:
            self.statement(stmt, name)
        return f"group:{name}"

    def task_id(self, base: str, group: str, line: int, *, unique: bool) -> str:
        task_id = f"{group}.{base}" if group else base
        if task_id in self.tasks:
            if unique:
                raise self.error(
                    line,
                    f"task id '{task_id}' is already used by the task on line "
                    f"{self.tasks[task_id].line}; task ids are unique in a DAG",
                )
            count = self.calls.get(task_id, 0) + 1
            self.calls[task_id] = count
            task_id = f"{task_id}__{count}"
        if group:
            self.groups[group].append(task_id)
        return task_id

    def operator(self, call: ast.Call, name: str, group: str) -> str:
        kwargs = self.keywords(call)
        given = kwargs.get("task_id")
        if not isinstance(given, ast.Constant) or not isinstance(given.value, str):
            raise self.error(call.lineno, f"{name}'s task_id is not a string literal; write one")
        task_id = self.task_id(given.value, group, call.lineno, unique=True)
        module, _, operator = name.rpartition(".")
        self.tasks[task_id] = TaskSpec(task_id, operator, module, call.lineno, kwargs)
        return task_id

    def taskflow_call(
        self, function: str, call: ast.Call, group: str, override: dict[str, ast.expr]
    ) -> list[str]:
        func = self.taskflow[function]
        decorator = next(
            d for d in func.decorator_list if ".task" in qualified(_callee(d), self.names)
        )
        kwargs = self.keywords(decorator) if isinstance(decorator, ast.Call) else {}
        kwargs.update(override)
        given = kwargs.get("task_id")
        base = given.value if isinstance(given, ast.Constant) else function
        task_id = self.task_id(str(base), group, call.lineno, unique=False)
        kind = qualified(_callee(decorator), self.names).split(".task", 1)[-1]
        inputs: dict[str, str] = {}
        values = [(str(i), arg) for i, arg in enumerate(call.args)]
        values += [(kw.arg, kw.value) for kw in call.keywords if kw.arg is not None]
        for key, arg in values:
            upstream = self.expr(arg, group) if isinstance(arg, ast.Call | ast.Name) else None
            if upstream:
                if len(upstream) != 1:
                    raise self.error(arg.lineno, "a task's argument stands for several tasks")
                inputs[key] = upstream[0]
                self.edges.append(Edge(upstream[0], task_id, call.lineno))
            elif isinstance(arg, ast.Subscript | ast.Attribute):
                self.findings.append(
                    Finding(
                        arg.lineno,
                        f"argument `{ast.get_source_segment(self.source, arg)}` of task "
                        f"'{task_id}' pulls part of another task's XCom",
                        "make this a node output: return the part from its own task",
                    )
                )
        self.tasks[task_id] = TaskSpec(
            task_id,
            f"@task{kind}",
            "",
            call.lineno,
            kwargs,
            function=function,
            call_args=tuple(call.args),
            call_kwargs={kw.arg: kw.value for kw in call.keywords if kw.arg is not None},
            inputs=inputs,
        )
        return [task_id]

    def dynamic(self, call: ast.Call, group: str) -> str:
        base = "mapped"
        inner = call.func.value if isinstance(call.func, ast.Attribute) else call.func
        if isinstance(inner, ast.Name):
            base = inner.id
        elif isinstance(inner, ast.Call):
            given = {kw.arg: kw.value for kw in inner.keywords}.get("task_id")
            if isinstance(given, ast.Constant):
                base = str(given.value)
            elif isinstance(inner.func, ast.Attribute) and isinstance(inner.func.value, ast.Name):
                base = inner.func.value.id
        task_id = self.task_id(base, group, call.lineno, unique=False)
        self.tasks[task_id] = TaskSpec(task_id, "dynamic task mapping", "", call.lineno)
        return task_id


def _callee(expr: ast.expr) -> ast.expr:
    return expr.func if isinstance(expr, ast.Call) else expr
