"""The workloads as polars lazy queries over `scan_parquet`/`scan_csv` (decimals cast to
float, CSV dates parsed), run by the streaming engine into `sink_parquet`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import polars as pl

    from benchmarks.engines.tables import Tables


def write(query: str, tables: Tables, path: Path) -> None:
    """Run the workload `query` (`q1`, `reshape`) over the tables; write its result to `path`."""
    _POLARS[query](tables).sink_parquet(path, engine="streaming")


def _scan(tables: Tables, table: str) -> pl.LazyFrame:
    import polars as pl
    import polars.selectors as cs

    if tables.fmt == "parquet":
        frame = pl.scan_parquet(tables.path(table))
        return frame.with_columns(cs.decimal().cast(pl.Float64))
    return pl.scan_csv(tables.path(table), try_parse_dates=True)


def _revenue() -> pl.Expr:
    import polars as pl

    return pl.col("l_extendedprice") * (1 - pl.col("l_discount"))


def _polars_q1(tables: Tables) -> pl.LazyFrame:
    import datetime as dt

    import polars as pl

    price, disc = pl.col("l_extendedprice"), pl.col("l_discount")
    return (
        _scan(tables, "lineitem")
        .filter(pl.col("l_shipdate") <= dt.date(1998, 9, 2))
        .group_by("l_returnflag", "l_linestatus")
        .agg(
            sum_qty=pl.col("l_quantity").sum(),
            sum_base_price=price.sum(),
            sum_disc_price=(price * (1 - disc)).sum(),
            sum_charge=(price * (1 - disc) * (1 + pl.col("l_tax"))).sum(),
            avg_qty=pl.col("l_quantity").mean(),
            avg_price=price.mean(),
            avg_disc=disc.mean(),
            count_order=pl.len(),
        )
        .sort("l_returnflag", "l_linestatus")
    )


def _polars_q3(tables: Tables) -> pl.LazyFrame:
    import datetime as dt

    import polars as pl

    cutoff = dt.date(1995, 3, 15)
    customer = _scan(tables, "customer").filter(pl.col("c_mktsegment") == "BUILDING")
    orders = _scan(tables, "orders").filter(pl.col("o_orderdate") < cutoff)
    lineitem = _scan(tables, "lineitem").filter(pl.col("l_shipdate") > cutoff)
    return (
        customer.join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(lineitem, left_on="o_orderkey", right_on="l_orderkey")
        .group_by(pl.col("o_orderkey").alias("l_orderkey"), "o_orderdate", "o_shippriority")
        .agg(revenue=_revenue().sum())
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .sort(["revenue", "o_orderdate"], descending=[True, False])
        .head(10)
    )


def _polars_q5(tables: Tables) -> pl.LazyFrame:
    import datetime as dt

    import polars as pl

    region = _scan(tables, "region").filter(pl.col("r_name") == "ASIA")
    orders = _scan(tables, "orders").filter(
        pl.col("o_orderdate") >= dt.date(1994, 1, 1), pl.col("o_orderdate") < dt.date(1995, 1, 1)
    )
    return (
        region.join(_scan(tables, "nation"), left_on="r_regionkey", right_on="n_regionkey")
        .join(_scan(tables, "customer"), left_on="n_nationkey", right_on="c_nationkey")
        .join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(_scan(tables, "lineitem"), left_on="o_orderkey", right_on="l_orderkey")
        .join(
            _scan(tables, "supplier"),
            left_on=["l_suppkey", "n_nationkey"],
            right_on=["s_suppkey", "s_nationkey"],
        )
        .group_by("n_name")
        .agg(revenue=_revenue().sum())
        .sort("revenue", descending=True)
    )


def _polars_q6(tables: Tables) -> pl.LazyFrame:
    import datetime as dt

    import polars as pl

    return (
        _scan(tables, "lineitem")
        .filter(
            pl.col("l_shipdate") >= dt.date(1994, 1, 1),
            pl.col("l_shipdate") < dt.date(1995, 1, 1),
            pl.col("l_discount").is_between(0.05, 0.07),
            pl.col("l_quantity") < 24,
        )
        .select(revenue=(pl.col("l_extendedprice") * pl.col("l_discount")).sum())
    )


def _polars_report(tables: Tables) -> pl.LazyFrame:
    import polars as pl

    billing = (
        _scan(tables, "billing")
        .filter(pl.col("status") != "denied")
        .select(
            "patient_id",
            pl.col("amount").round(2),
            month=pl.col("billed_at").dt.strftime("%Y-%m"),
        )
    )
    coverage = _scan(tables, "insurance").select(
        "patient_id", pl.col("payer_name").str.strip_chars(), "coverage_pct"
    )
    amount, share = pl.col("amount"), pl.col("coverage_pct")
    return (
        billing.join(coverage, on="patient_id")
        .group_by("month", "payer_name")
        .agg(
            invoices=pl.len().cast(pl.Int64),
            billed=amount.sum().round(2),
            covered=(amount * share).sum().round(2),
            patient_share=(amount * (1 - share)).sum().round(2),
        )
        .sort("month", "payer_name")
    )


def _polars_reshape(tables: Tables) -> pl.LazyFrame:
    import polars as pl

    price, discount = pl.col("l_extendedprice"), pl.col("l_discount")
    return (
        _scan(tables, "lineitem")
        .filter(pl.col("l_quantity") <= 25)
        .with_columns(
            charge=price * (1 - discount) * (1 + pl.col("l_tax")),
            comment=pl.col("l_comment").str.strip_chars().str.to_uppercase(),
            ship_month=pl.col("l_shipdate").dt.strftime("%Y-%m"),
            late=pl.col("l_receiptdate") > pl.col("l_commitdate"),
        )
        .select(_RESHAPED)
    )


#: The reshape's result columns, in order.
_RESHAPED: Final = (
    "l_orderkey",
    "l_linenumber",
    "l_quantity",
    "l_extendedprice",
    "l_discount",
    "l_shipdate",
    "charge",
    "comment",
    "ship_month",
    "late",
)


_POLARS: Final[dict[str, Callable[[Tables], pl.LazyFrame]]] = {
    "q1": _polars_q1,
    "q3": _polars_q3,
    "q5": _polars_q5,
    "q6": _polars_q6,
    "report": _polars_report,
    "reshape": _polars_reshape,
}
