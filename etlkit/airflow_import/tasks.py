"""Each Airflow task mapped to an etlkit node, written as code with a comment saying why.

`PythonOperator`/`@task` -> `PythonCall` (a `FunctionSource`, `FunctionTransform` or
`FunctionSink` when the function visibly takes or returns a polars DataFrame); `BashOperator`
-> `Command`; `S3KeySensor`/`FileSensor` -> `FileSensor`; `ExternalTaskSensor` -> `RunSensor`;
`EmailOperator` -> `SendEmail`; `EmptyOperator`/`DummyOperator` -> dependencies only; anything
else -> a `Todo` node that fails when run, and a finding.
"""

from __future__ import annotations

import ast
import heapq
import keyword
import re
from pathlib import Path
from typing import Any, Final

from etlkit.airflow_import.functions import find_definition, is_frame, scan_function
from etlkit.airflow_import.mapper import Settings, seconds
from etlkit.airflow_import.model import Dag, Finding, NodeCode, Nodes, TaskSpec
from etlkit.airflow_import.operators import bash, email, sensor
from etlkit.airflow_import.templates import translate
from etlkit.airflow_import.values import UNKNOWN, Evaluator

_EMPTY: Final = frozenset({"EmptyOperator", "DummyOperator"})
_PYTHON: Final = frozenset({"PythonOperator", "@task", "@task.python"})
_BRANCHING: Final = frozenset(
    {"BranchPythonOperator", "ShortCircuitOperator", "@task.branch", "@task.short_circuit"}
)
_PIPELINE_ONLY: Final = frozenset(
    {
        *("on_failure_callback", "on_retry_callback", "on_success_callback"),
        *("email", "email_on_failure", "email_on_retry"),
    }
)
_OPTION_KEYS: Final = ("retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay")
#: Names a node may not take: the Pipeline class's own members and settings.
RESERVED: Final = frozenset(
    {
        *("name", "params", "schedule", "start_date", "end_date", "timezone", "catchup"),
        *("max_active_runs", "on_failure", "on_retry", "on_success", "nodes", "graph", "run"),
        *("retry", "layered", "resolve_params", "settings_overrides", "chunk_rows"),
        *("chunk_bytes", "channel_depth", "max_workers", "retries", "retry_delay"),
        *("retry_exponential_backoff", "max_retry_delay", "timeout", "validate", "on_invalid"),
        "max_invalid_fraction",
    }
)


def node_name(task_id: str, taken: set[str]) -> str:
    """A Python identifier for a task id (`group.load-2` -> `group_load_2`), unique."""
    name = re.sub(r"\W", "_", task_id.replace(".", "_")).strip("_") or "task"
    if name[0].isdigit():
        name = f"task_{name}"
    if keyword.iskeyword(name) or name in RESERVED or name.startswith("_"):
        name = f"{name}_task"
    base, count = name, 1
    while name in taken:
        count += 1
        name = f"{base}_{count}"
    taken.add(name)
    return name


