"""Mapping the operators that are not Python: `BashOperator` -> `Command`, `S3KeySensor`/
`FileSensor` -> `FileSensor`, `ExternalTaskSensor` -> `RunSensor`, `EmailOperator` ->
`SendEmail` through a notifier. Each returns the node's code and why it is so."""

from __future__ import annotations

import re
from typing import Any, Final, Protocol

from etlkit.airflow_import.mapper import Settings, email_notifier, seconds
from etlkit.airflow_import.model import Nodes, TaskSpec
from etlkit.airflow_import.values import UNKNOWN, Evaluator


class TaskMapper(Protocol):
    """What these mappings use of `tasks.TaskMapper` (which calls them)."""

    evaluate: Evaluator
    settings: Settings
    kinds: dict[str, str]
    out: Nodes
    upstream: dict[str, list[str]]

    def finding(self, task: TaskSpec, what: str, suggestion: str, line: int = 0) -> None: ...

    def after(self, task: TaskSpec, skip: tuple[str, ...] = ()) -> str: ...

    def todo(
        self, task: TaskSpec, what: str, suggestion: str, *, reported: bool = False
    ) -> tuple[str, str]: ...

    def template(self, task: TaskSpec, value: Any, *, shell: bool = False) -> Any: ...


_SENSOR_TIMEOUT: Final = 7 * 24 * 3600.0  # Airflow's default sensor timeout


def bash(m: TaskMapper, task: TaskSpec) -> tuple[str, str]:
    """`bash -c` with the command's templates translated; the environment as Airflow gave it."""
    m.kinds[task.task_id] = "task"
    command = m.evaluate.value(task.kwargs.get("bash_command"))
    if not isinstance(command, str):
        return m.todo(
            task,
            f"bash_command of '{task.task_id}' is not a string literal",
            "write the command as a string literal",
        )
    if command.strip().endswith((".sh", ".bash")):
        return m.todo(
            task,
            f"bash_command of '{task.task_id}' names a script template ({command.strip()})",
            "run the script with Command(['bash', 'path/to/script.sh']) once its templates "
            "are translated to {ds} and params",
        )
    script = m.template(task, command, shell=True)
    if script is UNKNOWN:
        return m.todo(
            task,
            f"bash_command of '{task.task_id}' uses templates etlkit lacks",
            "compute the value in the script, or pass it as a param",
            reported=True,
        )
    args = [repr(["bash", "-c", script])]
    why = "bash -c with its templates translated (values are shell-quoted)"
    env = m.evaluate.value(task.kwargs.get("env")) if "env" in task.kwargs else None
    if env is not None:
        env = m.template(task, env)
        if not isinstance(env, dict):
            return m.todo(
                task,
                f"env of '{task.task_id}' is not a dict literal",
                "write env as a dict literal",
            )
        args.append(f"env={env!r}")
    append = m.evaluate.value(task.kwargs.get("append_env"))
    if env is None or append is True:
        args.append("inherit_env=True")
        why += "; the whole environment, as Airflow passed it"
    cwd = m.evaluate.value(task.kwargs.get("cwd"))
    if isinstance(cwd, str):
        args.append(f"cwd={m.template(task, cwd)!r}")
    if m.after(task):
        args.append(m.after(task))
    m.out.command = True
    return f"Command({', '.join(args)})", why


