"""TPC-H Q6, the forecasting revenue change: revenue from small 1994 orders at 5-7% discount.

    etlkit run pipelines/tpch_q6.py --param data_dir=~/.cache/etlkit-bench/sf1
    etlkit run pipelines/tpch_q6.py:TpchQ6Streaming --param data_dir=~/.cache/etlkit-bench/sf1

Lineitem is read from `{data_dir}/parquet/lineitem.parquet` (`tpchgen-cli` output), only the four
columns Q6 needs, and about 2% of its rows qualify. Two ways to keep them, both real patterns:

- `TpchQ6`: a `Lazy` node filters with polars, which pushes the filter into the Parquet scan
  (it decodes the other columns only where the dates match), the way to filter a large file;
- `TpchQ6Streaming`: a `Transform` keeps the qualifying rows chunk by chunk as they stream, the
  way to run arbitrary per-chunk Python; every row crosses the chunk boundary.

DuckDB then sums them; the total lands in `{out_dir}/tpch_q6.parquet`.
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import ParquetSink, ParquetSource


class Lineitem(pdp.DataFrameModel):
    """The lineitem columns Q6 reads."""

    l_quantity: float = pdp.Field(in_range={"min_value": 1, "max_value": 50})
    l_extendedprice: float = pdp.Field(ge=0)
    l_discount: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.1})
    l_shipdate: pl.Date = pdp.Field(nullable=False)


class Qualifying(pdp.DataFrameModel):
    """A line shipped in 1994, under 24 units, at a 5 to 7% discount."""

    l_extendedprice: float = pdp.Field(ge=0)
    l_discount: float = pdp.Field(in_range={"min_value": 0.05, "max_value": 0.07})


class Revenue(pdp.DataFrameModel):
    """The revenue the discounts brought."""

    revenue: float = pdp.Field(nullable=True)


#: The lines Q6 sums: shipped in 1994, discount 0.05 to 0.07, quantity under 24.
QUALIFIES = (
    pl.col("l_shipdate") >= dt.date(1994, 1, 1),
    pl.col("l_shipdate") < dt.date(1995, 1, 1),
    pl.col("l_discount").is_between(0.05, 0.07),
    pl.col("l_quantity") < 24,
)


class FilterQualifying(ek.Lazy[Qualifying]):
    """Keeps the lines Q6 sums, as one polars query over the whole input."""

    def query(self, ctx: ek.Context, lineitem: pl.LazyFrame) -> pl.LazyFrame:
        return lineitem.filter(*QUALIFIES).select("l_extendedprice", "l_discount")


class KeepQualifying(ek.Transform[Lineitem, Qualifying]):
    """Keeps the lines Q6 sums, one chunk at a time."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.filter(*QUALIFIES).select("l_extendedprice", "l_discount")


class TpchQ6(ek.Pipeline):
    """TPC-H Q6 over Parquet files."""

    params = {"data_dir": "data/tpch/sf1", "out_dir": "data/tpch/results"}

    lineitem = ParquetSource("{data_dir}/parquet/lineitem.parquet", schema=Lineitem)
    qualifying: ek.Node = FilterQualifying(lineitem)
    total = ek.Sql(
        "select sum(l_extendedprice * l_discount) as revenue from {qualifying}", schema=Revenue
    )
    report = ParquetSink("{out_dir}/tpch_q6.parquet", total)


class TpchQ6Streaming(TpchQ6):
    """TPC-H Q6 with the filter as a streaming transform: only that node differs."""

    qualifying = KeepQualifying(TpchQ6.lineitem)
