"""The workloads as DuckDB SQL: one statement over `read_parquet`/`read_csv`, its result
written by DuckDB's COPY TO."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from benchmarks.engines.tables import Tables


def write(query: str, tables: Tables, path: Path) -> None:
    """Run the workload `query` (`q1`, `reshape`) over the tables; write its result to `path`."""
    _run_duckdb(_DUCKDB[query], tables, path)


_DUCKDB: Final = {
    "q1": """
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
    "q3": """
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
    "q5": """
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
    "q6": """
        select sum(l_extendedprice * l_discount) as revenue
        from {lineitem}
        where l_shipdate >= date '1994-01-01'
          and l_shipdate < date '1995-01-01'
          and l_discount between 0.05 and 0.07
          and l_quantity < 24
    """,
    "report": """
        with b as (
            select patient_id,
                   round(amount, 2) as amount,
                   strftime(billed_at, '%Y-%m') as month
            from {billing}
            where status <> 'denied'
        ),
        c as (
            select patient_id, trim(payer_name) as payer_name, coverage_pct from {insurance}
        )
        select b.month,
               c.payer_name,
               count(*)::bigint as invoices,
               round(sum(b.amount), 2) as billed,
               round(sum(b.amount * c.coverage_pct), 2) as covered,
               round(sum(b.amount * (1 - c.coverage_pct)), 2) as patient_share
        from b join c using (patient_id)
        group by b.month, c.payer_name
        order by b.month, c.payer_name
    """,
    "reshape": """
        select l_orderkey,
               l_linenumber,
               l_quantity,
               l_extendedprice,
               l_discount,
               l_shipdate,
               l_extendedprice * (1 - l_discount) * (1 + l_tax) as charge,
               upper(trim(l_comment)) as comment,
               strftime(l_shipdate, '%Y-%m') as ship_month,
               l_receiptdate > l_commitdate as late
        from {lineitem}
        where l_quantity <= 25
    """,
}


_TABLE_NAMES: Final = (
    "lineitem",
    "orders",
    "customer",
    "supplier",
    "nation",
    "region",
    "billing",
    "insurance",
)


def _run_duckdb(query: str, tables: Tables, path: Path) -> None:
    """Run `query` over the tables and write its result as `COPY (query) TO path` does (the
    relation's `write_parquet` is DuckDB's COPY TO, streaming and parallel)."""
    import duckdb

    reader = "read_parquet" if tables.fmt == "parquet" else "read_csv"
    names = {table: f"{reader}('{tables.path(table)}')" for table in _TABLE_NAMES}
    config: dict[str, Any] = {
        "autoinstall_known_extensions": False,  # offline machines: never download
        "autoload_known_extensions": False,
    }
    with duckdb.connect(":memory:", config=config) as con:
        con.sql(query.format_map(names)).write_parquet(str(path))
