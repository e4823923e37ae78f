"""TPC-H Q3, the shipping priority query: the ten most valuable unshipped orders of a segment.

    etlkit run pipelines/tpch_q3.py --param data_dir=~/.cache/etlkit-bench/sf1

Customers, orders and lineitem are read from `{data_dir}/parquet/` (`tpchgen-cli` output), each
source reading only the columns its model declares; DuckDB joins and aggregates their staged
outputs. The ten orders land in `{out_dir}/tpch_q3.parquet`.
"""

from __future__ import annotations

import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import ParquetSink, ParquetSource


class Customer(pdp.DataFrameModel):
    """The customer columns Q3 reads."""

    c_custkey: int = pdp.Field(nullable=False, ge=1)
    c_mktsegment: str = pdp.Field(
        isin=["AUTOMOBILE", "BUILDING", "FURNITURE", "HOUSEHOLD", "MACHINERY"]
    )


class Order(pdp.DataFrameModel):
    """The orders columns Q3 reads."""

    o_orderkey: int = pdp.Field(nullable=False, ge=1)
    o_custkey: int = pdp.Field(nullable=False, ge=1)
    o_orderdate: pl.Date = pdp.Field(nullable=False)
    o_shippriority: int = pdp.Field(ge=0)


class Lineitem(pdp.DataFrameModel):
    """The lineitem columns Q3 reads."""

    l_orderkey: int = pdp.Field(nullable=False, ge=1)
    l_extendedprice: float = pdp.Field(ge=0)
    l_discount: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.1})
    l_shipdate: pl.Date = pdp.Field(nullable=False)


class ShippingPriority(pdp.DataFrameModel):
    """One unshipped order with the revenue it will bring."""

    l_orderkey: int = pdp.Field(nullable=False)
    revenue: float = pdp.Field(ge=0)
    o_orderdate: pl.Date
    o_shippriority: int


class TpchQ3(ek.Pipeline):
    """TPC-H Q3 over Parquet files (segment BUILDING, date 1995-03-15)."""

    params = {"data_dir": "data/tpch/sf1", "out_dir": "data/tpch/results"}

    customer = ParquetSource("{data_dir}/parquet/customer.parquet", schema=Customer)
    orders = ParquetSource("{data_dir}/parquet/orders.parquet", schema=Order)
    lineitem = ParquetSource("{data_dir}/parquet/lineitem.parquet", schema=Lineitem)
    top_orders = ek.Sql(
        """
        select l_orderkey,
               sum(l_extendedprice * (1 - l_discount)) as revenue,
               o_orderdate,
               o_shippriority
        from {customer}, {orders}, {lineitem}
        where c_mktsegment = 'BUILDING'
          and c_custkey = o_custkey
          and l_orderkey = o_orderkey
          and o_orderdate < date '1995-03-15'
          and l_shipdate > date '1995-03-15'
        group by l_orderkey, o_orderdate, o_shippriority
        order by revenue desc, o_orderdate
        limit 10
        """,
        schema=ShippingPriority,
    )
    report = ParquetSink("{out_dir}/tpch_q3.parquet", top_orders)
