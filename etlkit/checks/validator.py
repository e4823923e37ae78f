"""The chunk validator: a model compiled once, then one `select` of boolean masks per chunk.

`ChunkValidator` plans each distinct input schema once (`etlkit.checks.plan`), checks a chunk
in one pass over its rows, and turns only the failing rows of failing checks into the report
(`etlkit.checks.failures`); checks left to Pandera run in one small schema on the whole chunk.
Shortcuts that change no verdict live here too: an increasing unique column is not hashed, a
pattern check runs on a column's distinct values, proven checks are skipped. What is
translated, and where the verdict deviates from Pandera's, is documented in
`etlkit.checks.validation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

import polars as pl

from etlkit.checks.failures import (
    apply_limits,
    from_pandera,
    mask_from,
    schema_failures,
)
from etlkit.checks.keys import strictly_increasing
from etlkit.checks.plan import (
    RAW,
    ColumnRule,
    Plan,
    RowCheck,
    build_plan,
    compile_model,
    fallback_column,
    non_strict_cast,
)
from etlkit.checks.proofs import proven_checks
from etlkit.model.schema import matched

if TYPE_CHECKING:
    import pandera.polars as pdp
    import pyarrow as pa
    from pandera.api.checks import Check
    from pandera.api.polars.container import DataFrameSchema

    from etlkit.storage.parquet import ColumnStats

_MAX_PLANS: Final = 16
#: What polars raises for a cast that cannot give a value (a null) for some row.
_CAST_ERRORS: Final = (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError)
#: Chunks of fewer rows run every check row by row.
_BY_VALUE_MIN_ROWS: Final = 4096
#: A column with more distinct values than its rows over this runs its checks row by row.
_BY_VALUE_RATIO: Final = 16


@dataclass(frozen=True)
class ChunkReport:
    """The outcome of validating one chunk.

    Attributes:
        data: the chunk after coercion; the very object passed in when nothing was cast.
        invalid: rows failing any row-level check, or None when every row passed.
        failures: one row per failed check and row: `column`, `check`, `failure_case` (the value
            as text, "null" for nulls) and `index` (the row in the chunk; null for failures of
            the schema such as a missing column or a wrong dtype).
        mended: whether the rows left once the `invalid` ones are taken out pass the model,
            failures of no row included (values that did not coerce left a column in the wrong
            dtype, so its checks could not run): Pandera's verdict on the rows a drop keeps.
    """

    data: pl.DataFrame
    invalid: pl.Series | None
    failures: pl.DataFrame
    mended: bool = False

    @property
    def ok(self) -> bool:
        """Whether the chunk passed every check."""
        return self.failures.height == 0

    @property
    def n_invalid(self) -> int:
        """How many rows failed at least one row-level check."""
        return 0 if self.invalid is None else int(self.invalid.sum())


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
        compiled = compile_model(model)
        self.model = model
        self.model_name = model.__name__
        self._compiled = compiled
        self._whole = compiled.whole
        self._frame_checks: list[Check] = compiled.frame_checks
        self._rules: dict[str, ColumnRule] = compiled.rules
        self._plans: dict[tuple[tuple[str, pl.DataType], ...], Plan] = {}
        self._uncastable: set[tuple[str, pl.DataType]] = set()
        self._assumed: frozenset[tuple[str, str]] = frozenset()
        self._trivial: dict[pa.Schema, bool] = {}  # by batch schema: `nothing_to_check`
        self._row_by_row: set[tuple[str, str]] = set()  # see `_passes_by_value`

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
            raw = [df.get_column(c).alias(RAW + c) for c in plan.raw]
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

    def _passes_by_value(self, check: RowCheck, data: pl.DataFrame) -> bool:
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
        """Checks that column statistics alone prove every row passes: `(column, check)`; see
        `etlkit.checks.proofs`."""
        return proven_checks(self._rules.values(), stats)

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
            frame = frame.with_columns(pl.col(c).alias(RAW + c) for c in plan.raw)
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
        right. Then they need no conversion to polars either.

        Known by the schema's fields: a source's chunks differ in their metadata (each names
        its `Origin`), which a schema's hash counts, so a key of the whole schema would be new
        for every chunk and the answers would pile up, one per chunk."""
        if schema.metadata:
            schema = schema.remove_metadata()
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

    def _plan(self, schema: pl.Schema) -> Plan:
        key = tuple(schema.items())
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[key] = self._build_plan(schema)
        return plan

    def _replan_without_missing_casts(self, df: pl.DataFrame, plan: Plan) -> Plan:
        """Replan after meeting a cast polars does not have (String to Date, List to Int64).

        Only a value shows it, so it is found on the first chunk holding one. Every non-null
        value of such a column fails `coerce_dtype` (as in Pandera) and becomes null.
        """
        for name in plan.raw:
            target = self._rules[name].target
            assert target is not None
            try:
                df.select(non_strict_cast(pl.col(name), df.schema[name], target))
            except pl.exceptions.InvalidOperationError:
                self._uncastable.add((name, df.schema[name]))
            except pl.exceptions.ComputeError:
                pass  # some values raise, not the kind of cast: see `_casts_without_raising`
        plan = self._plans[tuple(df.schema.items())] = self._build_plan(df.schema)
        return plan

    def _casts_without_raising(self, df: pl.DataFrame, plan: Plan) -> list[pl.Expr]:
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
                    cast_expr = non_strict_cast(
                        pl.when(kept).then(pl.col(name)), values.dtype, target
                    )
                    cast_expr = cast_expr.alias(name)
            casts.append(cast_expr)
        return casts

    def _build_plan(self, schema: pl.Schema) -> Plan:
        return build_plan(
            self._compiled, schema, uncastable=self._uncastable, assumed=self._assumed
        )

    def _check_with_pandera(self, df: pl.DataFrame) -> ChunkReport:
        """`Model.validate` on the chunk, for models using features not translated."""
        import pandera.errors

        try:
            data = self.model.validate(df, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            failures = from_pandera(exc.failure_cases)
            invalid = mask_from(failures, df.height)
            of_no_row = bool(failures.get_column("index").is_null().any())
            mended = invalid is not None and of_no_row and self._passes(df.filter(~invalid))
            kept = self._coerced(df, invalid)
            return ChunkReport(data=kept, invalid=invalid, failures=failures, mended=mended)
        except pl.exceptions.InvalidOperationError as exc:
            # Pandera found failures it cannot report (a failing Duration value, which polars
            # does not cast to text): the chunk fails as a whole, as no row can be named
            found = (None, "pandera_report", f"Pandera could not report its failures: {exc}")
            return ChunkReport(data=df, invalid=None, failures=schema_failures([found]))
        assert isinstance(data, pl.DataFrame)
        return ChunkReport(data=data, invalid=None, failures=schema_failures([]))

    def _passes(self, kept: pl.DataFrame) -> bool:
        """Whether `Model.validate` passes the rows a drop keeps (only asked when some failure
        is of no row: those are the ones taking out rows may mend)."""
        import pandera.errors

        try:
            self.model.validate(kept, lazy=True)
        except (pandera.errors.SchemaErrors, pl.exceptions.PolarsError):
            return False
        return True

    def _coerced(self, df: pl.DataFrame, invalid: pl.Series | None) -> pl.DataFrame:
        """The chunk with the columns the model coerces cast as Pandera casts them, so the rows
        a failed `Model.validate` keeps under drop or quarantine reach the output in the
        model's types, as on the translated path. A value that does not cast becomes null (its
        row failed); where polars refuses such a value outright, the failing rows' values of
        that column are nulled first, so every chunk of the output has the same types."""
        targets = {
            name: rule.target
            for rule in self._rules.values()
            if rule.coerce and rule.target is not None
            for name in matched(self.model, rule.name, df.columns)
            if name in df.schema and df.schema[name] != rule.target
        }
        if not targets:
            return df
        casts = [non_strict_cast(pl.col(n), df.schema[n], t).alias(n) for n, t in targets.items()]
        try:
            return df.with_columns(casts)
        except pl.exceptions.PolarsError:
            if invalid is None:
                return df
        failing = pl.lit(invalid)
        masked = df.with_columns(
            pl.when(failing).then(None).otherwise(pl.col(n)).alias(n) for n in targets
        )
        try:
            return masked.with_columns(casts)
        except pl.exceptions.PolarsError:  # a kept value polars cannot cast: as validated
            return df


# --- evaluation --------------------------------------------------------------------------------


def _increasing_key(check: RowCheck, data: pl.DataFrame) -> bool:
    """A unique column without nulls whose values increase in this chunk: nothing repeats,
    and comparing neighbours costs a fraction of hashing every value."""
    if check.check != "field_uniqueness" or check.column is None:
        return False
    values = data.get_column(check.column)
    return values.null_count() == 0 and strictly_increasing(values)


def _run_row_checks(
    checks: Sequence[RowCheck], frame: pl.DataFrame
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
    parts = [schema_failures(errors)]
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


def _run_fallback(plan: Plan, data: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series | None]:
    """The checks no polars expression was compiled for, run by Pandera on the whole chunk: a
    column's check sees every column, as in Pandera (`start <= end` registered on `start`)."""
    import pandera.errors

    assert plan.fallback is not None
    try:
        plan.fallback.validate(data, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        failures = from_pandera(exc.failure_cases)
    except pl.exceptions.SchemaError:
        # Pandera cannot stack the report of a check returning one boolean on row-level
        # reports (their failure cases differ in type): run the checks one by one.
        failures = _run_fallback_one_by_one(plan.fallback, data)
    except pl.exceptions.InvalidOperationError as exc:
        # Pandera found failures it cannot report (a failing Duration value, which polars
        # does not cast to text): the chunk fails as a whole, as no row can be named
        found = (None, "pandera_report", f"Pandera could not report its failures: {exc}")
        return schema_failures([found]), None
    else:
        return schema_failures([]), None
    mask = mask_from(failures, data.height)
    return (apply_limits(failures, plan.limits) if plan.limits else failures), mask


def _run_fallback_one_by_one(schema: DataFrameSchema, data: pl.DataFrame) -> pl.DataFrame:
    import pandera.errors
    import pandera.polars as pdp

    singles = [
        pdp.DataFrameSchema({name: fallback_column(name, [check], {})}, name=schema.name)
        for name, column in schema.columns.items()
        for check in column.checks
    ] + [pdp.DataFrameSchema(checks=[check], name=schema.name) for check in schema.checks]
    parts = [schema_failures([])]
    for single in singles:
        try:
            single.validate(data, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            parts.append(from_pandera(exc.failure_cases))
    return pl.concat(parts)


def _raising_casts(values: pl.Series, target: pl.DataType) -> pl.Series | None:
    """Those of `values` (distinct, not null) whose cast to `target` raises, found by halving
    the values that raise together; None when none raises on its own. Only a chunk whose cast
    raised pays for it: about two casts per such value."""
    found: list[pl.Series] = []
    pending = [values]
    while pending:
        part = pending.pop()
        try:
            part.to_frame("v").select(non_strict_cast(pl.col("v"), part.dtype, target))
        except _CAST_ERRORS:
            if part.len() == 1:
                found.append(part)
            else:
                half = part.len() // 2
                pending.extend([part.slice(half), part.head(half)])
    return pl.concat(found) if found else None
