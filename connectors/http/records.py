"""From JSON pages to Arrow columns: dotted paths, nested objects flattened into `_`-joined
names, and values converted to the model's types."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import pyarrow as pa

from connectors.http.auth import mask
from etlkit.errors import ConnectorError

_CAST_ERRORS: Final = (pa.ArrowException, ValueError, TypeError, OverflowError)


def lookup(body: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted path (`data.items`; digits index lists) and whether it exists."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def missing_part(body: Any, path: str) -> str:
    """Where a dotted path stops resolving, and what is there instead, for messages."""
    value = body
    walked: list[str] = []
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            at = ".".join(walked) or "the top level"
            if isinstance(value, dict):
                keys = sorted(str(k) for k in value)
                close = [k for k in keys if k.startswith(part)][:1] or difflib.get_close_matches(
                    part, keys, n=1
                )
                hint = f" Did you mean '{'.'.join([*walked, close[0]])}'?" if close else ""
                return f"there is no key {part!r} at {at}; keys there are {keys[:20]}.{hint}"
            return f"{at} is {json_type(value)}, not an object."
        value = value[part]
        walked.append(part)
    return ""


def json_type(value: Any) -> str:
    """What a JSON value is, with its article: `an object`, `a list`, `null`, ..."""
    if value is None:
        return "null"
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "a number")


def column_prefixes(columns: Sequence[str]) -> frozenset[str]:
    """Every `a_`, `a_b_` a flattened column name could be built from (for `a_b_c`)."""
    found = set()
    for column in columns:
        parts = column.split("_")
        for end in range(1, len(parts)):
            found.add("_".join(parts[:end]) + "_")
    return frozenset(found)


def flatten(
    record: Mapping[str, Any], wanted: frozenset[str] | None, prefixes: frozenset[str] | None
) -> dict[str, Any]:
    """Nested objects as `_`-joined keys: `{"a": {"b": 1}}` gives `a_b` (and `a` itself).

    On a clash the shallower key wins (`a_b` beats `a.b`). With `wanted`, only those keys are
    kept and only objects that can lead to one are walked.
    """
    flat: dict[str, Any] = {}
    level: list[tuple[str, Mapping[str, Any]]] = [("", record)]
    while level:
        deeper: list[tuple[str, Mapping[str, Any]]] = []
        for prefix, obj in level:
            for key, value in obj.items():
                name = prefix + str(key)
                if wanted is None or name in wanted:
                    flat.setdefault(name, value)
                if isinstance(value, dict) and (prefixes is None or name + "_" in prefixes):
                    deeper.append((name + "_", value))
        level = deeper
    return flat


def _to_array(values: list[Any], target: pa.DataType) -> pa.Array:
    """`values` as an array of `target`: inferred by Arrow, then cast safely (no truncation).

    Strings parse as numbers, booleans, dates and timestamps. Numbers are refused for dates and
    timestamps (seconds or milliseconds since the epoch would be guesswork).
    """
    try:
        inferred = pa.array(values)
    except _CAST_ERRORS:
        if _nested(target):
            return pa.array(values, type=target)
        raise
    if pa.types.is_temporal(target) and (
        pa.types.is_integer(inferred.type) or pa.types.is_floating(inferred.type)
    ):
        raise TypeError(
            "a number is ambiguous for a date or timestamp column (seconds? milliseconds?); "
            "declare the column as int or float and convert it in a Transform"
        )
    try:
        return inferred.cast(target)
    except _CAST_ERRORS:
        if _nested(target):
            return pa.array(values, type=target)
        raise


def _nested(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_struct(dtype)
        or pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
        or pa.types.is_map(dtype)
    )


def convert_column(
    values: list[Any], field: pa.Field, where: Callable[[int], str], secrets: Sequence[str]
) -> pa.Array:
    """One column of a page, value by value only when the whole column fails to convert.

    Raises:
        ConnectorError: a value does not convert; names the record, the column and the value.
    """
    try:
        return _to_array(values, field.type)
    except _CAST_ERRORS:
        pass
    parts = []
    for index, value in enumerate(values):
        try:
            parts.append(_to_array([value], field.type))
        except _CAST_ERRORS as exc:
            hint = ""
            if "zone offset" in str(exc):
                hint = (
                    " The value carries a time zone: declare the column as "
                    "pl.Datetime(time_zone='UTC') to keep the instant."
                )
            raise ConnectorError(
                f"{where(index)}, column '{field.name}': cannot convert "
                f"{short(value, secrets)} to {field.type} ({mask(str(exc), secrets)}).{hint} "
                "Fix the model, or convert the value in a Transform reading it as a string."
            ) from exc
    return pa.concat_arrays(parts) if parts else pa.array([], type=field.type)


def short(value: Any, secrets: Iterable[str] = (), limit: int = 80) -> str:
    """A value from a response for a message: secrets masked, long ones cut."""
    text = mask(repr(value), secrets)
    return text if len(text) <= limit else text[:limit] + "..."
