"""Pipelines the Dask executor's tests run: workers import them from here (`tests.distributed
.jobs`), as they would a user's pipelines module.

`Bills` reads a folder of Parquet files, one partition each, through a transform; `DieOnce`
kills its own worker process the first time it sees a chunk while a flag file exists (it
removes the flag first, so the rerun elsewhere goes through; of two workers at it at once,
only the one whose removal succeeded dies).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import ClassVar

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import etlkit as ek
from connectors.files import ParquetSink, ParquetSource
from connectors.postgres import PostgresSource
from pipelines.tpch_reshape import TpchReshape


class Bill(pdp.DataFrameModel):
    bill_id: int = pdp.Field(nullable=False, unique=True)
    amount: float = pdp.Field(ge=0)


class TaxedBill(Bill):
    taxed: float


class AddTax(ek.Transform[Bill, TaxedBill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(taxed=pl.col("amount") * 1.1)


class DieOnce(ek.Transform[Bill, TaxedBill]):
    """Adds the tax; kills its worker process on a chunk seen while `{flag}` exists."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        try:  # one worker claims the flag: removing it is atomic, a look then a removal is not
            Path(ctx.params["flag"]).unlink()
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
        return batch.with_columns(taxed=pl.col("amount") * 1.1)


logger = logging.getLogger(__name__)


class LoggingTax(AddTax):
    """Adds the tax, warning once per chunk (and `{chatter}` lines more)."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        logger.warning("taxing bills %d to %d", batch["bill_id"][0], batch["bill_id"][-1])
        for line in range(int(ctx.params["chatter"])):
            logger.warning("chatter %d of bill %d: %s", line, batch["bill_id"][0], "x" * 100)
        return super().process(batch, ctx)


class Bills(ek.Pipeline):
    """Bills of several files, taxed, summed per file's id range and written."""

    params: ClassVar[dict[str, str]] = {"data_dir": "data/bills", "out_dir": "out"}

    bills = ParquetSource("{data_dir}/*.parquet", schema=Bill)
    taxed: ek.Node = AddTax(bills)
    total = ek.Sql("select count(*) as n, sum(taxed) as taxed from {taxed}")
    output = ParquetSink("{out_dir}/bills.parquet", taxed)
    summary = ParquetSink("{out_dir}/summary.parquet", total)


class BillsDying(Bills):
    """`Bills` whose transform kills its worker once (see `DieOnce`)."""

    params: ClassVar[dict[str, str]] = {"data_dir": "data/bills", "out_dir": "out", "flag": "die"}

    taxed = DieOnce(Bills.bills)


class LoggingBills(Bills):
    """`Bills` whose transform logs (see `LoggingTax`)."""

    params: ClassVar[dict[str, str]] = {"data_dir": "data/bills", "out_dir": "out", "chatter": "0"}

    taxed = LoggingTax(Bills.bills)


class ReshapeSplit(TpchReshape):
    """The reshape job with its lineitem file split into partitions of row groups."""

    lineitem = ParquetSource(
        "{data_dir}/parquet/lineitem.parquet",
        schema=TpchReshape.lineitem.output_model,
        partition_rows=10_000,
    )


class Event(pdp.DataFrameModel):
    id: int
    n: int = pdp.Field(nullable=True)
    amount: float = pdp.Field(nullable=True)


class PgEvents(ek.Pipeline):
    """Table `events` of the connection `warehouse`, read in key ranges of `id` (one partition
    each, on the workers), written to Parquet."""

    params: ClassVar[dict[str, str]] = {"out_dir": "out"}

    events = PostgresSource(
        conn="warehouse", table="events", schema=Event, partition_column="id", partitions=4
    )
    output = ParquetSink("{out_dir}/events.parquet", events)


class LakeBills(ek.Pipeline):
    """Bills read from S3 through the connection `lake` (its endpoint and keys), taxed and
    written."""

    params: ClassVar[dict[str, str]] = {"data_dir": "s3://b/bills", "out_dir": "out"}

    bills = ParquetSource("{data_dir}/*.parquet", schema=Bill, conn="lake")
    taxed = AddTax(bills)
    output = ParquetSink("{out_dir}/bills.parquet", taxed)


class DailyBills(Bills):
    """`Bills` of a folder a day (`{data_dir}/{ds}/`), read for each day of the run's data
    interval (a month, by its schedule)."""

    schedule = "@monthly"
    bills = ParquetSource("{data_dir}/{ds}/*.parquet", schema=Bill, each_day=True)
    taxed = AddTax(bills)


def write_bills(
    folder: Path, files: int, rows: int, *, bad: int | None = None, first_id: int = 0
) -> list[int]:
    """`files` Parquet files of `rows` bills each, in row groups of 100 (file `bad` with one
    negative amount), ids from `first_id`; the bill ids written."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for f in range(files):
        first = first_id + f * rows
        amounts = [float(i % 97) for i in range(first, first + rows)]
        if f == bad:
            amounts[rows // 2] = -1.0
        table = pa.table(
            {"bill_id": pa.array(range(first, first + rows), pa.int64()), "amount": amounts}
        )
        pq.write_table(table, folder / f"bills-{f:02d}.parquet", row_group_size=100)
        ids.extend(range(first, first + rows))
    return ids
