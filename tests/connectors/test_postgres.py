"""PostgresSource and PostgresSink against a real server: contract, types, modes, atomicity, errors.

Every test gets a fresh schema as its search_path (the `postgres_dsn` fixture), so unqualified
table names are private to the test.
"""

from __future__ import annotations

import logging
import pickle
import sys
import types
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from connectors.postgres import (
    Mode,
    PostgresSink,
    PostgresSource,
    PostgresTransientError,
    mask_dsn,
)
from data.generate import generate
from etlkit.errors import (
    ConfigError,
    ConnectorError,
    MissingDependencyError,
    RunCancelledError,
    TransientError,
)
from etlkit.model.nodes import Context, Sink, Source
from etlkit.model.schema import arrow_schema
from tests.connectors.contract import (
    MakeSink,
    MakeSource,
    Model,
    ReadCommitted,
    SinkContract,
    SourceContract,
    make_context,
    new_load,
)
from tests.postgres_server import PostgresServer

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection

pytestmark = pytest.mark.postgres

CTX = make_context("n")


class Patient(pdp.DataFrameModel):
    id: int
    name: str
    score: float = pdp.Field(nullable=True)
    seen_at: pl.Datetime


def patients(rows: int, *, offset: int = 0) -> pa.Table:
    ids = range(offset, offset + rows)
    return pa.Table.from_pydict(
        {
            "id": list(ids),
            "name": [f"patient {i}" for i in ids],
            "score": [None if i % 5 == 0 else i / 4 for i in ids],
            "seen_at": [datetime(2025, 1, 1) + timedelta(hours=i) for i in ids],
        },
        schema=arrow_schema(Patient),
    )


# -- helpers talking to the server directly --------------------------------------------------------


# `postgres_db` is one autocommit connection for the whole session, its search_path the test's
# schema: connecting costs ~0.1 s (ADBC reads the type catalog twice), so the helpers share it.


def execute(db: Connection, *statements: str) -> None:
    with db.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def query(db: Connection, sql: str) -> pa.Table:
    with db.cursor() as cur:
        cur.execute(sql)
        table: pa.Table = cur.fetch_arrow_table()
        return table


def rows(db: Connection, sql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = query(db, sql).to_pylist()
    return result


def put(db: Connection, name: str, data: pa.Table) -> None:
    """Create (or replace) table `name` holding `data`."""
    with db.cursor() as cur:
        cur.adbc_ingest(name, data, mode="replace")


def exists(db: Connection, name: str) -> bool:
    return bool(rows(db, f"SELECT to_regclass('{name}') IS NOT NULL AS e")[0]["e"])


def leftovers(db: Connection) -> list[str]:
    """Staging tables anywhere in the database, including other sessions' temp schemas."""
    sql = r"SELECT relname::text AS r FROM pg_class WHERE relname LIKE '%\_\_etlkit\_%'"
    return [str(row["r"]) for row in rows(db, sql)]


def source(dsn: str, schema: Model = Patient, **options: Any) -> PostgresSource:
    node = PostgresSource(dsn=dsn, schema=schema, **options)
    node.name = "n"
    return node


def sink(
    dsn: str, table: str = "patients", *, mode: Mode = "append", **options: Any
) -> PostgresSink:
    node = PostgresSink("upstream", dsn=dsn, table=table, mode=mode, **options)
    node.name = "n"
    return node


def read(node: Source, ctx: Context = CTX) -> pa.Table:
    batches = list(node.read(ctx))
    assert node.output_model is not None
    schema = pa.schema(f.with_nullable(True) for f in arrow_schema(node.output_model))
    return pa.Table.from_batches(batches, schema)


def write(dsn: str, data: pa.Table, *, mode: Mode = "append", **options: Any) -> ek.WriteResult:
    batches = iter(data.to_batches(max_chunksize=10))
    return sink(dsn, mode=mode, **options).write(batches, new_load(CTX))


def failing_after(
    batches: list[pa.RecordBatch], count: int, error: Exception
) -> Iterator[pa.RecordBatch]:
    yield from batches[:count]
    raise error


CANCELLED = RunCancelledError("run 20250101T000000Z-abc123 was cancelled: node 'other' failed")


# -- the shared contract ---------------------------------------------------------------------------


class TestPostgresSourceContract(SourceContract):
    @pytest.fixture
    def make_source(self, postgres_dsn: str, postgres_db: Connection) -> MakeSource:
        def make(table: pa.Table, model: Model, *, chunk_rows: int | None = None) -> Source:
            put(postgres_db, "data", table)
            return PostgresSource(
                dsn=postgres_dsn, table="data", schema=model, chunk_rows=chunk_rows
            )

        return make


class TestPostgresSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self, postgres_dsn: str, postgres_db: Connection) -> MakeSink:
        def make(model: Model | None) -> tuple[Sink, ReadCommitted]:
            def committed() -> pa.Table | None:
                return (
                    query(postgres_db, "SELECT * FROM out") if exists(postgres_db, "out") else None
                )

            return PostgresSink("upstream", dsn=postgres_dsn, table="out", schema=model), committed

        return make


