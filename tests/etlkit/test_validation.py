"""ChunkValidator against Pandera itself: the same failing (column, check, row), chunk by chunk."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import pickle
import random
from typing import Any, cast

import pandera.errors
import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from etlkit.checks.validation import (
    ChunkValidator,
    IncreasingKey,
    strictly_increasing,
    summarize,
    validation_error,
)
from etlkit.errors import DataValidationError
from etlkit.model.schema import polars_schema

NAN = math.nan
Failure = tuple[str | None, str, int | None]


def pandera_failures(model: type[pdp.DataFrameModel], df: pl.DataFrame) -> set[Failure]:
    """(column, check, index) of every failure `Model.validate(df, lazy=True)` reports.

    Pandera names the schema in `column` for schema-wide failures; etlkit names the missing or
    extra column there, and leaves it null for dataframe-wide checks.
    """
    try:
        model.validate(df, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return set()
    found = set()
    for row in cases.iter_rows(named=True):
        column = row["column"]
        if row["schema_context"] == "DataFrameSchema":
            named = row["check"] in {"column_in_dataframe", "column_in_schema", "column_ordered"}
            column = row["failure_case"] if named else None
        found.add((column, row["check"], row["index"]))
    return found


def etlkit_failures(model: type[pdp.DataFrameModel], df: pl.DataFrame) -> set[Failure]:
    report = ChunkValidator(model).check(df)
    return {(r["column"], r["check"], r["index"]) for r in report.failures.iter_rows(named=True)}


# --- models and value pools for the parity cases --------------------------------------------


class Numbers(pdp.DataFrameModel):
    eq: int = pdp.Field(eq=1, nullable=True)
    ne: int = pdp.Field(ne=0, nullable=True)
    gt: float = pdp.Field(gt=0, nullable=True)
    ge: float = pdp.Field(ge=0)
    lt: int = pdp.Field(lt=10, nullable=True)
    le: float = pdp.Field(le=1.5, nullable=True)
    between: float = pdp.Field(
        in_range={"min_value": 0, "max_value": 1, "include_min": False}, nullable=True
    )
    day: dt.date = pdp.Field(ge=dt.date(2024, 1, 1), nullable=True)


NUMBERS = {
    "eq": [1, 2, None],
    "ne": [0, 1, -1, None],
    "gt": [0.0, 0.5, -1.0, NAN, None],
    "ge": [0.0, -0.1, 3.0, NAN, None],
    "lt": [9, 10, 11, None],
    "le": [1.5, 1.6, NAN, None],
    "between": [0.0, 0.5, 1.0, 1.1, None],
    "day": [dt.date(2023, 12, 31), dt.date(2024, 1, 1), None],
}


class Strings(pdp.DataFrameModel):
    flag: str = pdp.Field(isin=["A", "N", "R"], nullable=True)
    many: str = pdp.Field(isin=[f"v{i}" for i in range(12)], nullable=True)  # hashed, not compared
    kind: pl.Categorical = pdp.Field(isin=["a", "b"], notin=["c"], nullable=True)
    mode: str = pdp.Field(notin=["CAMEL"], nullable=True)
    code: str = pdp.Field(str_matches=r"[A-Z]{2}\d", nullable=True)
    note: str = pdp.Field(str_contains="ok", nullable=True)
    pre: str = pdp.Field(str_startswith="ab", nullable=True)
    suf: str = pdp.Field(str_endswith="yz")
    name: str = pdp.Field(str_length={"min_value": 2, "max_value": 4}, nullable=True)
    short: str = pdp.Field(str_length={"max_value": 2}, nullable=True)
    exact: str = pdp.Field(str_length={"exact_value": 3}, nullable=True)


STRINGS = {
    "flag": ["A", "N", "X", None],
    "many": ["v0", "v11", "v12", None],
    "kind": ["a", "b", "c", "d", None],
    "mode": ["AIR", "CAMEL", None],
    "code": ["AB1", "ab1", "XAB1", "AB12", None],
    "note": ["ok", "not ok", "nope", None],
    "pre": ["abc", "xab", None],
    "suf": ["xyz", "yzx", None],
    "name": ["a", "ab", "abcd", "abcde", "", None],
    "short": ["ab", "abc", None],
    "exact": ["abc", "ab", None],
}


class Keys(pdp.DataFrameModel):
    id: int = pdp.Field(unique=True)
    tag: str = pdp.Field(unique=True, nullable=True)
    score: float
    label: str


KEYS = {
    "id": [1, 2, 3, 4, 5, None],
    "tag": ["a", "b", "c", None],
    "score": [1.0, NAN, None],
    "label": ["x", None],
}


class Pairs(pdp.DataFrameModel):
    a: int
    b: int
    c: int

    class Config:
        unique = [["a", "b"], ["c"]]  # noqa: RUF012  (Pandera reads a plain class attribute)


PAIRS = {"a": [1, 2], "b": [1, 2], "c": [1, 2, 3, 4, 5, 6, 7, 8]}


class Custom(pdp.DataFrameModel):
    """Checks no polars expression is compiled for: they run in Pandera."""

    a: int = pdp.Field(ge=0, nullable=True)
    b: float = pdp.Field(nullable=True)

    @pdp.check("a", name="even")
    def even(cls, data: Any) -> Any:
        return data.lazyframe.select(pl.col(data.key) % 2 == 0)

    @pdp.dataframe_check
    def a_below_b(cls, data: Any) -> Any:
        return data.lazyframe.select(pl.col("a") < pl.col("b"))


CUSTOM = {"a": [1, 2, -2, 4, None], "b": [0.0, 3.0, 10.0, NAN, None]}


def random_frame(pools: dict[str, list[Any]], seed: int, rows: int = 40) -> pl.DataFrame:
    rng = random.Random(seed)
    return pl.DataFrame(
        {name: [rng.choice(pool) for _ in range(rows)] for name, pool in pools.items()}
    )


MODELS = [(Numbers, NUMBERS), (Strings, STRINGS), (Keys, KEYS), (Pairs, PAIRS), (Custom, CUSTOM)]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("model", "pools"), MODELS, ids=[m.__name__ for m, _ in MODELS])
def test_random_chunks_fail_the_same_checks_on_the_same_rows_as_pandera(
    model: type[pdp.DataFrameModel], pools: dict[str, list[Any]], seed: int
) -> None:
    df = random_frame(pools, seed).cast(dict(polars_schema(model)))
    expected = pandera_failures(model, df)
    assert expected, "the random frame should break something"
    assert etlkit_failures(model, df) == expected


@pytest.mark.parametrize("seed", range(3))
def test_pattern_checks_over_repeated_values_fail_the_same_rows_as_pandera(seed: int) -> None:
    """Chunks this large run pattern checks on their distinct values first."""
    df = random_frame(STRINGS, seed, rows=5_000).cast(dict(polars_schema(Strings)))
    assert etlkit_failures(Strings, df) == pandera_failures(Strings, df)


class Month(pdp.DataFrameModel):
    month: str = pdp.Field(str_matches=r"^\d{4}-\d{2}$", nullable=True)


def test_a_pattern_check_proven_on_distinct_values_keeps_checking_them() -> None:
    months = [f"2025-{m:02d}" for m in range(1, 13)] + [None]
    validator = ChunkValidator(Month)
    clean = pl.DataFrame({"month": [months[i % 13] for i in range(6_000)]})
    assert validator.check(clean).ok

    bad = clean.with_columns(
        pl.when(pl.int_range(pl.len()) == 4_321)
        .then(pl.lit("2025-1"))
        .otherwise(pl.col("month"))
        .alias("month")
    )
    report = validator.check(bad)

    assert report.failures.select("check", "failure_case", "index").to_dicts() == [
        {"check": "str_matches('^\\d{4}-\\d{2}$')", "failure_case": "2025-1", "index": 4321}
    ]
    assert validator._row_by_row == set()


def test_a_pattern_check_over_distinct_values_goes_row_by_row() -> None:
    validator = ChunkValidator(Month)
    unique = pl.DataFrame({"month": [f"{1000 + i % 9000}-{i % 100:02d}" for i in range(6_000)]})
    assert validator.check(unique).ok
    assert validator._row_by_row == {("month", "str_matches('^\\d{4}-\\d{2}$')")}

    bad = pl.DataFrame({"month": ["x", *unique["month"][1:]]})
    assert validator.check(bad).failures["index"].to_list() == [0]


# --- schema-level parity --------------------------------------------------------------------


class Typed(pdp.DataFrameModel):
    a: int = pdp.Field(ge=0)
    b: float = pdp.Field(le=1, nullable=True)
    c: str = pdp.Field(nullable=True)


class TwoChecks(pdp.DataFrameModel):
    a: int = pdp.Field(ge=0)
    b: float = pdp.Field(le=1)


class StrictTyped(Typed):
    class Config:
        strict = True


TYPED = pl.DataFrame({"a": [1, -1, 2], "b": [0.5, 2.0, None], "c": ["x", None, "y"]})
CLEAN = TYPED.filter(pl.col("a") >= 0)


@pytest.mark.parametrize(
    ("model", "df"),
    [
        pytest.param(Typed, TYPED.drop("c"), id="missing-column"),
        pytest.param(Typed, TYPED.drop("a", "c"), id="missing-columns"),
        pytest.param(Typed, TYPED.cast({"a": pl.Int32}), id="int32-for-int64"),
        pytest.param(Typed, TYPED.cast({"b": pl.Float32}), id="float32-for-float64"),
        pytest.param(Typed, TYPED.cast({"a": pl.String}), id="check-cannot-run-on-dtype"),
        pytest.param(TwoChecks, TYPED.cast({"a": pl.String}), id="check-cannot-run-and-others"),
        pytest.param(StrictTyped, TYPED.with_columns(d=pl.lit(1)), id="strict-extra-column"),
        pytest.param(
            StrictTyped, TYPED.drop("b").with_columns(d=pl.lit(1)), id="strict-and-missing"
        ),
        pytest.param(Typed, TYPED.with_columns(d=pl.lit(1)), id="extra-column-not-strict"),
    ],
)
def test_schema_failures_match_pandera(model: type[pdp.DataFrameModel], df: pl.DataFrame) -> None:
    assert etlkit_failures(model, df) == pandera_failures(model, df)


def test_schema_failures_have_no_row_index_and_mark_no_rows() -> None:
    report = ChunkValidator(Typed).check(TYPED.drop("c").cast({"b": pl.Float32}).head(1))
    assert not report.ok
    assert report.invalid is None
    assert report.failures.get_column("index").null_count() == report.failures.height
    assert set(report.failures.get_column("failure_case")) == {"c", "Float32"}


def test_every_extra_column_is_reported_under_strict() -> None:
    # Pandera stops at the first extra column; reporting them all saves a round trip.
    df = CLEAN.with_columns(d=pl.lit(1), e=pl.lit(2))
    assert etlkit_failures(StrictTyped, df) == {
        ("d", "column_in_schema", None),
        ("e", "column_in_schema", None),
    }


def test_strict_filter_drops_extra_columns() -> None:
    class Filtered(Typed):
        class Config:
            strict = "filter"

    df = CLEAN.with_columns(d=pl.lit(1))
    report = ChunkValidator(Filtered).check(df)
    assert report.ok
    assert report.data.columns == ["a", "b", "c"]
    assert_frame_equal(report.data, Filtered.validate(df))


def test_check_error_is_reported_like_pandera() -> None:
    report = ChunkValidator(Typed).check(TYPED.cast({"a": pl.String}))
    errors = report.failures.filter(pl.col("check") == "greater_than_or_equal_to(0)")
    assert errors.height == 1
    assert errors.item(0, "index") is None
    assert errors.item(0, "failure_case").startswith(("ComputeError(", "InvalidOperationError("))


def test_schema_problems_names_missing_wrong_and_extra_columns() -> None:
    df = TYPED.drop("c").cast({"b": pl.Float32}).with_columns(d=pl.lit(1))
    problems = ChunkValidator(StrictTyped).schema_problems(df)
    assert len(problems) == 3
    assert any("'d'" in p and "strict" in p for p in problems)
    assert any("'c' is missing" in p for p in problems)
    assert any("'b' is Float32" in p and "Float64" in p for p in problems)
    assert ChunkValidator(StrictTyped).schema_problems(TYPED) == []


# --- coercion ------------------------------------------------------------------------------


class Coerced(pdp.DataFrameModel):
    d: int = pdp.Field(ge=0, coerce=True)
    e: float = pdp.Field(nullable=True, coerce=True)
    s: str = pdp.Field(unique=True, coerce=True)


class AllCoerced(pdp.DataFrameModel):
    d: int = pdp.Field(ge=0)
    day: dt.date = pdp.Field(nullable=True)

    class Config:
        coerce = True


@pytest.mark.parametrize(
    ("model", "df"),
    [
        (Coerced, pl.DataFrame({"d": ["1", "2"], "e": [1, None], "s": [10, 20]})),
        (Coerced, pl.DataFrame({"d": [1.0, 7.0], "e": ["1.5", "NaN"], "s": ["x", "y"]})),
        (AllCoerced, pl.DataFrame({"d": ["3", "0"], "day": [dt.datetime(2024, 1, 31, 9), None]})),
    ],
)
def test_coercion_casts_like_pandera(model: type[pdp.DataFrameModel], df: pl.DataFrame) -> None:
    report = ChunkValidator(model).check(df)
    assert report.ok, report.failures
    assert_frame_equal(report.data, model.validate(df, lazy=True))


def test_value_that_does_not_cast_is_a_coerce_failure_on_its_row() -> None:
    df = pl.DataFrame({"d": ["1", "x", None, "-2"], "e": [1, 2, 3, 4], "s": ["a", "b", "c", "d"]})
    report = ChunkValidator(Coerced).check(df)
    assert etlkit_failures(Coerced, df) == {
        ("d", "coerce_dtype('Int64')", 1),
        ("d", "not_nullable", 2),
        ("d", "greater_than_or_equal_to(0)", 3),
    }
    assert report.data.schema["d"] == pl.Int64
    assert report.failures.filter(pl.col("index") == 1).item(0, "failure_case") == "x"
    assert report.invalid is not None
    assert report.invalid.to_list() == [False, True, True, True]
    # Pandera flags the same unparseable row (it also lists the column's nulls as cast failures).
    pandera_rows = {i for _, check, i in pandera_failures(Coerced, df) if "coerce" in check}
    assert pandera_rows - {2} == {1}


@pytest.mark.parametrize(
    ("dtype", "values", "rows"),
    [
        # 999.999 rounds to 1000.00: past the precision, and polars raises for the column
        (pl.Decimal(5, 2), pl.Series([1.5, 999.999, None, 2.0, 999.999]), {1, 4}),
        (pl.Decimal(5, 2), pl.Series(["1.5", "99999.99", None, "x", "2"]), {1, 3}),
        (pl.Int64, pl.Series(["1", "b", None, "1", "c"], dtype=pl.Categorical), {0, 1, 3, 4}),
        (pl.Enum(["a", "b"]), pl.Series([1, None, 2, 3, 1]), {0, 2, 3, 4}),
    ],
    ids=["float-decimal", "string-decimal", "categorical-int", "int-enum"],
)
def test_a_cast_polars_raises_on_is_a_coerce_failure_on_the_rows_that_raise(
    dtype: pl.DataType, values: pl.Series, rows: set[int]
) -> None:
    field = pdp.Field(coerce=True, nullable=True)
    raising = type("Raising", (pdp.DataFrameModel,), {"__annotations__": {"x": dtype}, "x": field})
    Raising = cast("type[pdp.DataFrameModel]", raising)
    df = values.alias("x").to_frame()
    report = ChunkValidator(Raising).check(df)
    assert {(c, i) for c, _, i in etlkit_failures(Raising, df)} == {("x", i) for i in rows}
    assert report.failures.get_column("check").str.starts_with("coerce_dtype(").all()
    assert report.data.schema["x"] == dtype
    assert report.data.get_column("x").null_count() == len(rows) + 1
    assert report.invalid is not None
    assert set(report.invalid.arg_true().to_list()) == rows
    # Pandera fails the column's every row for such a cast: these among them
    pandera_rows = {i for _, check, i in pandera_failures(Raising, df) if "coerce" in check}
    assert rows < pandera_rows


def test_unparseable_values_are_not_duplicates_of_each_other() -> None:
    df = pl.DataFrame({"d": [1, 2, 3], "e": [1, 2, 3], "s": [1, 2, 3]}).with_columns(
        e=pl.Series(["a", "b", None])
    )
    failures = etlkit_failures(Coerced, df)
    assert failures == {("e", "coerce_dtype('Float64')", 0), ("e", "coerce_dtype('Float64')", 1)}


@pytest.mark.parametrize(
    ("model", "df", "column", "rows"),
    [
        (
            Coerced,
            pl.DataFrame({"d": [[1], None, [2]], "e": [1.0] * 3, "s": ["a", "b", "c"]}),
            "d",
            {0, 2},
        ),
        # polars 2 has no String -> Date cast: Pandera cannot coerce such a column either
        (
            AllCoerced,
            pl.DataFrame({"d": [1, 2, 3], "day": ["2024-01-31", "x", None]}),
            "day",
            {0, 1},
        ),
    ],
)
def test_a_cast_polars_does_not_have_fails_every_value(
    model: type[pdp.DataFrameModel], df: pl.DataFrame, column: str, rows: set[int]
) -> None:
    validator = ChunkValidator(model)
    for _ in range(2):  # found on the first chunk, then planned for
        report = validator.check(df)
        coerce = report.failures.filter(pl.col("check").str.starts_with("coerce_dtype("))
        assert set(coerce.get_column("column")) == {column}
        assert set(coerce.get_column("index")) == rows
        assert report.data.schema[column] == polars_schema(model)[column]
    pandera_rows = {i for _, check, i in pandera_failures(model, df) if "coerce" in check}
    assert pandera_rows == {0, 1, 2}  # Pandera counts the null as a failed cast too
    assert any("cannot cast" in p for p in validator.schema_problems(df))


# --- the fallback to Pandera ----------------------------------------------------------------


def test_custom_checks_run_in_pandera_and_mark_their_rows() -> None:
    df = pl.DataFrame(CUSTOM)
    report = ChunkValidator(Custom).check(df)
    assert etlkit_failures(Custom, df) == pandera_failures(Custom, df)
    failing_rows = report.failures.get_column("index").drop_nulls().unique().sort().to_list()
    assert report.invalid is not None
    assert report.invalid.arg_true().to_list() == failing_rows
    assert report.failures.filter(pl.col("check") == "a_below_b").get_column("column").null_count()


def test_n_failure_cases_bounds_the_report_but_not_the_mask() -> None:
    class Limited(pdp.DataFrameModel):
        a: int

        @pdp.check("a", name="small", n_failure_cases=2)
        def small(cls, data: Any) -> Any:
            return data.lazyframe.select(pl.col(data.key) < 10)

    df = pl.DataFrame({"a": [10, 11, 12, 1, 13]})
    report = ChunkValidator(Limited).check(df)
    assert (
        etlkit_failures(Limited, df)
        == pandera_failures(Limited, df)
        == {
            ("a", "small", 0),
            ("a", "small", 1),
        }
    )
    assert report.n_invalid == 4


def test_a_check_returning_one_boolean_is_reported_without_a_row() -> None:
    class Aggregate(pdp.DataFrameModel):
        a: int

        @pdp.check("a", name="sums_to_ten")
        def sums_to_ten(cls, data: Any) -> Any:
            return data.lazyframe.select(pl.col(data.key).sum() == 10).collect().item()

        @pdp.check("a", name="positive")
        def positive(cls, data: Any) -> Any:
            return data.lazyframe.select(pl.col(data.key) > 0)

    report = ChunkValidator(Aggregate).check(pl.DataFrame({"a": [1, -2]}))
    assert {(r[0], r[1], r[3]) for r in report.failures.iter_rows()} == {
        ("a", "sums_to_ten", None),
        ("a", "positive", 1),
    }


def test_built_in_checks_compile_whatever_pandera_registered_after_the_schema_was_built() -> None:
    from pandera.api.polars.types import PolarsData

    class Early(pdp.DataFrameModel):
        level: int = pdp.Field(in_range={"min_value": 0, "max_value": 9})

    dispatcher = Early.to_schema().columns["level"].checks[0]._check_fn
    # the schema's copy as made before a first `validate` registered polars' implementation
    dispatcher._function_registry.pop(PolarsData, None)
    with contextlib.suppress(pandera.errors.SchemaErrors):
        Typed.validate(TYPED, lazy=True)  # registers polars' implementations, if none did yet

    validator = ChunkValidator(Early)

    assert validator.scan_clean(pl.LazyFrame({"level": [1, 2]})) is True  # compiled, not Pandera
    assert etlkit_failures(Early, pl.DataFrame({"level": [1, 12]})) == {
        ("level", "in_range(0, 9)", 1)
    }


class Interval(pdp.DataFrameModel):
    start: int
    end: int

    @pdp.check("start", name="before_end")
    def before_end(cls, data: Any) -> Any:
        return data.lazyframe.select(pl.col("start") <= pl.col("end"))


def test_a_column_check_reading_another_column_sees_the_whole_chunk_as_in_pandera() -> None:
    df = pl.DataFrame({"start": [1, 2, 5], "end": [2, 3, 4]})
    report = ChunkValidator(Interval).check(df)
    assert etlkit_failures(Interval, df) == pandera_failures(Interval, df)
    assert etlkit_failures(Interval, df) == {("start", "before_end", 2)}
    assert report.invalid is not None
    assert report.invalid.to_list() == [False, False, True]


class MistypedIsin(pdp.DataFrameModel):
    flag: bool = pdp.Field(notin=["x", "y"])
    code: bool = pdp.Field(isin=["a"], nullable=True)


def test_isin_on_a_column_that_is_not_text_fails_as_in_pandera() -> None:
    df = pl.DataFrame({"flag": [True, False], "code": [True, None]})
    report = ChunkValidator(MistypedIsin).check(df)
    assert etlkit_failures(MistypedIsin, df) == pandera_failures(MistypedIsin, df)
    assert {r[:2] for r in etlkit_failures(MistypedIsin, df)} == {
        ("flag", "notin(['x', 'y'])"),
        ("code", "isin(['a'])"),
    }
    assert (
        report.failures.get_column("failure_case").str.starts_with("InvalidOperationError(").all()
    )
    assert report.invalid is None  # a check that cannot run marks no row


class Ordered(pdp.DataFrameModel):
    a: int = pdp.Field(ge=0)
    b: str

    class Config:
        ordered = True


class Pattern(pdp.DataFrameModel):
    x: int = pdp.Field(alias=r"^x_\d+$", regex=True, ge=0)


@pytest.mark.parametrize(
    ("model", "df"),
    [
        (Ordered, pl.DataFrame({"b": ["p", "q"], "a": [1, -1]})),
        (Pattern, pl.DataFrame({"x_1": [1, -1], "x_2": [-5, 5]})),
    ],
)
def test_models_with_untranslated_features_are_validated_by_pandera(
    model: type[pdp.DataFrameModel], df: pl.DataFrame
) -> None:
    assert etlkit_failures(model, df) == pandera_failures(model, df)


# --- the report ------------------------------------------------------------------------------


def test_clean_chunk_is_ok_with_no_mask_and_the_same_frame() -> None:
    df = pl.DataFrame({"a": [1, 2], "b": [0.5, None], "c": ["x", None]})
    report = ChunkValidator(Typed).check(df)
    assert report.ok
    assert report.invalid is None
    assert report.n_invalid == 0
    assert report.data is df
    assert report.failures.schema == pl.Schema(
        {"column": pl.String, "check": pl.String, "failure_case": pl.String, "index": pl.Int64}
    )


def test_mask_marks_exactly_the_failing_rows() -> None:
    df = random_frame(NUMBERS, seed=42).cast(dict(polars_schema(Numbers)))
    report = ChunkValidator(Numbers).check(df)
    rows = set(report.failures.get_column("index").drop_nulls().to_list())
    assert report.invalid is not None
    assert set(report.invalid.arg_true().to_list()) == rows
    assert report.n_invalid == len(rows)
    assert report.failures.filter(pl.col("failure_case") == "null").height > 0


def test_one_validator_serves_chunks_of_different_schemas() -> None:
    validator = ChunkValidator(Typed)
    assert validator.check(TYPED).n_invalid == 1
    assert not validator.check(TYPED.drop("c")).ok
    assert validator.check(TYPED.filter(pl.col("a") > 0)).ok


def _failures(checks: int, values: int) -> pl.DataFrame:
    rows = [(f"col{c}", f"check{c}", str(v), v) for c in range(checks) for v in range(values)]
    return pl.DataFrame(rows, schema=["column", "check", "failure_case", "index"], orient="row")


def test_summary_shows_at_most_ten_checks_with_five_examples_each() -> None:
    lines = summarize(_failures(checks=12, values=7)).splitlines()
    assert len(lines) == 11
    assert lines[0] == "column 'col0' failed check0 on 7 rows (examples: 0, 1, 2, 3, 4)"
    assert lines[-1] == "... and 2 more checks"


def test_summary_of_schema_failures_has_no_row_count() -> None:
    report = ChunkValidator(Typed).check(TYPED.drop("c").cast({"b": pl.Float32}))
    assert summarize(report.failures).splitlines() == [
        "column 'c' failed column_in_dataframe",
        "column 'b' failed dtype('Float64') (found: Float32)",
        "column 'a' failed greater_than_or_equal_to(0) on 1 row (examples: -1)",
        "column 'b' failed less_than_or_equal_to(1) on 1 row (examples: 2.0)",
    ]


def test_error_names_pipeline_node_run_chunk_column_and_check() -> None:
    df = pl.DataFrame({"a": [1, -1, -7], "b": [0.5, None, None], "c": ["x", "y", "z"]})
    failures = ChunkValidator(Typed).check(df).failures
    exc = validation_error(
        failures,
        pipeline="monthly_report",
        node="monthly",
        run_id="20250301T020000Z-7f3a2c",
        chunk=3,
        model_name="Typed",
    )
    assert isinstance(exc, DataValidationError)
    with pytest.raises(
        DataValidationError,
        match=(
            r"Output of node 'monthly' in pipeline 'monthly_report' \(run 20250301T020000Z-7f3a2c\)"
            r" broke schema Typed on chunk 3: column 'a' failed greater_than_or_equal_to\(0\)"
            r" on 2 rows \(examples: -1, -7\)\. Fix node 'monthly'"
        ),
    ):
        raise exc
    copy = pickle.loads(pickle.dumps(exc))
    assert str(copy) == str(exc)
    assert (copy.pipeline, copy.node, copy.run_id, copy.chunk) == (
        "monthly_report",
        "monthly",
        "20250301T020000Z-7f3a2c",
        3,
    )
    assert (copy.n_failures, copy.n_rows, copy.checks) == (
        2,
        2,
        [("a", "greater_than_or_equal_to(0)", 2)],
    )


def test_error_lists_several_checks_one_per_line() -> None:
    exc = validation_error(
        _failures(checks=12, values=7),
        pipeline="p",
        node="n",
        run_id="r",
        chunk=None,
        model_name="M",
    )
    message = str(exc)
    assert message.startswith("Output of node 'n' in pipeline 'p' (run r) broke schema M: ")
    assert "84 failures in 12 checks:\n  - column 'col0' failed check0 on 7 rows" in message
    assert "  - ... and 2 more checks\n" in message


# -- keys seen in increasing order --------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([1, 2, 5], pl.Int64, True),
        ([1, None, 2, None], pl.Int64, True),  # nulls are left out
        ([1, 2, 2], pl.Int64, False),
        ([2, 1], pl.Int64, False),
        (["a", "b", "ba"], pl.String, True),
        (["b", "a"], pl.String, False),
        ([1.0, 2.0, NAN], pl.Float64, True),  # NaN sorts last and occurs once
        ([1.0, NAN, NAN], pl.Float64, False),
        ([dt.date(2025, 1, 1), dt.date(2025, 1, 2)], pl.Date, True),
        ([], pl.Int64, True),
        ([{"a": 1}, {"a": 2}], pl.Struct({"a": pl.Int64}), False),  # no order: not proven
    ],
)
def test_strictly_increasing(values: list[Any], dtype: pl.DataType, expected: bool) -> None:
    assert strictly_increasing(pl.Series(values, dtype=dtype)) is expected


def test_increasing_key_holds_across_chunks_only_while_each_exceeds_the_last() -> None:
    def chunk(*ids: int | None) -> pa.RecordBatch:
        return pa.record_batch({"id": pa.array(ids, pa.int64())})

    key = IncreasingKey("id")
    for ids in [(1, 2), (None,), (3, 7), ()]:
        key.update(chunk(*ids))
    assert key.holds

    nulls = IncreasingKey("id")
    for ids in [(1, None), (2, None, 3)]:  # a null repeats a null, as in Pandera's `unique`
        nulls.update(chunk(*ids))
    assert not nulls.holds

    key.update(chunk(7, 8))  # 7 again, across the chunk boundary
    assert not key.holds
    key.update(chunk(9))
    assert not key.holds  # for good

    missing = IncreasingKey("other")
    missing.update(chunk(1))
    assert not missing.holds


def test_increasing_key_compares_datetimes_python_cannot_hold() -> None:
    far = pl.Series("at", [1, 2**62], dtype=pl.Int64).cast(pl.Datetime("ms")).to_arrow()
    key = IncreasingKey("at")
    key.update(pa.record_batch({"at": far}))
    key.update(pa.record_batch({"at": far.slice(1)}))  # the last value again
    assert not key.holds


class Spans(pdp.DataFrameModel):
    took: pl.Duration("us") = pdp.Field(ge=dt.timedelta(0))
    at: pl.Datetime("ms") = pdp.Field(le=dt.datetime(2020, 1, 1))


def test_failing_durations_and_datetimes_past_python_years_are_reported() -> None:
    df = pl.DataFrame(
        {
            "took": pl.Series([-5, 1, 86_400_000_003], dtype=pl.Duration("us")),
            "at": pl.Series([0, 2**62, 1], dtype=pl.Int64).cast(pl.Datetime("ms")),
        }
    )
    report = ChunkValidator(Spans).check(df)
    assert {(r[0], r[2], r[3]) for r in report.failures.iter_rows()} == {
        ("took", "-5µs", 0),
        ("at", f"{2**62}ms", 1),
    }
    assert report.invalid is not None
    assert report.invalid.to_list() == [True, True, False]


def test_a_unique_column_increasing_in_a_chunk_passes_and_repeats_still_fail() -> None:
    validator = ChunkValidator(Keys)
    ok = validator.check(
        pl.DataFrame(
            {"id": [1, 2, 3], "tag": ["a", "b", "c"], "score": [1.0] * 3, "label": ["x"] * 3}
        )
    )
    assert ok.ok
    repeated = validator.check(
        pl.DataFrame(
            {"id": [1, 2, 2], "tag": ["a", "b", "c"], "score": [1.0] * 3, "label": ["x"] * 3}
        )
    )
    assert not repeated.ok
    assert repeated.failures.filter(pl.col("check") == "field_uniqueness").height == 2
    nulls = validator.check(
        pl.DataFrame(
            {"id": [1, None, None], "tag": ["a", "b", "c"], "score": [1.0] * 3, "label": ["x"] * 3}
        )
    )
    assert nulls.failures.filter(pl.col("check") == "field_uniqueness").height == 2
