"""A model compiled once, and a plan per input schema: what to drop, cast and check.

`compile_model` reads `model.to_schema()` once into `ColumnRule`s (each column's dtype, coercion,
built-in checks translated to polars, the rest left to Pandera). `build_plan` turns those rules
and one input schema into a `Plan`: columns to drop and cast (Pandera's cast, made non-strict),
failures of the schema itself (missing, extra, wrong dtypes), one `RowCheck` per check of the
rows, and a small Pandera schema for the checks polars expressions are not compiled for.
"""

from __future__ import annotations

import copy
from collections.abc import Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import polars as pl

from etlkit.checks.builtin import ValueCheck, check_name, translate
from etlkit.checks.failures import Limits, as_text, schema_failures
from etlkit.errors import quoted

if TYPE_CHECKING:
    import pandera.polars as pdp
    from pandera.api.checks import Check
    from pandera.api.polars.components import Column
    from pandera.api.polars.container import DataFrameSchema

RAW: Final = "__etlkit_raw__"  # prefix of a cast column's values before the cast


@dataclass
class ColumnRule:
    """A column of the model: its dtype, whether it is coerced, its compiled and other checks."""

    name: str
    component: Column
    target: pl.DataType | None  # None: any dtype
    coerce: bool
    checks: list[ValueCheck] = field(default_factory=list)
    fallback: list[Check] = field(default_factory=list)


@dataclass(frozen=True)
class RowCheck:
    """One check of a chunk's rows, as a polars expression over the cast chunk."""

    column: str | None
    check: str
    fail: pl.Expr  # True where the row fails, never null
    value: pl.Expr  # the failure case, as text
    limit: int | None = None
    group: str | None = None  # of a group, only the first failing check is reported
    by_value: bool = (
        False  # a function of the column's value alone: see `ChunkValidator._passes_by_value`
    )


#: Pattern checks, costly per row, that a chunk's distinct values may prove instead.
_BY_VALUE_CHECKS: Final = ("str_matches", "str_contains")


@dataclass(frozen=True)
class Plan:
    """What to do with the chunks of one input schema."""

    schema_failures: pl.DataFrame
    problems: list[str]
    drop: list[str]
    casts: list[pl.Expr]
    raw: list[str]  # cast columns, kept as they came for reporting
    checks: list[RowCheck]
    fallback: DataFrameSchema | None
    limits: Limits


@dataclass(frozen=True)
class CompiledModel:
    """A model's schema, read once: its columns as rules, and what applies to the whole frame."""

    name: str
    strict: bool | str
    frame_checks: list[Check]
    rules: dict[str, ColumnRule]
    unique_sets: list[list[str]]
    whole: bool  # uses features not translated: every chunk goes to `Model.validate`


def compile_model(model: type[pdp.DataFrameModel]) -> CompiledModel:
    """`model.to_schema()` as rules: each column's dtype, coercion and checks (built-in checks
    as polars expressions, the others kept for Pandera), and whether Pandera must validate
    every chunk whole."""
    from pandera.engines import polars_engine as engine

    schema = model.to_schema()
    unique = schema.unique or []
    if isinstance(unique, str) or all(isinstance(u, str) for u in unique):
        unique = [unique]
    unique_sets = [[u] if isinstance(u, str) else list(u) for u in unique]
    whole = bool(schema.ordered or schema.add_missing_columns or schema.dtype is not None)
    rules: dict[str, ColumnRule] = {}
    for key, column in schema.columns.items():
        dtype = column.dtype
        target = None if dtype is None else dtype.type
        target = target() if isinstance(target, type) else target
        coerce = bool(column.coerce or schema.coerce) and target is not None
        rule = ColumnRule(str(key), column, target, coerce)
        plain_cast = (
            dtype is None
            or isinstance(dtype, engine.Decimal)
            or (
                type(dtype).coerce is engine.DataType.coerce
                and type(dtype).try_coerce is engine.DataType.try_coerce
            )
        )
        nested = isinstance(target, pl.List | pl.Array | pl.Struct)
        if column.regex or column.default is not None or (coerce and (nested or not plain_cast)):
            whole = True
        for check in column.checks:
            translated = translate(check, rule.name)
            if translated is None:
                rule.fallback.append(check)
            else:
                rule.checks.append(translated)
        rules[rule.name] = rule
    return CompiledModel(
        model.__name__, schema.strict, list(schema.checks), rules, unique_sets, whole
    )


@dataclass
class _Draft:
    """A plan while its columns are added."""

    head: list[tuple[str | None, str, str]] = field(default_factory=list)  # extra, then missing
    wrong: list[tuple[str | None, str, str]] = field(default_factory=list)  # then wrong dtypes
    problems: list[str] = field(default_factory=list)
    casts: list[pl.Expr] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    checks: list[RowCheck] = field(default_factory=list)
    fallback_columns: dict[str, Column] = field(default_factory=dict)
    limits: Limits = field(default_factory=dict)


