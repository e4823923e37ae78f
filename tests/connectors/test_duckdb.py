"""DuckDBTableSource and DuckDBTableSink: round trips, projection, atomic loads, errors, locks."""

from __future__ import annotations

import pickle
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

from connectors.duckdb import DatabaseLockedError, DuckDBTableSink, DuckDBTableSource, Mode
from etlkit.errors import ConfigError, ConnectorError, RunCancelledError, TransientError
from etlkit.model.nodes import Context, Sink, Source
from etlkit.model.schema import arrow_schema
from tests.connectors.contract import (
    MakeSink,
    MakeSource,
    Model,
    ReadCommitted,
    SinkContract,
    SourceContract,
    new_load,
)


class Patient(pdp.DataFrameModel):
    id: int
    name: str
    score: float = pdp.Field(nullable=True)
    seen_at: pl.Datetime


class PatientName(pdp.DataFrameModel):
    name: str
    id: int


CTX = Context(
    pipeline="p",
    run_id="20250101T000000Z-abc123",
    logical_date=datetime(2025, 1, 1, tzinfo=UTC),
    node="n",
)


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


def sink(
    db: Path, table: str = "patients", *, mode: Mode = "append", schema: Model | None = None
) -> DuckDBTableSink:
    node = DuckDBTableSink(str(db), table, "upstream", mode=mode, schema=schema)
    node.name = "n"
    return node


def source(
    db: Path,
    *,
    table: str | None = None,
    query: str | None = None,
    schema: Model = Patient,
    chunk_rows: int | None = None,
) -> DuckDBTableSource:
    node = DuckDBTableSource(
        str(db), table=table, query=query, schema=schema, chunk_rows=chunk_rows
    )
    node.name = "n"
    return node


def write(db: Path, data: pa.Table, *, table: str = "patients", mode: Mode = "append") -> int:
    """Loads `data` in chunks of 10 rows; the number of rows written."""
    batches = iter(data.to_batches(max_chunksize=10))
    return sink(db, table, mode=mode).write(batches, new_load(CTX)).rows


def read(
    db: Path, *, table: str | None = None, query: str | None = None, schema: Model = Patient
) -> pa.Table:
    batches = list(source(db, table=table, query=query, schema=schema).read(CTX))
    return pa.Table.from_batches(batches, batches[0].schema if batches else arrow_schema(schema))


def stored(db: Path, sql: str = "SELECT * FROM patients ORDER BY id") -> pa.Table:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def tables(db: Path) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
            "WHERE table_name != '_etlkit_loads' ORDER BY 1"  # the load ledger: tested apart
        ).fetchall()
    finally:
        con.close()
    return [str(name) for (name,) in rows]


def failing_after(
    batches: list[pa.RecordBatch], count: int, error: Exception
) -> Iterator[pa.RecordBatch]:
    yield from batches[:count]
    raise error


FAILURES = [
    RunCancelledError("run 20250101T000000Z-abc123 was cancelled: node 'other' failed"),
    ConnectorError("upstream source broke on chunk 3"),
]


def test_round_trip_in_chunks(tmp_path: Path) -> None:
    db = tmp_path / "warehouse" / "clinic.duckdb"  # the directory is created too
    table = patients(95)
    result = sink(db).write(iter(table.to_batches(max_chunksize=20)), CTX)
    assert result.rows == 95
    assert result.uri == f"duckdb://{db.resolve()}/patients"
    assert result.extra == {"mode": "append"}

    batches = list(source(db, table="patients", chunk_rows=30).read(CTX))
    assert [b.num_rows for b in batches] == [30, 30, 30, 5]
    got = pa.Table.from_batches(batches)
    assert got.schema.names == ["id", "name", "score", "seen_at"]
    assert got.to_pylist() == table.to_pylist()


def test_source_projects_to_model_columns_in_model_order(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(12))
    got = read(db, table="patients", schema=PatientName)
    assert got.schema.names == ["name", "id"]
    assert got.to_pylist() == patients(12).select(["name", "id"]).to_pylist()


