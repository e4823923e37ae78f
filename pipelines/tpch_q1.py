"""TPC-H Q1, the pricing summary report: lineitem aggregated per return flag and line status.

    python -m benchmarks.tpch --sf 1 --workloads q1-parquet    # generates the data once
    etlkit run pipelines/tpch_q1.py --param data_dir=~/.cache/etlkit-bench/sf1
    etlkit run pipelines/tpch_q1.py:TpchQ1Csv --param data_dir=~/.cache/etlkit-bench/sf1

`data_dir` holds `tpchgen-cli` output: `parquet/lineitem.parquet` for `TpchQ1`, and
`csv/lineitem.csv` for `TpchQ1Csv`, the same pipeline reading CSV. The source's model is the
projection: only the seven columns Q1 needs are read. The report lands in
`{out_dir}/tpch_q1.parquet`.
"""

from __future__ import annotations

import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import CsvSource, ParquetSink, ParquetSource


class Lineitem(pdp.DataFrameModel):
    """The lineitem columns Q1 reads, with the ranges the TPC-H specification gives them."""

    l_quantity: float = pdp.Field(in_range={"min_value": 1, "max_value": 50})
    l_extendedprice: float = pdp.Field(ge=0)
    l_discount: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.1})
    l_tax: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.08})
    l_returnflag: str = pdp.Field(isin=["A", "N", "R"])
    l_linestatus: str = pdp.Field(isin=["F", "O"])
    l_shipdate: pl.Date = pdp.Field(nullable=False)


class PricingSummary(pdp.DataFrameModel):
    """One line of the report: a return flag and line status with their totals and averages."""

    l_returnflag: str = pdp.Field(nullable=False)
    l_linestatus: str = pdp.Field(nullable=False)
    sum_qty: float
    sum_base_price: float
    sum_disc_price: float
    sum_charge: float
    avg_qty: float
    avg_price: float
    avg_disc: float
    count_order: int = pdp.Field(ge=1)


class TpchQ1(ek.Pipeline):
    """TPC-H Q1 over Parquet files."""

    params = {"data_dir": "data/tpch/sf1", "out_dir": "data/tpch/results"}

    lineitem: ek.Source = ParquetSource("{data_dir}/parquet/lineitem.parquet", schema=Lineitem)
    summary = ek.Sql(
        """
        select l_returnflag,
               l_linestatus,
               sum(l_quantity) as sum_qty,
               sum(l_extendedprice) as sum_base_price,
               sum(l_extendedprice * (1 - l_discount)) as sum_disc_price,
               sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) as sum_charge,
               avg(l_quantity) as avg_qty,
               avg(l_extendedprice) as avg_price,
               avg(l_discount) as avg_disc,
               count(*) as count_order
        from {lineitem}
        where l_shipdate <= date '1998-12-01' - interval 90 day
        group by l_returnflag, l_linestatus
        order by l_returnflag, l_linestatus
        """,
        schema=PricingSummary,
    )
    report = ParquetSink("{out_dir}/tpch_q1.parquet", summary)


class TpchQ1Csv(TpchQ1):
    """TPC-H Q1 over CSV files: only the source differs."""

    lineitem = CsvSource("{data_dir}/csv/lineitem.csv", schema=Lineitem)
