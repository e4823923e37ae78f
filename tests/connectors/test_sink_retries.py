"""Sinks load exactly once across a SIGKILL and `etlkit retry`, and leave no temporary files.

Each test runs `etlkit run` in a child process on a pipeline whose sink is a subclass of a real
one, and kills it with SIGKILL at a chosen point: just after the destination committed, before
the run store heard of it (`PauseAfterCommit`), or while the sink is still writing
(`PauseMidStream`); a ParquetSink adopting its input's staged file also before it adopts and
once the file is placed under its temporary name (tests/connectors/test_parquet_adoption.py).
Then `etlkit retry` (or `etlkit gc`) runs, and the destination must hold
exactly one load's rows, with no temporary files left next to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.duckdb import DuckDBTableSink
from connectors.files import CsvSink, ParquetDatasetSink, ParquetSink
from connectors.postgres import PostgresSink
from connectors.tables import LEDGER_COLUMNS
from etlkit.errors import ConnectorError
from etlkit.storage.store import RunStore
from etlkit.testing import MemorySource
from tests.conftest import REPO
from tests.connectors.contract import make_context

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection

pytestmark = pytest.mark.integration

ROWS = 20_000

PIPELINE = """
import threading
from pathlib import Path

import pandera.polars as pdp
import polars as pl
import pyarrow as pa

import connectors.files.adopt as adopting
import etlkit as ek
from connectors.duckdb import DuckDBTableSink
from connectors.files import CsvSink, ParquetDatasetSink, ParquetSink
from connectors.postgres import PostgresSink
from etlkit.testing import MemorySource

PLACE = adopting._place
MID_ADOPTION = ["no-such-file"]


def hanging_place(staged, source, fs, temp):
    '''Blocks once the staged file is linked or copied under its temporary name (killed there).'''
    how = PLACE(staged, source, fs, temp)
    if Path(MID_ADOPTION[0]).exists():
        print("PLACED", flush=True)
        threading.Event().wait()
    return how


adopting._place = hanging_place


class Row(pdp.DataFrameModel):
    id: int
    part: int


def paused(sink):
    class PauseAfterCommit(sink):
        '''Blocks after its destination committed while the flag file exists (killed there).'''

        def write(self, batches, ctx):
            return self.pause(super().write(batches, ctx), ctx)

        def adopt(self, staged, ctx):  # a ParquetSink adopting its input's staged file
            if Path(ctx.params["before"]).exists():
                print("ADOPTING", flush=True)  # the input is committed, the sink not yet
                threading.Event().wait()
            MID_ADOPTION[0] = ctx.params["mid"]
            return self.pause(super().adopt(staged, ctx), ctx)

        def pause(self, result, ctx):
            if Path(ctx.params["flag"]).exists():
                print("COMMITTED", flush=True)
                threading.Event().wait()
            return result

    return PauseAfterCommit


class PauseMidStream(ek.Transform[Row, Row]):
    '''Blocks on a chunk past the middle while the flag file exists: its sink is mid-write.'''

    def process(self, batch, ctx):
        if Path(ctx.params["hang"]).exists() and batch["id"][0] >= ROWS // 2:
            print("WRITING", flush=True)
            threading.Event().wait()
        return batch


ROWS = {rows}


class Loads(ek.Pipeline):
    params = {{key: "no-such-file" for key in ("flag", "hang", "before", "mid")}}
    numbers = MemorySource(
        pa.table({{"id": list(range(ROWS)), "part": [i % 4 for i in range(ROWS)]}}),
        schema=Row,
        chunk_rows=ROWS // 10,
    )
    passed = PauseMidStream(numbers, stage={stage})
    load = paused({sink})
"""

SINKS = {
    "postgres-append": "PostgresSink)(passed, dsn={dsn!r}, table='numbers', mode='append'",
    "postgres-upsert": (
        "PostgresSink)(passed, dsn={dsn!r}, table='numbers', mode='upsert', key=['id']"
    ),
    "duckdb-append": "DuckDBTableSink)('out/w.duckdb', 'numbers', passed, mode='append'",
    "duckdb-replace": "DuckDBTableSink)('out/w.duckdb', 'numbers', passed, mode='replace'",
    "parquet": "ParquetSink)('out/numbers.parquet', passed",
    "csv": "CsvSink)('out/numbers.csv', passed",
    "dataset": "ParquetDatasetSink)('out/numbers', passed, partition_by=['part']",
}


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    return {**base, "PYTHONPATH": str(REPO)}


def etlkit(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etlkit", *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )


def project_with(tmp_path: Path, sink: str, dsn: str = "", *, stage: bool = True) -> Path:
    """A project whose pipeline `loads` writes to `sink`; `stage=False`: the transform's
    output is not staged, so a ParquetSink receives it chunk by chunk (a staged one it adopts
    once committed, tests/connectors/test_parquet_adoption.py)."""
    (tmp_path / "pipelines").mkdir()
    code = PIPELINE.format(rows=ROWS, sink=SINKS[sink].format(dsn=dsn), stage=stage)
    (tmp_path / "pipelines" / "loads.py").write_text(code)
    return tmp_path


def run_killed_at(project: Path, marker: str, **params: str) -> str:
    """`etlkit run loads`, SIGKILLed when it prints `marker`; the run's id."""
    args = [a for name, value in params.items() for a in ("--param", f"{name}={value}")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "etlkit", "run", "loads", "--progress", "plain", *args],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id, seen = "", []
    for line in proc.stdout:
        seen.append(line)
        if " of loads started" in line:
            run_id = line.split(" run ", 1)[1].split()[0]
        if marker in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert marker in "".join(seen), "".join(seen)
    assert run_id
    return run_id


