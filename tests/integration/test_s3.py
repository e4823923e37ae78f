"""S3 end to end, against moto's server on 127.0.0.1: file connectors, staging and queries.

Connectors get credentials from the named connection `lake` (the `lake` fixture activates it)
or, without `conn=`, from the AWS variables the `s3_endpoint` fixture sets. Staging on S3 uses
those variables too, as does the `etlkit query` subprocess.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import (
    CsvSink,
    CsvSource,
    NdjsonSink,
    NdjsonSource,
    ParquetDatasetSink,
    ParquetSink,
    ParquetSource,
)
from connectors.files import parquet as parquet_module
from etlkit.errors import ConnectorError, RunCancelledError, StagingError
from etlkit.model.nodes import Context, Source
from etlkit.settings import connections
from etlkit.storage.staging import Staging
from tests.s3_server import SECRET, filesystem, storage_options

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.s3]

CTX = Context(
    pipeline="p", run_id="20250301T000000Z-abc123", logical_date=datetime(2025, 3, 1, tzinfo=UTC)
)


class Row(pdp.DataFrameModel):
    id: int
    name: str
    amount: float = pdp.Field(nullable=True)
    paid: bool


def rows(count: int, offset: int = 0) -> pa.Table:
    ids = list(range(offset, offset + count))
    return pa.table(
        {
            "id": ids,
            "name": [f"patient {i}, ward {i % 5}" for i in ids],
            "amount": [None if i % 7 == 3 else i * 1.25 for i in ids],
            "paid": [i % 2 == 0 for i in ids],
        },
        schema=pa.schema(
            [
                ("id", pa.int64()),
                ("name", pa.string()),
                ("amount", pa.float64()),
                ("paid", pa.bool_()),
            ]
        ),
    )


def cancelled(table: pa.Table) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches(max_chunksize=10)[:2]
    raise RunCancelledError("cancelled")


def s3(endpoint: str) -> Any:
    """An s3fs filesystem on the server, with no listing cached."""
    return filesystem(endpoint)


def read_back(source: Source) -> pa.Table:
    source.name = "src"
    return pa.Table.from_batches(list(source.read(CTX))).sort_by("id")


SINKS: list[tuple[type[CsvSink | ParquetSink | NdjsonSink], type[Source]]] = [
    (CsvSink, CsvSource),
    (ParquetSink, ParquetSource),
    (NdjsonSink, NdjsonSource),
]


# ---------------------------------------------------------------- file connectors


@pytest.mark.parametrize(("sink_class", "source_class"), SINKS)
@pytest.mark.parametrize("conn", ["lake", None], ids=["conn", "aws-env"])
def test_file_sink_and_source_round_trip_on_s3(
    s3_bucket: str,
    lake: connections.Connection,
    sink_class: type[CsvSink | ParquetSink | NdjsonSink],
    source_class: type[Any],
    conn: str | None,
) -> None:
    url = f"s3://{s3_bucket}/out/{{ds}}/data.file"
    sink = sink_class(url, "upstream", schema=Row, conn=conn)
    sink.name = "snk"
    result = sink.write(iter(rows(500).to_batches(max_chunksize=100)), CTX)
    assert result.rows == 500
    assert result.uri == f"s3://{s3_bucket}/out/2025-03-01/data.file"
    back = read_back(source_class(f"s3://{s3_bucket}/out/*/data.file", schema=Row, conn=conn))
    assert back.to_pylist() == rows(500).to_pylist()


def test_a_parquet_file_of_many_windows_is_read_by_two_readers_on_s3(
    s3_endpoint: str,
    s3_bucket: str,
    lake: connections.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 600 rows in row groups of 20, chunks of 25: windows of 100 rows, every other one read by
    # a second reader that opens the object again through s3fs on a thread of its own
    fs = s3(s3_endpoint)
    with fs.open(f"{s3_bucket}/big/rows.parquet", "wb") as handle:
        pq.write_table(rows(600), handle, row_group_size=20)
    source = ParquetSource(f"s3://{s3_bucket}/big/rows.parquet", schema=Row, conn="lake")
    source.chunk_rows = 25
    source.name = "src"
    reopened: list[str] = []
    reopen = parquet_module._open_parquet

    def spy(fs: Any, path: str) -> Any:
        reopened.append(path)
        return reopen(fs, path)

    monkeypatch.setattr(parquet_module, "_open_parquet", spy)

    batches = list(source.read(CTX))

    assert reopened == [f"{s3_bucket}/big/rows.parquet"]  # the second reader's own handle
    assert [b.num_rows for b in batches] == [25] * 24
    assert pa.Table.from_batches(batches).to_pylist() == rows(600).to_pylist()  # in order


@pytest.mark.parametrize("sink_class", [CsvSink, ParquetSink, NdjsonSink])
def test_cancelled_write_leaves_no_object_at_the_target(
    s3_endpoint: str,
    s3_bucket: str,
    lake: connections.Connection,
    sink_class: type[CsvSink | ParquetSink | NdjsonSink],
) -> None:
    fs = s3(s3_endpoint)
    sink = sink_class(f"s3://{s3_bucket}/out/data.file", "upstream", schema=Row, conn="lake")
    sink.name = "snk"
    with pytest.raises(RunCancelledError):
        sink.write(cancelled(rows(50)), CTX)
    assert fs.find(s3_bucket) == []  # neither the target nor a temporary object

    sink.write(iter(rows(5).to_batches()), CTX)
    before = fs.cat(f"{s3_bucket}/out/data.file")
    with pytest.raises(RunCancelledError):
        sink.write(cancelled(rows(50, offset=100)), CTX)
    assert fs.find(s3_bucket) == [f"{s3_bucket}/out/data.file"]
    assert fs.cat(f"{s3_bucket}/out/data.file") == before


def test_dataset_sink_on_s3_writes_partitions_and_replaces_atomically(
    s3_endpoint: str, s3_bucket: str, lake: connections.Connection
) -> None:
    fs = s3(s3_endpoint)
    url = f"s3://{s3_bucket}/lake/rows"
    sink = ParquetDatasetSink(url, "upstream", partition_by=["paid"], schema=Row, conn="lake")
    sink.name = "snk"
    with pytest.raises(RunCancelledError):
        sink.write(cancelled(rows(50)), CTX)
    assert fs.find(s3_bucket) == []

    result = sink.write(iter(rows(40).to_batches(max_chunksize=15)), CTX)
    assert (result.rows, result.extra["files"]) == (40, 2)
    assert sorted(fs.find(s3_bucket)) == [
        f"{s3_bucket}/lake/rows/paid=false/part-0.parquet",
        f"{s3_bucket}/lake/rows/paid=true/part-0.parquet",
    ]
    with pytest.raises(RunCancelledError):
        sink.write(cancelled(rows(50, offset=100)), CTX)
    assert read_back(ParquetSource(url, schema=Row, conn="lake")).num_rows == 40

    sink.write(iter(rows(3, offset=7).to_batches()), CTX)
    back = read_back(ParquetSource(url, schema=Row, conn="lake"))
    assert back.column("id").to_pylist() == [7, 8, 9]
    assert all(not name.rsplit("/", 1)[-1].startswith(".") for name in fs.find(s3_bucket))
    assert len(fs.ls(f"{s3_bucket}/lake", refresh=True)) == 1  # no .old or .tmp left over


def test_sinks_never_create_a_bucket(s3_endpoint: str, lake: connections.Connection) -> None:
    for sink in (
        ParquetSink("s3://no-such-bucket/x.parquet", "upstream", conn="lake"),
        ParquetDatasetSink("s3://no-such-bucket/ds", "upstream", partition_by=["p"], conn="lake"),
    ):
        sink.name = "snk"
        with pytest.raises(ConnectorError, match=r"bucket 'no-such-bucket' .* does not exist"):
            sink.write(iter(rows(3).to_batches()), CTX)
    assert not s3(s3_endpoint).exists("no-such-bucket")


def test_conn_must_match_the_path_scheme(tmp_path: Path, lake: connections.Connection) -> None:
    source = CsvSource(str(tmp_path / "x.csv"), schema=Row, conn="lake")
    with pytest.raises(ConnectorError, match=r"cannot be reached through connection 'lake', a s3"):
        read_back(source)
    missing = CsvSource("s3://b/x.csv", schema=Row, conn="laek")
    with pytest.raises(connections.ConnectionNotFoundError, match=r"Did you mean 'lake'"):
        read_back(missing)


# ---------------------------------------------------------------- staging and connections


def test_staging_on_s3_commits_and_polars_reads_it_with_or_without_aws_env(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"s3://{s3_bucket}/staging"
    writer = Staging(root).writer("p", CTX.run_id, "n", part_rows=20)
    writer.append_many(rows(30).to_batches(max_chunksize=10))
    writer.commit()
    staging = Staging(root)
    files = staging.files("p", CTX.run_id, "n")
    run = f"s3://{s3_bucket}/staging/p/{CTX.run_id}"
    assert files == [f"{run}/n.parts/part-00000.parquet", f"{run}/n.parquet"]
    assert sorted(staging.fs.find(run)) == sorted(f[len("s3://") :] for f in files)  # no more
    assert staging.verify("p", CTX.run_id, "n") == []
    assert staging.committed("p", CTX.run_id) == ["n"]

    # from the AWS variables, polars needs only permission to speak plain http
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    assert staging.polars_storage_options() == {"aws_allow_http": "true"}
    frame = pl.scan_parquet(files, storage_options=staging.polars_storage_options()).collect()
    assert frame.height == 30

    # explicit storage options are translated, and work without any AWS variable
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    explicit = Staging(root, storage_options=storage_options(s3_endpoint))
    options = explicit.polars_storage_options()
    assert options == {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": SECRET,
        "aws_endpoint_url": s3_endpoint,
        "aws_allow_http": "true",
    }
    assert pl.scan_parquet(files, storage_options=options).collect().height == 30


def test_staging_never_creates_a_bucket(s3_endpoint: str) -> None:
    with pytest.raises(StagingError, match=r"its bucket does not exist"):
        Staging("s3://no-such-bucket/staging").writer("p", CTX.run_id, "n")
    assert not s3(s3_endpoint).exists("no-such-bucket")


def test_connection_test_lists_the_bucket_and_masks_the_secret(
    s3_bucket: str, lake: connections.Connection
) -> None:
    ok, message = connections.test_connection(lake, timeout=5)
    assert ok, message
    assert "listed the buckets" in message
    bucket = connections.Connection(
        "lake", "s3", s3_bucket, None, lake.login, lake.password, None, lake.extra
    )
    assert connections.test_connection(bucket)[0]
    missing = connections.Connection(
        "lake", "s3", "no-such-bucket", None, lake.login, lake.password, None, lake.extra
    )
    ok, message = connections.test_connection(missing, timeout=5)
    assert not ok
    assert "cannot list s3://no-such-bucket" in message
    assert SECRET not in message


# ---------------------------------------------------------------- a whole pipeline


class RawBill(pdp.DataFrameModel):
    invoice_id: int = pdp.Field(nullable=False)
    amount: float = pdp.Field(ge=0)
    billed_at: pl.Datetime


class Bill(pdp.DataFrameModel):
    invoice_id: int
    amount: float
    month: str


class AddMonth(ek.Transform[RawBill, Bill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.select("invoice_id", "amount", month=pl.col("billed_at").dt.strftime("%Y-%m"))


class Largest(ek.Lazy[Bill]):
    """A polars lazy node over staged S3 data."""

    def query(self, ctx: ek.Context, *frames: pl.LazyFrame) -> pl.LazyFrame:
        return frames[0].sort("amount", descending=True).head(5)


class S3Report(ek.Pipeline):
    params: ClassVar[dict[str, str]] = {"bucket": "etlkit-test"}
    billing = CsvSource("s3://{bucket}/billing/{ds}/*.csv", schema=RawBill, conn="lake")
    monthly = AddMonth(billing)
    totals = ek.Sql(
        "select month, count(*) as invoices, round(sum(amount), 2) as total "
        "from {monthly} group by month order by month"
    )
    largest = Largest(monthly)
    report = ParquetSink("s3://{bucket}/reports/{ds}/totals.parquet", totals, conn="lake")


def billing_csvs(fs: Any, bucket: str) -> pl.DataFrame:
    """Three CSV files of 1,000 invoices each under billing/2025-03-01/; all the rows."""
    start = datetime(2025, 1, 1)
    parts = []
    for part in range(3):
        ids = range(part * 1000, (part + 1) * 1000)
        table = pa.table(
            {
                "invoice_id": list(ids),
                "amount": [round((i * 37) % 1000 + 0.5, 2) for i in ids],
                "billed_at": [start + timedelta(hours=2 * i) for i in ids],
            }
        )
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        fs.pipe(f"{bucket}/billing/2025-03-01/part-{part}.csv", buffer.getvalue())
        parts.append(pl.from_arrow(table))
    return pl.concat(parts)  # type: ignore[arg-type]


def expected_totals(data: pl.DataFrame) -> list[tuple[str, int, float]]:
    totals = (
        data.group_by(month=pl.col("billed_at").dt.strftime("%Y-%m"))
        .agg(invoices=pl.len(), total=pl.col("amount").sum().round(2))
        .sort("month")
    )
    return [(m, int(n), float(t)) for m, n, t in totals.iter_rows()]


@pytest.mark.slow
def test_pipeline_with_connections_and_staging_on_s3(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, lake: connections.Connection
) -> None:
    fs = s3(s3_endpoint)
    expected = expected_totals(billing_csvs(fs, s3_bucket))
    root = f"s3://{s3_bucket}/staging"
    settings = ek.load_settings(
        tmp_path,
        env={},
        cli={"paths.state_dir": str(tmp_path / "state"), "paths.staging_root": root},
    )

    result = S3Report.run(date="2025-03-01", settings=settings)
    result.raise_for_error()
    assert (result.state, result.staging_root) == ("success", root)
    report = pq.read_table(f"{s3_bucket}/reports/2025-03-01/totals.parquet", filesystem=fs)
    assert [tuple(row.values()) for row in report.to_pylist()] == expected
    staged = Staging(root).files("s3_report", result.run_id, "monthly")
    assert staged
    assert all(f.startswith(root + "/") for f in staged)

    sql = "select month, invoices, total, (select count(*) from largest) as top from totals"
    back = ek.query(sql + " order by month", root, "s3_report")
    assert [(m, n, t) for m, n, t, _ in back.iter_rows()] == expected
    assert back["top"].to_list() == [5] * len(expected)


PIPELINE = """
import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import CsvSource, ParquetSink


