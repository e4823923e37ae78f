"""Reading a DAG file's syntax tree (never importing or running it) into a `Dag`.

Understands `DAG(...)` as a variable and as a `with` block, `@dag`/`@task` (TaskFlow, with
return values passed between tasks), task groups (flattened, `group.task` ids), and
dependencies by `>>`/`<<` (lists on either side), `set_upstream`/`set_downstream`, `chain`
and `cross_downstream`, with Airflow 1.10, 2.x and 3.x import paths alike.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

from etlkit.airflow_import.declarations import TaskDeclarations, qualified
from etlkit.airflow_import.edges import find_cycle, resolve
from etlkit.airflow_import.model import Dag, Edge, Finding, TaskSpec
from etlkit.errors import AirflowImportError, ConfigError

_DYNAMIC = "make it one node per task (params for what varies), or a node that loops itself"


def parse_dag_file(path: Path) -> Dag:
    """The DAG declared in `path`, read from its syntax tree.

    Raises:
        ConfigError: the file cannot be read.
        AirflowImportError: a syntax error, no DAG, several DAGs, a dependency naming no task,
            a duplicate task id or a cycle; the message names the file and line.
    """
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"DAG file {path} cannot be read: {exc}") from exc
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise AirflowImportError(
            str(path), exc.lineno or 0, f"is not valid Python: {exc.msg}; fix it and run again"
        ) from exc
    return _Parser(path, source).parse(tree)


def _is_airflow(name: str) -> bool:
    return name.split(".", 1)[0] == "airflow"


class _Parser(TaskDeclarations):
    """Reads the module level (imports, functions, the DAG) and the dependencies between tasks;
    `TaskDeclarations` creates the tasks."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.names: dict[str, str] = {}
        self.imports: dict[str, str] = {}
        self.import_lines: dict[str, int] = {}
        self.functions: dict[str, ast.FunctionDef] = {}
        self.taskflow: dict[str, ast.FunctionDef] = {}
        self.constants: dict[str, ast.expr] = {}
        self.vars: dict[str, list[str]] = {}
        self.groups: dict[str, list[str]] = {}
        self.tasks: dict[str, TaskSpec] = {}
        self.edges: list[Edge] = []
        self.findings: list[Finding] = []
        self.dags: list[tuple[str, int, dict[str, ast.expr]]] = []
        self.dag_functions: dict[str, tuple[ast.FunctionDef, dict[str, ast.expr]]] = {}
        self.task_groups: dict[str, tuple[ast.FunctionDef, dict[str, ast.expr]]] = {}
        self.calls: dict[str, int] = {}

    def parse(self, tree: ast.Module) -> Dag:
        for stmt in tree.body:
            self.module_statement(stmt)
        if not self.dags:
            raise self.error(
                1,
                "declares no DAG (no `DAG(...)`, `with DAG(...)` or `@dag` function called): "
                "is it a DAG file?",
            )
        if len(self.dags) > 1:
            listed = ", ".join(f"'{d}' (line {line})" for d, line, _ in self.dags)
            raise self.error(
                self.dags[1][1],
                f"declares {len(self.dags)} DAGs ({listed}); etlkit imports one DAG per file: "
                "split the file",
            )
        dag_id, line, settings = self.dags[0]
        default_args: dict[str, ast.expr] = {}
        given = settings.get("default_args")
        if isinstance(given, ast.Name):
            given = self.constants.get(given.id, given)
        if isinstance(given, ast.Dict):
            default_args = {
                key.value: value
                for key, value in zip(given.keys, given.values, strict=True)
                if isinstance(key, ast.Constant) and isinstance(key.value, str)
            }
        elif given is not None:
            self.findings.append(
                Finding(line, "default_args is not a dict literal", "write it as a dict literal")
            )
        self.check_cycles()
        return Dag(
            dag_id=dag_id,
            line=line,
            settings=settings,
            default_args=default_args,
            tasks=tuple(self.tasks.values()),
            edges=tuple(self.edges),
            findings=tuple(self.findings),
            functions=self.functions,
            imports=self.imports,
            constants=self.constants,
            names=self.names,
            import_lines=self.import_lines,
        )

    # -- module level ----------------------------------------------------------------------

    def module_statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            self.record_import(stmt)
        elif isinstance(stmt, ast.FunctionDef):
            self.define(stmt)
        elif isinstance(stmt, ast.With):
            dag = self.with_dag(stmt)
            if dag is None:
                self.statement(stmt, "")
            else:
                for inner in stmt.body:
                    self.statement(inner, "")
        elif isinstance(stmt, ast.Assign) and self.dag_call(stmt.value) is not None:
            call = self.dag_call(stmt.value)
            assert call is not None
            self.declare_dag(call, "")
        else:
            self.statement(stmt, "")

    def record_import(self, stmt: ast.Import | ast.ImportFrom) -> None:
        text = ast.get_source_segment(self.source, stmt) or ""
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                bound = alias.asname or alias.name.split(".")[0]
                self.names[bound] = alias.name if alias.asname else bound
                if not _is_airflow(alias.name):
                    self.imports[bound] = text
                    self.import_lines[bound] = stmt.lineno
            return
        module = "." * stmt.level + (stmt.module or "")
        for alias in stmt.names:
            bound = alias.asname or alias.name
            self.names[bound] = f"{module}.{alias.name}"
            if not _is_airflow(module):
                self.import_lines[bound] = stmt.lineno
                self.imports[bound] = f"from {module} import {alias.name}" + (
                    f" as {alias.asname}" if alias.asname else ""
                )

    def define(self, func: ast.FunctionDef) -> None:
        for decorator in func.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            name = qualified(target, self.names)
            if _is_airflow(name) and name.endswith(".dag"):
                kwargs = self.keywords(decorator) if isinstance(decorator, ast.Call) else {}
                self.dag_functions[func.name] = (func, kwargs)
                return
            if _is_airflow(name) and name.endswith(".task_group"):
                kwargs = self.keywords(decorator) if isinstance(decorator, ast.Call) else {}
                self.task_groups[func.name] = (func, kwargs)
                return
            if _is_airflow(name) and ".task" in name:
                self.taskflow[func.name] = func
                self.functions[func.name] = func
                return
        self.functions[func.name] = func

    def keywords(self, call: ast.Call) -> dict[str, ast.expr]:
        found = {kw.arg: kw.value for kw in call.keywords if kw.arg is not None}
        for kw in call.keywords:
            if kw.arg is None:
                self.findings.append(
                    Finding(call.lineno, "arguments passed as **kwargs", "write them out")
                )
        return found

    def dag_call(self, expr: ast.expr) -> ast.Call | None:
        if isinstance(expr, ast.Call):
            name = qualified(expr.func, self.names)
            if _is_airflow(name) and name.endswith(".DAG"):
                return expr
            if isinstance(expr.func, ast.Name) and expr.func.id in self.dag_functions:
                return expr
        return None

    def with_dag(self, stmt: ast.With) -> ast.Call | None:
        for item in stmt.items:
            call = self.dag_call(item.context_expr)
            if call is not None:
                self.declare_dag(call, "")
                return call
        return None

    def declare_dag(self, call: ast.Call, group: str) -> None:
        if isinstance(call.func, ast.Name) and call.func.id in self.dag_functions:
            func, kwargs = self.dag_functions[call.func.id]
            dag_id = kwargs.get("dag_id")
            name = dag_id.value if isinstance(dag_id, ast.Constant) else func.name
            self.dags.append((str(name), func.lineno, kwargs))
            for stmt in func.body:
                self.statement(stmt, group)
            return
        kwargs = self.keywords(call)
        first = call.args[0] if call.args else kwargs.get("dag_id")
        if not isinstance(first, ast.Constant) or not isinstance(first.value, str):
            raise self.error(call.lineno, "the DAG's id is not a string literal; write one")
        self.dags.append((first.value, call.lineno, kwargs))

    # -- inside a DAG ----------------------------------------------------------------------

    def statement(self, stmt: ast.stmt, group: str) -> None:
        if isinstance(stmt, ast.FunctionDef):
            self.define(stmt)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            self.record_import(stmt)
        elif isinstance(stmt, ast.With):
            self.with_group(stmt, group)
        elif isinstance(stmt, ast.Assign):
            if self.dag_call(stmt.value) is not None:
                call = self.dag_call(stmt.value)
                assert call is not None
                self.declare_dag(call, group)
                return
            found = self.expr(stmt.value, group)
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    if found is not None:
                        self.vars[target.id] = found
                    elif _literal(stmt.value):
                        self.constants[target.id] = stmt.value
        elif isinstance(stmt, ast.Expr):
            if self.dag_call(stmt.value) is not None:
                call = self.dag_call(stmt.value)
                assert call is not None
                self.declare_dag(call, group)
                return
            self.expr(stmt.value, group)
        elif isinstance(stmt, ast.For | ast.While | ast.If | ast.Try) and any(
            isinstance(node, ast.Call) for node in ast.walk(stmt)
        ):
            kind = type(stmt).__name__.lower()
            self.findings.append(
                Finding(stmt.lineno, f"tasks or dependencies made in a `{kind}` block", _DYNAMIC)
            )

    def with_group(self, stmt: ast.With, group: str) -> None:
        for item in stmt.items:
            expr = item.context_expr
            if isinstance(expr, ast.Call) and qualified(expr.func, self.names).endswith(
                "TaskGroup"
            ):
                kwargs = self.keywords(expr)
                first = expr.args[0] if expr.args else kwargs.get("group_id")
                if not isinstance(first, ast.Constant) or not isinstance(first.value, str):
                    raise self.error(expr.lineno, "a TaskGroup's id is not a string literal")
                name = f"{group}.{first.value}" if group else first.value
                self.groups.setdefault(name, [])
                if isinstance(item.optional_vars, ast.Name):
                    self.vars[item.optional_vars.id] = [f"group:{name}"]
                for inner in stmt.body:
                    self.statement(inner, name)
                return
        self.findings.append(
            Finding(stmt.lineno, "a `with` block that is neither a DAG nor a TaskGroup", _DYNAMIC)
        )

    def expr(self, expr: ast.expr, group: str) -> list[str] | None:
        """The tasks `expr` stands for (creating those it declares), or None."""
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.RShift | ast.LShift):
            left = self.refs(expr.left, group)
            right = self.refs(expr.right, group)
            ups, downs = (left, right) if isinstance(expr.op, ast.RShift) else (right, left)
            self.connect(ups, downs, expr.lineno)
            return right
        if isinstance(expr, ast.Name):
            return self.vars.get(expr.id)
        if isinstance(expr, ast.List | ast.Tuple):
            found = [self.expr(item, group) for item in expr.elts]
            if all(item is not None for item in found):
                return [task for item in found if item is not None for task in item]
            return None
        if isinstance(expr, ast.Call):
            return self.call(expr, group)
        return None

    def refs(self, expr: ast.expr, group: str) -> list[str]:
        """The tasks a dependency's operand stands for; an operand naming none is an error."""
        found = self.expr(expr, group)
        if found is None:
            text = ast.get_source_segment(self.source, expr) or ast.dump(expr)
            known = ", ".join(sorted(self.vars)) or "none"
            raise self.error(
                expr.lineno,
                f"the dependency on `{text}` names no task of the DAG (task variables: "
                f"{known}); declare the task before the dependency, or fix the name",
            )
        return found

    def connect(self, ups: list[str], downs: list[str], line: int) -> None:
        for up in ups:
            for down in downs:
                self.edges.append(Edge(up, down, line))

    def call(self, call: ast.Call, group: str) -> list[str] | None:
        func = call.func
        name = qualified(func, self.names)
        if isinstance(func, ast.Attribute) and func.attr in ("set_downstream", "set_upstream"):
            this = self.refs(func.value, group)
            other = [t for arg in call.args for t in self.refs(arg, group)]
            if func.attr == "set_downstream":
                self.connect(this, other, call.lineno)
            else:
                self.connect(other, this, call.lineno)
            return None
        if _is_airflow(name) and name.endswith((".chain", ".cross_downstream")):
            operands = [self.refs(arg, group) for arg in call.args]
            if name.endswith(".cross_downstream"):
                if len(operands) == 2:
                    self.connect(operands[0], operands[1], call.lineno)
                return None
            self.chain(operands, call)
            return None
        if isinstance(func, ast.Attribute) and func.attr in ("expand", "expand_kwargs"):
            return [self.dynamic(call, group)]
        if (
            isinstance(func, ast.Call)
            and isinstance(func.func, ast.Attribute)
            and func.func.attr == "override"
            and isinstance(func.func.value, ast.Name)
            and func.func.value.id in self.taskflow
        ):
            override = self.keywords(func)
            return self.taskflow_call(func.func.value.id, call, group, override)
        if isinstance(func, ast.Name) and func.id in self.taskflow:
            return self.taskflow_call(func.id, call, group, {})
        if isinstance(func, ast.Name) and func.id in self.task_groups:
            return [self.task_group_call(func.id, call, group)]
        kwargs = {kw.arg: kw.value for kw in call.keywords if kw.arg is not None}
        operator = name.rsplit(".", 1)[-1]
        if "task_id" in kwargs or (_is_airflow(name) and operator.endswith(("Operator", "Sensor"))):
            return [self.operator(call, name, group)]
        return None

    def chain(self, operands: list[list[str]], call: ast.Call) -> None:
        for ups, downs in itertools.pairwise(operands):
            if len(ups) > 1 and len(downs) > 1:
                if len(ups) != len(downs):
                    raise self.error(
                        call.lineno,
                        f"chain() joins lists of {len(ups)} and {len(downs)} tasks; "
                        "lists next to each other must be as long",
                    )
                for up, down in zip(ups, downs, strict=True):
                    self.edges.append(Edge(up, down, call.lineno))
            else:
                self.connect(ups, downs, call.lineno)

    def check_cycles(self) -> None:
        self.edges = resolve(self.edges, self.groups)
        cycle = find_cycle(self.edges, list(self.tasks))
        if cycle is not None:
            edge, loop = cycle
            raise self.error(
                edge.line,
                f"the dependency {edge.upstream} >> {edge.downstream} closes the cycle "
                f"{' >> '.join(loop)}; a DAG has no cycles: remove one of them",
            )


def _literal(expr: ast.expr) -> bool:
    """Whether `expr` is data (constants, containers, calls like `timedelta(...)`), no tasks."""
    return isinstance(expr, ast.Constant | ast.Dict | ast.List | ast.Tuple | ast.Set) or (
        isinstance(expr, ast.Call) and not any(kw.arg == "task_id" for kw in expr.keywords)
    )
