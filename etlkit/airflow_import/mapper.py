"""The DAG's settings mapped to a pipeline's class attributes, notifiers and findings.

Each mapped value comes with a short comment saying what it was in the DAG file (the line) and
why it became what it is; what has no equivalent becomes a `Finding` for the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from etlkit.airflow_import.model import Dag, Finding
from etlkit.airflow_import.values import UNKNOWN, Evaluator, Moment, Zone

#: Airflow presets etlkit does not know, as cron expressions.
_PRESETS: Final = {"@quarterly": "0 0 1 */3 *"}
_ETLKIT_PRESETS: Final = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


@dataclass(frozen=True)
class Attribute:
    """One class attribute of the pipeline: its name, its value as code, and why."""

    name: str
    code: str
    comment: str


@dataclass
class Settings:
    """What the DAG's settings map to."""

    attributes: list[Attribute] = field(default_factory=list)
    notifiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    callbacks: dict[str, list[str]] = field(default_factory=dict)  # event -> code of entries
    callables: set[str] = field(default_factory=set)  # functions the callbacks call
    node_options: dict[str, Any] = field(default_factory=dict)  # every node's, from default_args
    params: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    uses_timedelta: bool = False
    uses_callback: bool = False


def seconds(value: Any) -> float | None:
    """A duration in seconds from a timedelta or a number; None if it is neither."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def airflow3(dag: Dag) -> bool:
    """Whether the file is written for Airflow 3 (it imports `airflow.sdk`)."""
    return any(target.startswith("airflow.sdk") for target in dag.names.values())


class _Lookup:
    """A DAG setting, given to `DAG(...)` or else in `default_args`: its value and line."""

    def __init__(self, dag: Dag, evaluate: Evaluator) -> None:
        self.dag = dag
        self.evaluate = evaluate
        self.given = dict(dag.settings)
        self.defaults = dict(dag.default_args)

    def line(self, key: str) -> int:
        expr = self.given.get(key) or self.defaults.get(key)
        return int(getattr(expr, "lineno", self.dag.line))

    def value(self, key: str) -> Any:
        return self.evaluate.value(self.given.get(key, self.defaults.get(key)))


def map_settings(dag: Dag, evaluate: Evaluator) -> Settings:
    """The pipeline attributes, notifiers and per-node defaults of the DAG's settings."""
    out = Settings()
    look = _Lookup(dag, evaluate)
    _schedule(dag, look.given, evaluate, out, look.line)
    _dates(look, out)
    _run_settings(look, out)
    _params(dag, look.given, evaluate, out)
    _notifications(dag, look.given, look.defaults, evaluate, out, look.line)
    if look.value("depends_on_past") is True:
        out.findings.append(
            Finding(
                look.line("depends_on_past"),
                "depends_on_past=True",
                "etlkit has no equivalent: check the previous run with a RunSensor on this "
                "pipeline if needed",
            )
        )
    return out


def _dates(look: _Lookup, out: Settings) -> None:
    zone = None
    for key in ("start_date", "end_date"):
        value = look.value(key)
        if value is None:
            continue
        if isinstance(value, Moment):
            where = f"{key} (line {look.line(key)})"
            out.attributes.append(Attribute(key, repr(value.text()), where))
            zone = zone or value.timezone
        else:
            out.findings.append(
                Finding(
                    look.line(key),
                    f"{key} is computed when the DAG is parsed (`days_ago` and the like)",
                    f'set {key} to a fixed date (`{key} = "2025-01-01"`)',
                )
            )
    if zone:
        out.attributes.append(Attribute("timezone", repr(zone), "the start date's timezone"))


def _run_settings(look: _Lookup, out: Settings) -> None:
    catchup = look.value("catchup")
    if catchup is None and not airflow3(look.dag):
        out.attributes.append(
            Attribute("catchup", "True", "catchup was not given: Airflow 1.10/2.x default True")
        )
    elif isinstance(catchup, bool):
        where = f"catchup (line {look.line('catchup')})"
        out.attributes.append(Attribute("catchup", repr(catchup), where))
    for key in ("max_active_runs", "retries"):
        value = look.value(key)
        if isinstance(value, int) and not isinstance(value, bool):
            out.attributes.append(Attribute(key, repr(value), f"{key} (line {look.line(key)})"))
    for key in ("retry_delay", "max_retry_delay"):
        secs = seconds(look.value(key))
        if secs is not None:
            where = f"{key}, in seconds (line {look.line(key)})"
            out.attributes.append(Attribute(key, repr(secs), where))
    backoff = look.value("retry_exponential_backoff")
    if isinstance(backoff, bool):
        where = f"line {look.line('retry_exponential_backoff')}"
        out.attributes.append(Attribute("retry_exponential_backoff", repr(backoff), where))
    run_timeout = seconds(look.value("dagrun_timeout"))
    if run_timeout is not None:
        why = "dagrun_timeout: bounds the whole run, in seconds"
        out.attributes.append(Attribute("timeout", repr(run_timeout), why))
    timeout = seconds(look.value("execution_timeout"))
    if timeout is not None:
        out.node_options["timeout"] = timeout
    pool = look.value("pool")
    if isinstance(pool, str):
        out.node_options["pool"] = pool