# -- the source ------------------------------------------------------------------------------------


class Typed(pdp.DataFrameModel):
    price: float = pdp.Field(nullable=True)
    total: int = pdp.Field(nullable=True)
    exact: str = pdp.Field(nullable=True)
    at: pl.Datetime = pdp.Field(nullable=True)
    at_utc: pl.Datetime(time_zone="UTC") = pdp.Field(nullable=True)  # type: ignore[valid-type]
    day: pl.Date = pdp.Field(nullable=True)
    ok: bool = pdp.Field(nullable=True)
    note: str = pdp.Field(nullable=True)
    doc: str = pdp.Field(nullable=True)
    mood: str = pdp.Field(nullable=True)
    small: int = pdp.Field(nullable=True)


def test_types_map_to_the_model(postgres_dsn: str, postgres_db: Connection) -> None:
    execute(
        postgres_db,
        "CREATE TYPE feeling AS ENUM ('calm', 'tense')",
        "CREATE TABLE typed (price numeric(10, 2), total numeric, exact numeric(12, 4), "
        "at timestamptz, at_utc timestamp, day date, ok boolean, note varchar(20), doc jsonb, "
        "mood feeling, small int2, ignored point)",
        "INSERT INTO typed VALUES (12.34, 10000000000, 1.0001, '2025-01-02 03:04:05+02', "
        "'2025-01-02 03:04:05', '2025-01-02', true, 'hi', '{\"a\": [1, 2]}', 'calm', 7, "
        "point(1, 2)), (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    got = read(source(postgres_dsn, Typed, table="typed"))
    assert got.schema == pa.schema(f.with_nullable(True) for f in arrow_schema(Typed))
    assert got.to_pylist()[0] == {
        "price": 12.34,
        "total": 10_000_000_000,
        "exact": "1.0001",
        "at": datetime(2025, 1, 2, 1, 4, 5),  # timestamptz as naive UTC
        "at_utc": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),  # naive timestamp taken as UTC
        "day": date(2025, 1, 2),
        "ok": True,
        "note": "hi",
        "doc": '{"a": [1, 2]}',
        "mood": "calm",
        "small": 7,
    }
    assert set(got.to_pylist()[1].values()) == {None}
    assert pl.DataFrame(got).height == 2  # polars reads every column


