"""The everyday reshape job: lineitem filtered and given derived columns chunk by chunk.

    python -m benchmarks.tpch --sf 1 --workloads reshape-parquet    # generates the data once
    etlkit run pipelines/tpch_reshape.py --param data_dir=~/.cache/etlkit-bench/sf1
    etlkit run pipelines/tpch_reshape.py:TpchReshapeCsv --param data_dir=~/.cache/etlkit-bench/sf1

The job most users write: read files, clean and derive columns in a `Transform`, write the
result. Ten lineitem columns are read from `{data_dir}/parquet/lineitem.parquet`
(`tpchgen-cli` output; `TpchReshapeCsv` reads `csv/lineitem.csv`). The transform keeps the
lines of 25 units or fewer (half of them) and derives four columns: the charge (arithmetic),
the comment trimmed and upper-cased (strings), the month shipped as `YYYY-MM` (dates) and
whether the line arrived after its commit date (a flag). Every row crosses the chunk boundary
and is written again: about half the input lands in `{out_dir}/tpch_reshape.parquet`.
"""

from __future__ import annotations

import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import CsvSource, ParquetSink, ParquetSource


class Lineitem(pdp.DataFrameModel):
    """The lineitem columns the reshape reads, with the ranges TPC-H gives them."""

    l_orderkey: int = pdp.Field(nullable=False, ge=1)
    l_linenumber: int = pdp.Field(in_range={"min_value": 1, "max_value": 7})
    l_quantity: float = pdp.Field(in_range={"min_value": 1, "max_value": 50})
    l_extendedprice: float = pdp.Field(ge=0)
    l_discount: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.1})
    l_tax: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.08})
    l_shipdate: pl.Date = pdp.Field(nullable=False)
    l_commitdate: pl.Date = pdp.Field(nullable=False)
    l_receiptdate: pl.Date = pdp.Field(nullable=False)
    l_comment: str = pdp.Field(nullable=False)


class Reshaped(pdp.DataFrameModel):
    """A small line with its charge, cleaned comment, month shipped and lateness."""

    l_orderkey: int = pdp.Field(nullable=False, ge=1)
    l_linenumber: int = pdp.Field(in_range={"min_value": 1, "max_value": 7})
    l_quantity: float = pdp.Field(in_range={"min_value": 1, "max_value": 25})
    l_extendedprice: float = pdp.Field(ge=0)
    l_discount: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.1})
    l_shipdate: pl.Date = pdp.Field(nullable=False)
    charge: float = pdp.Field(ge=0)
    comment: str = pdp.Field(nullable=False)
    ship_month: str = pdp.Field(str_length={"min_value": 7, "max_value": 7})
    late: bool = pdp.Field(nullable=False)


class Reshape(ek.Transform[Lineitem, Reshaped]):
    """Keeps the lines of 25 units or fewer and derives four columns, one chunk at a time."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        price, discount = pl.col("l_extendedprice"), pl.col("l_discount")
        return batch.filter(pl.col("l_quantity") <= 25).select(
            "l_orderkey",
            "l_linenumber",
            "l_quantity",
            "l_extendedprice",
            "l_discount",
            "l_shipdate",
            charge=price * (1 - discount) * (1 + pl.col("l_tax")),
            comment=pl.col("l_comment").str.strip_chars().str.to_uppercase(),
            ship_month=pl.col("l_shipdate").dt.strftime("%Y-%m"),
            late=pl.col("l_receiptdate") > pl.col("l_commitdate"),
        )


class TpchReshape(ek.Pipeline):
    """The reshape over Parquet files."""

    params = {"data_dir": "data/tpch/sf1", "out_dir": "data/tpch/results"}

    lineitem: ek.Source = ParquetSource("{data_dir}/parquet/lineitem.parquet", schema=Lineitem)
    reshaped: ek.Node = Reshape(lineitem)
    output = ParquetSink("{out_dir}/tpch_reshape.parquet", reshaped)


class TpchReshapeCsv(TpchReshape):
    """The reshape over CSV files: only the source differs."""

    lineitem = CsvSource("{data_dir}/csv/lineitem.csv", schema=Lineitem)