class TaskMapper:
    """Maps the tasks of one DAG; `findings` collects what it could not map."""

    def __init__(self, dag: Dag, evaluate: Evaluator, settings: Settings, dag_dir: Path) -> None:
        self.dag = dag
        self.evaluate = evaluate
        self.settings = settings
        self.dag_dir = dag_dir
        self.findings: list[Finding] = []
        self.out = Nodes()
        taken: set[str] = set()
        self.names = {task.task_id: node_name(task.task_id, taken) for task in dag.tasks}
        self.specs = {task.task_id: task for task in dag.tasks}
        self.upstream: dict[str, list[str]] = {t.task_id: [] for t in dag.tasks}
        self.kinds: dict[str, str] = {}

    def map(self) -> Nodes:
        removed = {t.task_id for t in self.dag.tasks if t.operator in _EMPTY}
        edges = [(e.upstream, e.downstream) for e in self.dag.edges]
        for empty in removed:  # a task before an empty one goes before every task after it
            ups = [u for u, d in edges if d == empty]
            downs = [d for u, d in edges if u == empty]
            edges = [(u, d) for u, d in edges if empty not in (u, d)]
            edges += [(u, d) for u in ups for d in downs]
        for up, down in dict.fromkeys(edges):
            self.upstream[down].append(up)
        for task in self.order():
            if task.task_id in removed:
                self.out.removed.append(f"{task.task_id} (line {task.line}, {task.operator})")
                continue
            self.out.nodes.append(self.node(task))
        return self.out

    def order(self) -> list[TaskSpec]:
        """The tasks, each after its upstream tasks, else in the file's order (no recursion:
        a chain of thousands of tasks is fine)."""
        position = {task.task_id: i for i, task in enumerate(self.dag.tasks)}
        waiting = {task_id: len(set(ups)) for task_id, ups in self.upstream.items()}
        downstream: dict[str, set[str]] = {}
        for task_id, ups in self.upstream.items():
            for up in set(ups):
                downstream.setdefault(up, set()).add(task_id)
        ready = [(position[t], t) for t, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        ordered: list[TaskSpec] = []
        while ready:
            _, task_id = heapq.heappop(ready)
            ordered.append(self.specs[task_id])
            for down in downstream.get(task_id, ()):
                waiting[down] -= 1
                if waiting[down] == 0:
                    heapq.heappush(ready, (position[down], down))
        return ordered

    def finding(self, task: TaskSpec, what: str, suggestion: str, line: int = 0) -> None:
        self.findings.append(Finding(line or task.line, what, suggestion))

    def after(self, task: TaskSpec, skip: tuple[str, ...] = ()) -> str:
        ups = [self.names[u] for u in self.upstream[task.task_id] if u not in skip]
        return f"after={ups!r}" if ups else ""

    def node(self, task: TaskSpec) -> NodeCode:
        name = self.names[task.task_id]
        where = f"line {task.line}: {task.operator} '{task.task_id}'"
        op = task.operator
        if op in _PYTHON:
            code, why = self.python(task)
        elif op in ("BashOperator",):
            code, why = bash(self, task)
        elif op in ("S3KeySensor", "FileSensor", "ExternalTaskSensor"):
            code, why = sensor(self, task)
        elif op == "EmailOperator":
            code, why = email(self, task, name)
        elif op in _BRANCHING:
            code, why = self.todo(
                task,
                f"branching operator {op} '{task.task_id}'",
                "etlkit runs every node: decide inside one node (return early), or split the "
                "branches into pipelines",
            )
        elif op == "dynamic task mapping":
            code, why = self.todo(
                task,
                f"dynamic task mapping (`.expand`) '{task.task_id}'",
                "loop over the values inside one node, or make each value a run (params)",
            )
        elif op.startswith("@task"):
            code, why = self.todo(
                task,
                f"TaskFlow {op} '{task.task_id}'",
                "etlkit maps @task and @task.python: write the body as a Python function "
                "(a Command for @task.bash)",
            )
        else:
            label = f"{task.module}.{op}" if task.module else op
            deferrable = self.evaluate.value(task.kwargs.get("deferrable")) is True
            code, why = self.todo(
                task,
                f"{'deferrable' if deferrable else 'custom'} operator {label} '{task.task_id}'",
                "write a Task subclass whose run(ctx) does what its execute() did, or use an "
                "etlkit connector (Sql, PostgresSink, ...)",
            )
        if self.kinds.get(task.task_id) in (None, "task"):
            code += self.options(task)
        self.task_settings(task)
        return NodeCode(name, code, f"{where}: {why}")

    def task_settings(self, task: TaskSpec) -> None:
        """Findings for a task's settings etlkit has per pipeline only, or not at all."""
        for key in sorted(task.kwargs):
            value = self.evaluate.value(task.kwargs[key])
            if key in _PIPELINE_ONLY:
                self.finding(
                    task,
                    f"{key} of task '{task.task_id}'",
                    "etlkit notifies per pipeline: set on_failure/on_retry/on_success on the "
                    "class (notifiers), or catch the error in the node",
                    getattr(task.kwargs[key], "lineno", task.line),
                )
            elif key == "trigger_rule" and value not in ("all_success", None):
                self.finding(
                    task,
                    f"trigger_rule={ast.unparse(task.kwargs[key])} of task '{task.task_id}'",
                    "etlkit runs a node once all its inputs succeeded: move the clean-up to "
                    "on_failure, or split the pipeline",
                    getattr(task.kwargs[key], "lineno", task.line),
                )
            elif key in ("depends_on_past", "wait_for_downstream") and value is True:
                self.finding(
                    task,
                    f"{key}=True of task '{task.task_id}'",
                    "etlkit has no equivalent: add a RunSensor on this pipeline if needed",
                    getattr(task.kwargs[key], "lineno", task.line),
                )

    def options(self, task: TaskSpec) -> str:
        values: dict[str, Any] = dict(self.settings.node_options)
        for key in _OPTION_KEYS:
            value = self.evaluate.value(task.kwargs.get(key)) if key in task.kwargs else None
            if key in ("retry_delay", "max_retry_delay"):
                value = seconds(value)
            if value is not None and value is not UNKNOWN:
                values[key] = value
        timeout = seconds(self.evaluate.value(task.kwargs.get("execution_timeout")))
        if timeout is not None:
            values["timeout"] = timeout
        pool = self.evaluate.value(task.kwargs.get("pool"))
        if isinstance(pool, str):
            values["pool"] = pool
        if values.get("pool") == "default_pool":  # Airflow's pool of every task: no pool
            del values["pool"]
        if not values or self.kinds.get(task.task_id) == "sensor":
            return ""
        if "pool" in values:
            self.out.pools.setdefault(values["pool"], task.line)
        return ".options(" + ", ".join(f"{k}={v!r}" for k, v in sorted(values.items())) + ")"

    def todo(
        self, task: TaskSpec, what: str, suggestion: str, *, reported: bool = False
    ) -> tuple[str, str]:
        """A Todo node; its finding unless `reported` (a finding says it already)."""
        if not reported:
            self.finding(task, what, suggestion)
        self.out.runtime.add("Todo")
        self.kinds[task.task_id] = "todo"
        args = [repr(what), f"line={task.line}", f"suggestion={suggestion!r}"]
        if self.after(task):
            args.append(self.after(task))
        return f"Todo({', '.join(args)})", "TODO, not mapped (see the report)"

    def template(self, task: TaskSpec, value: Any, *, shell: bool = False) -> Any:
        """A value with its templates translated; UNKNOWN if a template cannot be."""
        if isinstance(value, str):
            translation = translate(value, shell=shell)
            for name in translation.params:
                self.out.params.setdefault(name, self.settings.params.get(name, ""))
            for variable in translation.variables:
                self.finding(
                    task,
                    f"Airflow Variable '{variable}' in a template of '{task.task_id}'",
                    f"it is now the param '{variable}': give it a default in `params` or pass "
                    f"--param {variable}=...",
                )
            if translation.untranslated:
                pulls = any("xcom" in t for t in translation.untranslated)
                self.finding(
                    task,
                    f"template {', '.join(translation.untranslated)} in '{task.task_id}'",
                    "make this a node output (XCom pulls)"
                    if pulls
                    else "compute the value in Python (ctx.logical_date) or pass it as a param",
                )
                return UNKNOWN
            return translation.text
        if isinstance(value, list):
            items = [self.template(task, item, shell=shell) for item in value]
            return UNKNOWN if any(i is UNKNOWN for i in items) else items
        if isinstance(value, dict):
            mapped = {k: self.template(task, v, shell=shell) for k, v in value.items()}
            return UNKNOWN if any(v is UNKNOWN for v in mapped.values()) else mapped
        return value

    # -- Python ------------------------------------------------------------------------------

    def python(self, task: TaskSpec) -> tuple[str, str]:
        if task.function is not None:
            function: str | None = task.function
            why = f"the @task function {task.function}"
        else:
            given = task.kwargs.get("python_callable")
            function = given.id if isinstance(given, ast.Name) else None
            why = f"python_callable={function}"
        if function is None or (
            function not in self.dag.functions and function not in self.dag.imports
        ):
            return self.todo(
                task,
                f"python_callable of '{task.task_id}' is not a function of the DAG file or "
                "one it imports",
                "name a module-level function (no lambda, no method)",
            )
        self.out.functions.add(function)
        definition = find_definition(self.dag, self.dag_dir, function)
        if definition is not None:
            own = function in self.dag.functions  # else the line is in another module's file
            for what, suggestion in scan_function(definition):
                line = definition.lineno if own else task.line
                self.finding(task, f"{what} (for '{task.task_id}')", suggestion, line)
        frames = self.frame_kind(task, definition)
        if frames is not None:
            return frames
        return self.python_call(task, function, why)

    def frame_kind(
        self, task: TaskSpec, definition: ast.FunctionDef | None
    ) -> tuple[str, str] | None:
        """A Source, Transform or Sink when the function visibly speaks DataFrames."""
        if definition is None:
            return None
        returns = is_frame(definition.returns, self.dag.names)
        params = definition.args.args
        first_frame = bool(params) and is_frame(params[0].annotation, self.dag.names)
        ups = [u for u in self.upstream[task.task_id] if self.kinds.get(u) != "sensor"]
        function = self.callable_name(definition.name)
        if returns and not params and not ups:
            self.out.runtime.add("FunctionSource")
            self.kinds[task.task_id] = "frame"
            return f"FunctionSource({function})", f"{definition.name} returns a DataFrame: a source"
        producer = task.inputs.get("0")
        if (
            first_frame
            and producer is not None
            and self.kinds.get(producer) == "frame"
            and ups == [producer]
            and len(task.inputs) == 1
        ):
            upstream = repr(self.names[producer])
            if returns:
                self.out.runtime.add("FunctionTransform")
                self.kinds[task.task_id] = "frame"
                return (
                    f"FunctionTransform({function}, {upstream})",
                    f"{definition.name} maps a DataFrame to a DataFrame: a transform, called "
                    "per chunk (make it a Lazy node if it aggregates)",
                )
            self.out.runtime.add("FunctionSink")
            self.kinds[task.task_id] = "sink"
            return (
                f"FunctionSink({function}, {upstream})",
                f"{definition.name} takes a DataFrame: a sink given the whole input",
            )
        return None

    def callable_name(self, function: str) -> str:
        """The function's name, or its alias when a node has that name (a class attribute
        defined before would be found instead of the function)."""
        return f"{function}_callable" if function in self.names.values() else function

    def python_call(self, task: TaskSpec, function: str, why: str) -> tuple[str, str]:
        self.out.runtime.add("PythonCall")
        self.kinds[task.task_id] = "task"
        args: list[str] = [self.callable_name(function)]
        values: Any = []
        keywords: Any = {}
        if task.function is not None:
            values = [
                self.evaluate.value(a)
                for i, a in enumerate(task.call_args)
                if str(i) not in task.inputs
            ]
            keywords = {
                k: self.evaluate.value(v)
                for k, v in task.call_kwargs.items()
                if k not in task.inputs
            }
        else:
            values = (
                self.evaluate.value(task.kwargs.get("op_args")) if "op_args" in task.kwargs else []
            )
            keywords = (
                self.evaluate.value(task.kwargs.get("op_kwargs"))
                if "op_kwargs" in task.kwargs
                else {}
            )
            templates = task.kwargs.get("templates_dict")
            if templates is not None and keywords is not UNKNOWN:
                keywords = {**keywords, "templates_dict": self.evaluate.value(templates)}
        values = self.template(task, values)
        keywords = self.template(task, keywords)
        if values is UNKNOWN or keywords is UNKNOWN:
            return self.todo(
                task,
                f"arguments of '{task.task_id}' are not literals or use templates etlkit lacks",
                "write the arguments as literals ({ds}, params), or compute them in the function",
            )
        if values:
            args.append(f"args={values!r}")
        if keywords:
            args.append(f"kwargs={keywords!r}")
        inputs = {k: self.names[v] for k, v in task.inputs.items()}
        if inputs:
            args.append(f"reads={inputs!r}")
            why += ", reading the return values of " + ", ".join(sorted(inputs.values()))
        legacy = task.module.endswith("python_operator")
        provide = self.evaluate.value(task.kwargs.get("provide_context"))
        if legacy and provide is not True:
            args.append("context=False")
            why += " (Airflow 1.10 without provide_context: no context)"
        if any(task.task_id in t.inputs.values() for t in self.dag.tasks):
            args.append("returns=True")
            why += "; its return value is kept as JSON for the nodes reading it"
        if self.after(task):
            args.append(self.after(task))
        return f"PythonCall({', '.join(args)})", why
