"""Validation between stages: policies, rejects, failure tables, dataset-level checks."""

from __future__ import annotations

from typing import Any

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink, MemorySource


class Bill(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(nullable=False)
    amount: float = pdp.Field(ge=0)


class UniqueBill(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(unique=True)
    amount: float


def bills(amounts: list[float], ids: list[int] | None = None) -> pa.Table:
    return pa.table({"invoice_id": ids or list(range(1, len(amounts) + 1)), "amount": amounts})


AMOUNTS = [1.0, 2.0, 3.0, 4.0, -5.0, 6.0, -7.0, 8.0]  # rows 5 and 7 are invalid, in chunk 3 and 4


def staged(settings: ek.Settings, pipeline: str, run_id: str, node: str) -> pl.DataFrame:
    staging = Staging(settings.paths.staging_root)
    return pl.read_parquet(staging.files(pipeline, run_id, node))


def test_fail_policy_stops_the_run_on_the_chunk_with_bad_rows(settings: ek.Settings) -> None:
    class Fails(ek.Pipeline):
        src = MemorySource(bills(AMOUNTS), schema=Bill, chunk_rows=2)
        out = MemorySink(src)

    result = Fails.run(settings=settings)

    error = result.error
    assert isinstance(error, ek.DataValidationError)
    message = str(error)
    assert "Output of node 'src' in pipeline 'fails'" in message
    assert f"(run {result.run_id})" in message
    assert "broke schema Bill on chunk 3" in message
    assert "column 'amount' failed greater_than_or_equal_to(0) on 1 row (examples: -5.0)" in message
    assert not Fails.out.committed
    failures = staged(settings, "fails", result.run_id, "src.failures")
    assert failures.select("column", "check", "chunk").row(0) == (
        "amount",
        "greater_than_or_equal_to(0)",
        3,
    )


def test_drop_policy_discards_and_counts_invalid_rows(settings: ek.Settings) -> None:
    class Drops(ek.Pipeline):
        src = MemorySource(bills(AMOUNTS), schema=Bill, chunk_rows=2).expect(on_invalid="drop")
        out = MemorySink(src)

    result = Drops.run(settings=settings)

    assert result.state == "success", result.error
    assert Drops.out.table().column("invoice_id").to_pylist() == [1, 2, 3, 4, 6, 8]
    assert result.nodes["src"].invalid_rows == 2
    manifest = Staging(settings.paths.staging_root).manifest("drops", result.run_id, "src")
    assert manifest is not None
    assert manifest.extra["invalid_rows"] == 2
    assert manifest.extra["policy"] == "drop"


def test_quarantine_policy_stages_rejects_with_check_column_and_reason(
    settings: ek.Settings,
) -> None:
    class Quarantines(ek.Pipeline):
        src = MemorySource(bills(AMOUNTS), schema=Bill, chunk_rows=2).expect(
            on_invalid="quarantine"
        )
        out = MemorySink(src)

    result = Quarantines.run(settings=settings)

    assert result.state == "success", result.error
    rejects = staged(settings, "quarantines", result.run_id, "src.rejects")
    assert rejects.get_column("invoice_id").to_list() == [5, 7]
    assert rejects.get_column("_check").to_list() == ["greater_than_or_equal_to(0)"] * 2
    assert rejects.get_column("_column").to_list() == ["amount", "amount"]
    assert rejects.get_column("_reason")[0] == (
        "column 'amount' failed greater_than_or_equal_to(0): -5.0"
    )
    assert Quarantines.out.table().num_rows == 6


def test_pipeline_default_policy_applies_to_every_node(settings: ek.Settings) -> None:
    class Default(ek.Pipeline):
        on_invalid = "drop"
        src = MemorySource(bills(AMOUNTS), schema=Bill, chunk_rows=2)
        out = MemorySink(src)

    result = Default.run(settings=settings)

    assert result.state == "success", result.error
    assert result.nodes["src"].invalid_rows == 2


def test_max_invalid_fraction_fails_even_under_drop(settings: ek.Settings) -> None:
    class TooMany(ek.Pipeline):
        src = MemorySource(bills(AMOUNTS), schema=Bill, chunk_rows=2).expect(
            on_invalid="quarantine", max_invalid_fraction=0.1
        )
        out = MemorySink(src)

    result = TooMany.run(settings=settings)

    assert isinstance(result.error, ek.DataValidationError)
    assert "2 of 8 rows (25.00%) broke schema Bill, above max_invalid_fraction 10.00%" in str(
        result.error
    )
    staging = Staging(settings.paths.staging_root)
    assert staging.manifest("too_many", result.run_id, "src") is None
    assert staging.manifest("too_many", result.run_id, "src.failures") is not None


def test_duplicates_split_across_chunks_are_caught(settings: ek.Settings) -> None:
    class Duplicates(ek.Pipeline):
        src = MemorySource(
            bills([1.0, 2.0, 3.0, 4.0, 5.0], ids=[1, 2, 3, 1, 3]), schema=UniqueBill, chunk_rows=2
        )
        out = MemorySink(src)

    result = Duplicates.run(settings=settings)

    assert isinstance(result.error, ek.DataValidationError)
    message = str(result.error)
    assert "column 'invoice_id' must be unique across all chunks" in message
    assert "2 value(s) repeat (examples: 1, 3)" in message
    assert not Duplicates.out.committed or Duplicates.out.table().num_rows == 5


class NullableKey(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(unique=True, nullable=True)
    amount: float = pdp.Field(ge=0)


class PairKey(pdp.DataFrameModel):
    invoice_id: int
    amount: float

    class Config:
        unique = ["invoice_id", "amount"]  # noqa: RUF012  (Pandera reads a plain class attribute)


# 1, null and 6 repeat; the second 6 is also negative; 2, 3, 4, 5 and 7 pass
KEYED_IDS = [1, 2, 3, 1, 4, None, 5, None, 6, 7, 6]
KEYED_AMOUNTS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -1.0, 9.0, 10.0]


def pandera_verdict(model: type[pdp.DataFrameModel], table: pa.Table) -> tuple[list[int], int]:
    """The rows Pandera passes when it validates the whole table, and how many it fails."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    try:
        model.validate(frame, lazy=True)
    except pdp.errors.SchemaErrors as exc:
        failed = set(exc.failure_cases.get_column("index").drop_nulls().to_list())
    else:
        failed = set()
    kept = [i for i in range(frame.height) if i not in failed]
    return kept, len(failed)


@pytest.mark.parametrize("policy", ["drop", "quarantine"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 4, 5, 11])
def test_a_repeated_unique_key_gets_pandera_verdict_whatever_the_chunk_boundaries(
    settings: ek.Settings, policy: str, chunk_rows: int
) -> None:
    table = pa.table({"invoice_id": pa.array(KEYED_IDS, pa.int64()), "amount": KEYED_AMOUNTS})
    kept, failed = pandera_verdict(NullableKey, table)

    class Repeats(ek.Pipeline):
        src = MemorySource(table, schema=NullableKey, chunk_rows=chunk_rows).expect(
            on_invalid=policy  # type: ignore[arg-type]
        )
        out = MemorySink(src)

    result = Repeats.run(settings=settings)

    assert result.state == "success", result.error
    assert kept == [1, 2, 4, 6, 9]  # ids 2, 3, 4, 5, 7
    assert Repeats.out.table().column("invoice_id").to_pylist() == [2, 3, 4, 5, 7]
    assert result.nodes["src"].invalid_rows == failed == 6
    assert result.nodes["src"].rows_out == 5
    staging = Staging(settings.paths.staging_root)
    manifest = staging.manifest("repeats", result.run_id, "src")
    assert manifest is not None
    assert manifest.rows == 5
    assert manifest.extra["invalid_rows"] == 6
    failures = staged(settings, "repeats", result.run_id, "src.failures")
    unique_failures = failures.filter(pl.col("check") == "field_uniqueness")
    # the negative 6 may have been taken out of its chunk by `ge` first: it is there once
    cases = unique_failures.get_column("failure_case").to_list()
    assert sorted(c for c in cases if c not in ("6", "null")) == ["1", "1"]
    assert cases.count("null") == 2
    assert 1 <= cases.count("6") <= 2
    if policy == "quarantine":
        rejects = staged(settings, "repeats", result.run_id, "src.rejects")
        assert sorted(rejects.get_column("invoice_id").to_list(), key=str) == sorted(
            [1, 1, None, None, 6, 6], key=str
        )
        assert set(rejects.get_column("_check").to_list()) <= {
            "field_uniqueness",
            "greater_than_or_equal_to(0)",
        }
        first = rejects.filter(pl.col("invoice_id") == 1).get_column("_reason").to_list()
        assert first == ["column 'invoice_id' failed field_uniqueness: 1"] * 2
    else:
        assert staging.manifest("repeats", result.run_id, "src.rejects") is None


@pytest.mark.parametrize("chunk_rows", [1, 2, 3])
def test_two_nulls_in_a_unique_column_fail_whatever_the_chunk_boundaries(
    settings: ek.Settings, chunk_rows: int
) -> None:
    table = pa.table({"invoice_id": pa.array([None, 1, None], pa.int64()), "amount": [1.0] * 3})

    class Nulls(ek.Pipeline):
        src = MemorySource(table, schema=NullableKey, chunk_rows=chunk_rows)
        out = MemorySink(src)

    result = Nulls.run(settings=settings)

    assert isinstance(result.error, ek.DataValidationError)  # as Pandera: nulls repeat
    assert "invoice_id" in str(result.error)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 6])
def test_a_repeated_pair_of_columns_is_quarantined_whatever_the_chunk_boundaries(
    settings: ek.Settings, chunk_rows: int
) -> None:
    # (1, 1.0) and (1, 2.0) twice each
    table = bills([1.0, 2.0, 1.0, 1.0, 3.0, 2.0], ids=[1, 1, 2, 1, 3, 1])

    class Pairs(ek.Pipeline):
        src = MemorySource(table, schema=PairKey, chunk_rows=chunk_rows).expect(
            on_invalid="quarantine"
        )
        out = MemorySink(src)

    result = Pairs.run(settings=settings)

    assert result.state == "success", result.error
    kept, failed = pandera_verdict(PairKey, table)
    assert kept == [2, 4]
    assert Pairs.out.table().to_pydict() == {"invoice_id": [2, 3], "amount": [1.0, 3.0]}
    rejects = staged(settings, "pairs", result.run_id, "src.rejects")
    assert rejects.height == failed == 4
    assert set(rejects.get_column("_check").to_list()) == {"multiple_fields_uniqueness"}


class TwoKeys(pdp.DataFrameModel):
    a: int = pdp.Field(nullable=True)
    b: int = pdp.Field(nullable=True)
    c: int = pdp.Field(nullable=True)

    class Config:
        unique = [["a", "b"], ["c"]]  # noqa: RUF012  (Pandera reads a plain class attribute)


@pytest.mark.parametrize("policy", ["fail", "drop", "quarantine"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 5])
@pytest.mark.parametrize(
    "columns",
    [
        {"a": [1, None, 3, None, 4], "b": [1, None, 1, None, 1], "c": [1, 2, 3, 4, 5]},
        {"a": [1, 2, 3, 4, 5], "b": [1, 1, 1, 1, 1], "c": [1, None, 3, None, 5]},
    ],
    ids=["null-pair", "null-single"],
)
def test_several_unique_column_sets_get_pandera_verdict_whatever_the_chunk_boundaries(
    settings: ek.Settings, policy: str, chunk_rows: int, columns: dict[str, list[int | None]]
) -> None:
    table = pa.table({k: pa.array(v, pa.int64()) for k, v in columns.items()})
    kept, failed = pandera_verdict(TwoKeys, table)
    assert (kept, failed) == ([0, 2, 4], 2)  # the two rows with nulls repeat, as in Pandera

    class Sets(ek.Pipeline):
        src = MemorySource(table, schema=TwoKeys, chunk_rows=chunk_rows).expect(
            on_invalid=policy  # type: ignore[arg-type]
        )
        out = MemorySink(src)

    result = Sets.run(settings=settings)

    if policy == "fail":
        assert isinstance(result.error, ek.DataValidationError), result.error
        return
    assert result.state == "success", result.error
    assert Sets.out.table().to_pydict() == table.take(kept).to_pydict()
    assert result.nodes["src"].invalid_rows == failed


class Interval(pdp.DataFrameModel):
    start: int
    end: int

    @pdp.check("start", name="before_end")
    def before_end(cls, data: Any) -> Any:
        return data.lazyframe.select(pl.col("start") <= pl.col("end"))


@pytest.mark.parametrize("policy", ["drop", "quarantine"])
def test_a_column_check_reading_another_column_drops_only_its_failing_rows(
    settings: ek.Settings, policy: str
) -> None:
    table = pa.table({"start": [1, 2, 5, 4], "end": [2, 3, 4, 4]})

    class Intervals(ek.Pipeline):
        src = MemorySource(table, schema=Interval, chunk_rows=2).expect(
            on_invalid=policy  # type: ignore[arg-type]
        )
        out = MemorySink(src)

    result = Intervals.run(settings=settings)

    assert result.state == "success", result.error
    assert Intervals.out.table().to_pydict() == {"start": [1, 2, 4], "end": [2, 3, 4]}
    assert result.nodes["src"].invalid_rows == 1


class Price(pdp.DataFrameModel):
    price: pl.Decimal(5, 2) = pdp.Field(coerce=True)  # type: ignore[valid-type]


@pytest.mark.parametrize("policy", ["drop", "quarantine"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 4])
def test_a_value_whose_cast_raises_is_taken_out_of_its_chunk(
    settings: ek.Settings, policy: str, chunk_rows: int
) -> None:
    table = pa.table({"price": [1.5, 999.999, 2.25, 3.0]})  # 999.999 rounds past 5 digits

    class Prices(ek.Pipeline):
        src = MemorySource(table, schema=Price, chunk_rows=chunk_rows).expect(
            on_invalid=policy  # type: ignore[arg-type]
        )
        out = MemorySink(src)

    result = Prices.run(settings=settings)

    assert result.state == "success", result.error
    kept = Prices.out.table().column("price").to_pylist()
    assert [str(v) for v in kept] == ["1.50", "2.25", "3.00"]
    assert result.nodes["src"].invalid_rows == 1
    failures = staged(settings, "prices", result.run_id, "src.failures")
    assert failures.select("column", "failure_case").rows() == [("price", "999.999")]
    assert failures.item(0, "check").startswith("coerce_dtype(")


class Numbered(pdp.DataFrameModel):
    col: int = pdp.Field(alias=r"^col_\d+$", regex=True, unique=True)


class Plain(pdp.DataFrameModel):
    a: int


class Spread(ek.Transform[Plain, Numbered]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.select(col_1=pl.col("a"), col_2=pl.col("a") * 10)


@pytest.mark.parametrize("policy", ["fail", "drop", "quarantine"])
@pytest.mark.parametrize("ids", [[1, 2, 3, 4], [1, 2, 3, 1]], ids=["unique", "repeated"])
def test_a_unique_regex_column_is_checked_across_chunks_on_every_column_it_matches(
    settings: ek.Settings, policy: str, ids: list[int]
) -> None:
    output = pa.table({"col_1": ids, "col_2": [10 * i for i in ids]})
    kept, failed = pandera_verdict(Numbered, output)

    class Regex(ek.Pipeline):
        src = MemorySource(pa.table({"a": ids}), schema=Plain, chunk_rows=2)
        spread = Spread(src).expect(on_invalid=policy)  # type: ignore[arg-type]
        out = MemorySink(spread)

    result = Regex.run(settings=settings)

    if policy == "fail" and failed:
        assert isinstance(result.error, ek.DataValidationError), result.error
        assert "column 'col_1' must be unique across all chunks" in str(result.error)
        assert "column 'col_2' must be unique across all chunks" in str(result.error)
        return
    assert result.state == "success", result.error
    assert Regex.out.table().to_pydict() == output.take(kept).to_pydict()
    assert result.nodes["spread"].invalid_rows == failed


@pytest.mark.parametrize("chunk_rows", [1, 3])
def test_a_source_with_a_regex_model_reads_every_column_the_pattern_matches(
    settings: ek.Settings, chunk_rows: int
) -> None:
    table = pa.table({"other": [0, 0, 0], "col_1": [1, 2, 3], "col_2": [4, 5, 4]})

    class Regex(ek.Pipeline):
        src = MemorySource(table, schema=Numbered, chunk_rows=chunk_rows).expect(on_invalid="drop")
        out = MemorySink(src)

    result = Regex.run(settings=settings)

    assert result.state == "success", result.error
    assert pandera_verdict(Numbered, table.select(["col_1", "col_2"])) == ([1], 2)
    assert Regex.out.table().to_pydict() == {"col_1": [2], "col_2": [5]}


@pytest.mark.parametrize(
    ("ids", "repeat"),
    [
        ([1, 2, 2, 3, 4], "1 value(s) repeat (examples: 2)"),  # each chunk increases, not across
        ([1, 3, 2, 4, 5], None),  # out of order but unique: the full check says so
        ([1, 2, 3, 4, 5], None),  # in order: proven as the chunks stream
    ],
)
def test_keys_in_order_chunk_by_chunk_are_checked_across_chunks_too(
    settings: ek.Settings, ids: list[int], repeat: str | None
) -> None:
    class Ordered(ek.Pipeline):
        src = MemorySource(bills([1.0] * len(ids), ids=ids), schema=UniqueBill, chunk_rows=2)
        out = MemorySink(src)

    result = Ordered.run(settings=settings)

    if repeat is None:
        assert result.state == "success", result.error
        assert Ordered.out.table().column("invoice_id").to_pylist() == ids
    else:
        assert isinstance(result.error, ek.DataValidationError)
        assert repeat in str(result.error)


def test_declared_key_and_sql_assertions_run_over_the_whole_output(
    settings: ek.Settings,
) -> None:
    class Keyed(ek.Pipeline):
        src = MemorySource(bills([1.0, 2.0, 900.0], ids=[1, 2, 2]), schema=Bill).expect(
            unique=["invoice_id", "amount"],
            sql=["select * from {output} where amount > 500"],
        )

    result = Keyed.run(settings=settings)

    assert isinstance(result.error, ek.DataValidationError)
    message = str(result.error)
    assert "columns ['invoice_id', 'amount']" not in message  # (2, 2.0) and (2, 900.0) differ
    assert "returned 1 offending row(s) (examples: (2, 900.0))" in message


def test_empty_source_with_min_rows_says_no_data_found(settings: ek.Settings) -> None:
    empty = pa.table({"invoice_id": pa.array([], pa.int64()), "amount": pa.array([], pa.float64())})

    class Empty(ek.Pipeline):
        src = MemorySource(empty, schema=Bill).expect(min_rows=1)
        out = MemorySink(src)

    result = Empty.run(settings=settings)

    assert isinstance(result.error, ek.DataValidationError)
    assert "has 0 rows; expected at least 1 (no data found" in str(result.error)


def test_input_model_is_checked_on_arrival_when_upstream_does_not_ensure_it(
    settings: ek.Settings,
) -> None:
    class Passthrough(ek.Transform[Bill, Bill]):
        def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
            return batch

    class Arrival(ek.Pipeline):
        src = MemorySource(bills(AMOUNTS), chunk_rows=2)  # untyped: nothing validated upstream
        checked = Passthrough(src)

    result = Arrival.run(settings=settings)

    assert isinstance(result.error, ek.DataValidationError)
    assert "Input of node 'checked' in pipeline 'arrival'" in str(result.error)


def test_validation_can_be_switched_off(tmp_path: pytest.TempPathFactory) -> None:
    settings = ek.load_settings(
        tmp_path,  # type: ignore[arg-type]
        env={},
        cli={"paths.state_dir": str(tmp_path), "run.validate": False},
    )

    class Unchecked(ek.Pipeline):
        src = MemorySource(bills(AMOUNTS), schema=Bill, chunk_rows=2)
        out = MemorySink(src)

    assert Unchecked.run(settings=settings).state == "success"
    assert Unchecked.out.table().num_rows == 8


def test_expect_rejects_bad_arguments() -> None:
    with pytest.raises(ek.PipelineDefinitionError, match="on_invalid must be one of"):
        MemorySource(bills([1.0])).expect(on_invalid="ignore")  # type: ignore[arg-type]
    with pytest.raises(ek.PipelineDefinitionError, match="must select from \\{output\\}"):
        MemorySource(bills([1.0])).expect(sql=["select 1"])
    with pytest.raises(ek.PipelineDefinitionError, match="between 0 and 1"):
        MemorySource(bills([1.0])).expect(max_invalid_fraction=2)


class MistypedNotin(pdp.DataFrameModel):
    flag: bool = pdp.Field(notin=["x", "y"])
    n: int = pdp.Field(ge=0)


@pytest.mark.parametrize("policy", ["drop", "quarantine"])
def test_a_check_that_cannot_run_on_its_column_fails_the_run_under_every_policy(
    policy: str, settings: ek.Settings
) -> None:
    # Pandera fails the frame (the check errors on a Boolean column): no row can be dropped to
    # mend it, so dropping the row that breaks `ge` must not make the run pass
    class Mistyped(ek.Pipeline):
        rows = MemorySource(
            pa.table({"flag": [True, False], "n": [1, -1]}), schema=MistypedNotin
        ).expect(on_invalid=policy)
        out = MemorySink(rows)

    result = Mistyped.run(settings=settings)

    assert result.state == "failed"
    assert isinstance(result.error, ek.DataValidationError)
    assert "isin" in str(result.error) or "notin" in str(result.error)
