"""Each workload as every engine runs it: etlkit, DuckDB SQL, polars lazy, chunked pandas.

`run(workload, variant, ...)` does the work and returns the Parquet file holding the result.
Every engine reads the same files and imports only its own libraries, inside the functions, so
a benchmark child process loads what its variant needs and nothing else.

- `etlkit` runs the workload's pipeline through `etlkit run` (validation on, or off for
  `etlkit-novalidate`), its state in a directory of its own (here). `etlkit-dask` runs it with
  validation on the Dask cluster at `scheduler_address` (`--executor dask`): the same pipeline
  class, its sources split by their own default partitions (lineitem's row groups, about 4M
  rows a partition).
- `duckdb` runs the query as one SQL statement over `read_parquet`/`read_csv`
  (`benchmarks.engines.duckdb_sql`).
- `polars` builds a lazy query over `scan_parquet`/`scan_csv` run by the streaming engine
  (`benchmarks.engines.polars_lazy`).
- `pandas` reads a million rows at a time and reduces or rewrites each chunk, the approach users
  have today (`benchmarks.engines.pandas_chunked`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from benchmarks.engines import duckdb_sql, pandas_chunked, polars_lazy
from benchmarks.engines.tables import Tables
from benchmarks.workloads import DASK, RUN_DATE, Workload

RESULT_FILE: Final = "result.parquet"


def run(
    workload: Workload,
    variant: str,
    data_dir: Path,
    out_dir: Path,
    state_dir: Path,
    *,
    scheduler_address: str | None = None,
) -> Path:
    """Run `workload` as `variant`; return the Parquet file with its result.

    Raises:
        ValueError: an unknown variant, or `etlkit-dask` without a scheduler address.
        RuntimeError: the etlkit run failed (its error is on stderr).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if variant in ("etlkit", "etlkit-novalidate"):
        return _run_etlkit(workload, data_dir, out_dir, state_dir, validate=variant == "etlkit")
    if variant == DASK:
        if not scheduler_address:
            raise ValueError(
                f"{DASK} runs on a Dask cluster: give the address of its scheduler "
                "(benchmarks.tpch starts one when the variant is asked for)"
            )
        return _run_etlkit(
            workload, data_dir, out_dir, state_dir, validate=True, address=scheduler_address
        )
    path = out_dir / RESULT_FILE
    tables = Tables(data_dir, workload)
    if variant == "duckdb":
        duckdb_sql.write(workload.query, tables, path)
    elif variant == "polars":
        polars_lazy.write(workload.query, tables, path)
    elif variant == "pandas":
        pandas_chunked.write(workload.query, tables, path)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return path


def _run_etlkit(
    workload: Workload,
    data_dir: Path,
    out_dir: Path,
    state_dir: Path,
    *,
    validate: bool,
    address: str | None = None,
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
    if address is not None:
        argv += ["--executor", "dask", "--scheduler-address", address]
    code = cli.main(argv)
    if code != 0:
        raise RuntimeError(f"etlkit run {workload.pipeline} exited with code {code}")
    return out_dir / workload.output
