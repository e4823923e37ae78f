"""Statistics proofs: checks that whole-file column statistics show every row passes.

A proof gives Pandera's verdict or is not made, so a check proven here is skipped in every chunk
(`ChunkValidator.assume`) and an input whose checks are all proven is not read to be validated.
The statistics come from the files' format (`etlkit.storage.parquet.parquet_statistics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

import polars as pl

from etlkit.checks.builtin import translate
from etlkit.checks.plan import non_strict_cast

if TYPE_CHECKING:
    from etlkit.checks.plan import ColumnRule
    from etlkit.storage.parquet import ColumnStats


def proven_checks(
    rules: Iterable[ColumnRule], stats: Mapping[str, ColumnStats]
) -> frozenset[tuple[str, str]]:
    """Checks that column statistics alone prove every row passes: `(column, check)`.

    A proof gives Pandera's verdict or is not made. Null checks need a null count of zero;
    range checks (`ge`, `gt`, `le`, `lt`, `in_range`, `eq`) need Pandera's own expression to
    pass on the minimum and the maximum as polars holds them (exact decimals, nanoseconds),
    as stored and cast to the model's dtype when that cast keeps the order (numbers, dates
    to datetimes), and a null count of zero when the check sets `ignore_na=False`.
    Floating-point columns prove nothing, since Parquet statistics leave NaN out (and NaN
    counts as null); neither do dictionary-typed columns, whose order in polars is not the
    statistics' order. With a
    text column's dictionary values (`ColumnStats.values`), any built-in check (`isin`, `notin`,
    `str_matches`, ...) is proven when every value in the dictionaries passes it.
    """
    proven: set[tuple[str, str]] = set()
    for rule in rules:
        found = stats.get(rule.name)
        if found is None:
            continue
        if not rule.component.nullable and found.null_count == 0 and not found.floating:
            proven.add((rule.name, "not_nullable"))  # (a float's NaN counts as null)
        if found.values is not None and (rule.target is None or rule.target == pl.String):
            values = pl.DataFrame({rule.name: sorted(found.values)}, schema={rule.name: pl.String})
            for value_check in rule.checks:
                passes = values.select(value_check.passed.fill_null(True).all()).item()
                if passes and (value_check.ignore_na or found.null_count == 0):
                    proven.add((rule.name, value_check.name))
        extremes = _extremes_frames(rule, found)
        if not extremes:
            continue
        for check in rule.component.checks:
            translated = translate(check, rule.name) if check.name in _MONOTONE_CHECKS else None
            if translated is None or not (translated.ignore_na or found.null_count == 0):
                continue  # (with `ignore_na=False` a null fails the check)
            if all(_passes_on(frame, translated.passed) for frame in extremes):
                proven.add((rule.name, translated.name))
    return frozenset(proven)


#: Checks that every value between two values passes when both pass: proven by the extremes.
_MONOTONE_CHECKS: Final = frozenset(
    {
        "greater_than",
        "greater_than_or_equal_to",
        "less_than",
        "less_than_or_equal_to",
        "in_range",
        "equal_to",
    }
)


def _extremes_frames(rule: ColumnRule, found: ColumnStats) -> list[pl.DataFrame]:
    """A column's minimum and maximum as the checks may see them, in polars: as stored, and
    cast to the model's dtype when the source or the plan casts (a proof must hold for both).
    Checks proven on them are judged as Pandera judges every row: decimals as decimals, times
    to the nanosecond. Empty when they cannot stand for the column's values."""
    import pyarrow as pa

    if found.kind is None or found.floating or found.minimum is None or found.maximum is None:
        return []
    try:
        endpoints = pl.from_arrow(pa.array([found.minimum, found.maximum], type=found.kind))
    except (pa.ArrowException, pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):
        return []  # a type polars does not hold (decimals of over 38 digits)
    assert isinstance(endpoints, pl.Series)
    stored = endpoints.alias(rule.name).to_frame()
    observed, target = endpoints.dtype, rule.target
    if target is None or observed == target:
        return [stored]
    if not _keeps_order(observed, target):
        return []  # other casts may reorder values (text to numbers)
    cast = stored.select(non_strict_cast(pl.col(rule.name), observed, target))
    if cast.get_column(rule.name).null_count():
        return []  # an extreme does not cast: some rows fail the cast
    return [stored, cast]


def _keeps_order(observed: pl.DataType, target: pl.DataType) -> bool:
    """Whether a cast maps a smaller value to a smaller or equal one: between numbers, and from
    dates or datetimes to datetimes of the same time zone. The extremes then stay extremes."""
    if observed.is_numeric() and target.is_numeric():
        return True
    if not isinstance(target, pl.Datetime):
        return False
    if isinstance(observed, pl.Datetime):
        return observed.time_zone == target.time_zone
    return observed == pl.Date and target.time_zone is None


def _passes_on(frame: pl.DataFrame, passed: pl.Expr) -> bool:
    """Whether every row of `frame` passes (a null or an error is no pass)."""
    try:
        return bool(frame.select(passed.eq_missing(True).all()).item())
    except pl.exceptions.PolarsError:
        return False