def retry(project: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    retried = etlkit(project, "retry", run_id, "--progress", "plain")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert f"run {run_id} success" in retried.stdout
    return retried


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.mark.postgres
@pytest.mark.parametrize("sink", ["postgres-append", "postgres-upsert"])
def test_postgres_load_killed_before_the_store_heard_is_not_repeated_by_retry(
    tmp_path: Path, sink: str, postgres_dsn: str, postgres_db: Connection
) -> None:
    project = project_with(tmp_path, sink, postgres_dsn)
    flag = project / "pause.flag"
    flag.write_text("")
    run_id = run_killed_at(project, "COMMITTED", flag=str(flag))

    def count(sql: str) -> int:
        with postgres_db.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
            assert row is not None
            return int(row[0])

    assert count("SELECT count(*) FROM numbers") == ROWS  # committed before the kill
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        states = [n.state for n in store.node_runs(run_id) if n.node == "load"]
        assert "done" not in states  # the store never heard of it
    flag.unlink()

    retried = retry(project, run_id)

    assert count("SELECT count(*) FROM numbers") == ROWS
    assert count("SELECT count(DISTINCT id) FROM numbers") == ROWS
    assert count(f"SELECT count(*) FROM _etlkit_loads WHERE run_id = '{run_id}'") == 1
    assert "already committed" in retried.stdout + retried.stderr + _log(project, run_id)


@pytest.mark.parametrize("sink", ["duckdb-append", "duckdb-replace"])
def test_duckdb_load_killed_before_the_store_heard_is_not_repeated_by_retry(
    tmp_path: Path, sink: str
) -> None:
    project = project_with(tmp_path, sink)
    flag = project / "pause.flag"
    flag.write_text("")
    run_id = run_killed_at(project, "COMMITTED", flag=str(flag))
    database = project / "out" / "w.duckdb"

    def count(sql: str) -> int:
        with duckdb.connect(str(database), read_only=True) as con:
            row = con.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    assert count("SELECT count(*) FROM numbers") == ROWS
    flag.unlink()

    retry(project, run_id)

    assert count("SELECT count(*) FROM numbers") == ROWS
    assert count("SELECT count(DISTINCT id) FROM numbers") == ROWS
    assert count(f"SELECT count(*) FROM _etlkit_loads WHERE run_id = '{run_id}'") == 1


def read_back(project: Path, sink: str) -> pl.DataFrame:
    out = project / "out"
    if sink == "parquet":
        return pl.read_parquet(out / "numbers.parquet")
    if sink == "csv":
        return pl.read_csv(out / "numbers.csv")
    dataset = pads.dataset(out / "numbers", format="parquet", partitioning="hive")
    return pl.DataFrame(pl.from_arrow(dataset.to_table()))


@pytest.mark.parametrize("sink", ["parquet", "csv", "dataset"])
def test_file_sink_killed_before_the_store_heard_holds_one_load_after_retry(
    tmp_path: Path, sink: str
) -> None:
    project = project_with(tmp_path, sink)
    flag = project / "pause.flag"
    flag.write_text("")
    run_id = run_killed_at(project, "COMMITTED", flag=str(flag))
    assert read_back(project, sink).height == ROWS
    flag.unlink()

    retry(project, run_id)

    frame = read_back(project, sink)
    assert frame.height == ROWS
    assert frame["id"].n_unique() == ROWS
    visible = sorted(p.name for p in (project / "out").iterdir())
    assert visible == [{"parquet": "numbers.parquet", "csv": "numbers.csv"}.get(sink, "numbers")]
    if sink == "dataset":
        assert sorted(p.name for p in (project / "out" / "numbers").iterdir()) == [
            f"part={i}" for i in range(4)
        ]
        assert all(len(list(p.iterdir())) == 1 for p in (project / "out" / "numbers").iterdir())
    assert hidden(project / "out") == []


@pytest.mark.parametrize("sink", ["parquet", "csv"])  # a dataset is written at the end
def test_retry_removes_the_temporary_files_of_a_sink_killed_mid_write(
    tmp_path: Path, sink: str
) -> None:
    project = project_with(tmp_path, sink, stage=False)  # the sink writes as chunks come
    hang = project / "hang.flag"
    hang.write_text("")
    run_id = run_killed_at(project, "WRITING", hang=str(hang))
    left = hidden(project / "out")
    assert left, "the sink was killed mid-write: its temporary file stays"
    assert all(f".tmp-{run_id}-" in name for name in left), left
    hang.unlink()

    retry(project, run_id)

    assert hidden(project / "out") == []
    assert read_back(project, sink).height == ROWS


def test_gc_removes_the_temporary_files_of_a_dead_run(tmp_path: Path) -> None:
    project = project_with(tmp_path, "parquet", stage=False)
    hang = project / "hang.flag"
    hang.write_text("")
    run_id = run_killed_at(project, "WRITING", hang=str(hang))
    (temp,) = hidden(project / "out")
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        store.finish_run(run_id, "interrupted", error="the process running it vanished")

    cleaned = etlkit(project, "gc", "--keep-last", "10")

    assert cleaned.returncode == 0, cleaned.stderr
    assert f"(left by run {run_id})" in cleaned.stdout
    assert temp in cleaned.stdout
    assert hidden(project / "out") == []


def _log(project: Path, run_id: str) -> str:
    logs = etlkit(project, "logs", run_id)
    return logs.stdout


def test_dataset_retry_puts_back_the_dataset_a_kill_left_moved_aside(tmp_path: Path) -> None:
    """A kill between the commit's two moves leaves the old dataset aside and none in place."""
    target = tmp_path / "lake" / "numbers"
    sink = ParquetDatasetSink(str(target), "x", partition_by=["part"])
    ctx = make_context("numbers")
    old = pa.table({"id": [1, 2], "part": [0, 1]})
    sink.write(iter(old.to_batches()), ctx)
    aside = target.with_name(f".numbers.old-{ctx.run_id}-0a1b2c3d")
    target.rename(aside)
    (target.parent / f".numbers.tmp-{ctx.run_id}-4e5f6a7b").mkdir()
    (target.parent / f".numbers.tmp-{OTHER_RUN}-4e5f6a7b").mkdir()  # another run's: kept

    removed = sink.discard_leftovers(ctx)

    assert removed == [str(target.parent / f".numbers.tmp-{ctx.run_id}-4e5f6a7b")]
    assert sorted(p.name for p in target.parent.iterdir()) == [
        f".numbers.tmp-{OTHER_RUN}-4e5f6a7b",
        "numbers",
    ]
    back = pads.dataset(target, format="parquet", partitioning="hive").to_table()
    assert sorted(back.column("id").to_pylist()) == [1, 2]


OTHER_RUN = "20250102T000000Z-def456"


class Sized(pdp.DataFrameModel):
    id: int
    name: str
    amount: float


class DropsAll(ek.Transform[Sized, Sized]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.clear()


def test_every_sink_writes_the_columns_and_types_of_an_empty_output(
    tmp_path: Path, settings: ek.Settings
) -> None:
    """No rows reach the sinks (a query or a transform keeps none) and none declares a schema:
    each still writes its input's columns, typed (DuckDB reads the Parquet file)."""
    rows = pa.table({"id": [1, 2], "name": ["a", "b"], "amount": [1.5, 2.5]})
    out = tmp_path / "out"

    class Empty(ek.Pipeline):
        numbers = MemorySource(rows, schema=Sized)
        none = ek.Sql("select id, name, amount from {numbers} where id > 100")
        parquet = ParquetSink(str(out / "none.parquet"), none)
        csv = CsvSink(str(out / "none.csv"), none)
        table = DuckDBTableSink(str(out / "w.duckdb"), "none", none)
        dropped = DropsAll(numbers)
        modelled = ParquetSink(str(out / "dropped.parquet"), dropped)

    assert Empty.run(settings=settings).state == "success"

    assert pq.read_schema(out / "dropped.parquet").names == ["id", "name", "amount"]

    assert pq.read_schema(out / "none.parquet").names == ["id", "name", "amount"]
    with duckdb.connect() as con:
        described = con.execute(f"DESCRIBE SELECT * FROM '{out / 'none.parquet'}'").fetchall()
    assert [(c[0], c[1]) for c in described] == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("amount", "DOUBLE"),
    ]
    assert (out / "none.csv").read_text() == '"id","name","amount"\n'
    with duckdb.connect(str(out / "w.duckdb"), read_only=True) as con:
        described = con.execute("DESCRIBE none").fetchall()
    assert [(c[0], c[1]) for c in described] == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("amount", "DOUBLE"),
    ]


