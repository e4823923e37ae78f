"""TPC-H Q5, local supplier volume: 1994 revenue of Asian nations from suppliers of the same nation.

    etlkit run pipelines/tpch_q5.py --param data_dir=~/.cache/etlkit-bench/sf1

Six tables are read from `{data_dir}/parquet/` (`tpchgen-cli` output), each source reading only
the columns its model declares; DuckDB joins and aggregates their staged outputs. The revenue per
nation lands in `{out_dir}/tpch_q5.parquet`.
"""

from __future__ import annotations

import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import ParquetSink, ParquetSource


class Region(pdp.DataFrameModel):
    """The region columns Q5 reads."""

    r_regionkey: int = pdp.Field(nullable=False, unique=True)
    r_name: str = pdp.Field(nullable=False)


class Nation(pdp.DataFrameModel):
    """The nation columns Q5 reads."""

    n_nationkey: int = pdp.Field(nullable=False, unique=True)
    n_name: str = pdp.Field(nullable=False)
    n_regionkey: int = pdp.Field(nullable=False)


class Supplier(pdp.DataFrameModel):
    """The supplier columns Q5 reads."""

    s_suppkey: int = pdp.Field(nullable=False, ge=1)
    s_nationkey: int = pdp.Field(nullable=False, in_range={"min_value": 0, "max_value": 24})


class Customer(pdp.DataFrameModel):
    """The customer columns Q5 reads."""

    c_custkey: int = pdp.Field(nullable=False, ge=1)
    c_nationkey: int = pdp.Field(nullable=False, in_range={"min_value": 0, "max_value": 24})


class Order(pdp.DataFrameModel):
    """The orders columns Q5 reads."""

    o_orderkey: int = pdp.Field(nullable=False, ge=1)
    o_custkey: int = pdp.Field(nullable=False, ge=1)
    o_orderdate: pl.Date = pdp.Field(nullable=False)


class Lineitem(pdp.DataFrameModel):
    """The lineitem columns Q5 reads."""

    l_orderkey: int = pdp.Field(nullable=False, ge=1)
    l_suppkey: int = pdp.Field(nullable=False, ge=1)
    l_extendedprice: float = pdp.Field(ge=0)
    l_discount: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 0.1})


class NationRevenue(pdp.DataFrameModel):
    """A nation's revenue from local suppliers."""

    n_name: str = pdp.Field(nullable=False)
    revenue: float = pdp.Field(ge=0)


class TpchQ5(ek.Pipeline):
    """TPC-H Q5 over Parquet files (region ASIA, year 1994)."""

    params = {"data_dir": "data/tpch/sf1", "out_dir": "data/tpch/results"}

    region = ParquetSource("{data_dir}/parquet/region.parquet", schema=Region)
    nation = ParquetSource("{data_dir}/parquet/nation.parquet", schema=Nation)
    supplier = ParquetSource("{data_dir}/parquet/supplier.parquet", schema=Supplier)
    customer = ParquetSource("{data_dir}/parquet/customer.parquet", schema=Customer)
    orders = ParquetSource("{data_dir}/parquet/orders.parquet", schema=Order)
    lineitem = ParquetSource("{data_dir}/parquet/lineitem.parquet", schema=Lineitem)
    revenue = ek.Sql(
        """
        select n_name, sum(l_extendedprice * (1 - l_discount)) as revenue
        from {customer}, {orders}, {lineitem}, {supplier}, {nation}, {region}
        where c_custkey = o_custkey
          and l_orderkey = o_orderkey
          and l_suppkey = s_suppkey
          and c_nationkey = s_nationkey
          and s_nationkey = n_nationkey
          and n_regionkey = r_regionkey
          and r_name = 'ASIA'
          and o_orderdate >= date '1994-01-01'
          and o_orderdate < date '1995-01-01'
        group by n_name
        order by revenue desc
        """,
        schema=NationRevenue,
    )
    report = ParquetSink("{out_dir}/tpch_q5.parquet", revenue)
