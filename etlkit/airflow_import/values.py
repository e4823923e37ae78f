"""Evaluating the literal part of a DAG file's arguments without running it: constants,
containers, `timedelta`, `datetime`, `pendulum.datetime(..., tz=...)`, `pendulum.duration`.
Anything else is `UNKNOWN` (a function call, a variable set at run time)."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from etlkit.airflow_import.declarations import qualified


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


@dataclass(frozen=True)
class Moment:
    """A date from the DAG file: a naive datetime and the IANA timezone it was given in."""

    when: datetime
    timezone: str | None = None

    def text(self) -> str:
        """`2025-01-01`, or the ISO datetime when it has a time of day."""
        if self.when.time() == datetime.min.time():
            return self.when.date().isoformat()
        return self.when.isoformat()


@dataclass(frozen=True)
class Zone:
    """A timezone object (`pendulum.timezone("Europe/Paris")`)."""

    name: str


_DATETIMES: Final = ("datetime.datetime", "pendulum.datetime", "pendulum.DateTime")
_DURATIONS: Final = ("datetime.timedelta", "pendulum.duration", "pendulum.Duration")
_ZONES: Final = ("pendulum.timezone", "pendulum.tz.timezone", "zoneinfo.ZoneInfo")


class Evaluator:
    """Evaluates expressions of one DAG file (its imports and module constants)."""

    def __init__(self, names: Mapping[str, str], constants: Mapping[str, ast.expr]) -> None:
        self.names = {key: value.lstrip(".") for key, value in names.items()}
        self.constants = constants

    def value(self, expr: ast.expr | None, depth: int = 0) -> Any:
        """The value of `expr` (None when there is none), or UNKNOWN."""
        if expr is None:
            return None
        if depth > 20:
            return UNKNOWN
        if isinstance(expr, ast.Constant):
            return expr.value
        if isinstance(expr, ast.Name):
            if expr.id in self.constants:
                return self.value(self.constants[expr.id], depth + 1)
            return UNKNOWN
        if isinstance(expr, ast.List | ast.Tuple | ast.Set):
            items = [self.value(item, depth + 1) for item in expr.elts]
            return UNKNOWN if any(i is UNKNOWN for i in items) else items
        if isinstance(expr, ast.Dict):
            result = {}
            for key, item in zip(expr.keys, expr.values, strict=True):
                k, v = self.value(key, depth + 1), self.value(item, depth + 1)
                if k is UNKNOWN or v is UNKNOWN:
                    return UNKNOWN
                result[k] = v
            return result
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
            inner = self.value(expr.operand, depth + 1)
            return -inner if isinstance(inner, int | float) else UNKNOWN
        if isinstance(expr, ast.Call):
            return self.call(expr, depth)
        return UNKNOWN

    def call(self, call: ast.Call, depth: int) -> Any:
        name = qualified(call.func, self.names)
        args = [self.value(arg, depth + 1) for arg in call.args]
        kwargs = {kw.arg: self.value(kw.value, depth + 1) for kw in call.keywords if kw.arg}
        if UNKNOWN in args or any(v is UNKNOWN for v in kwargs.values()):
            return UNKNOWN
        try:
            if name in _DURATIONS:
                return timedelta(*args, **kwargs)
            if name in _ZONES:
                return Zone(str(args[0] if args else kwargs.get("key", "")))
            if name in _DATETIMES:
                zone = kwargs.pop("tz", None) or kwargs.pop("tzinfo", None)
                if isinstance(zone, Zone):
                    zone = zone.name
                if zone is not None and not isinstance(zone, str):
                    return UNKNOWN
                return Moment(datetime(*args, **kwargs), zone)
        except (TypeError, ValueError):
            return UNKNOWN
        return UNKNOWN