@pytest.mark.postgres
def test_postgres_sink_creates_the_table_of_an_empty_output(
    postgres_dsn: str, postgres_db: Connection, settings: ek.Settings
) -> None:
    rows = pa.table({"id": [1, 2], "name": ["a", "b"], "amount": [1.5, 2.5]})

    class Empty(ek.Pipeline):
        numbers = MemorySource(rows, schema=Sized)
        none = ek.Sql("select id, name, amount from {numbers} where id > 100")
        table = PostgresSink(none, dsn=postgres_dsn, table="none")

    assert Empty.run(settings=settings).state == "success"
    with postgres_db.cursor() as cur:
        cur.execute(
            "SELECT column_name::text, data_type::text FROM information_schema.columns "
            "WHERE table_name = 'none' AND table_schema = current_schema() "
            "ORDER BY ordinal_position"
        )
        assert cur.fetchall() == [
            ("id", "bigint"),
            ("name", "text"),
            ("amount", "double precision"),
        ]


def test_a_second_duckdb_load_under_one_load_id_writes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "w.duckdb"
    sink = DuckDBTableSink(str(database), "numbers", "x")
    ctx = make_context("numbers")
    rows = pa.table({"id": [1, 2, 3]})
    assert sink.write(iter(rows.to_batches()), ctx).rows == 3
    assert sink.find_load(ctx) == ek.WriteResult(
        rows=3,
        uri=f"duckdb://{database.resolve()}/numbers",
        extra={"mode": "append", "load_id": ctx.load_id},
    )

    with pytest.raises(ConnectorError, match=r"load p/.*/numbers was already committed \("):
        sink.write(iter(rows.to_batches()), ctx)

    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM numbers").fetchone() == (3,)