def build_plan(
    compiled: CompiledModel,
    schema: pl.Schema,
    *,
    uncastable: Set[tuple[str, pl.DataType]],
    assumed: frozenset[tuple[str, str]],
) -> Plan:
    """The plan for chunks of `schema`. `uncastable`: (column, dtype) pairs polars has no cast
    for; `assumed`: (column, check) pairs proven for all the data, left out."""
    model = compiled.name
    extra = [c for c in schema if c not in compiled.rules]
    drop = extra if compiled.strict == "filter" else []
    draft = _Draft()
    if compiled.strict is True and extra:
        draft.head.extend((c, "column_in_schema", c) for c in extra)
        draft.problems.append(
            f"column(s) {quoted(extra)} are not in schema {model}, which is strict"
        )
    for rule in compiled.rules.values():
        name = rule.name
        if name in schema:
            _plan_column(draft, rule, schema[name], uncastable, model)
        elif rule.component.required:
            draft.head.append((name, "column_in_dataframe", name))
            draft.problems.append(f"column '{name}' is missing; columns are {quoted(schema)}")
    checks = draft.checks
    if assumed:
        checks = [c for c in checks if (c.column, c.check) not in assumed]
    output = [c for c in schema if c not in drop]
    for subset in compiled.unique_sets:
        if present := [c for c in subset if c in output]:
            fail = pl.struct(present).is_duplicated()
            row = pl.struct(output).struct.json_encode()
            name = "multiple_fields_uniqueness"
            checks.append(RowCheck(None, name, fail, row, group=name))
    fallback = None
    if draft.fallback_columns or compiled.frame_checks:
        import pandera.polars as pdp

        frame_checks = [_unlimited(c, None, draft.limits) for c in compiled.frame_checks]
        fallback = pdp.DataFrameSchema(draft.fallback_columns, checks=frame_checks, name=model)
    return Plan(
        schema_failures=schema_failures(draft.head + draft.wrong),
        problems=draft.problems,
        drop=drop,
        casts=draft.casts,
        raw=draft.raw,
        checks=checks,
        fallback=fallback,
        limits=draft.limits,
    )


def _plan_column(
    draft: _Draft,
    rule: ColumnRule,
    observed: pl.DataType,
    uncastable: Set[tuple[str, pl.DataType]],
    model: str,
) -> None:
    """Add a column present in the input: its cast, dtype verdict and row checks."""
    name, component = rule.name, rule.component
    col, after = pl.col(name), observed
    cast_failed: pl.Expr | None = None
    if rule.coerce and rule.target is not None and after != rule.target:
        cast_failed = _plan_cast(draft, rule, after, rule.target, (name, after) in uncastable)
        after = rule.target
    if rule.target is not None and not _dtype_ok(component, after):
        draft.wrong.append((name, f"dtype('{component.dtype}')", str(after)))
        draft.problems.append(
            f"column '{name}' is {after}; schema {model} expects {component.dtype}"
        )
    text = as_text(col, after)
    if not component.nullable:
        fail = (col if cast_failed is None else pl.col(RAW + name)).is_null()
        if after in (pl.Float32, pl.Float64):
            fail = fail | col.is_nan().fill_null(False)
        draft.checks.append(RowCheck(name, "not_nullable", fail, text))
    if component.unique:
        # values that failed to cast are nulls, but no duplicates of each other
        tag = None if cast_failed is None else pl.when(cast_failed).then(pl.int_range(pl.len()))
        dup = col if tag is None else pl.struct(col, tag)
        draft.checks.append(RowCheck(name, "field_uniqueness", dup.is_duplicated(), text))
    for vc in rule.checks:
        passed = vc.passed if vc.not_text is None or after == pl.String else vc.not_text
        fail = passed.eq_missing(False) if vc.ignore_na else passed.ne_missing(True)
        by_value = (
            cast_failed is None and after == pl.String and vc.name.startswith(_BY_VALUE_CHECKS)
        )
        if cast_failed is not None:
            fail = fail & cast_failed.not_()
        draft.checks.append(RowCheck(name, vc.name, fail, text, vc.limit, by_value=by_value))
    if rule.fallback:
        draft.fallback_columns[name] = fallback_column(name, rule.fallback, draft.limits)


def _plan_cast(
    draft: _Draft, rule: ColumnRule, observed: pl.DataType, target: pl.DataType, missing: bool
) -> pl.Expr:
    """Add a column's cast to `target` and its `coerce_dtype` check; return the expression
    true where a value failed to cast. `missing`: polars has no such cast (every value fails)."""
    name = rule.name
    if missing:
        draft.casts.append(pl.lit(None, target).alias(name))
        draft.problems.append(f"column '{name}' is {observed}; polars cannot cast it to {target}")
    else:
        draft.casts.append(non_strict_cast(pl.col(name), observed, target).alias(name))
    draft.raw.append(name)
    before = pl.col(RAW + name)
    cast_failed = before.is_not_null() & pl.col(name).is_null()
    coerce = f"coerce_dtype('{rule.component.dtype}')"
    draft.checks.append(RowCheck(name, coerce, cast_failed, as_text(before, observed)))
    return cast_failed


def non_strict_cast(col: pl.Expr, observed: pl.DataType, target: pl.DataType) -> pl.Expr:
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


def _dtype_ok(component: Column, dtype: pl.DataType) -> bool:
    """Pandera's verdict on a column of `dtype`, once per plan rather than per chunk."""
    from pandera.api.polars.types import PolarsData

    assert component.dtype is not None
    return bool(component.dtype.check(dtype, PolarsData(pl.LazyFrame(schema={"x": dtype}), "x")))


def fallback_column(name: str, checks: list[Check], limits: Limits) -> Column:
    """A Pandera column holding only `checks` (any dtype, nulls allowed), each reporting every
    failing row; their `n_failure_cases` go to `limits`."""
    import pandera.polars as pdp

    unlimited = [_unlimited(c, name, limits) for c in checks]
    return pdp.Column(None, checks=unlimited, nullable=True, name=name)


def _unlimited(check: Check, column: str | None, limits: Limits) -> Check:
    """`check` reporting every failing row (for the mask); its `n_failure_cases` to `limits`."""
    if check.n_failure_cases is None:
        return check
    limits[(column, check_name(check))] = check.n_failure_cases
    unlimited = copy.copy(check)
    unlimited.n_failure_cases = None
    return unlimited
