"""The workloads as chunked pandas, the approach users have today.

Tables are read `PANDAS_CHUNK_ROWS` rows at a time (`read_csv(chunksize=...)`, or Parquet
record batches converted with `to_pandas`, decimals cast to float first); each chunk is reduced
to partial aggregates, combined at the end. Small dimension tables are accumulated whole, as
users do. A workload whose result is as long as its input (the reshape) appends each chunk's
result to the Parquet file as it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pandas as pd

    from benchmarks.engines.tables import Tables

PANDAS_CHUNK_ROWS: Final = 1_000_000


def write(query: str, tables: Tables, path: Path) -> None:
    """Run the workload `query` (`q1`, `reshape`) over the tables; write its result to `path`."""
    if query in _PANDAS_CHUNKED:
        _write_chunks(_PANDAS_CHUNKED[query](tables), path)
    else:
        _PANDAS[query](tables).to_parquet(path, index=False)


def _chunks(
    tables: Tables, table: str, columns: Sequence[str], dates: Sequence[str] = ()
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


def _whole(tables: Tables, table: str, columns: Sequence[str], **kw: Any) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(_chunks(tables, table, columns, **kw), ignore_index=True)


def _combine(parts: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    keys = list(parts[0].index.names)
    return pd.concat(parts).groupby(level=keys, sort=False).sum().reset_index()


def _pandas_q1(tables: Tables) -> pd.DataFrame:
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


def _pandas_q3(tables: Tables) -> pd.DataFrame:
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


def _pandas_q5(tables: Tables) -> pd.DataFrame:
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


def _pandas_q6(tables: Tables) -> pd.DataFrame:
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


def _pandas_report(tables: Tables) -> pd.DataFrame:
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


_PANDAS: Final[dict[str, Callable[[Tables], pd.DataFrame]]] = {
    "q1": _pandas_q1,
    "q3": _pandas_q3,
    "q5": _pandas_q5,
    "q6": _pandas_q6,
    "report": _pandas_report,
}


def _pandas_reshape(tables: Tables) -> Iterator[pd.DataFrame]:
    kept = ["l_orderkey", "l_linenumber", "l_quantity", "l_extendedprice", "l_discount"]
    dates = ["l_shipdate", "l_commitdate", "l_receiptdate"]
    columns = [*kept, "l_tax", *dates, "l_comment"]
    for chunk in _chunks(tables, "lineitem", columns, dates=dates):
        chunk = chunk[chunk["l_quantity"] <= 25]
        price, discount = chunk["l_extendedprice"], chunk["l_discount"]
        yield chunk[[*kept, "l_shipdate"]].assign(
            charge=price * (1 - discount) * (1 + chunk["l_tax"]),
            comment=chunk["l_comment"].str.strip().str.upper(),
            ship_month=chunk["l_shipdate"].dt.strftime("%Y-%m"),
            late=chunk["l_receiptdate"] > chunk["l_commitdate"],
        )


#: Workloads whose pandas result is as long as the input: written chunk by chunk.
_PANDAS_CHUNKED: Final[dict[str, Callable[[Tables], Iterator[pd.DataFrame]]]] = {
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