def sensor(m: TaskMapper, task: TaskSpec) -> tuple[str, str]:
    """A FileSensor (local or s3://) or a RunSensor, with the sensor's timing."""
    m.kinds[task.task_id] = "sensor"
    value = m.evaluate.value
    kwargs = task.kwargs
    timing = []
    for key, default in (("poke_interval", 60.0), ("timeout", _SENSOR_TIMEOUT)):
        secs = seconds(value(kwargs[key])) if key in kwargs else default
        if secs is None:
            secs = default
            m.finding(
                task,
                f"{key} of '{task.task_id}' is not a literal",
                f"set it in the pipeline ({default:g} s, Airflow's default, for now)",
            )
        timing.append(f"{key}={secs!r}")
    if value(kwargs.get("soft_fail")) is True:
        timing.append("soft_fail=True")
    mode = value(kwargs.get("mode")) or "poke"
    why = f"mode {mode!r}, deferrable or not: etlkit sensors hold no process while waiting"
    if m.upstream[task.task_id]:
        why += "; it runs before every other node (etlkit sensors do)"
    if task.operator == "ExternalTaskSensor":
        return _run_sensor(m, task, timing, why)
    if task.operator == "S3KeySensor":
        key = value(kwargs.get("bucket_key"))
        bucket = value(kwargs.get("bucket_name"))
        if not isinstance(key, str) or (bucket is not None and not isinstance(bucket, str)):
            return m.todo(
                task,
                f"bucket_key of '{task.task_id}' is not one string",
                "use one FileSensor per key",
            )
        path = key if key.startswith("s3://") else f"s3://{bucket}/{key.lstrip('/')}"
        conn = value(kwargs.get("aws_conn_id"))
    else:
        path = value(kwargs.get("filepath"))
        conn = None
        if value(kwargs.get("fs_conn_id")) not in (None, "fs_default"):
            m.finding(
                task,
                f"fs_conn_id of FileSensor '{task.task_id}'",
                "make the path absolute: the connection's base path is not known",
            )
    translated = m.template(task, path)
    if not isinstance(translated, str):
        return m.todo(
            task,
            f"the path of '{task.task_id}' is not a literal",
            "write the path with {ds} and params",
        )
    args = [repr(translated)]
    if isinstance(conn, str) and conn != "aws_default":
        args.append(f"conn={conn!r}")
        why += f"; conn names the etlkit connection for Airflow's {conn}"
    m.out.sensors.add("FileSensor")
    return f"FileSensor({', '.join([*args, *timing])})", why


def _run_sensor(m: TaskMapper, task: TaskSpec, timing: list[str], why: str) -> tuple[str, str]:
    """ExternalTaskSensor -> RunSensor on the pipeline named like the other DAG."""
    value = m.evaluate.value
    kwargs = task.kwargs
    other = value(kwargs.get("external_dag_id"))
    if not isinstance(other, str):
        return m.todo(
            task,
            f"external_dag_id of '{task.task_id}' is not a literal",
            "name the other pipeline",
        )
    for key in ("execution_delta", "execution_date_fn"):
        if key in kwargs:
            m.finding(
                task,
                f"{key} of ExternalTaskSensor '{task.task_id}'",
                "RunSensor waits for the same logical date, or any with "
                "same_logical_date=False: check the dates match",
            )
    pipeline = re.sub(r"\W", "_", other).lower()
    m.out.sensors.add("RunSensor")
    if kwargs.get("external_task_id") is not None:
        why += "; it waits for the whole run, not one task"
    return f"RunSensor({pipeline!r}, {', '.join(timing)})", why


def email(m: TaskMapper, task: TaskSpec, name: str) -> tuple[str, str]:
    """A SendEmail through a stub email notifier to the operator's recipients."""
    m.kinds[task.task_id] = "task"
    to = m.evaluate.value(task.kwargs.get("to"))
    recipients = [to] if isinstance(to, str) else to
    if not isinstance(recipients, list) or not recipients:
        return m.todo(
            task,
            f"`to` of EmailOperator '{task.task_id}' is not a literal",
            "list the recipients",
        )
    notifier = f"email_{name}"
    m.settings.notifiers[notifier] = email_notifier(recipients)
    m.finding(
        task,
        f"EmailOperator '{task.task_id}' to {', '.join(map(str, recipients))}",
        f"set host and sender of [notifiers.{notifier}] in etlkit.toml; the message is the "
        "run's summary, not the operator's subject and html_content",
    )
    m.out.runtime.add("SendEmail")
    args = [repr(notifier)]
    if m.after(task):
        args.append(m.after(task))
    return f"SendEmail({', '.join(args)})", f"sent through notifier {notifier}"
