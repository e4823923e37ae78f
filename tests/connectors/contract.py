"""The contract every connector passes, parametrized by factories.

Subclass `SourceContract` or `SinkContract` in a test module named `test_*.py`, with a class name
starting with `Test`, and provide the factory fixture:

    class TestCsvSourceContract(SourceContract):
        @pytest.fixture
        def make_source(self, tmp_path: Path) -> MakeSource:
            def make(table: pa.Table, model: Model, *, chunk_rows: int | None = None) -> Source:
                pacsv.write_csv(table, tmp_path / "data.csv")
                return CsvSource(str(tmp_path / "data.csv"), schema=model, chunk_rows=chunk_rows)

            return make

    class TestCsvSinkContract(SinkContract):
        @pytest.fixture
        def make_sink(self, tmp_path: Path) -> MakeSink:
            def make(model: Model | None) -> tuple[Sink, ReadCommitted]:
                target = tmp_path / "out.csv"
                sink = CsvSink(str(target), "upstream", schema=model)
                return sink, lambda: pacsv.read_csv(target) if target.exists() else None

            return make

A source that can be split (`Source.partitions` not None) reads, partition by partition, what
`read` reads: `assert_partitions_read_as_read` checks it, for the contract's data and for
connector tests of their own (several files, row groups, key ranges).

The data is `contract_table(n)`, typed by `ContractModel`: ids 0..n-1 (unique, so tests sort by
`id` and never depend on the order a connector returns rows in), strings, nullable floats (every
seventh is null), timestamps without a time zone and booleans.

Strings compare as equal whether `string` or `large_string` (polars reads both as `String`);
every other type must be exactly the model's Arrow type.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

from etlkit.engine.execution import new_run_id
from etlkit.errors import RunCancelledError
from etlkit.model.nodes import Context, Origin, Partition, Sink, Source
from etlkit.model.schema import arrow_schema, column_names

Model = type[pdp.DataFrameModel]


class ContractModel(pdp.DataFrameModel):
    """The model of the contract's data: one column of each common type."""

    id: int
    name: str
    amount: float = pdp.Field(nullable=True)
    billed_at: pl.Datetime
    paid: bool


class NarrowModel(pdp.DataFrameModel):
    """A projection of `ContractModel`: two of its columns, in a different order."""

    amount: float = pdp.Field(nullable=True)
    id: int


class MakeSource(Protocol):
    """Stores `table` where the source under test reads it; returns a source reading it."""

    def __call__(
        self, table: pa.Table, model: Model, *, chunk_rows: int | None = None
    ) -> Source: ...


ReadCommitted = Callable[[], pa.Table | None]
"""Reads what the sink committed at its target; None when there is nothing there."""


class MakeSink(Protocol):
    """Returns a fresh sink writing to a fresh target, and a reader of what it committed."""

    def __call__(self, model: Model | None) -> tuple[Sink, ReadCommitted]: ...


START: datetime = datetime(2025, 1, 3, 10, 0, 0)


def contract_table(rows: int, *, offset: int = 0) -> pa.Table:
    """`rows` rows of `ContractModel` data, ids starting at `offset`, with the model's types."""
    ids = range(offset, offset + rows)
    return pa.Table.from_pydict(
        {
            "id": list(ids),
            "name": [f'patient {i}, ward "{i % 5}"' for i in ids],
            "amount": [None if i % 7 == 3 else i * 1.25 for i in ids],
            "billed_at": [START + timedelta(minutes=i) for i in ids],
            "paid": [i % 2 == 0 for i in ids],
        },
        schema=arrow_schema(ContractModel),
    )


def make_context(node: str = "n") -> Context:
    """A context as the engine builds one, for a fixed run."""
    return Context(
        pipeline="p",
        run_id="20250101T000000Z-abc123",
        logical_date=datetime(2025, 1, 1, tzinfo=UTC),
        node=node,
    )


def new_load(ctx: Context) -> Context:
    """`ctx` in a run of its own: a sink's load id is recorded once, so each write of a test
    that loads a table twice belongs to a new run."""
    return dataclasses.replace(ctx, run_id=new_run_id())