def test_source_casts_to_model_types(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE patients (ID INTEGER, name VARCHAR, score DECIMAL(6, 2), "
        "seen_at TIMESTAMP, ward VARCHAR)"
    )
    con.execute("INSERT INTO patients VALUES (7, 'ann', 1.25, '2025-01-01 08:00:00', 'b')")
    con.close()
    got = read(db, table="patients")
    assert got.schema.types == [pa.int64(), pa.large_string(), pa.float64(), pa.timestamp("us")]
    assert got.to_pylist() == [
        {"id": 7, "name": "ann", "score": 1.25, "seen_at": datetime(2025, 1, 1, 8)}
    ]


def test_source_reads_a_templated_query(tmp_path: Path) -> None:
    db = tmp_path / "clinic_20250101.duckdb"
    write(db, patients(30))
    got = read(
        tmp_path / "clinic_{ds_nodash}.duckdb",
        query="SELECT * FROM patients WHERE seen_at < TIMESTAMP '{ds} 10:00:00';",
        schema=PatientName,
    )
    assert got.column("id").to_pylist() == list(range(10))


def test_an_injected_param_in_a_query_is_a_bound_value_that_writes_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(30))
    target = tmp_path / "x.csv"
    node = source(db, query="SELECT * FROM patients WHERE id < {top}", schema=PatientName)
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, params={"top": "3"})
    assert [b.num_rows for b in node.read(ctx)] == [3]

    injected = f"0; COPY (select 1) TO '{target}'; select * from patients where 1 < 2"
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, params={"top": injected})
    with pytest.raises(ConnectorError, match="Could not convert string"):
        list(node.read(ctx))
    assert not target.exists()


def test_append_twice_doubles_rows(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(25))
    write(db, patients(25, offset=25).select(["seen_at", "score", "name", "id"]))  # any order
    assert stored(db).to_pylist() == patients(50).to_pylist()


def test_replace_replaces_table_and_columns(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(25))
    result = write(db, pa.table({"id": [1, 2], "ward": ["a", "b"]}), mode="replace")
    assert result == 2
    assert stored(db, "SELECT * FROM patients").to_pylist() == [
        {"id": 1, "ward": "a"},
        {"id": 2, "ward": "b"},
    ]
    assert tables(db) == ["main.patients"]


def test_schema_qualified_table_is_created_and_read(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(8), table="analytics.patients")
    assert tables(db) == ["analytics.patients"]
    assert read(db, table="Analytics.Patients").num_rows == 8  # names are case-insensitive


@pytest.mark.parametrize("error", FAILURES, ids=["cancelled", "connector-error"])
def test_failed_replace_leaves_old_table_identical(tmp_path: Path, error: Exception) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(15))
    before = stored(db)
    new = pa.table({"id": list(range(90)), "ward": ["x"] * 90}).to_batches(max_chunksize=30)
    with pytest.raises(type(error), match=str(error)):
        sink(db, mode="replace").write(failing_after(new, 2, error), CTX)
    assert stored(db).equals(before)
    assert tables(db) == ["main.patients"]  # no temporary table left behind


@pytest.mark.parametrize("error", FAILURES, ids=["cancelled", "connector-error"])
def test_failed_append_adds_nothing(tmp_path: Path, error: Exception) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(15))
    before = stored(db)
    later = patients(90, offset=100).to_batches(max_chunksize=30)
    with pytest.raises(type(error)):
        sink(db).write(failing_after(later, 2, error), CTX)
    assert stored(db).equals(before)


