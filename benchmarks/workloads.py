"""The benchmark workloads, where their inputs live, and how results are compared.

A workload is one query over one input format: TPC-H Q1 (Parquet and CSV), Q3, Q5 and Q6 (with
its filter as a polars lazy node, and as a streaming transform: `q6-streaming`) and the reshape
(lineitem filtered and given derived columns chunk by chunk, Parquet and CSV) over
`tpchgen-cli` output, and the monthly financial report (Parquet and CSV) over
`python -m data.generate` output. Each has an etlkit pipeline (a `load_pipeline` reference) and
hand-written DuckDB, polars and pandas equivalents in `benchmarks.engines`.

Results are compared to DuckDB's after sorting, floats to a tolerance: every engine adds floats
in its own order, and DuckDB sums the Parquet files' decimals exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    import polars as pl

REPO: Final = Path(__file__).resolve().parent.parent

Fmt = Literal["parquet", "csv"]
Dataset = Literal["tpch", "report"]

#: The ways each workload runs, in the order they take turns.
VARIANTS: Final = ("etlkit", "etlkit-novalidate", "duckdb", "polars", "pandas")
#: etlkit on a Dask cluster (`benchmarks.dask_cluster`): run only when asked for (`--variants`).
DASK: Final = "etlkit-dask"
#: Every variant a command line may name.
KNOWN_VARIANTS: Final = (*VARIANTS, DASK)
#: The variant every other one is checked against.
REFERENCE: Final = "duckdb"
#: The logical date of every etlkit run (the report writes under `{out_dir}/{ds}/`).
RUN_DATE: Final = "2025-03-01"


@dataclass(frozen=True)
class Workload:
    """One query over one input format.

    Attributes:
        name: what the command line and the report call it (`q1-parquet`).
        query: the query it runs (`q1`), shared by its formats.
        fmt: the input format.
        dataset: `tpch` (a scale factor's tables) or `report` (the sample billing data).
        tables: the input tables, for the row count.
        pipeline: the etlkit pipeline, as `etlkit run` accepts it (file[:Class] or module).
        output: where the pipeline writes its result, relative to its `out_dir`.
        atol: absolute tolerance of float comparisons (the report rounds to cents).
    """

    name: str
    query: str
    fmt: Fmt
    dataset: Dataset
    tables: tuple[str, ...]
    pipeline: str
    output: str
    atol: float = 1e-6


def _tpch(
    name: str, query: str, tables: tuple[str, ...], *, csv: bool = False, suffix: str = ""
) -> Workload:
    """A TPC-H workload; its pipeline is `pipelines/tpch_{query}.py` (`TpchQ1Csv` for CSV,
    `TpchQ6Streaming` for the suffix `Streaming`, `TpchReshapeCsv` for the reshape's CSV)."""
    path = str(REPO / "pipelines" / f"tpch_{query}.py")
    suffix = "Csv" if csv else suffix
    pipeline = f"{path}:Tpch{query.capitalize()}{suffix}" if suffix else path
    fmt: Fmt = "csv" if csv else "parquet"
    return Workload(name, query, fmt, "tpch", tables, pipeline, f"tpch_{query}.parquet")


def _report(fmt: Fmt) -> Workload:
    """The monthly report; `pipelines/monthly_report.py` reads CSV, its subclass Parquet."""
    pipeline = (
        "benchmarks.monthly_report_parquet"
        if fmt == "parquet"
        else str(REPO / "pipelines" / "monthly_report.py")
    )
    output = f"{RUN_DATE}/monthly_report.parquet"
    tables = ("billing", "insurance")
    return Workload(f"report-{fmt}", "report", fmt, "report", tables, pipeline, output, atol=0.011)


_Q3_TABLES: Final = ("customer", "orders", "lineitem")
_Q5_TABLES: Final = ("region", "nation", "supplier", "customer", "orders", "lineitem")

WORKLOADS: Final[dict[str, Workload]] = {
    w.name: w
    for w in (
        _tpch("q1-parquet", "q1", ("lineitem",)),
        _tpch("q1-csv", "q1", ("lineitem",), csv=True),
        _tpch("q3", "q3", _Q3_TABLES),
        _tpch("q5", "q5", _Q5_TABLES),
        _tpch("q6", "q6", ("lineitem",)),
        _tpch("q6-streaming", "q6", ("lineitem",), suffix="Streaming"),
        _tpch("reshape-parquet", "reshape", ("lineitem",)),
        _tpch("reshape-csv", "reshape", ("lineitem",), csv=True),
        _report("parquet"),
        _report("csv"),
    )
}


def table_path(data_dir: Path, dataset: Dataset, table: str, fmt: Fmt) -> str:
    """The file (or glob) holding `table` in `fmt` under a data directory."""
    if dataset == "tpch":
        return str(data_dir / fmt / f"{table}.{fmt}")
    if table == "billing":
        return str(data_dir / "billing" / "*" / f"billing.{fmt}")
    return str(data_dir / f"{table}.{fmt}")


def table_files(data_dir: Path, dataset: Dataset, table: str, fmt: Fmt) -> list[Path]:
    """The files holding `table` in `fmt` under a data directory, sorted."""
    if dataset == "report" and table == "billing":
        return sorted((data_dir / "billing").glob(f"*/billing.{fmt}"))
    return [Path(table_path(data_dir, dataset, table, fmt))]


def input_rows(workload: Workload, data_dir: Path) -> int:
    """Rows of every input table of the workload (read from the Parquet copies' footers)."""
    import pyarrow.parquet as pq

    rows = 0
    for table in workload.tables:
        for path in table_files(data_dir, workload.dataset, table, "parquet"):
            rows += pq.ParquetFile(path).metadata.num_rows
    return rows


# ---------------------------------------------------------------- comparing results


def _normalized(frame: pl.DataFrame, like: pl.DataFrame) -> pl.DataFrame:
    """`frame` with `like`'s column order and comparable types: numbers as Int64 or Float64."""
    import polars as pl

    columns = []
    for name in like.columns:
        ours, theirs = frame.schema[name], like.schema[name]
        column = pl.col(name)
        if ours.is_numeric() and theirs.is_numeric():
            exact = ours.is_integer() and theirs.is_integer()
            columns.append(column.cast(pl.Int64 if exact else pl.Float64))
        elif theirs == pl.Date and ours != pl.Date:
            columns.append(column.cast(pl.Date))
        else:
            columns.append(column.cast(theirs))
    return frame.select(columns)


def differences(expected: pl.DataFrame, got: pl.DataFrame, *, atol: float = 1e-6) -> list[str]:
    """How `got` differs from `expected`, sorted and with floats to a tolerance; [] if equal.

    Floats compare equal within `atol` plus a relative 1e-9 (as `math.isclose`); nulls equal
    nulls only.
    """
    return Reference(expected, atol=atol).differences(got)


class Reference:
    """A result the others are compared to, normalized and sorted once.

    Columns are compared whole, not value by value in Python: a reshape's result has half as
    many rows as its input, and the harness compares every variant's result to one reference.
    """

    def __init__(self, expected: pl.DataFrame, *, atol: float = 1e-6) -> None:
        import polars as pl

        self.columns = sorted(expected.columns)
        self.atol = atol
        frame = _normalized(expected, expected)
        keys = [name for name, dtype in frame.schema.items() if dtype != pl.Float64]
        self.order = keys + [name for name in frame.columns if name not in keys]
        self.frame = frame.sort(self.order)

    def differences(self, got: pl.DataFrame) -> list[str]:
        """How `got` differs from the reference: [] if equal, else one line per column."""
        import polars as pl

        if sorted(got.columns) != self.columns:
            return [f"columns {sorted(got.columns)} instead of {self.columns}"]
        if got.height != self.frame.height:
            return [f"{got.height} rows instead of {self.frame.height}"]
        got = _normalized(got, self.frame).sort(self.order)
        problems = []
        for name in self.frame.columns:
            want, have = self.frame[name], got[name]
            if want.dtype == pl.Float64:
                same = _close(want, have, self.atol)
            else:
                same = want.eq_missing(have)
            wrong = (~same).arg_true()
            if len(wrong):
                row = int(wrong[0])
                problems.append(
                    f"row {row}, column {name!r}: {have[row]!r} instead of {want[row]!r}"
                )
        return problems


def _close(want: pl.Series, have: pl.Series, atol: float) -> pl.Series:
    """Whether each pair of floats is equal within `atol` or a relative 1e-9, as `math.isclose`
    says: infinities equal only themselves, NaN nothing; null equals only null."""
    import polars as pl

    w, h = pl.col("want"), pl.col("have")
    tolerance = pl.max_horizontal(pl.max_horizontal(w.abs(), h.abs()) * 1e-9, pl.lit(atol))
    finite = w.is_finite() & h.is_finite()
    # polars' == holds for NaN == NaN, which math.isclose does not
    close = ((w == h) & w.is_not_nan()) | (finite & ((w - h).abs() <= tolerance))
    return (
        pl.DataFrame({"want": want, "have": have})
        .select(pl.when(w.is_null() | h.is_null()).then(w.is_null() & h.is_null()).otherwise(close))
        .to_series()
    )