def _normal(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    return dtype


def _rows(table: pa.Table) -> list[dict[str, object]]:
    """The table's rows as Python values, sorted by id."""
    rows: list[dict[str, object]] = table.to_pylist()
    return sorted(rows, key=lambda row: row["id"])  # type: ignore[arg-type,return-value]


def _read_all(source: Source) -> list[pa.RecordBatch]:
    return list(source.read(make_context(source.name or "src")))


def _located_rows(batches: Iterable[pa.RecordBatch]) -> list[tuple[object, ...]]:
    """Each row of the batches with its file, row and line (`Origin`), and its chunk's
    columns and types; chunks of no rows are left out."""
    rows: list[tuple[object, ...]] = []
    for batch in batches:
        origin, data = Origin.take(batch)
        if not data.num_rows:
            continue
        schema = str(data.schema.remove_metadata())
        for index, row in enumerate(data.to_pylist()):
            where = (None, None, None)
            if origin is not None:
                where = (origin.file, origin.row(index), origin.line(index))
            rows.append((*where, schema, tuple(row.items())))
    return rows


def assert_partitions_read_as_read(source: Source, ctx: Context) -> list[Partition]:
    """The source's partitions, sent as JSON and read in order, yield the rows `read` yields,
    in its order, each with the same origin, columns and types; their ids are unique,
    path-safe and the same when asked again. Returns the partitions."""
    parts = source.partitions(ctx)
    assert parts is not None, f"{type(source).__name__} has no partitions"
    ids = [part.id for part in parts]
    assert len(set(ids)) == len(ids), ids
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", i) for i in ids), ids
    again = source.partitions(ctx)
    assert again is not None
    assert [part.id for part in again] == ids
    sent = [Partition.from_json(part.to_json()) for part in parts]
    assert sent == list(parts)
    whole = _located_rows(source.read(ctx))
    split = _located_rows(batch for part in sent for batch in source.read_partition(ctx, part))
    assert split == whole
    return list(parts)


def _cancelled_after(batches: list[pa.RecordBatch], count: int) -> Iterator[pa.RecordBatch]:
    """Yields `count` batches, then raises as the engine does when the run fails."""
    yield from batches[:count]
    raise RunCancelledError("run 20250101T000000Z-abc123 was cancelled: node 'other' failed")


class SourceContract:
    """What every source does. Subclasses provide the `make_source` fixture."""

    @pytest.fixture
    def make_source(self) -> MakeSource:
        raise NotImplementedError("subclasses provide the make_source fixture")

    def _source(self, make_source: MakeSource, table: pa.Table, model: Model, **kw: int) -> Source:
        source = make_source(table, model, **kw)
        source.name = "src"
        return source

    def test_reads_all_rows_in_chunks(self, make_source: MakeSource) -> None:
        table = contract_table(1_000)
        source = self._source(make_source, table, ContractModel, chunk_rows=100)
        batches = _read_all(source)
        assert len(batches) >= 2, "chunk_rows=100 over 1000 rows should give several batches"
        assert all(isinstance(b, pa.RecordBatch) for b in batches)
        assert sum(b.num_rows for b in batches) == 1_000
        assert _rows(pa.Table.from_batches(batches)) == _rows(table)

    def test_projects_to_model_columns(self, make_source: MakeSource) -> None:
        table = contract_table(50).append_column("extra", pa.array(["x"] * 50))
        batches = _read_all(self._source(make_source, table, NarrowModel))
        assert batches
        for batch in batches:
            assert batch.schema.names == column_names(NarrowModel)
        got = pa.Table.from_batches(batches)
        assert _rows(got) == _rows(table.select(column_names(NarrowModel)))

    def test_types_match_model(self, make_source: MakeSource) -> None:
        expected = arrow_schema(ContractModel)
        batches = _read_all(self._source(make_source, contract_table(20), ContractModel))
        assert batches
        for batch in batches:
            assert batch.schema.names == expected.names
            got = [_normal(f.type) for f in batch.schema]
            assert got == [_normal(f.type) for f in expected], batch.schema

    def test_empty_input(self, make_source: MakeSource) -> None:
        batches = _read_all(self._source(make_source, contract_table(0), ContractModel))
        assert sum(b.num_rows for b in batches) == 0
        for batch in batches:
            assert batch.schema.names == column_names(ContractModel)

    def test_partitions_if_any_read_as_read(self, make_source: MakeSource) -> None:
        """A source either is not split (None) or its partitions read what `read` reads."""
        source = self._source(make_source, contract_table(300), ContractModel, chunk_rows=64)
        if source.partitions(make_context("src")) is not None:
            assert_partitions_read_as_read(source, make_context("src"))

    def test_read_is_repeatable(self, make_source: MakeSource) -> None:
        """A retried node reads its source again and gets the same rows."""
        table = contract_table(30)
        source = self._source(make_source, table, ContractModel)
        first = pa.Table.from_batches(_read_all(source))
        second = pa.Table.from_batches(_read_all(source))
        assert _rows(first) == _rows(second) == _rows(table)


class SinkContract:
    """What every sink does. Subclasses provide the `make_sink` fixture."""

    @pytest.fixture
    def make_sink(self) -> MakeSink:
        raise NotImplementedError("subclasses provide the make_sink fixture")

    def _sink(self, make_sink: MakeSink, model: Model | None) -> tuple[Sink, ReadCommitted]:
        sink, read = make_sink(model)
        sink.name = "snk"
        return sink, read

    def test_writes_all_rows(self, make_sink: MakeSink) -> None:
        table = contract_table(100)
        sink, read = self._sink(make_sink, ContractModel)
        sink.write(iter(table.to_batches(max_chunksize=30)), make_context("snk"))
        committed = read()
        assert committed is not None
        assert _rows(committed.select(column_names(ContractModel))) == _rows(table)

    def test_result_counts_rows(self, make_sink: MakeSink) -> None:
        table = contract_table(70)
        sink, _ = self._sink(make_sink, ContractModel)
        result = sink.write(iter(table.to_batches(max_chunksize=25)), make_context("snk"))
        assert result.rows == 70
        assert result.uri

    def test_writes_without_a_model(self, make_sink: MakeSink) -> None:
        table = contract_table(40)
        sink, read = self._sink(make_sink, None)
        sink.write(iter(table.to_batches(max_chunksize=15)), make_context("snk"))
        committed = read()
        assert committed is not None
        assert committed.num_rows == 40

    def test_accepts_string_batches(self, make_sink: MakeSink) -> None:
        """Batches may carry `string` rather than `large_string` columns (DuckDB, pyarrow)."""
        table = contract_table(20)
        small = table.cast(pa.schema([f.with_type(_normal(f.type)) for f in table.schema]))
        sink, read = self._sink(make_sink, ContractModel)
        sink.write(iter(small.to_batches(max_chunksize=8)), make_context("snk"))
        committed = read()
        assert committed is not None
        assert _rows(committed.select(column_names(ContractModel))) == _rows(table)

    def test_empty_input_commits_no_rows(self, make_sink: MakeSink) -> None:
        sink, read = self._sink(make_sink, ContractModel)
        result = sink.write(iter([]), make_context("snk"))
        assert result.rows == 0
        committed = read()
        assert committed is not None
        assert committed.num_rows == 0

    def test_cancelled_write_leaves_nothing(self, make_sink: MakeSink) -> None:
        batches = contract_table(90).to_batches(max_chunksize=30)
        sink, read = self._sink(make_sink, ContractModel)
        with pytest.raises(RunCancelledError):
            sink.write(_cancelled_after(batches, 2), make_context("snk"))
        assert read() is None

    def test_cancelled_write_keeps_previous_state(self, make_sink: MakeSink) -> None:
        first = contract_table(10)
        sink, read = self._sink(make_sink, ContractModel)
        sink.write(iter(first.to_batches()), make_context("snk"))
        later = contract_table(90, offset=100).to_batches(max_chunksize=30)
        with pytest.raises(RunCancelledError):
            sink.write(_cancelled_after(later, 2), make_context("snk"))
        committed = read()
        assert committed is not None
        assert _rows(committed.select(column_names(ContractModel))) == _rows(first)