def test_sum_of_bigint_is_numeric_and_reads_as_int(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    class Total(pdp.DataFrameModel):
        total: int

    put(postgres_db, "patients", patients(10))
    got = read(source(postgres_dsn, Total, query="SELECT sum(id) AS total FROM patients"))
    assert got.to_pylist() == [{"total": 45}]


@pytest.mark.parametrize(
    ("column", "model_type", "message"),
    [
        (
            "point(1, 2)",
            float,
            r"column 'x' of table 'odd' is PostgreSQL type point, which "
            r"cannot be read as Float64.*reads from smallint, integer.*Cast it in a query",
        ),
        ("interval '1 day'", str, r"PostgreSQL type interval, which cannot be read as String"),
        (
            "12.5::numeric(6, 2)",
            int,
            r"PostgreSQL type numeric\(6,2\), which cannot be read as "
            r"Int64.*numeric without a fractional scale",
        ),
        ("'x'::text", bool, r"PostgreSQL type text, which cannot be read as Boolean"),
    ],
    ids=["point", "interval", "numeric-scale-as-int", "text-as-bool"],
)
def test_unmappable_type_names_column_types_and_fix(
    postgres_dsn: str, column: str, model_type: type, message: str, postgres_db: Connection
) -> None:
    model = type("Odd", (pdp.DataFrameModel,), {"__annotations__": {"x": model_type}})
    execute(postgres_db, f"CREATE TABLE odd AS SELECT {column} AS x")
    with pytest.raises(ConnectorError, match=message):
        read(source(postgres_dsn, model, table="odd"))


def test_reads_only_the_model_columns_in_model_order(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    class NameFirst(pdp.DataFrameModel):
        name: str
        id: int

    put(postgres_db, "patients", patients(12))
    got = read(source(postgres_dsn, NameFirst, table="patients"))
    assert got.schema.names == ["name", "id"]
    assert got.to_pylist() == patients(12).select(["name", "id"]).to_pylist()


def test_query_is_wrapped_projected_and_templated(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    class Ids(pdp.DataFrameModel):
        id: int

    put(postgres_db, "patients", patients(30))
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, params={"top": "5"})
    node = source(
        postgres_dsn,
        Ids,
        query="SELECT *, 'x' AS extra FROM patients WHERE id < {top} ORDER BY id;",
    )
    got = read(node, ctx)
    assert got.to_pylist() == [{"id": i} for i in range(5)]


@pytest.mark.parametrize(
    "injected",
    [
        "5 OR true",
        "5) OR (true",
        "5 UNION ALL SELECT 999, 'x', 'y'",
        "5; DROP TABLE patients; --",
        "5 $etlkit0$ OR true --",
        "5' OR 'a' = 'a",
        "5\\' OR true --",
    ],
)
def test_a_param_in_a_query_is_one_constant_whatever_it_holds(
    postgres_dsn: str, postgres_db: Connection, injected: str
) -> None:
    class Ids(pdp.DataFrameModel):
        id: int

    put(postgres_db, "patients", patients(30))
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, params={"top": injected})
    for query in (
        "SELECT id FROM patients WHERE id < {top}",
        "SELECT id FROM patients WHERE id < '{top}'",
    ):
        with pytest.raises(ConnectorError, match="invalid input syntax for type bigint"):
            read(source(postgres_dsn, Ids, query=query), ctx)
    assert exists(postgres_db, "patients")


def test_a_param_in_a_query_takes_the_type_its_place_needs(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    class Seen(pdp.DataFrameModel):
        id: int

    put(postgres_db, "patients", patients(30))
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, params={"top": "3"})
    query = (
        "SELECT id FROM patients WHERE id < {top} AND seen_at < '{ds} 00:00'::timestamp + "
        "interval '100 years' AND {top}::int = 3 ORDER BY id"
    )
    assert read(source(postgres_dsn, Seen, query=query), ctx).to_pylist() == [
        {"id": i} for i in range(3)
    ]


def test_streams_in_chunks_of_at_most_chunk_rows(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    put(postgres_db, "patients", patients(1_000))
    batches = list(source(postgres_dsn, table="patients", chunk_rows=64).read(CTX))
    assert len(batches) >= 16
    assert all(0 < b.num_rows <= 64 for b in batches)
    assert sum(b.num_rows for b in batches) == 1_000


def test_source_uses_the_context_chunk_rows_by_default(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    put(postgres_db, "patients", patients(100))
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, chunk_rows=30)
    assert [b.num_rows for b in source(postgres_dsn, table="patients").read(ctx)] == [
        30,
        30,
        30,
        10,
    ]


def test_stopping_early_ends_the_transaction(postgres_dsn: str, postgres_db: Connection) -> None:
    put(postgres_db, "patients", patients(500))
    reading = source(postgres_dsn, table="patients", chunk_rows=10).read(CTX)
    assert isinstance(reading, Generator)
    assert next(reading).num_rows == 10  # the reader's transaction now locks the table
    reading.close()  # as the engine does when the run is cancelled
    execute(postgres_db, "SET lock_timeout = '5s'", "DROP TABLE patients", "RESET lock_timeout")
    assert not exists(postgres_db, "patients")


def test_source_reads_one_read_only_snapshot_in_utc(postgres_dsn: str) -> None:
    class Session(pdp.DataFrameModel):
        iso: str
        ro: str
        tz: str

    sql = (
        "SELECT current_setting('transaction_isolation') AS iso, "
        "current_setting('transaction_read_only') AS ro, current_setting('TimeZone') AS tz"
    )
    got = read(source(postgres_dsn, Session, query=sql))
    assert got.to_pylist() == [{"iso": "repeatable read", "ro": "on", "tz": "UTC"}]


PARTITIONED = pa.table(
    {
        "id": list(range(200)),
        "n": [None if i % 17 == 0 else (i * 7919) % 1000 for i in range(200)],
        "amount": [None if i % 13 == 0 else i * 1.5 - 40 for i in range(200)],
        "day": [
            None if i % 11 == 0 else date(2025, 1, 1) + timedelta(days=i % 90) for i in range(200)
        ],
        "at": [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=37 * i) for i in range(200)],
    }
)


class Partitioned(pdp.DataFrameModel):
    id: int
    n: int = pdp.Field(nullable=True)
    amount: float = pdp.Field(nullable=True)


@pytest.mark.parametrize("column", ["n", "amount", "day", "at", "dec"])
def test_partitioned_read_equals_plain_read(
    postgres_dsn: str, column: str, caplog: pytest.LogCaptureFixture, postgres_db: Connection
) -> None:
    put(postgres_db, "events", PARTITIONED)
    execute(postgres_db, "ALTER TABLE events ADD COLUMN dec numeric(8, 2)",
            "UPDATE events SET dec = amount")  # fmt: skip
    plain = read(source(postgres_dsn, Partitioned, table="events"))
    caplog.set_level(logging.DEBUG, logger="connectors.postgres")
    node = source(postgres_dsn, Partitioned, table="events", partition_column=column, partitions=4)
    split = read(node)
    assert sorted(split.to_pylist(), key=str) == sorted(plain.to_pylist(), key=str)
    assert split.num_rows == 200
    assert any("5 ranges" in r.getMessage() for r in caplog.records)  # 4 ranges + nulls


def test_partitioning_a_tiny_range_reads_each_row_once(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    put(postgres_db, "events", PARTITIONED.slice(0, 3))  # n in {None, 919, 838}
    node = source(postgres_dsn, Partitioned, table="events", partition_column="id", partitions=8)
    assert sorted(read(node).column("id").to_pylist()) == [0, 1, 2]


def test_partition_column_must_be_numeric_or_date(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    put(postgres_db, "patients", patients(5))
    node = source(postgres_dsn, table="patients", partition_column="name", partitions=2)
    with pytest.raises(ConnectorError, match=r"partition_column 'name' .* type text; .*numeric"):
        read(node)
    with pytest.raises(ConfigError, match="partitions=3 needs a partition_column"):
        source(postgres_dsn, table="patients", partitions=3)


def test_read_since_pushes_the_incremental_filter_down(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    put(postgres_db, "patients", patients(20))
    node = source(postgres_dsn, table="patients", incremental_column="seen_at")
    since = list(node.read_since(CTX, "2025-01-01 15:00:00"))
    assert pa.Table.from_batches(since).column("id").to_pylist() == [16, 17, 18, 19]
    assert read(node).num_rows == 20  # read() is read_since(ctx, None)
    partitioned = source(
        postgres_dsn, table="patients", incremental_column="id", partition_column="id", partitions=3
    )
    got = pa.Table.from_batches(list(partitioned.read_since(CTX, "5")))
    assert sorted(got.column("id").to_pylist()) == list(range(6, 20))


def test_read_since_quotes_the_value(postgres_dsn: str, postgres_db: Connection) -> None:
    put(postgres_db, "patients", patients(20))
    node = source(postgres_dsn, table="patients", incremental_column="name")
    got = pa.Table.from_batches(list(node.read_since(CTX, "patient 7'; DROP TABLE patients; --")))
    assert sorted(got.column("id").to_pylist()) == [8, 9]  # compared as text, quote included
    assert exists(postgres_db, "patients")


def test_read_since_needs_an_incremental_column(postgres_dsn: str) -> None:
    with pytest.raises(ConfigError, match="needs incremental_column"):
        list(source(postgres_dsn, table="patients").read_since(CTX, "3"))


def test_missing_table_lists_tables_and_suggests(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    put(postgres_db, "patients", patients(3))
    put(postgres_db, "visits", patients(3))
    with pytest.raises(
        ConnectorError,
        match=r"table 'patiens' not found in PostgreSQL postgresql://etlkit:\*\*\*@127.0.0.1:\d+"
        r"/etlkit; tables are 'patients' and 'visits'. Did you mean 'patients'\?",
    ):
        read(source(postgres_dsn, table="patiens"))
    with pytest.raises(ConnectorError, match=r"Did you mean 'patients'\?"):
        read(source(postgres_dsn, table="Patients"))  # names are case-sensitive, as quoted


def test_missing_column_names_it_and_suggests(postgres_dsn: str, postgres_db: Connection) -> None:
    class Typo(pdp.DataFrameModel):
        nmae: str

    put(postgres_db, "patients", patients(3))
    with pytest.raises(
        ConnectorError,
        match=r"table 'patients' in PostgreSQL .* has no column\(s\) 'nmae' that Typo "
        r"declares.*its columns are 'id', 'name', 'score' and 'seen_at'. Did you mean 'name'\?",
    ):
        read(source(postgres_dsn, Typo, table="patients"))


def test_bad_query_is_a_connector_error(postgres_dsn: str) -> None:
    with pytest.raises(
        ConnectorError, match=r"the query in PostgreSQL .* cannot be read: .*nowhere"
    ):
        read(source(postgres_dsn, query="SELECT * FROM nowhere"))


def test_error_while_streaming_names_the_chunk(postgres_dsn: str) -> None:
    class Ratio(pdp.DataFrameModel):
        r: int

    sql = "SELECT 1000 / (300000 - g) AS r FROM generate_series(1, 400000) AS g"
    with pytest.raises(ConnectorError, match=r"reading the query .* failed.*division by zero"):
        read(source(postgres_dsn, Ratio, query=sql, chunk_rows=100_000))


def test_schema_qualified_round_trip(postgres_dsn: str, postgres_db: Connection) -> None:
    try:
        result = write(postgres_dsn, patients(8), table="analytics.patients")  # creates the schema
        assert result.uri.endswith("/etlkit/analytics.patients")
        assert read(source(postgres_dsn, table="analytics.patients")).num_rows == 8
    finally:
        execute(postgres_db, "DROP SCHEMA IF EXISTS analytics CASCADE")


# -- the sink --------------------------------------------------------------------------------------


def test_append_creates_then_appends_in_any_column_order(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    assert write(postgres_dsn, patients(25)).rows == 25
    write(postgres_dsn, patients(25, offset=25).select(["seen_at", "score", "name", "id"]))
    got = query(postgres_db, "SELECT * FROM patients ORDER BY id")
    assert got.to_pylist() == patients(50).to_pylist()
    assert leftovers(postgres_db) == []


def test_append_converts_to_the_table_types(postgres_dsn: str, postgres_db: Connection) -> None:
    execute(postgres_db, "CREATE TABLE patients (id int4 PRIMARY KEY, name varchar(20), "
            "score numeric(8, 2), seen_at timestamptz, ward text DEFAULT 'A')")  # fmt: skip
    write(postgres_dsn, patients(3))
    assert rows(
        postgres_db, "SELECT id, score::text, seen_at::text, ward FROM patients ORDER BY id"
    ) == [
        {"id": 0, "score": None, "seen_at": "2025-01-01 00:00:00+00", "ward": "A"},
        {"id": 1, "score": "0.25", "seen_at": "2025-01-01 01:00:00+00", "ward": "A"},
        {"id": 2, "score": "0.50", "seen_at": "2025-01-01 02:00:00+00", "ward": "A"},
    ]


def test_append_extra_column_is_refused_with_a_hint(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    write(postgres_dsn, patients(5))
    other = patients(3).append_column("wrad", pa.array(["a"] * 3))
    execute(postgres_db, "ALTER TABLE patients ADD COLUMN ward text")
    with pytest.raises(
        ConnectorError,
        match=r"chunk 1 does not match table 'patients' .* extra column\(s\) 'wrad'.*"
        r"Did you mean 'ward' for 'wrad'\?.*mode='replace'",
    ):
        write(postgres_dsn, other)
    assert rows(postgres_db, "SELECT count(*) AS n FROM patients") == [{"n": 5}]


def test_replace_replaces_rows_and_columns(postgres_dsn: str, postgres_db: Connection) -> None:
    write(postgres_dsn, patients(25))
    result = write(postgres_dsn, pa.table({"id": [1, 2], "ward": ["a", "b"]}), mode="replace")
    assert (result.rows, result.extra) == (2, {"mode": "replace"})
    assert rows(postgres_db, "SELECT * FROM patients ORDER BY id") == [
        {"id": 1, "ward": "a"},
        {"id": 2, "ward": "b"},
    ]
    assert leftovers(postgres_db) == []


def test_replace_with_key_gives_the_new_table_a_primary_key(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    write(postgres_dsn, patients(5), mode="replace", key=["id"])
    write(postgres_dsn, patients(6), mode="replace", key=["id"])
    constraints = (
        "SELECT conname::text AS c FROM pg_constraint WHERE conrelid = 'patients'::regclass"
    )
    assert rows(postgres_db, constraints) == [{"c": "patients_pkey"}]
    assert write(postgres_dsn, patients(3, offset=4), mode="upsert", key=["id"]).rows == 3
    assert rows(postgres_db, "SELECT count(*) AS n FROM patients") == [{"n": 7}]


def test_upsert_updates_existing_rows_and_inserts_new_ones(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    write(postgres_dsn, patients(10), mode="upsert", key=["id"])  # creates the table with a PK
    changed = pa.table({"id": [8, 9, 10, 11], "name": ["eight", "nine", "ten", "eleven"]})
    assert write(postgres_dsn, changed, mode="upsert", key=["id"]).rows == 4
    got = rows(postgres_db, "SELECT id, name, score FROM patients WHERE id >= 7 ORDER BY id")
    assert got == [
        {"id": 7, "name": "patient 7", "score": 1.75},
        {"id": 8, "name": "eight", "score": 2.0},  # columns not in the input keep their value
        {"id": 9, "name": "nine", "score": 2.25},
        {"id": 10, "name": "ten", "score": None},
        {"id": 11, "name": "eleven", "score": None},
    ]
    assert leftovers(postgres_db) == []


def test_upsert_needs_a_unique_index_on_the_key(postgres_dsn: str, postgres_db: Connection) -> None:
    write(postgres_dsn, patients(5))  # created by append without a key: no index
    execute(postgres_db, "CREATE UNIQUE INDEX patients_name ON patients (name)")
    with pytest.raises(
        ConnectorError,
        match=r"mode='upsert' into table 'patients' .* needs a primary key or unique index on "
        r"exactly 'id'.*unique indexes are on \(name\). Add one \(ALTER TABLE "
        r"\"test_\d+\".\"patients\" ADD PRIMARY KEY \(\"id\"\)\)",
    ):
        write(postgres_dsn, patients(2), mode="upsert", key=["id"])


def test_upsert_with_a_key_twice_in_the_input_says_so(postgres_dsn: str) -> None:
    write(postgres_dsn, patients(5), mode="upsert", key=["id"])
    twice = pa.concat_tables([patients(2), patients(2)])
    with pytest.raises(ConnectorError, match=r"holds some key 'id' more than once"):
        write(postgres_dsn, twice, mode="upsert", key=["id"])


@pytest.mark.parametrize("mode", ["append", "replace", "upsert"])
@pytest.mark.parametrize(
    "error", [CANCELLED, ConnectorError("upstream broke on chunk 3")], ids=["cancelled", "error"]
)
def test_failure_midway_leaves_the_table_exactly_as_it_was(
    postgres_dsn: str, mode: Mode, error: Exception, postgres_db: Connection
) -> None:
    """The users' bug: a load failing after some chunks must change nothing."""
    write(postgres_dsn, patients(15), mode="upsert", key=["id"])
    before = query(postgres_db, "SELECT * FROM patients ORDER BY id")
    later = patients(90, offset=10).to_batches(max_chunksize=30)  # overlaps: upsert would update
    node = sink(postgres_dsn, mode=mode, key=["id"])
    with pytest.raises(type(error), match=str(error)):
        node.write(failing_after(later, 2, error), CTX)
    assert query(postgres_db, "SELECT * FROM patients ORDER BY id").equals(before)
    assert leftovers(postgres_db) == []
    tables = "SELECT tablename::text AS t FROM pg_tables WHERE schemaname = current_schema()"
    assert rows(postgres_db, tables + " ORDER BY 1") == [{"t": "_etlkit_loads"}, {"t": "patients"}]
    assert rows(postgres_db, "SELECT count(*) AS n FROM _etlkit_loads") == [{"n": 1}]


def test_failed_first_load_creates_nothing(postgres_dsn: str, postgres_db: Connection) -> None:
    with pytest.raises(RunCancelledError):
        sink(postgres_dsn, table="fresh.patients").write(
            failing_after(patients(20).to_batches(5), 2, CANCELLED), CTX
        )
    assert not exists(postgres_db, "fresh.patients")
    assert rows(postgres_db, "SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'fresh'") == [
        {"n": 0}
    ]


def test_rejected_chunk_is_named_and_nothing_is_written(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    write(postgres_dsn, patients(5))
    bad = patients(3, offset=50).set_column(2, "score", pa.array(["1.5", "x", None]))
    with pytest.raises(
        ConnectorError,
        match=r"append into table 'patients' .* failed: .*column \"score\" is of type double "
        r"precision but expression is of type text.*Nothing was written",
    ):
        sink(postgres_dsn).write(iter(bad.to_batches(max_chunksize=2)), CTX)
    later = patients(4, offset=60).to_batches(max_chunksize=2)
    bad_chunk = bad.to_batches(max_chunksize=2)[0]
    with pytest.raises(ConnectorError, match=r"chunk 3 .* does not cast to the first chunk's"):
        sink(postgres_dsn).write(iter([*later, bad_chunk]), CTX)
    assert rows(postgres_db, "SELECT count(*) AS n FROM patients") == [{"n": 5}]


def test_chunks_with_other_columns_than_the_first_are_refused(postgres_dsn: str) -> None:
    first, second = patients(3).to_batches()[0], patients(3).drop_columns(["score"]).to_batches()[0]
    with pytest.raises(ConnectorError, match=r"chunk 2 .* has columns .* but the first chunk had"):
        sink(postgres_dsn).write(iter([first, second]), CTX)


def test_missing_table_without_create(postgres_dsn: str, postgres_db: Connection) -> None:
    put(postgres_db, "patients", patients(1))
    with pytest.raises(
        ConnectorError, match=r"table 'patient' not found.*Did you mean 'patients'\?.*create=True"
    ):
        write(postgres_dsn, patients(2), table="patient", create=False)


def test_loading_a_view_is_refused(postgres_dsn: str, postgres_db: Connection) -> None:
    put(postgres_db, "patients", patients(1))
    execute(postgres_db, "CREATE VIEW recent AS SELECT * FROM patients")
    with pytest.raises(ConnectorError, match=r"table 'recent' .* is a view; mode='replace'"):
        write(postgres_dsn, patients(2), table="recent", mode="replace")


def test_empty_input_without_model_replaces_with_an_empty_table(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    write(postgres_dsn, patients(4))
    assert sink(postgres_dsn, mode="replace").write(iter([]), CTX).rows == 0
    assert query(postgres_db, "SELECT * FROM patients").schema.names == list(
        Patient.to_schema().columns
    )
    assert rows(postgres_db, "SELECT count(*) AS n FROM patients") == [{"n": 0}]


def test_write_result_uri_masks_the_password(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    result = write(postgres_dsn, patients(2))
    assert result.uri == (
        f"postgresql://etlkit:***@127.0.0.1:{postgres_server.port}/etlkit/patients"
    )
    assert postgres_server.password not in result.uri


# -- connections, secrets and configuration -------------------------------------------------------


def test_connection_refused_is_transient_and_masks_the_password(
    postgres_server: PostgresServer,
) -> None:
    with socket_closed_port() as port:
        dsn = postgres_server.dsn_for(port=port)
        for node in (source(dsn, table="patients"), sink(dsn)):
            with pytest.raises(PostgresTransientError) as info:
                list(node.read(CTX)) if isinstance(node, Source) else node.write(iter([]), CTX)
            message = str(info.value)
            assert isinstance(info.value, TransientError)
            assert f"postgresql://etlkit:***@127.0.0.1:{port}/etlkit" in message
            assert "Connection refused" in message
            assert postgres_server.password not in message + repr(node)
            assert postgres_server.password not in str(info.value.__cause__)


def test_wrong_password_is_not_transient_and_is_never_shown(
    postgres_server: PostgresServer,
) -> None:
    dsn = postgres_server.dsn_for(password="s3cret-Wrong-pass")
    with pytest.raises(ConnectorError, match=r"password authentication failed") as info:
        list(source(dsn, table="patients").read(CTX))
    assert not isinstance(info.value, TransientError)
    assert "etlkit:***@" in str(info.value)
    assert "s3cret-Wrong-pass" not in str(info.value)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)


def test_repr_and_config_errors_never_show_the_password() -> None:
    dsn = "postgresql://ann:hunter2hunter2@db.example:6432/clinic?sslmode=require"
    node = PostgresSink("x", dsn=dsn, table="patients", mode="replace")
    node.name = "load"
    shown = repr(node) + repr(vars(node)) + repr(source(dsn, table="patients"))
    assert "hunter2" not in shown
    assert (
        "<PostgresSink load replace postgresql://ann:***@db.example:6432/clinic/patients>" in shown
    )
    with pytest.raises(ConfigError, match=r"not a PostgreSQL URI") as info:
        PostgresSink("x", dsn="mysql://ann:hunter2hunter2@db/clinic", table="t")
    assert "hunter2" not in str(info.value)
    assert mask_dsn("host=db password=hunter2 user=ann") == "host=db password=*** user=ann"


def test_constructing_never_connects() -> None:
    from pipelines.patient_data import PatientData, PatientDataPostgres

    assert PatientDataPostgres.name == "patient_data_postgres"
    assert PatientDataPostgres.graph().order == PatientData.graph().order
    load = PatientDataPostgres.nodes["load"]
    assert isinstance(load, PostgresSink)
    assert (load.conn, load.table, load.mode) == ("hospital_db", "patients", "replace")
    assert PatientDataPostgres.nodes["cleaned"] is PatientData.nodes["cleaned"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PostgresSink("x", table="t"), "exactly one of dsn= .* or conn= .*; got neither"),
        (lambda: PostgresSink("x", dsn="postgresql://h/d", conn="c", table="t"), "got both"),
        (lambda: PostgresSink("x", conn="c", table="t", mode="upsert"), "needs key="),
        (lambda: PostgresSink("x", conn="c", table="t", key="id"), r"write key=\['id'\]"),
        (lambda: PostgresSink("x", conn="c", table="t", mode="merge"), "mode must be one of"),  # type: ignore[arg-type]
        (lambda: PostgresSource(conn="c", schema=Patient), "exactly one of table= or query="),
        (lambda: PostgresSource(conn="c", table="a.b.c", schema=Patient), "table name"),
        (lambda: PostgresSink("x", conn="c", table='p"; DROP TABLE x; --'), "table name"),
    ],
    ids=["neither", "both", "upsert-no-key", "key-str", "mode", "table-query", "parts", "quote"],
)
def test_configuration_errors(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


@dataclass(frozen=True)
class FakeSecret:
    value: str

    def get_secret_value(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "'***'"


def test_named_connection_is_resolved_when_the_node_runs(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[str] = []

    def resolve(name: str) -> types.SimpleNamespace:
        resolved.append(name)
        return types.SimpleNamespace(uri=FakeSecret(f"{postgres_dsn}&pool_slots=4"))

    node = PostgresSink("x", conn="hospital_db", table="patients")
    assert resolved == []  # not at construction
    monkeypatch.setattr("connectors.postgres.connection.resolve", resolve)
    assert node.write(iter(patients(3).to_batches()), CTX).rows == 3
    reader = PostgresSource(conn="hospital_db", table="patients", schema=Patient)
    assert read(reader).num_rows == 3
    assert resolved == ["hospital_db", "hospital_db"]


def test_named_connection_from_etlkit_connections(
    postgres_dsn: str, postgres_db: Connection, tmp_path: Path
) -> None:
    """With the real module: ETLKIT_CONN_<NAME> as a URI, its etlkit extras left out."""
    connections = pytest.importorskip("etlkit.settings.connections")
    env = {"ETLKIT_CONN_HOSPITAL_DB": f"{postgres_dsn}&pool_slots=2"}
    previous = connections.activate(connections.load_connections(tmp_path, env=env))
    try:
        load = PostgresSink("x", conn="hospital_db", table="patients", mode="replace")
        result = load.write(iter(patients(4).to_batches()), CTX)
    finally:
        connections.activate(previous)
    assert rows(postgres_db, "SELECT count(*) AS n FROM patients") == [{"n": 4}]
    assert result.uri == postgres_dsn.split("@")[0].rsplit(":", 1)[0] + ":***@" + (
        postgres_dsn.split("@")[1].split("?")[0] + "/patients"
    )


def test_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "adbc_driver_postgresql.dbapi", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "etlkit-framework\[postgres\]"'):
        list(source("postgresql://u:p@127.0.0.1:1/d", table="t").read(CTX))


# -- end to end ------------------------------------------------------------------------------------


def test_patient_data_postgres_pipeline_loads_the_table(
    postgres_dsn: str, settings: ek.Settings, tmp_path: Path, postgres_db: Connection
) -> None:
    from pipelines.patient_data import PatientDataPostgres

    paths = generate(tmp_path / "demo", 2_000)

    class PatientDataHere(PatientDataPostgres):  # the shipped one resolves conn="hospital_db"
        load = PostgresSink("cleaned", dsn=postgres_dsn, table="patients", mode="replace")

    for _ in range(2):  # the second run replaces the table
        result = PatientDataHere.run(
            date="2025-01-01", params={"data_dir": str(paths.patients.parent)}, settings=settings
        )
        assert result.error is None, result.error
    expected = pl.read_csv(paths.patients).height
    stats = rows(
        postgres_db,
        "SELECT count(*) AS n, count(DISTINCT patient_id) AS ids, "
        "count(*) FILTER (WHERE email <> lower(email)) AS upper, "
        "min(birth_date) IS NOT NULL AS dates FROM patients",
    )
    assert stats == [{"n": expected, "ids": expected, "upper": 0, "dates": True}]
    assert leftovers(postgres_db) == []


@contextmanager
def socket_closed_port() -> Iterator[int]:
    """A local port nothing listens on (bound, never listening, so nobody else takes it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_three_incremental_runs_load_each_row_exactly_once(
    postgres_dsn: str, postgres_db: Connection, tmp_path: Path
) -> None:
    from etlkit.storage.store import RunStore
    from etlkit.testing import MemorySink

    put(postgres_db, "visits", patients(10))

    class Visits(ek.Pipeline):
        visits = PostgresSource(dsn=postgres_dsn, table="visits", schema=Patient).incremental(
            "seen_at"
        )
        out = MemorySink(visits)

    settings = ek.load_settings(tmp_path, env={}, cli={"paths.state_dir": str(tmp_path)})
    loaded: list[int] = []
    with RunStore(tmp_path / "store.sqlite") as store:
        for appended in (0, 5, 3):
            if appended:
                start = len(loaded)
                with postgres_db.cursor() as cur:
                    cur.adbc_ingest("visits", patients(appended, offset=start), mode="append")
            result = Visits.run(settings=settings, store=store)
            assert result.state == "success", result.error
            ids = Visits.out.table().column("id").to_pylist()
            # filtered in PostgreSQL (`>=`: the row at the stored cursor is read, not loaded)
            assert result.nodes["visits"].rows_in == len(ids) + (1 if appended else 0)
            loaded.extend(ids)
        assert store.get_state("visits", "cursor.visits") == "2025-01-01 17:00:00.000000"
    assert sorted(loaded) == list(range(18))
    assert len(loaded) == len(set(loaded))


class FailsWhenTold(ek.Transform[Patient, Patient]):
    """Fails while `failures` is above zero, one failure per call."""

    def __init__(self, *inputs: ek.Source) -> None:
        super().__init__(*inputs)
        self.failures = 0

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("warehouse busy")
        return batch


def test_incremental_cursor_survives_retries_and_late_rows_load_once(
    postgres_dsn: str, postgres_db: Connection, tmp_path: Path
) -> None:
    """The cursor comes from the committed source output whichever attempt committed it (an
    in-run retry, `Pipeline.retry` after a failed run), and a row committed late with the
    stored cursor's timestamp is loaded once."""
    from etlkit.storage.store import RunStore
    from etlkit.testing import MemorySink

    put(postgres_db, "visits", patients(4))  # seen_at 00:00 .. 03:00

    class Visits(ek.Pipeline):
        visits = PostgresSource(dsn=postgres_dsn, table="visits", schema=Patient).incremental(
            "seen_at", primary_key=["id"]
        )
        flaky = FailsWhenTold(visits).options(retries=1)
        out = MemorySink(flaky)

    def late(ids: list[int], hour: int) -> pa.Table:
        table = patients(len(ids), offset=ids[0])
        return table.set_column(3, "seen_at", pa.array([datetime(2025, 1, 1, hour)] * len(ids)))

    settings = ek.load_settings(tmp_path, env={}, cli={"paths.state_dir": str(tmp_path)})
    loaded: list[int] = []
    with RunStore(tmp_path / "store.sqlite") as store:
        Visits.flaky.failures = 1  # fails once, the in-run retry reuses `visits`
        result = Visits.run(settings=settings, store=store, sleep=lambda _: None)
        assert result.state == "success", result.error
        assert [e.kind for e in store.events(result.run_id)].count("node_retry") == 1
        loaded.extend(Visits.out.table().column("id").to_pylist())
        assert store.get_state("visits", "cursor.visits") == "2025-01-01 03:00:00.000000"

        with postgres_db.cursor() as cur:  # 10 and 11 commit late, at the stored 03:00
            cur.adbc_ingest("visits", late([10, 11], 3), mode="append")
            cur.adbc_ingest("visits", late([12], 5), mode="append")
        Visits.flaky.failures = 2  # the run fails; `Pipeline.retry` reuses `visits`
        failed = Visits.run(settings=settings, store=store, sleep=lambda _: None)
        assert failed.state == "failed"
        assert store.get_state("visits", "cursor.visits") == "2025-01-01 03:00:00.000000"
        retried = Visits.retry(failed.run_id, store=store, settings=settings)
        assert retried.state == "success", retried.error
        assert retried.nodes["visits"].state == "reused"
        loaded.extend(Visits.out.table().column("id").to_pylist())
        assert store.get_state("visits", "cursor.visits") == "2025-01-01 05:00:00.000000"

        with postgres_db.cursor() as cur:
            cur.adbc_ingest("visits", late([13], 5), mode="append")
        for _ in range(2):  # 13 once, then nothing
            result = Visits.run(settings=settings, store=store)
            assert result.state == "success", result.error
            loaded.extend(Visits.out.table().to_pydict().get("id", []))
    assert loaded == [0, 1, 2, 3, 10, 11, 12, 13]
