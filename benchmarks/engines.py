"""Each workload as every engine runs it: etlkit, DuckDB SQL, polars lazy, chunked pandas.

`run(workload, variant, ...)` does the work and returns the Parquet file holding the result.
Every engine reads the same files and imports only its own libraries, inside the functions, so
a benchmark child process loads what its variant needs and nothing else.

- `etlkit` runs the workload's pipeline through `etlkit run` (validation on, or off for
  `etlkit-novalidate`), its state in a directory of its own.
- `duckdb` runs the query as one SQL statement over `read_parquet`/`read_csv`.
- `polars` builds a lazy query over `scan_parquet`/`scan_csv` run by the streaming engine.
- `pandas` reads `PANDAS_CHUNK_ROWS` rows at a time (`read_csv(chunksize=...)`, or Parquet
  record batches converted with `to_pandas`, decimals cast to float first), reduces each chunk
  to partial aggregates and combines them at the end: the approach users have today. Small
  dimension tables are accumulated whole, as users do. A workload whose result is as long as
  its input (the reshape) appends each chunk's result to the Parquet file as it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from benchmarks.workloads import RUN_DATE, Workload, table_files, table_path

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

PANDAS_CHUNK_ROWS: Final = 1_000_000

RESULT_FILE: Final = "result.parquet"


def run(workload: Workload, variant: str, data_dir: Path, out_dir: Path, state_dir: Path) -> Path:
    """Run `workload` as `variant`; return the Parquet file with its result.

    Raises:
        ValueError: an unknown variant.
        RuntimeError: the etlkit run failed (its error is on stderr).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if variant in ("etlkit", "etlkit-novalidate"):
        return _run_etlkit(workload, data_dir, out_dir, state_dir, validate=variant == "etlkit")
    path = out_dir / RESULT_FILE
    tables = _Tables(data_dir, workload)
    if variant == "duckdb":
        _run_duckdb(_DUCKDB[workload.query], tables, path)
    elif variant == "polars":
        _POLARS[workload.query](tables).sink_parquet(path, engine="streaming")
    elif variant == "pandas" and workload.query in _PANDAS_CHUNKED:
        _write_chunks(_PANDAS_CHUNKED[workload.query](tables), path)
    elif variant == "pandas":
        _PANDAS[workload.query](tables).to_parquet(path, index=False)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return path


class _Tables:
    """Where a workload's tables live, in its format."""

    def __init__(self, data_dir: Path, workload: Workload) -> None:
        self.data_dir = data_dir
        self.workload = workload
        self.fmt = workload.fmt

    def path(self, table: str) -> str:
        return table_path(self.data_dir, self.workload.dataset, table, self.fmt)

    def files(self, table: str) -> list[Path]:
        return table_files(self.data_dir, self.workload.dataset, table, self.fmt)


# ---------------------------------------------------------------- etlkit


def _run_etlkit(
    workload: Workload, data_dir: Path, out_dir: Path, state_dir: Path, *, validate: bool
) -> Path:
    from etlkit import cli

    argv = [
        "--project",
        str(state_dir),
        "run",
        workload.pipeline,
        "--date",
        RUN_DATE,
        "--progress",
        "none",
        "--param",
        f"data_dir={data_dir}",
        "--param",
        f"out_dir={out_dir}",
    ]
    if not validate:
        argv.append("--no-validate")
    code = cli.main(argv)
    if code != 0:
        raise RuntimeError(f"etlkit run {workload.pipeline} exited with code {code}")
    return out_dir / workload.output


# ---------------------------------------------------------------- DuckDB

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


def _run_duckdb(query: str, tables: _Tables, path: Path) -> None:
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


# ---------------------------------------------------------------- polars


def _scan(tables: _Tables, table: str) -> pl.LazyFrame:
    import polars as pl
    import polars.selectors as cs

    if tables.fmt == "parquet":
        frame = pl.scan_parquet(tables.path(table))
        return frame.with_columns(cs.decimal().cast(pl.Float64))
    return pl.scan_csv(tables.path(table), try_parse_dates=True)


def _revenue() -> pl.Expr:
    import polars as pl

    return pl.col("l_extendedprice") * (1 - pl.col("l_discount"))


def _polars_q1(tables: _Tables) -> pl.LazyFrame:
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


def _polars_q3(tables: _Tables) -> pl.LazyFrame:
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


def _polars_q5(tables: _Tables) -> pl.LazyFrame:
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


def _polars_q6(tables: _Tables) -> pl.LazyFrame:
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


def _polars_report(tables: _Tables) -> pl.LazyFrame:
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


def _polars_reshape(tables: _Tables) -> pl.LazyFrame:
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


_POLARS: Final[dict[str, Callable[[_Tables], pl.LazyFrame]]] = {
    "q1": _polars_q1,
    "q3": _polars_q3,
    "q5": _polars_q5,
    "q6": _polars_q6,
    "report": _polars_report,
    "reshape": _polars_reshape,
}