def test_failed_first_write_leaves_no_database_file(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    with pytest.raises(RunCancelledError):
        sink(db).write(failing_after(patients(20).to_batches(5), 2, FAILURES[0]), CTX)
    assert list(tmp_path.iterdir()) == []


def test_append_type_error_names_chunk_and_adds_nothing(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(5))
    good = patients(5, offset=5).to_batches()[0]
    bad = pa.record_batch(
        {
            "id": ["not a number"],
            "name": ["x"],
            "score": [1.0],
            "seen_at": pa.array([datetime(2025, 1, 1)], pa.timestamp("us")),
        }
    )
    with pytest.raises(ConnectorError, match=r"rejected chunk 2 .*'patients'.*not a number"):
        sink(db).write(iter([good, bad]), CTX)
    assert stored(db).num_rows == 5


def test_append_column_mismatch_names_missing_and_extra(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(5))
    other = patients(3).drop_columns(["score"]).append_column("ward", pa.array(["a"] * 3))
    with pytest.raises(
        ConnectorError,
        match=r"chunk 1 does not match table 'patients'.*missing column\(s\) 'score' "
        r"and extra column\(s\) 'ward'.*mode='replace'",
    ):
        write(db, other)
    assert stored(db).num_rows == 5


def test_empty_input_creates_empty_table_from_model(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    assert sink(db, schema=Patient).write(iter([]), CTX).rows == 0
    assert stored(db).schema.names == ["id", "name", "score", "seen_at"]
    assert read(db, table="patients").num_rows == 0


def test_missing_table_lists_tables_and_suggests(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(3))
    write(db, patients(3), table="analytics.visits")
    with pytest.raises(
        ConnectorError,
        match=r"table 'patiens' not found in DuckDB database '.*clinic.duckdb'; tables are "
        r"'analytics.visits' and 'patients'. Did you mean 'patients'\?",
    ):
        read(db, table="patiens")


def test_missing_column_names_it_and_suggests(tmp_path: Path) -> None:
    class Typo(pdp.DataFrameModel):
        nmae: str

    db = tmp_path / "clinic.duckdb"
    write(db, patients(3))
    with pytest.raises(
        ConnectorError,
        match=r"table 'patients' in DuckDB database '.*' has no column\(s\) 'nmae' that "
        r"Typo declares; its columns are .* Did you mean 'name'\?",
    ):
        read(db, table="patients", schema=Typo)


def test_missing_database_file(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match=r"DuckDB database '.*nope.duckdb' does not exist"):
        read(tmp_path / "nope.duckdb", table="patients")
    assert not (tmp_path / "nope.duckdb").exists()


def test_bad_query_is_a_connector_error(tmp_path: Path) -> None:
    db = tmp_path / "clinic.duckdb"
    write(db, patients(3))
    with pytest.raises(ConnectorError, match=r"the query in '.*' cannot be read: .*Catalog"):
        read(db, query="SELECT * FROM nowhere")


@pytest.mark.parametrize(
    "table", ['patients"; DROP TABLE x; --', "it's", "a;b", "a.b.c", "a..b", ""]
)
def test_unsafe_table_names_are_refused(tmp_path: Path, table: str) -> None:
    with pytest.raises(ConfigError, match="table name"):
        sink(tmp_path / "x.duckdb", table)
    with pytest.raises(ConfigError, match="table name"):
        source(tmp_path / "x.duckdb", table=table)


def test_rendered_table_names_are_checked_too(tmp_path: Path) -> None:
    ctx = Context(pipeline="p", run_id="r", logical_date=CTX.logical_date, params={"t": "a;b"})
    with pytest.raises(ConfigError, match="contains ';'"):
        sink(tmp_path / "x.duckdb", "{t}").write(iter([]), ctx)


def test_source_takes_exactly_one_of_table_and_query(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of table= or query=; got neither"):
        source(tmp_path / "x.duckdb")
    with pytest.raises(ConfigError, match="got both"):
        source(tmp_path / "x.duckdb", table="t", query="SELECT 1")
    with pytest.raises(ConfigError, match="in-memory"):
        source(Path(":memory:"), table="t")


def test_reader_holding_the_file_locks_out_a_writer(tmp_path: Path) -> None:
    """DuckDB's file lock: no writer while a reader has the file open (and vice versa).

    Across processes the second opener gets "Could not set lock"; inside one process DuckDB
    refuses a read-write connection beside a read-only one. Both are DatabaseLockedError, a
    TransientError, so a retry after the other node finished succeeds.
    """
    db = tmp_path / "clinic.duckdb"
    write(db, patients(50))
    reading = source(db, table="patients", chunk_rows=10).read(CTX)
    assert isinstance(reading, Generator)
    next(reading)  # the source holds a read-only connection until it is exhausted or closed
    with pytest.raises(DatabaseLockedError, match="already open in this process") as info:
        write(db, patients(5, offset=50))
    assert isinstance(info.value, TransientError)
    reading.close()
    assert write(db, patients(5, offset=50)) == 5


def test_lock_error_pickles() -> None:
    error = DatabaseLockedError("locked")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is DatabaseLockedError
    assert str(copy) == "locked"


def test_nothing_is_written_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    db = tmp_path / "clinic.duckdb"
    write(db, patients(5))
    assert read(db, table="patients").num_rows == 5
    assert list(home.iterdir()) == []


class TestDuckDBSourceContract(SourceContract):
    @pytest.fixture
    def make_source(self, tmp_path: Path) -> MakeSource:
        def make(table: pa.Table, model: Model, *, chunk_rows: int | None = None) -> Source:
            db = tmp_path / "contract.duckdb"
            con = duckdb.connect(str(db))
            con.register("incoming", table)
            con.execute("CREATE OR REPLACE TABLE data AS SELECT * FROM incoming")
            con.close()
            return DuckDBTableSource(str(db), table="data", schema=model, chunk_rows=chunk_rows)

        return make


class TestDuckDBSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self, tmp_path: Path) -> MakeSink:
        def make(model: Model | None) -> tuple[Sink, ReadCommitted]:
            db = tmp_path / "contract.duckdb"

            def committed() -> pa.Table | None:
                if not db.exists():
                    return None
                con = duckdb.connect(str(db), read_only=True)
                try:
                    if not con.execute(
                        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'out'"
                    ).fetchall()[0][0]:
                        return None
                    return con.sql("SELECT * FROM out").to_arrow_table()
                finally:
                    con.close()

            return DuckDBTableSink(str(db), "out", "upstream", schema=model), committed

        return make
