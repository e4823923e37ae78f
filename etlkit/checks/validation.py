"""Per-chunk validation of polars DataFrames against a Pandera polars `DataFrameModel`.

Every chunk leaving every node is validated, so a chunk must cost about what its rows would cost
in one whole-frame validation. `Model.validate(df, lazy=True)` has a fixed cost per call, whatever
the chunk; `ChunkValidator` reads `model.to_schema()` once, turns the columns and built-in checks
into polars expressions, plans each distinct input schema once (missing and extra columns,
casts, dtypes), and then checks a chunk in one `select` of boolean masks, one per check. Only
the failing rows of failing checks are turned into the report. Shortcuts that change no
verdict: a unique column whose values increase within the chunk is not hashed; a pattern check
(`str_matches`, `str_contains`) over a column of few distinct values runs on those values, and
row by row only when one fails; checks proven for whole files by Parquet statistics are skipped
(`assume`), and a batch left with nothing to check is not converted to polars at all.

Translated, under the `check` names Pandera's `failure_cases` uses:

- a missing column: `column_in_dataframe`; with `strict=True`, an extra one: `column_in_schema`
  (`strict="filter"` drops extra columns); a wrong dtype: `dtype('Int64')`, as judged by
  Pandera's own dtype objects;
- `nullable=False`: `not_nullable` (NaN counts as null in float columns); `unique=True`:
  `field_uniqueness` (within the chunk, every duplicated row, nulls too); `Config.unique`:
  `multiple_fields_uniqueness` (the first failing set of columns);
- the `Field` checks `equal_to`, `not_equal_to`, `greater_than`, `greater_than_or_equal_to`,
  `less_than`, `less_than_or_equal_to`, `in_range`, `isin`, `notin`, `str_contains`,
  `str_matches`, `str_startswith`, `str_endswith`, `str_length`, named as Pandera names them
  (`greater_than_or_equal_to(0)`, `isin(['A', 'N'])`, `str_length(2, 4)`) and evaluated with
  Pandera's own expressions. So nulls pass value checks whatever `nullable` says (unless a check
  sets `ignore_na=False`), and NaN passes `ge`, fails `le`. A check that cannot run on the
  column's dtype is reported as Pandera does: that check, a null index, the error as the case.
- `coerce=True` and `Config.coerce`: a non-strict cast. A non-null value that does not cast is
  reported as `coerce_dtype('Int64')` on its column and row, and becomes null in `data` without
  failing any other check of that column.

Deviations from Pandera, on purpose. Pandera names a failed cast after the schema, with every
dtype of the schema in the check's name, stops at the first failing column, also counts that
column's nulls as failed casts, and then checks the uncast frame (reporting every coerced column
as a wrong dtype); etlkit reports each failed value on its own column, under the name Pandera's
column backend uses, and checks the cast chunk. Where polars raises on a cast instead of giving
null (a float rounding past a decimal's precision, a Categorical to a number), Pandera fails
every row of the column; etlkit fails the values whose own cast raises, so a row's verdict does
not depend on which values share its chunk. Under `strict=True` every extra column is
reported, not just the first. `column` names the missing or extra column where Pandera repeats
the schema's name, and is null for checks of the whole frame. A failing duration is shown in
polars' notation (`1d 3µs`; Pandera's own report fails on it), and a date or datetime past the
years polars can show as its count of units since 1970 (`4611686018427387904ms`). With several
`Config.unique` sets, Pandera fails the rows of the first set that repeats only; a chunk does
too, but across chunks (`flag_repeats`, `dataset_problems`) every set that repeats is reported.

Falls back to Pandera itself:

- checks polars expressions are not compiled for (`@pdp.check`, `@pdp.dataframe_check`,
  `pdp.Check(fn)`, element-wise, `raise_warning` or `groupby` checks, `unique_values_eq`): all of
  them run in one small `DataFrameSchema` holding only those checks (no dtypes, nullable) on the
  whole cast chunk (a column's check may read other columns), and their failures join the
  report: a few ms per chunk, for such models only;
- models with regex columns, `Config.ordered`, `add_missing_columns`, column defaults, a frame
  `dtype`, or coercion to nested or model dtypes: `Model.validate(df, lazy=True)` on the chunk
  (`data` is then the chunk as given whenever it fails).

Pandera (slow to import) is imported when a `ChunkValidator` is built, not with this module.
"""

from __future__ import annotations

import copy
import operator
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, reduce
from typing import TYPE_CHECKING, Any, Final, cast

import polars as pl

from etlkit.errors import DataValidationError, quoted
from etlkit.storage.formats import FileFormat
from etlkit.storage.parquet import PARQUET, ColumnStats

if TYPE_CHECKING:
    import pandera.polars as pdp
    import pyarrow as pa
    from pandera.api.checks import Check
    from pandera.api.function_dispatch import Dispatcher
    from pandera.api.polars.components import Column
    from pandera.api.polars.container import DataFrameSchema

FAILURE_SCHEMA: Final = pl.Schema(
    {"column": pl.String, "check": pl.String, "failure_case": pl.String, "index": pl.Int64}
)
_RAW: Final = "__etlkit_raw__"  # prefix of a cast column's values before the cast
_MAX_PLANS: Final = 16
_NAMED_BY_CASE: Final = ["column_in_dataframe", "column_in_schema", "column_ordered"]

Limits = dict[tuple[str | None, str], int]


@dataclass(frozen=True)
class ChunkReport:
    """The outcome of validating one chunk.

    Attributes:
        data: the chunk after coercion; the very object passed in when nothing was cast.
        invalid: rows failing any row-level check, or None when every row passed.
        failures: one row per failed check and row: `column`, `check`, `failure_case` (the value
            as text, "null" for nulls) and `index` (the row in the chunk; null for failures of
            the schema such as a missing column or a wrong dtype).
    """

    data: pl.DataFrame
    invalid: pl.Series | None
    failures: pl.DataFrame

    @property
    def ok(self) -> bool:
        """Whether the chunk passed every check."""
        return self.failures.height == 0

    @property
    def n_invalid(self) -> int:
        """How many rows failed at least one row-level check."""
        return 0 if self.invalid is None else int(self.invalid.sum())