# ---------------------------------------------------------------- pandas, chunked


def _chunks(
    tables: _Tables, table: str, columns: Sequence[str], dates: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """`table`'s columns, `PANDAS_CHUNK_ROWS` rows at a time, dates as datetime64."""
    import pandas as pd

    for path in tables.files(table):
        if tables.fmt == "csv":
            yield from pd.read_csv(
                path, usecols=list(columns), parse_dates=list(dates), chunksize=PANDAS_CHUNK_ROWS
            )
            continue
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=PANDAS_CHUNK_ROWS, columns=list(columns)):
            fields = [
                f.with_type(pa.float64()) if pa.types.is_decimal(f.type) else f
                for f in batch.schema
            ]
            yield batch.cast(pa.schema(fields)).to_pandas(date_as_object=False)


def _whole(tables: _Tables, table: str, columns: Sequence[str], **kw: Any) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(_chunks(tables, table, columns, **kw), ignore_index=True)


def _combine(parts: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    keys = list(parts[0].index.names)
    return pd.concat(parts).groupby(level=keys, sort=False).sum().reset_index()


def _pandas_q1(tables: _Tables) -> pd.DataFrame:
    import pandas as pd

    cutoff = pd.Timestamp("1998-09-02")
    columns = [
        "l_quantity",
        "l_extendedprice",
        "l_discount",
        "l_tax",
        "l_returnflag",
        "l_linestatus",
        "l_shipdate",
    ]
    parts = []
    for chunk in _chunks(tables, "lineitem", columns, dates=["l_shipdate"]):
        chunk = chunk[chunk["l_shipdate"] <= cutoff]
        disc_price = chunk["l_extendedprice"] * (1 - chunk["l_discount"])
        chunk = chunk.assign(disc_price=disc_price, charge=disc_price * (1 + chunk["l_tax"]))
        parts.append(
            chunk.groupby(["l_returnflag", "l_linestatus"]).agg(
                sum_qty=("l_quantity", "sum"),
                sum_base_price=("l_extendedprice", "sum"),
                sum_disc_price=("disc_price", "sum"),
                sum_charge=("charge", "sum"),
                sum_disc=("l_discount", "sum"),
                count_order=("l_quantity", "size"),
            )
        )
    total = _combine(parts)
    count = total["count_order"]
    total = total.assign(
        avg_qty=total["sum_qty"] / count,
        avg_price=total["sum_base_price"] / count,
        avg_disc=total["sum_disc"] / count,
    )
    return total.drop(columns="sum_disc").sort_values(["l_returnflag", "l_linestatus"])


def _pandas_q3(tables: _Tables) -> pd.DataFrame:
    import pandas as pd

    cutoff = pd.Timestamp("1995-03-15")
    customer = pd.concat(
        chunk.loc[chunk["c_mktsegment"] == "BUILDING", ["c_custkey"]]
        for chunk in _chunks(tables, "customer", ["c_custkey", "c_mktsegment"])
    )
    orders = pd.concat(
        chunk[chunk["o_orderdate"] < cutoff].merge(
            customer, left_on="o_custkey", right_on="c_custkey"
        )[["o_orderkey", "o_orderdate", "o_shippriority"]]
        for chunk in _chunks(
            tables,
            "orders",
            ["o_orderkey", "o_custkey", "o_orderdate", "o_shippriority"],
            dates=["o_orderdate"],
        )
    )
    parts = []
    columns = ["l_orderkey", "l_extendedprice", "l_discount", "l_shipdate"]
    for chunk in _chunks(tables, "lineitem", columns, dates=["l_shipdate"]):
        chunk = chunk[chunk["l_shipdate"] > cutoff].merge(
            orders, left_on="l_orderkey", right_on="o_orderkey"
        )
        chunk["revenue"] = chunk["l_extendedprice"] * (1 - chunk["l_discount"])
        parts.append(
            chunk.groupby(["l_orderkey", "o_orderdate", "o_shippriority"])[["revenue"]].sum()
        )
    total = _combine(parts)
    total = total.sort_values(["revenue", "o_orderdate"], ascending=[False, True]).head(10)
    return total[["l_orderkey", "revenue", "o_orderdate", "o_shippriority"]]


def _pandas_q5(tables: _Tables) -> pd.DataFrame:
    import pandas as pd

    region = _whole(tables, "region", ["r_regionkey", "r_name"])
    nation = _whole(tables, "nation", ["n_nationkey", "n_name", "n_regionkey"])
    asia = nation.merge(
        region[region["r_name"] == "ASIA"], left_on="n_regionkey", right_on="r_regionkey"
    )
    supplier = _whole(tables, "supplier", ["s_suppkey", "s_nationkey"])
    customer = _whole(tables, "customer", ["c_custkey", "c_nationkey"])
    start, end = pd.Timestamp("1994-01-01"), pd.Timestamp("1995-01-01")
    orders = pd.concat(
        chunk[(chunk["o_orderdate"] >= start) & (chunk["o_orderdate"] < end)].merge(
            customer, left_on="o_custkey", right_on="c_custkey"
        )[["o_orderkey", "c_nationkey"]]
        for chunk in _chunks(
            tables, "orders", ["o_orderkey", "o_custkey", "o_orderdate"], dates=["o_orderdate"]
        )
    )
    parts = []
    columns = ["l_orderkey", "l_suppkey", "l_extendedprice", "l_discount"]
    for chunk in _chunks(tables, "lineitem", columns):
        chunk = chunk.merge(orders, left_on="l_orderkey", right_on="o_orderkey").merge(
            supplier,
            left_on=["l_suppkey", "c_nationkey"],
            right_on=["s_suppkey", "s_nationkey"],
        )
        chunk = chunk.merge(asia, left_on="s_nationkey", right_on="n_nationkey")
        chunk["revenue"] = chunk["l_extendedprice"] * (1 - chunk["l_discount"])
        parts.append(chunk.groupby("n_name")[["revenue"]].sum())
    return _combine(parts).sort_values("revenue", ascending=False)


def _pandas_q6(tables: _Tables) -> pd.DataFrame:
    import pandas as pd

    start, end = pd.Timestamp("1994-01-01"), pd.Timestamp("1995-01-01")
    revenue = 0.0
    columns = ["l_quantity", "l_extendedprice", "l_discount", "l_shipdate"]
    for chunk in _chunks(tables, "lineitem", columns, dates=["l_shipdate"]):
        keep = (
            (chunk["l_shipdate"] >= start)
            & (chunk["l_shipdate"] < end)
            & chunk["l_discount"].between(0.05, 0.07)
            & (chunk["l_quantity"] < 24)
        )
        revenue += float((chunk["l_extendedprice"][keep] * chunk["l_discount"][keep]).sum())
    return pd.DataFrame({"revenue": [revenue]})


def _pandas_report(tables: _Tables) -> pd.DataFrame:
    coverage = _whole(tables, "insurance", ["patient_id", "payer_name", "coverage_pct"])
    coverage["payer_name"] = coverage["payer_name"].str.strip()
    parts = []
    columns = ["patient_id", "amount", "billed_at", "status"]
    for chunk in _chunks(tables, "billing", columns, dates=["billed_at"]):
        chunk = chunk[chunk["status"] != "denied"]
        chunk = chunk.assign(
            amount=chunk["amount"].round(2), month=chunk["billed_at"].dt.strftime("%Y-%m")
        ).merge(coverage, on="patient_id")
        chunk["covered"] = chunk["amount"] * chunk["coverage_pct"]
        chunk["patient_share"] = chunk["amount"] * (1 - chunk["coverage_pct"])
        parts.append(
            chunk.groupby(["month", "payer_name"]).agg(
                invoices=("amount", "size"),
                billed=("amount", "sum"),
                covered=("covered", "sum"),
                patient_share=("patient_share", "sum"),
            )
        )
    total = _combine(parts).round({"billed": 2, "covered": 2, "patient_share": 2})
    return total.sort_values(["month", "payer_name"])


_PANDAS: Final[dict[str, Callable[[_Tables], pd.DataFrame]]] = {
    "q1": _pandas_q1,
    "q3": _pandas_q3,
    "q5": _pandas_q5,
    "q6": _pandas_q6,
    "report": _pandas_report,
}


def _pandas_reshape(tables: _Tables) -> Iterator[pd.DataFrame]:
    columns = [
        "l_orderkey",
        "l_linenumber",
        "l_quantity",
        "l_extendedprice",
        "l_discount",
        "l_tax",
        "l_shipdate",
        "l_commitdate",
        "l_receiptdate",
        "l_comment",
    ]
    dates = ["l_shipdate", "l_commitdate", "l_receiptdate"]
    for chunk in _chunks(tables, "lineitem", columns, dates=dates):
        chunk = chunk[chunk["l_quantity"] <= 25]
        price, discount = chunk["l_extendedprice"], chunk["l_discount"]
        yield chunk.assign(
            charge=price * (1 - discount) * (1 + chunk["l_tax"]),
            comment=chunk["l_comment"].str.strip().str.upper(),
            ship_month=chunk["l_shipdate"].dt.strftime("%Y-%m"),
            late=chunk["l_receiptdate"] > chunk["l_commitdate"],
        )[list(_RESHAPED)]


#: Workloads whose pandas result is as long as the input: written chunk by chunk.
_PANDAS_CHUNKED: Final[dict[str, Callable[[_Tables], Iterator[pd.DataFrame]]]] = {
    "reshape": _pandas_reshape,
}


def _write_chunks(chunks: Iterator[pd.DataFrame], path: Path) -> None:
    """Append each chunk to one Parquet file, in the first chunk's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    try:
        for chunk in chunks:
            schema = writer.schema if writer is not None else None
            table = pa.Table.from_pandas(chunk, schema=schema, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
