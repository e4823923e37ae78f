"""Pandera's built-in checks as polars expressions, as its polars backend evaluates them.

`translate` turns one `Check` of a column into a `ValueCheck` (an expression true where a row
passes) when it is one of Pandera's built-in checks, unchanged, with arguments Pandera accepts;
anything else (custom, element-wise, `groupby`, `raise_warning`) is left to Pandera itself.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any, Final

import polars as pl

if TYPE_CHECKING:
    from pandera.api.checks import Check
    from pandera.api.function_dispatch import Dispatcher


@dataclass(frozen=True)
class ValueCheck:
    """A built-in check of one column, compiled: `passed` under the name Pandera reports."""

    name: str
    passed: pl.Expr  # True where the row passes, null where the value is null
    ignore_na: bool
    limit: int | None
    not_text: pl.Expr | None = None  # `passed` on a column that is not text, if it differs


def _in_range(
    col: pl.Expr,
    *,
    min_value: Any,
    max_value: Any,
    include_min: bool = True,
    include_max: bool = True,
) -> pl.Expr:
    low = col.ge(min_value) if include_min else col.gt(min_value)
    return low.and_(col.le(max_value) if include_max else col.lt(max_value))


#: Up to this many allowed strings, `isin` compares with each: cheaper than hashing.
_COMPARED_VALUES: Final = 8


def _is_in(col: pl.Expr, values: Collection[Any]) -> pl.Expr:
    """`col` is one of `values` (null where `col` is null, like `is_in`). Comparing with each
    string is only right on a text column: elsewhere `is_in` raises where Pandera's does."""
    values = list(values)
    if 0 < len(values) <= _COMPARED_VALUES and all(type(v) is str for v in values):
        return reduce(operator.or_, [col.eq(v) for v in values])
    return col.is_in(values)


#: `isin`/`notin` as Pandera evaluates them on a column that is not text.
_NOT_TEXT: Final[dict[str, Callable[..., pl.Expr]]] = {
    "isin": lambda col, *, allowed_values: col.is_in(list(allowed_values)),
    "notin": lambda col, *, forbidden_values: col.is_in(list(forbidden_values)).not_(),
}


def _pattern(pattern: str | re.Pattern[str]) -> str:
    return pattern.pattern if isinstance(pattern, re.Pattern) else pattern


def _str_length(
    col: pl.Expr,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
    exact_value: int | None = None,
) -> pl.Expr:
    n_chars = col.str.len_chars()
    if exact_value is not None:
        return n_chars.eq(exact_value)
    if min_value is None and max_value is None:
        raise ValueError("str_length needs a bound")  # left to Pandera, which reports it
    if min_value is None:
        return n_chars.le(max_value)
    return n_chars.ge(min_value) if max_value is None else n_chars.is_between(min_value, max_value)


_BUILTINS: Final[dict[str, Callable[..., pl.Expr]]] = {
    "equal_to": lambda col, *, value: col.eq(value),
    "not_equal_to": lambda col, *, value: col.ne(value),
    "greater_than": lambda col, *, min_value: col.gt(min_value),
    "greater_than_or_equal_to": lambda col, *, min_value: col.ge(min_value),
    "less_than": lambda col, *, max_value: col.lt(max_value),
    "less_than_or_equal_to": lambda col, *, max_value: col.le(max_value),
    "in_range": _in_range,
    "isin": lambda col, *, allowed_values: _is_in(col, allowed_values),
    "notin": lambda col, *, forbidden_values: _is_in(col, forbidden_values).not_(),
    "str_matches": lambda col, *, pattern: col.str.contains(
        _pattern(pattern) if _pattern(pattern).startswith("^") else f"^{_pattern(pattern)}"
    ),
    "str_contains": lambda col, *, pattern: col.str.contains(_pattern(pattern), literal=False),
    "str_startswith": lambda col, *, string: col.str.starts_with(string),
    "str_endswith": lambda col, *, string: col.str.ends_with(string),
    "str_length": _str_length,
}


def check_name(check: Check) -> str:
    """The name Pandera's failure cases give a check."""
    if check.error is not None:
        return str(check.error)
    return str(check.name) if check.name is not None else str(check)


def translate(check: Check, column: str) -> ValueCheck | None:
    """A built-in check as a polars expression, or None when it must run in Pandera."""
    from pandera.api.checks import Check
    from pandera.api.function_dispatch import Dispatcher

    fn = check._check_fn
    name = getattr(fn, "__name__", None)
    if (
        name not in _BUILTINS
        or check.element_wise
        or check.groupby is not None
        or check.raise_warning
        or not isinstance(fn, Dispatcher)
        or not Check.is_builtin_check(name)
        or not _same_code(fn, Check.get_builtin_check_fn(name))
    ):
        return None
    try:
        passed = _BUILTINS[name](pl.col(column), **check._check_kwargs)
        other = (
            _NOT_TEXT[name](pl.col(column), **check._check_kwargs) if name in _NOT_TEXT else None
        )
    except (TypeError, ValueError):  # arguments Pandera rejects when it validates: let it
        return None
    return ValueCheck(
        check_name(check), passed, bool(check.ignore_na), check.n_failure_cases, other
    )


def _same_code(copied: Dispatcher, current: Dispatcher) -> bool:
    """Whether a schema's copy of a built-in check's dispatcher runs the code registered under
    that name now, for each data type it knows. Another backend's implementations may have
    been registered since the copy was made (the first `validate` of a kind registers them):
    a comparison of all the code at once would then send built-in checks to Pandera."""
    copied_fns = copied._function_registry
    current_fns = current._function_registry
    return bool(copied_fns) and all(
        kind in current_fns and current_fns[kind].__code__.co_code == fn.__code__.co_code
        for kind, fn in copied_fns.items()
    )