@pytest.mark.postgres
def test_a_second_postgres_load_under_one_load_id_writes_nothing(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    sink = PostgresSink("x", dsn=postgres_dsn, table="numbers")
    ctx = make_context("numbers")
    rows = pa.table({"id": [1, 2, 3]})
    assert sink.find_load(ctx) is None
    assert PostgresSink("x", dsn=postgres_dsn, table="nowhere.numbers").find_load(ctx) is None
    written = sink.write(iter(rows.to_batches()), ctx)
    assert written.rows == 3
    assert sink.find_load(ctx) == ek.WriteResult(
        rows=3, uri=written.uri, extra={"mode": "append", "load_id": ctx.load_id}
    )

    with pytest.raises(ConnectorError, match=r"load p/.*/numbers was already committed \("):
        sink.write(iter(rows.to_batches()), ctx)

    with postgres_db.cursor() as cur:
        cur.execute("SELECT count(*) FROM numbers")
        assert cur.fetchone() == (3,)


@pytest.mark.postgres
def test_a_role_that_cannot_create_tables_loads_through_a_ledger_made_ahead(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    schema = postgres_dsn.rsplit("%3D", 1)[1]
    with postgres_db.cursor() as cur:
        cur.execute("CREATE TABLE numbers (id bigint)")
        cur.execute(f"CREATE TABLE _etlkit_loads ({LEDGER_COLUMNS})")
        cur.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM CURRENT_USER")
    try:
        sink = PostgresSink("x", dsn=postgres_dsn, table="numbers")
        ctx = make_context("numbers")
        assert sink.write(iter(pa.table({"id": [1, 2]}).to_batches()), ctx).rows == 2
        assert sink.find_load(ctx) is not None
    finally:
        with postgres_db.cursor() as cur:
            cur.execute(f"GRANT CREATE ON SCHEMA {schema} TO CURRENT_USER")


def test_gc_skips_the_sinks_of_a_pipeline_it_cannot_load(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    with RunStore(tmp_path / ".etlkit" / "etlkit.sqlite") as store:
        store.create_run(
            run_id=OTHER_RUN,
            pipeline="gone",
            logical_date=datetime(2025, 1, 2, tzinfo=UTC),
            params={},
            trigger="manual",
            staging_root=str(tmp_path / ".etlkit" / "staging"),
        )
        store.finish_run(OTHER_RUN, "failed", error="boom")

    cleaned = etlkit(tmp_path, "gc", "--keep-last", "10")

    assert cleaned.returncode == 0, cleaned.stderr
    assert "skipped the sinks of pipeline 'gone': " in cleaned.stdout
