"""Validation between stages: policies, rejects, failure tables, dataset-level checks."""

from __future__ import annotations

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.staging import Staging
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