# --- Pandera's built-in checks, as its polars backend evaluates them -------------------------


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


def _extremes_frames(rule: _ColumnRule, found: ColumnStats) -> list[pl.DataFrame]:
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
    cast = stored.select(_cast(pl.col(rule.name), observed, target))
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


def _check_name(check: Check) -> str:
    """The name Pandera's failure cases give a check."""
    if check.error is not None:
        return str(check.error)
    return str(check.name) if check.name is not None else str(check)


def _translate(check: Check, column: str) -> _ValueCheck | None:
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
    return _ValueCheck(
        _check_name(check), passed, bool(check.ignore_na), check.n_failure_cases, other
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


# --- the compiled model and its plans --------------------------------------------------------


@dataclass(frozen=True)
class _ValueCheck:
    name: str
    passed: pl.Expr  # True where the row passes, null where the value is null
    ignore_na: bool
    limit: int | None
    not_text: pl.Expr | None = None  # `passed` on a column that is not text, if it differs


@dataclass
class _ColumnRule:
    name: str
    component: Column
    target: pl.DataType | None  # None: any dtype
    coerce: bool
    checks: list[_ValueCheck] = field(default_factory=list)
    fallback: list[Check] = field(default_factory=list)


@dataclass(frozen=True)
class _RowCheck:
    column: str | None
    check: str
    fail: pl.Expr  # True where the row fails, never null
    value: pl.Expr  # the failure case, as text
    limit: int | None = None
    group: str | None = None  # of a group, only the first failing check is reported
    by_value: bool = False  # a function of the column's value alone: see `_passes_by_value`


#: Pattern checks, costly per row, that a chunk's distinct values may prove instead.
_BY_VALUE_CHECKS: Final = ("str_matches", "str_contains")
#: Chunks of fewer rows run every check row by row.
_BY_VALUE_MIN_ROWS: Final = 4096
#: A column with more distinct values than its rows over this runs its checks row by row.
_BY_VALUE_RATIO: Final = 16


@dataclass(frozen=True)
class _Plan:
    """What to do with the chunks of one input schema."""

    schema_failures: pl.DataFrame
    problems: list[str]
    drop: list[str]
    casts: list[pl.Expr]
    raw: list[str]  # cast columns, kept as they came for reporting
    checks: list[_RowCheck]
    fallback: DataFrameSchema | None
    limits: Limits


class ChunkValidator:
    """Validates polars chunks against a Pandera polars model, compiled once per node.

    Example:
        >>> validator = ChunkValidator(Billing)
        >>> report = validator.check(chunk)
        >>> if not report.ok:
        ...     raise validation_error(report.failures, pipeline="monthly_report",
        ...                            node="monthly", run_id=ctx.run_id, chunk=3,
        ...                            model_name="Billing")
    """

    def __init__(self, model: type[pdp.DataFrameModel]) -> None:
        from pandera.engines import polars_engine as engine

        schema = model.to_schema()
        self.model = model
        self.model_name = model.__name__
        self._strict: bool | str = schema.strict
        self._frame_checks: list[Check] = list(schema.checks)
        self._plans: dict[tuple[tuple[str, pl.DataType], ...], _Plan] = {}
        self._uncastable: set[tuple[str, pl.DataType]] = set()
        self._rules: dict[str, _ColumnRule] = {}
        self._assumed: frozenset[tuple[str, str]] = frozenset()
        self._trivial: dict[pa.Schema, bool] = {}  # by batch schema: `nothing_to_check`
        self._row_by_row: set[tuple[str, str]] = set()  # see `_passes_by_value`
        unique = schema.unique or []
        if isinstance(unique, str) or all(isinstance(u, str) for u in unique):
            unique = [unique]
        self._unique_sets = [[u] if isinstance(u, str) else list(u) for u in unique]
        self._whole = bool(schema.ordered or schema.add_missing_columns or schema.dtype is not None)
        for key, column in schema.columns.items():
            dtype = column.dtype
            target = None if dtype is None else dtype.type
            target = target() if isinstance(target, type) else target
            coerce = bool(column.coerce or schema.coerce) and target is not None
            rule = _ColumnRule(str(key), column, target, coerce)
            plain_cast = (
                dtype is None
                or isinstance(dtype, engine.Decimal)
                or (
                    type(dtype).coerce is engine.DataType.coerce
                    and type(dtype).try_coerce is engine.DataType.try_coerce
                )
            )
            nested = isinstance(target, pl.List | pl.Array | pl.Struct)
            if (
                column.regex
                or column.default is not None
                or (coerce and (nested or not plain_cast))
            ):
                self._whole = True
            for check in column.checks:
                translated = _translate(check, rule.name)
                if translated is None:
                    rule.fallback.append(check)
                else:
                    rule.checks.append(translated)
            self._rules[rule.name] = rule

    def check(self, df: pl.DataFrame) -> ChunkReport:
        """Validate one chunk: the chunk after coercion, its failing rows, every failure.

        Bad data never raises: the report says what failed (see `validation_error`).
        """
        if self._whole:
            return self._check_with_pandera(df)
        plan = self._plan(df.schema)
        data = df.drop(plan.drop) if plan.drop else df
        if plan.casts:
            try:
                data = data.with_columns(plan.casts)
            except _CAST_ERRORS:
                plan = self._replan_without_missing_casts(df, plan)
                data = data.with_columns(self._casts_without_raising(df, plan))
        parts = [plan.schema_failures]
        masks: list[pl.Series] = []
        checks = [
            c
            for c in plan.checks
            if not _increasing_key(c, data) and not self._passes_by_value(c, data)
        ]
        if checks:
            raw = [df.get_column(c).alias(_RAW + c) for c in plan.raw]
            found, mask = _run_row_checks(checks, data.hstack(raw) if raw else data)
            parts.append(found)
            if mask is not None:
                masks.append(mask)
        if plan.fallback is not None:
            found, mask = _run_fallback(plan, data)
            parts.append(found)
            if mask is not None:
                masks.append(mask)
        failures = pl.concat([p for p in parts if p.height] or [parts[0]])
        invalid = None if not masks else masks[0] if len(masks) == 1 else masks[0] | masks[1]
        return ChunkReport(data=data, invalid=invalid, failures=failures)

    def _passes_by_value(self, check: _RowCheck, data: pl.DataFrame) -> bool:
        """Whether a pattern check passes on every distinct value of its column, checked on
        those values alone: a fraction of matching every row where values repeat (a month,
        a code). False (check every row, reporting the failing ones) when some value fails,
        or the column has too many distinct values, after which this check always runs row by
        row in this validator."""
        if not check.by_value or check.column is None or data.height < _BY_VALUE_MIN_ROWS:
            return False
        key = (check.column, check.check)
        if key in self._row_by_row:
            return False
        values = data.get_column(check.column).unique()
        if len(values) * _BY_VALUE_RATIO > data.height:
            self._row_by_row.add(key)
            return False
        return not values.to_frame().select(check.fail.any()).item()

    def text_columns(self) -> list[str]:
        """Text columns with built-in checks that a column's distinct values could prove."""
        return [
            rule.name
            for rule in self._rules.values()
            if rule.checks and (rule.target is None or rule.target == pl.String)
        ]

    def proven_checks(self, stats: Mapping[str, ColumnStats]) -> frozenset[tuple[str, str]]:
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
        for rule in self._rules.values():
            found = stats.get(rule.name)
            if found is None:
                continue
            if not rule.component.nullable and found.null_count == 0 and not found.floating:
                proven.add((rule.name, "not_nullable"))  # (a float's NaN counts as null)
            if found.values is not None and (rule.target is None or rule.target == pl.String):
                values = pl.DataFrame(
                    {rule.name: sorted(found.values)}, schema={rule.name: pl.String}
                )
                for value_check in rule.checks:
                    passes = values.select(value_check.passed.fill_null(True).all()).item()
                    if passes and (value_check.ignore_na or found.null_count == 0):
                        proven.add((rule.name, value_check.name))
            extremes = _extremes_frames(rule, found)
            if not extremes:
                continue
            for check in rule.component.checks:
                translated = (
                    _translate(check, rule.name) if check.name in _MONOTONE_CHECKS else None
                )
                if translated is None or not (translated.ignore_na or found.null_count == 0):
                    continue  # (with `ignore_na=False` a null fails the check)
                if all(_passes_on(frame, translated.passed) for frame in extremes):
                    proven.add((rule.name, translated.name))
        return frozenset(proven)

    def assume(self, proven: frozenset[tuple[str, str]]) -> None:
        """Skip these `(column, check)` checks in every chunk from now on: the caller proved
        them for all the data (see `proven_checks`), so no chunk can fail them."""
        self._assumed = proven
        self._plans.clear()
        self._trivial.clear()

    def scan_clean(
        self, frame: pl.LazyFrame, proven: frozenset[tuple[str, str]] = frozenset()
    ) -> bool | None:
        """Whether a whole lazy frame passes every check, computed in one streaming pass.

        This is how immutable inputs are validated in place: polars reads only the model's
        columns and aggregates each check's failures, with no Python per chunk. Returns None
        when the model has checks only Pandera itself can run; the caller then validates chunk
        by chunk (as it does after False, to report the failing rows exactly).
        """
        if self._whole or self._frame_checks:
            return None
        if any(rule.fallback for rule in self._rules.values()):
            return None
        plan = self._plan(frame.collect_schema())
        if plan.problems or plan.drop:
            return False
        if plan.raw:
            frame = frame.with_columns(pl.col(c).alias(_RAW + c) for c in plan.raw)
        if plan.casts:
            frame = frame.with_columns(plan.casts)
        checks = [c for c in plan.checks if (c.column, c.check) not in proven]
        if not checks:
            return True  # the statistics prove it: nothing to read
        try:
            counts = frame.select(
                c.fail.cast(pl.UInt32).sum().alias(str(i)) for i, c in enumerate(checks)
            ).collect(engine="streaming")
        except pl.exceptions.PolarsError:
            return False  # a cast or check cannot run on this data: let the chunks say why
        return not any(counts.row(0))

    def nothing_to_check(self, schema: pa.Schema) -> bool:
        """Whether record batches of `schema` pass without a look at their values: every row
        check is assumed (`assume`), nothing is cast or dropped, the columns and types are
        right. Then they need no conversion to polars either."""
        known = self._trivial.get(schema)
        if known is None:
            if self._whole:
                known = False
            else:
                empty = cast("pl.DataFrame", pl.from_arrow(schema.empty_table()))
                plan = self._plan(empty.schema)
                known = not (
                    plan.checks
                    or plan.casts
                    or plan.drop
                    or plan.fallback is not None
                    or plan.schema_failures.height
                )
            self._trivial[schema] = known
        return known

    def schema_problems(self, df: pl.DataFrame) -> list[str]:
        """Missing columns, wrong dtypes (after coercion) and, when strict, extra columns."""
        return list(self._plan(df.schema).problems)

    def _plan(self, schema: pl.Schema) -> _Plan:
        key = tuple(schema.items())
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[key] = self._build_plan(schema)
        return plan

    def _replan_without_missing_casts(self, df: pl.DataFrame, plan: _Plan) -> _Plan:
        """Replan after meeting a cast polars does not have (String to Date, List to Int64).

        Only a value shows it, so it is found on the first chunk holding one. Every non-null
        value of such a column fails `coerce_dtype` (as in Pandera) and becomes null.
        """
        for name in plan.raw:
            target = self._rules[name].target
            assert target is not None
            try:
                df.select(_cast(pl.col(name), df.schema[name], target))
            except pl.exceptions.InvalidOperationError:
                self._uncastable.add((name, df.schema[name]))
            except pl.exceptions.ComputeError:
                pass  # some values raise, not the kind of cast: see `_casts_without_raising`
        plan = self._plans[tuple(df.schema.items())] = self._build_plan(df.schema)
        return plan

    def _casts_without_raising(self, df: pl.DataFrame, plan: _Plan) -> list[pl.Expr]:
        """`plan.casts` for this chunk, with the values whose cast raises in polars, rather
        than giving null (a float rounding past a decimal's precision, a category cast to a
        number), made null before the cast: each is then a `coerce_dtype` failure on its row,
        as a value that does not parse is."""
        casts: list[pl.Expr] = []
        for name, cast_expr in zip(plan.raw, plan.casts, strict=True):
            try:
                df.select(cast_expr)
            except _CAST_ERRORS:
                target = self._rules[name].target
                assert target is not None
                values = df.get_column(name)
                raising = _raising_casts(values.drop_nulls().unique(), target)
                if raising is None:  # no value raises on its own: none is taken as cast
                    cast_expr = pl.lit(None, target).alias(name)
                else:
                    kept = pl.lit(values.is_in(raising).not_())
                    cast_expr = _cast(pl.when(kept).then(pl.col(name)), values.dtype, target)
                    cast_expr = cast_expr.alias(name)
            casts.append(cast_expr)
        return casts

    def _build_plan(self, schema: pl.Schema) -> _Plan:
        model = self.model_name
        extra = [c for c in schema if c not in self._rules]
        drop = extra if self._strict == "filter" else []
        head: list[tuple[str | None, str, str]] = []  # extra columns, then missing ones
        wrong: list[tuple[str | None, str, str]] = []  # then wrong dtypes
        problems: list[str] = []
        if self._strict is True and extra:
            head.extend((c, "column_in_schema", c) for c in extra)
            problems.append(f"column(s) {quoted(extra)} are not in schema {model}, which is strict")
        casts: list[pl.Expr] = []
        raw: list[str] = []
        checks: list[_RowCheck] = []
        fallback_columns: dict[str, Column] = {}
        limits: Limits = {}
        for rule in self._rules.values():
            name, component = rule.name, rule.component
            if name not in schema:
                if component.required:
                    head.append((name, "column_in_dataframe", name))
                    problems.append(f"column '{name}' is missing; columns are {quoted(schema)}")
                continue
            col, after = pl.col(name), schema[name]
            cast_failed: pl.Expr | None = None
            if rule.coerce and rule.target is not None and after != rule.target:
                if (name, after) in self._uncastable:
                    casts.append(pl.lit(None, rule.target).alias(name))
                    problems.append(
                        f"column '{name}' is {after}; polars cannot cast it to {rule.target}"
                    )
                else:
                    casts.append(_cast(col, after, rule.target).alias(name))
                raw.append(name)
                before = pl.col(_RAW + name)
                cast_failed = before.is_not_null() & col.is_null()
                coerce = f"coerce_dtype('{component.dtype}')"
                checks.append(_RowCheck(name, coerce, cast_failed, _as_text(before, after)))
                after = rule.target
            if rule.target is not None and not _dtype_ok(component, after):
                wrong.append((name, f"dtype('{component.dtype}')", str(after)))
                problems.append(
                    f"column '{name}' is {after}; schema {model} expects {component.dtype}"
                )
            text = _as_text(col, after)
            if not component.nullable:
                fail = (col if cast_failed is None else pl.col(_RAW + name)).is_null()
                if after in (pl.Float32, pl.Float64):
                    fail = fail | col.is_nan().fill_null(False)
                checks.append(_RowCheck(name, "not_nullable", fail, text))
            if component.unique:
                # values that failed to cast are nulls, but no duplicates of each other
                tag = (
                    None
                    if cast_failed is None
                    else pl.when(cast_failed).then(pl.int_range(pl.len()))
                )
                dup = col if tag is None else pl.struct(col, tag)
                checks.append(_RowCheck(name, "field_uniqueness", dup.is_duplicated(), text))
            for vc in rule.checks:
                passed = vc.passed if vc.not_text is None or after == pl.String else vc.not_text
                fail = passed.eq_missing(False) if vc.ignore_na else passed.ne_missing(True)
                by_value = (
                    cast_failed is None
                    and after == pl.String
                    and vc.name.startswith(_BY_VALUE_CHECKS)
                )
                if cast_failed is not None:
                    fail = fail & cast_failed.not_()
                checks.append(_RowCheck(name, vc.name, fail, text, vc.limit, by_value=by_value))
            if rule.fallback:
                fallback_columns[name] = _fallback_column(name, rule.fallback, limits)
        if self._assumed:
            checks = [c for c in checks if (c.column, c.check) not in self._assumed]
        output = [c for c in schema if c not in drop]
        for subset in self._unique_sets:
            if present := [c for c in subset if c in output]:
                fail = pl.struct(present).is_duplicated()
                row = pl.struct(output).struct.json_encode()
                name = "multiple_fields_uniqueness"
                checks.append(_RowCheck(None, name, fail, row, group=name))
        fallback = None
        if fallback_columns or self._frame_checks:
            import pandera.polars as pdp

            frame_checks = [_unlimited(c, None, limits) for c in self._frame_checks]
            fallback = pdp.DataFrameSchema(fallback_columns, checks=frame_checks, name=model)
        return _Plan(
            schema_failures=_schema_failures(head + wrong),
            problems=problems,
            drop=drop,
            casts=casts,
            raw=raw,
            checks=checks,
            fallback=fallback,
            limits=limits,
        )

    def _check_with_pandera(self, df: pl.DataFrame) -> ChunkReport:
        """`Model.validate` on the chunk, for models using features not translated."""
        import pandera.errors

        try:
            data = self.model.validate(df, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            failures = _from_pandera(exc.failure_cases)
            return ChunkReport(data=df, invalid=_mask_from(failures, df.height), failures=failures)
        except pl.exceptions.InvalidOperationError as exc:
            # Pandera found failures it cannot report (a failing Duration value, which polars
            # does not cast to text): the chunk fails as a whole, as no row can be named
            found = (None, "pandera_report", f"Pandera could not report its failures: {exc}")
            return ChunkReport(data=df, invalid=None, failures=_schema_failures([found]))
        assert isinstance(data, pl.DataFrame)
        return ChunkReport(data=data, invalid=None, failures=_schema_failures([]))


# --- evaluation --------------------------------------------------------------------------------


def _increasing_key(check: _RowCheck, data: pl.DataFrame) -> bool:
    """A unique column without nulls whose values increase in this chunk: nothing repeats,
    and comparing neighbours costs a fraction of hashing every value."""
    if check.check != "field_uniqueness" or check.column is None:
        return False
    values = data.get_column(check.column)
    return values.null_count() == 0 and strictly_increasing(values)


def _run_row_checks(
    checks: Sequence[_RowCheck], frame: pl.DataFrame
) -> tuple[pl.DataFrame, pl.Series | None]:
    """Evaluate every check in one pass; report the failing rows of the failing checks."""
    errors: list[tuple[str | None, str, str]] = []
    try:
        masks = frame.select([c.fail.alias(str(i)) for i, c in enumerate(checks)]).get_columns()
        evaluated = list(zip(checks, masks, strict=True))
    except pl.exceptions.PolarsError:  # some check cannot run on this data: find which
        evaluated = []
        for i, check in enumerate(checks):
            try:
                evaluated.append((check, frame.select(check.fail.alias(str(i))).to_series()))
            except pl.exceptions.PolarsError as exc:  # reported as Pandera reports it
                message = f'"{exc.args[0]}"' if exc.args else ""
                errors.append((check.column, check.check, f"{type(exc).__name__}({message})"))
    parts = [_schema_failures(errors)]
    failing: list[pl.Series] = []
    groups: set[str | None] = set()
    for check, mask in evaluated:
        if check.group in groups or not mask.any():
            continue
        if check.group is not None:
            groups.add(check.group)
        failing.append(mask)
        rows = mask.arg_true()
        rows = rows if check.limit is None else rows.head(check.limit)
        part = frame.select(pl.all().gather(rows)).select(
            pl.lit(check.column, pl.String).alias("column"),
            pl.lit(check.check, pl.String).alias("check"),
            check.value.fill_null("null").alias("failure_case"),
            pl.lit(rows.cast(pl.Int64)).alias("index"),
        )
        parts.append(part)
    if not failing:
        return parts[0], None
    invalid = pl.DataFrame(failing).select(pl.any_horizontal(pl.all()).alias("invalid"))
    return pl.concat(parts), invalid.to_series()


def _run_fallback(plan: _Plan, data: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series | None]:
    """The checks no polars expression was compiled for, run by Pandera on the whole chunk: a
    column's check sees every column, as in Pandera (`start <= end` registered on `start`)."""
    import pandera.errors

    assert plan.fallback is not None
    try:
        plan.fallback.validate(data, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        failures = _from_pandera(exc.failure_cases)
    except pl.exceptions.SchemaError:
        # Pandera cannot stack the report of a check returning one boolean on row-level
        # reports (their failure cases differ in type): run the checks one by one.
        failures = _run_fallback_one_by_one(plan.fallback, data)
    except pl.exceptions.InvalidOperationError as exc:
        # Pandera found failures it cannot report (a failing Duration value, which polars
        # does not cast to text): the chunk fails as a whole, as no row can be named
        found = (None, "pandera_report", f"Pandera could not report its failures: {exc}")
        return _schema_failures([found]), None
    else:
        return _schema_failures([]), None
    mask = _mask_from(failures, data.height)
    return (_apply_limits(failures, plan.limits) if plan.limits else failures), mask


def _run_fallback_one_by_one(schema: DataFrameSchema, data: pl.DataFrame) -> pl.DataFrame:
    import pandera.errors
    import pandera.polars as pdp

    singles = [
        pdp.DataFrameSchema({name: _fallback_column(name, [check], {})}, name=schema.name)
        for name, column in schema.columns.items()
        for check in column.checks
    ] + [pdp.DataFrameSchema(checks=[check], name=schema.name) for check in schema.checks]
    parts = [_schema_failures([])]
    for single in singles:
        try:
            single.validate(data, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            parts.append(_from_pandera(exc.failure_cases))
    return pl.concat(parts)


@cache
def _no_failures() -> pl.DataFrame:
    return pl.DataFrame(schema=FAILURE_SCHEMA)  # built once: a clone is far cheaper


def _schema_failures(found: list[tuple[str | None, str, str]]) -> pl.DataFrame:
    """Failures of no particular row, each (column, check, failure case)."""
    if not found:
        return _no_failures().clone()
    columns, checks, cases = (list(x) for x in zip(*found, strict=True))
    data = {"column": columns, "check": checks, "failure_case": cases, "index": [None] * len(found)}
    return pl.DataFrame(data, schema=FAILURE_SCHEMA)


def _cast(col: pl.Expr, observed: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Pandera's cast, made non-strict: values that do not cast become null (and are reported)."""
    if (
        not isinstance(target, pl.Decimal)
        or observed.is_integer()
        or isinstance(observed, pl.Decimal)
    ):
        return col.cast(target, strict=False)
    via_float = col.cast(pl.Float64, strict=False).cast(target, strict=False)
    if observed == pl.String:  # as Pandera: parse it, else go through a float
        return pl.coalesce(col.cast(target, strict=False), via_float)
    return via_float


#: What polars raises for a cast that cannot give a value (a null) for some row.
_CAST_ERRORS: Final = (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError)


def _raising_casts(values: pl.Series, target: pl.DataType) -> pl.Series | None:
    """Those of `values` (distinct, not null) whose cast to `target` raises, found by halving
    the values that raise together; None when none raises on its own. Only a chunk whose cast
    raised pays for it: about two casts per such value."""
    found: list[pl.Series] = []
    pending = [values]
    while pending:
        part = pending.pop()
        try:
            part.to_frame("v").select(_cast(pl.col("v"), part.dtype, target))
        except _CAST_ERRORS:
            if part.len() == 1:
                found.append(part)
            else:
                half = part.len() // 2
                pending.extend([part.slice(half), part.head(half)])
    return pl.concat(found) if found else None


def _dtype_ok(component: Column, dtype: pl.DataType) -> bool:
    """Pandera's verdict on a column of `dtype`, once per plan rather than per chunk."""
    from pandera.api.polars.types import PolarsData

    assert component.dtype is not None
    return bool(component.dtype.check(dtype, PolarsData(pl.LazyFrame(schema={"x": dtype}), "x")))


def _as_text(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A value as the text Pandera shows in failure cases (nested values as JSON).

    polars cannot cast a duration to text (`1d 3µs` is its own notation), and panics on a
    date or datetime past the years it can show (then the value since 1970 is shown, in its
    unit: `4611686018427387904ms`).
    """
    if isinstance(dtype, pl.List | pl.Array | pl.Struct):
        return pl.struct(col.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
    if isinstance(dtype, pl.Duration):
        return col.dt.to_string("polars")
    if isinstance(dtype, pl.Date | pl.Datetime):
        unit = "d" if isinstance(dtype, pl.Date) else dtype.time_unit
        shown = pl.when(col.dt.year().is_not_null()).then(col)  # null where out of range
        since = col.to_physical().cast(pl.String) + pl.lit(unit)
        return pl.coalesce(shown.cast(pl.String, strict=False), since)
    return col.cast(pl.String, strict=False)


def _fallback_column(name: str, checks: list[Check], limits: Limits) -> Column:
    import pandera.polars as pdp

    unlimited = [_unlimited(c, name, limits) for c in checks]
    return pdp.Column(None, checks=unlimited, nullable=True, name=name)


def _unlimited(check: Check, column: str | None, limits: Limits) -> Check:
    """`check` reporting every failing row (for the mask); its `n_failure_cases` to `limits`."""
    if check.n_failure_cases is None:
        return check
    limits[(column, _check_name(check))] = check.n_failure_cases
    unlimited = copy.copy(check)
    unlimited.n_failure_cases = None
    return unlimited


def _apply_limits(failures: pl.DataFrame, limits: Limits) -> pl.DataFrame:
    """Keep the first `n_failure_cases` failures of the checks that set it, as Pandera does."""
    rank = pl.int_range(pl.len()).over("column", "check")
    drop = pl.lit(False)
    for (column, check), limit in limits.items():
        this = pl.col("column").eq_missing(pl.lit(column, pl.String)) & (pl.col("check") == check)
        drop = drop | (this & pl.col("index").is_not_null() & (rank >= limit))
    return failures.filter(drop.not_())


def _from_pandera(failure_cases: pl.DataFrame) -> pl.DataFrame:
    """Pandera's failure cases in etlkit's shape (see the module docstring for `column`)."""
    frame_wide = pl.col("schema_context") == "DataFrameSchema"
    return failure_cases.select(
        pl.when(frame_wide & pl.col("check").is_in(_NAMED_BY_CASE))
        .then(pl.col("failure_case").cast(pl.String))
        .when(frame_wide)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.col("column").cast(pl.String))
        .alias("column"),
        pl.col("check").cast(pl.String),
        pl.col("failure_case").cast(pl.String).fill_null("null"),
        pl.col("index").cast(pl.Int64),
    )


def _mask_from(failures: pl.DataFrame, height: int) -> pl.Series | None:
    rows = failures.get_column("index").drop_nulls()
    if rows.is_empty():
        return None
    return pl.repeat(False, height, eager=True).scatter(rows, True).alias("invalid")


# --- reporting ---------------------------------------------------------------------------------


def summarize(failures: pl.DataFrame, *, max_checks: int = 10, max_examples: int = 5) -> str:
    """A bounded summary of failures: one line per failed check, with a count and examples.

    At most `max_checks` lines, each with up to `max_examples` distinct values, e.g.
    `column 'amount' failed greater_than_or_equal_to(0) on 3 rows (examples: -1.0, -2.5, -7.0)`,
    then `... and N more checks` when some are left out.
    """
    if failures.is_empty():
        return "no failures"
    groups = failures.group_by("column", "check", maintain_order=True).agg(
        pl.len().alias("n"),
        pl.col("index").is_not_null().any().alias("row_level"),
        pl.col("failure_case").unique(maintain_order=True).head(max_examples).alias("examples"),
    )
    lines = []
    for column, check, n, row_level, examples in groups.head(max_checks).iter_rows():
        subject = f"column '{column}'" if column is not None else "dataframe check"
        shown = ", ".join(_shorten(str(e)) for e in examples)
        if row_level:
            rows = f"{n} row" if n == 1 else f"{n} rows"
            lines.append(f"{subject} failed {check} on {rows} (examples: {shown})")
        elif examples == [column]:  # a missing or extra column
            lines.append(f"{subject} failed {check}")
        else:
            lines.append(f"{subject} failed {check} (found: {shown})")
    if (more := groups.height - max_checks) > 0:
        lines.append(f"... and {more} more check{'s' if more > 1 else ''}")
    return "\n".join(lines)


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validation_error(
    failures: pl.DataFrame,
    *,
    pipeline: str,
    node: str,
    run_id: str,
    chunk: int | None,
    model_name: str,
    side: str = "Output",
    origin: str | None = None,
) -> DataValidationError:
    """A `DataValidationError` saying where data broke which schema, and how.

    `origin` says where a source's failing rows are (`file 'b.csv', lines 4, 7`).

    Besides the message, the error carries `.pipeline`, `.node`, `.run_id`, `.chunk`, `.model`,
    `.n_failures` (rows of `failures`), `.n_rows` (distinct failing rows) and `.checks`
    (column, check, count) for the scheduler and the store. It pickles.
    """
    where = f" on chunk {chunk}" if chunk is not None else ""
    where += f" ({origin})" if origin else ""
    head = f"{side} of node '{node}' in pipeline '{pipeline}' (run {run_id}) broke schema "
    summary = summarize(failures)
    if "\n" in summary:
        n_checks = failures.select(pl.struct("column", "check").n_unique()).item()
        lines = "".join(f"\n  - {line}" for line in summary.splitlines())
        body = f"{len(failures)} failures in {n_checks} checks:{lines}\n"
    else:
        body = f"{summary}. "
    hint = (
        f"Fix node '{node}' (or its inputs) so its output meets schema {model_name}, "
        "or change the schema if a rule is wrong."
    )
    exc = DataValidationError(f"{head}{model_name}{where}: {body}{hint}")
    counts = failures.group_by("column", "check", maintain_order=True).len()
    # The scheduler and the store read the context from attributes; EtlkitError pickles
    # __dict__, so they survive the trip out of a child process.
    exc.__dict__.update(
        pipeline=pipeline,
        node=node,
        run_id=run_id,
        chunk=chunk,
        model=model_name,
        n_failures=failures.height,
        n_rows=failures.get_column("index").drop_nulls().n_unique(),
        checks=[tuple(row) for row in counts.iter_rows()],
    )
    return exc


# -- dataset-level checks ------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fetch_rows(con: Any, sql: str) -> list[tuple[Any, ...]]:
    """A query's rows as Python values, through Arrow: DuckDB's own conversion of a zoned
    timestamp needs pytz, which etlkit does not depend on."""
    table = con.sql(sql).to_arrow_table()
    return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


def _examples(rows: list[tuple[Any, ...]], limit: int = 5) -> str:
    shown = [str(r[0]) if len(r) == 1 else str(tuple(r)) for r in rows[:limit]]
    return ", ".join(shown)


def strictly_increasing(values: pl.Series) -> bool:
    """Whether a column's non-null values are strictly increasing: then no two are equal.

    False for a type without an order (a struct, a list), and when a NaN repeats.
    """
    values = values.drop_nulls()
    n = values.len()
    if n < 2:
        return True
    try:
        return bool((values.slice(1) > values.slice(0, n - 1)).all())
    except pl.exceptions.PolarsError:
        return False


class IncreasingKey:
    """Watches one key column across a node's chunks: strictly increasing values are unique.

    Uniqueness across chunks otherwise takes a pass over the whole output (a hash of every
    key, in DuckDB). Exports are usually written in key order, and then a comparison of
    neighbours per chunk, as the chunks stream, proves it without that pass. A null repeats
    another null (as in Pandera's `unique`), so a second null anywhere ends the proof. Once a
    value fails to exceed the one before, `holds` is False for good and the full check decides.
    """

    def __init__(self, column: str) -> None:
        self.column = column
        self.holds = True
        self._last: pl.Series | None = None
        self._nulls = 0

    def update(self, batch: pa.RecordBatch) -> None:
        """Take the next chunk of the output, in output order."""
        if not self.holds:
            return
        index = batch.schema.get_field_index(self.column)
        if index < 0:
            self.holds = False
            return
        column = batch.column(index)
        self._nulls += column.null_count
        if self._nulls > 1:
            self.holds = False
            return
        values = pl.Series(column).drop_nulls()
        if values.len() == 0:
            return
        # compared as polars values: a datetime outside Python's range does not convert
        try:
            after_last = self._last is None or bool((values.head(1) > self._last).item())
        except pl.exceptions.PolarsError:
            after_last = False
        self.holds = after_last and strictly_increasing(values)
        self._last = values.tail(1)


def dataset_problems(
    con: Any,
    files: Sequence[str],
    *,
    rows: int,
    min_rows: int | None = None,
    max_rows: int | None = None,
    unique: Sequence[Sequence[str]] = (),
    model_unique: Sequence[Sequence[str]] = (),
    sql: Sequence[str] = (),
    read_as: FileFormat = PARQUET,
) -> list[str]:
    """Checks a single chunk cannot decide, over a node's whole staged output.

    `con` is a DuckDB connection able to read `files` (the node's Parquet parts, or the files
    a reference names, read in their format `read_as`). Returns one problem per failed check,
    with counts and up to 5 examples; an empty list means all passed. Keys in `unique` (a
    node's `expect(unique=...)`) ignore rows with a null key, as a SQL key does; keys in
    `model_unique` (its model's) count nulls as repeating, as Pandera's `unique` does within
    a chunk, so the verdict is the same whatever the chunk boundaries.
    """
    import duckdb

    problems: list[str] = []
    if min_rows is not None and rows < min_rows:
        hint = " (no data found: is the input empty or its path wrong?)" if rows == 0 else ""
        problems.append(f"has {rows} rows; expected at least {min_rows}{hint}")
    if max_rows is not None and rows > max_rows:
        problems.append(f"has {rows} rows; expected at most {max_rows}")
    if not files or not (unique or model_unique or sql):
        return problems
    scan = read_as.scan(con, files, "__output_scan")
    con.execute(f"CREATE OR REPLACE TEMP VIEW __output AS SELECT * FROM {scan}")
    for columns in [*unique, *model_unique]:
        keys = ", ".join(_quote(c) for c in columns)
        where = f"WHERE ({keys}) IS NOT NULL " if columns in unique else ""
        duplicated = _fetch_rows(
            con,
            f"SELECT {keys}, count(*) AS n FROM __output {where}"
            f"GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC, {keys} LIMIT 6",
        )
        if duplicated:
            total = con.execute(
                f"SELECT count(*) FROM (SELECT {keys} FROM __output {where}"
                f"GROUP BY ALL HAVING count(*) > 1)"
            ).fetchall()[0][0]  # drained: the connection runs the next query
            what = f"column '{columns[0]}'" if len(columns) == 1 else f"columns {quoted(columns)}"
            problems.append(
                f"{what} must be unique across all chunks; {total} value(s) repeat "
                f"(examples: {_examples([d[:-1] for d in duplicated])})"
            )
    for query in sql:
        try:
            failing = con.execute(
                f"SELECT count(*) FROM ({query.replace('{output}', '__output')})"
            ).fetchall()[0][0]
            examples = (
                _fetch_rows(con, f"{query.replace('{output}', '__output')} LIMIT 5")
                if failing
                else []
            )
        except duckdb.Error as exc:
            problems.append(f"SQL assertion {query!r} could not run: {exc}")
            continue
        if failing:
            problems.append(
                f"SQL assertion {query!r} returned {failing} offending row(s) "
                f"(examples: {_examples(examples)})"
            )
    return problems


# -- unique keys across chunks, under drop and quarantine ----------------------------------------


@dataclass(frozen=True)
class KeyCheck:
    """A unique key of a model, named as Pandera's `failure_cases` names its check."""

    columns: tuple[str, ...]
    check: str  # `field_uniqueness` (a `unique=True` field) or `multiple_fields_uniqueness`
    column: str | None  # the field's name; None for `Config.unique`, a check of the frame


def key_checks(model: type[pdp.DataFrameModel], columns: Sequence[str]) -> list[KeyCheck]:
    """The unique keys `model` declares, as `schema.unique_sets_in` lists them for an output
    holding `columns` (a unique regex column: one key per column it matches)."""
    from etlkit.model.schema import unique_sets, unique_sets_in

    keys = unique_sets_in(model, columns)
    fields = {str(n) for n, c in model.to_schema().columns.items() if c.unique}
    fields |= {k[0] for k in keys if len(k) == 1 and k not in unique_sets(model)}  # by regex
    return [
        KeyCheck(k, "field_uniqueness", k[0])
        if len(k) == 1 and k[0] in fields
        else KeyCheck(k, "multiple_fields_uniqueness", None)
        for k in keys
    ]


def flag_repeats(
    con: Any, output: Sequence[str], judged: Sequence[str], checks: Sequence[KeyCheck]
) -> str | None:
    """The SELECT of a node's staged output, in order, with a boolean `__repeat_<n>` per check
    saying whether the row's key occurs more than once among every row the node produced: its
    output (`output`, Parquet parts) and the rows it took out (`judged`, files holding at least
    the key columns). Nulls repeat, as in Pandera's `is_duplicated`. None: no key repeats.
    """

    def files(urls: Sequence[str]) -> str:
        return "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in urls) + "]"

    scans = [
        f"SELECT {i} AS __file, file_row_number AS __line, * EXCLUDE (file_row_number) "
        f"FROM read_parquet({files([url])}, file_row_number = true)"
        for i, url in enumerate(output)
    ]
    con.execute("CREATE OR REPLACE TEMP VIEW __output AS " + " UNION ALL ".join(scans))
    flags: list[str] = []
    for n, check in enumerate(checks):
        keys = ", ".join(_quote(c) for c in check.columns)
        every = f"SELECT {keys} FROM __output"
        if judged:
            every += (
                f" UNION ALL SELECT {keys} FROM read_parquet({files(judged)}, union_by_name = true)"
            )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __repeats_{n} AS "
            f"SELECT {keys} FROM ({every}) GROUP BY ALL HAVING count(*) > 1"
        )
        if not con.execute(f"SELECT count(*) FROM __repeats_{n}").fetchall()[0][0]:
            flags.append(f"false AS __repeat_{n}")
            continue
        same = " AND ".join(
            f"r.{_quote(c)} IS NOT DISTINCT FROM o.{_quote(c)}" for c in check.columns
        )
        flags.append(f"EXISTS (SELECT 1 FROM __repeats_{n} r WHERE {same}) AS __repeat_{n}")
    if all(f.startswith("false ") for f in flags):
        return None
    return (
        f"SELECT o.* EXCLUDE (__file, __line), {', '.join(flags)} "
        "FROM __output o ORDER BY o.__file, o.__line"
    )


def repeat_rejects(
    rows: pl.DataFrame, checks: Sequence[KeyCheck], columns: Sequence[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """For rows flagged by `flag_repeats`: the rows as a chunk's quarantine stages them (with
    `_check`, `_column` and `_reason` of their first failure) and their failure table."""
    cases: list[pl.Expr] = [
        _as_text(pl.col(c.column), rows.schema[c.column])
        if c.column is not None
        else pl.struct(list(columns)).struct.json_encode()
        for c in checks
    ]
    failures = pl.concat(
        [
            rows.filter(pl.col(f"__repeat_{n}")).select(
                column=pl.lit(c.column, pl.String),
                check=pl.lit(c.check, pl.String),
                failure_case=cases[n].fill_null("null"),
                index=pl.lit(None, pl.Int64),
                chunk=pl.lit(None, pl.Int64),
            )
            for n, c in enumerate(checks)
        ]
    )
    flagged = [pl.col(f"__repeat_{n}") for n in range(len(checks))]
    reasons = [
        pl.when(flag).then(
            pl.concat_str(
                pl.lit(f"column '{c.column or '*'}' failed {c.check}: "),
                cases[n].fill_null("null"),
            )
        )
        for n, (c, flag) in enumerate(zip(checks, flagged, strict=True))
    ]
    annotated = rows.select(
        *columns,
        _check=pl.coalesce(
            pl.when(f).then(pl.lit(c.check)) for c, f in zip(checks, flagged, strict=True)
        ),
        _column=pl.coalesce(
            pl.when(f).then(pl.lit(c.column, pl.String))
            for c, f in zip(checks, flagged, strict=True)
        ),
        _reason=pl.concat_list(reasons).list.drop_nulls().list.join("; "),
    )
    return annotated, failures