class RawBill(pdp.DataFrameModel):
    invoice_id: int
    amount: float
    billed_at: pl.Datetime


class Largest(ek.Lazy):
    def query(self, ctx, monthly):
        return monthly.sort("amount", descending=True).head(5)


class AwsEnvReport(ek.Pipeline):
    params = {"bucket": "etlkit-test"}
    billing = CsvSource("s3://{bucket}/billing/{ds}/*.csv", schema=RawBill)
    monthly = ek.Sql("select *, strftime(billed_at, '%Y-%m') as month from {billing}")
    totals = ek.Sql(
        "select month, count(*) as invoices, round(sum(amount), 2) as total "
        "from {monthly} group by month order by month"
    )
    largest = Largest(monthly)
    report = ParquetSink("s3://{bucket}/reports/{ds}/totals.parquet", totals)
"""


@pytest.mark.slow
def test_etlkit_run_and_query_configured_only_by_aws_variables(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    """What a user does today: AWS_* variables (AWS_ENDPOINT_URL for a non-AWS store) and
    ETLKIT_PATHS__STAGING_ROOT, no named connection."""
    expected = expected_totals(billing_csvs(s3(s3_endpoint), s3_bucket))
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "aws_env_report.py").write_text(PIPELINE)
    root = f"s3://{s3_bucket}/staging"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    env.update(PYTHONPATH=str(REPO), ETLKIT_PATHS__STAGING_ROOT=root)

    def etlkit(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "etlkit", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert SECRET not in done.stdout + done.stderr
        return done.stdout

    etlkit("run", "aws_env_report", "--date", "2025-03-01")
    report = pq.read_table(
        f"{s3_bucket}/reports/2025-03-01/totals.parquet", filesystem=s3(s3_endpoint)
    )
    assert [tuple(row.values()) for row in report.to_pylist()] == expected
    sql = "select month, invoices, total, (select count(*) from largest) as top from totals"
    out = etlkit(
        "query", sql + " order by month", "--pipeline", "aws_env_report", "--format", "csv"
    )
    lines = list(csv.DictReader(io.StringIO(out)))
    assert [(r["month"], int(r["invoices"]), float(r["total"])) for r in lines] == expected
    assert {r["top"] for r in lines} == {"5"}