def _schedule(
    dag: Dag, given: dict[str, Any], evaluate: Evaluator, out: Settings, line: Any
) -> None:
    key = next((k for k in ("schedule", "schedule_interval", "timetable") if k in given), None)
    if key is None:
        if airflow3(dag):
            out.attributes.append(Attribute("schedule", "None", "no schedule: Airflow 3 default"))
        else:
            out.attributes.append(
                Attribute("schedule", repr("@daily"), "no schedule: Airflow 1.10/2.x default daily")
            )
        return
    value = evaluate.value(given[key])
    where = f"{key} (line {line(key)})"
    if value is None:
        out.attributes.append(Attribute("schedule", "None", f"{where}: manual runs only"))
    elif isinstance(value, timedelta):
        out.uses_timedelta = True
        out.attributes.append(
            Attribute("schedule", f"timedelta(seconds={value.total_seconds():g})", where)
        )
    elif value == "@once":
        out.attributes.append(
            Attribute("schedule", "None", f"{where} '@once': run it with `etlkit trigger`")
        )
    elif isinstance(value, str) and (
        value in _ETLKIT_PRESETS or len(value.split()) == 5 or value in _PRESETS
    ):
        out.attributes.append(Attribute("schedule", repr(_PRESETS.get(value, value)), where))
    else:
        out.attributes.append(Attribute("schedule", "None", f"TODO: {where} is not mapped"))
        out.findings.append(
            Finding(
                line(key),
                f"{key} is {_source(given[key])} (a timetable, dataset or `@continuous`)",
                "set `schedule` to a cron expression, a preset or a timedelta, or trigger runs",
            )
        )


def _params(dag: Dag, given: dict[str, Any], evaluate: Evaluator, out: Settings) -> None:
    if "params" not in given:
        return
    expr = given["params"]
    value = evaluate.value(expr)
    if isinstance(value, dict):
        out.params.update({str(k): _text(v) for k, v in value.items()})
        return
    if hasattr(expr, "keys"):
        for key, item in zip(expr.keys, expr.values, strict=True):
            k = evaluate.value(key)
            default = evaluate.value(item.args[0]) if getattr(item, "args", None) else UNKNOWN
            if isinstance(k, str) and default is not UNKNOWN:
                out.params[k] = _text(default)  # Param(default, type=...): its default
                continue
            out.findings.append(
                Finding(item.lineno, f"param {_source(key)} has no literal default", "give it one")
            )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _notifications(
    dag: Dag,
    given: dict[str, Any],
    defaults: dict[str, Any],
    evaluate: Evaluator,
    out: Settings,
    line: Any,
) -> None:
    def setting(key: str) -> Any:
        if key in given:
            return given[key]
        return defaults.get(key)

    emails = evaluate.value(setting("email"))
    if isinstance(emails, str):
        emails = [emails]
    for event, flag in (("failure", "email_on_failure"), ("retry", "email_on_retry")):
        enabled = evaluate.value(setting(flag))
        if enabled is None and event == "failure":
            enabled = True  # Airflow's default when an address is given
        if enabled is True and isinstance(emails, list) and emails:
            out.notifiers["email"] = email_notifier(emails)
            out.callbacks.setdefault(event, []).append(repr("email"))
            out.findings.append(
                Finding(
                    line(flag) if setting(flag) is not None else line("email"),
                    f"{flag} to {', '.join(map(str, emails))}",
                    "set host and sender of [notifiers.email] in etlkit.toml (Airflow's SMTP "
                    "settings were in airflow.cfg)",
                )
            )
    for event in ("failure", "retry", "success"):
        key = f"on_{event}_callback"
        expr = setting(key)
        if expr is None:
            continue
        items = expr.elts if hasattr(expr, "elts") else [expr]
        for item in items:
            name = getattr(item, "id", None)
            if name is not None and (name in dag.functions or name in dag.imports):
                out.uses_callback = True
                out.callables.add(name)
                out.callbacks.setdefault(event, []).append(f"airflow_callback({name})")
                continue
            stub = _stub_name(_source(item))
            out.notifiers[stub] = {"kind": "webhook", "url": "http://127.0.0.1:9/replace-me"}
            out.callbacks.setdefault(event, []).append(repr(stub))
            out.findings.append(
                Finding(
                    item.lineno,
                    f"{key} `{_source(item)}` cannot be called by etlkit",
                    f"configure [notifiers.{stub}] in etlkit.toml (a stub webhook was added)",
                )
            )


def email_notifier(recipients: list[Any]) -> dict[str, Any]:
    """A stub `kind = "email"` notifier to the recipients; its host and sender need setting."""
    return {
        "kind": "email",
        "host": "localhost",
        "port": 25,
        "sender": "etlkit@localhost",
        "recipients": [str(r) for r in recipients],
    }


def _stub_name(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text.split("(")[0])
    return "_".join(w.lower() for w in words[-2:]) or "callback"


def _source(expr: Any) -> str:
    import ast

    return ast.unparse(expr) if isinstance(expr, ast.AST) else repr(expr)


__all__ = ["UNKNOWN", "Attribute", "Settings", "Zone", "airflow3", "map_settings", "seconds"]
