"""The Dask executor's cost per partition: a trivial chain over N tiny files, Dask against local.

Run from the repository root (`pip install -e '.[bench,dask]'` first):

    python -m benchmarks.distributed                     # 1,000 partitions, 3 runs each
    python -m benchmarks.distributed --partitions 200 --repeat 5 --json dist.json

`TrivialChain` reads N one-row Parquet files (`{data_dir}/*.parquet`, written once into `--dir`)
with a `ParquetSource` and passes them through an identity `Transform` whose output is staged.
On the Dask executor every file is a partition: one task each (the source and the transform in
the task, the transform's part file staged by the partition), their statistics gathered by the
coordinator, which commits the transform's output once over every partition's parts. The local
executor reads the same glob as one source, in this process's threads. Both run in this process
through `execute` (as `etlkit run` does, without the run store), on one `LocalCluster(
n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1")` without a dashboard,
started once (its start is reported, never counted) and warmed by one run before the timed
ones; the executors take turns.

Reported, medians of `--repeat`: ms per partition of the run's wall time, of this process's
CPU time (the coordinator: every thread of it, the Dask client's and, the cluster being local,
its scheduler's included), of the CPU time of the thread that called `execute` (etlkit's own
coordination: submitting, gathering, committing; on the local executor the source's reading
too, its other nodes running in threads of their own) and of the workers' CPU time
(`client.run` reading their rusage). Each figure is the run's total over N: the run's
fixed costs (planning, committing, the cluster's round trips before the first task) are spread
over the partitions. Every run's staged output is checked (N rows, the files' values, and on
Dask N partitions); times never are.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import etlkit as ek
from benchmarks import environment
from benchmarks.dask_cluster import Cluster
from connectors.files import ParquetSource
from etlkit.engine.execution import RunOptions, RunResult, execute, new_run_id
from etlkit.model.nodes import Context
from etlkit.storage.staging import Staging

EXECUTORS: Final = ("local", "dask")
FIGURES: Final = ("wall", "coordinator CPU", "run thread CPU", "workers' CPU")


class Row(pdp.DataFrameModel):
    """A file's one row."""

    x: int = pdp.Field(nullable=False)


class Identity(ek.Transform[Row, Row]):
    """Returns each chunk unchanged."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


class TrivialChain(ek.Pipeline):
    """A glob of tiny Parquet files through an identity transform, staged."""

    params: ClassVar[dict[str, str]] = {"data_dir": "data/tiny"}

    files = ParquetSource("{data_dir}/*.parquet", schema=Row)
    passed: ek.Node = Identity(files)


def write_files(folder: Path, partitions: int) -> Path:
    """`partitions` Parquet files of one row each (`x` = the file's number) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(partitions):
        pq.write_table(pa.table({"x": pa.array([i], pa.int64())}), folder / f"f{i:06d}.parquet")
    return folder


def run_once(data_dir: Path, staging: Staging, executor: Any) -> RunResult:
    """One run of `TrivialChain` over `data_dir` (`executor` None: the local one)."""
    ctx = Context(
        pipeline=TrivialChain.name,
        run_id=new_run_id(),
        logical_date=datetime(2025, 3, 1, tzinfo=UTC),
        params=TrivialChain.resolve_params({"data_dir": str(data_dir)}),
    )
    return execute(
        TrivialChain.graph(), ctx, staging=staging, options=RunOptions(), executor=executor
    )


def check(result: RunResult, staging: Staging, partitions: int, *, dask: bool) -> None:
    """Raise unless the run succeeded and staged every file's row once (on Dask: as one
    partition per file)."""
    result.raise_for_error()
    files = staging.files(result.pipeline, result.run_id, "passed")
    values = sorted(pq.ParquetDataset(files, filesystem=staging.fs).read()["x"].to_pylist())
    if values != list(range(partitions)):
        raise AssertionError(f"staged {len(values)} rows, not the files' {partitions}")
    ran = len(result.nodes["passed"].partitions)
    if dask and ran != partitions:
        raise AssertionError(f"{ran} partitions ran on Dask, not {partitions}")


def measure(
    data_dir: Path, state_dir: Path, partitions: int, repeat: int, cluster: Cluster
) -> dict[str, list[float]]:
    """Time `repeat` runs of each executor, taking turns, after one untimed run of each; the
    wall, coordinator CPU, run thread CPU and workers' CPU seconds of each run, by executor."""
    figures: dict[str, list[float]] = {f"{e} {f}": [] for e in EXECUTORS for f in FIGURES}
    for round_ in range(repeat + 1):
        for name in EXECUTORS:
            staging = Staging(str(state_dir / f"{name}-{round_}"))
            runner = cluster.executor if name == "dask" else None
            workers = cluster.workers_cpu_seconds()
            began, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
            result = run_once(data_dir, staging, runner)
            wall, cpu = time.perf_counter() - began, time.process_time() - cpu
            own = time.thread_time() - own
            workers = cluster.workers_cpu_seconds() - workers
            check(result, staging, partitions, dask=name == "dask")
            if round_:  # the first round warms the workers' caches and this process's
                for figure, value in zip(FIGURES, (wall, cpu, own, workers), strict=True):
                    figures[f"{name} {figure}"].append(value)
            print(
                f"  {name:5} run {round_}/{repeat}{' (warm-up)' if not round_ else ''}: "
                f"wall {wall:.2f}s  coordinator CPU {cpu:.2f}s (run thread {own:.2f}s)  "
                f"workers' CPU {workers:.2f}s",
                flush=True,
            )
    return figures


def format_table(figures: dict[str, list[float]], partitions: int) -> str:
    """Medians per executor: seconds, and ms per partition."""
    lines = [
        f"| executor ({partitions:,} partitions) | "
        + " | ".join(f"{f} s | {f} ms/partition" for f in FIGURES)
        + " |",
        "|---|" + "--:|" * (2 * len(FIGURES)),
    ]
    for name in EXECUTORS:
        cells = []
        for figure in FIGURES:
            median = statistics.median(figures[f"{name} {figure}"])
            cells += [f"{median:.2f}", f"{median / partitions * 1e3:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks.distributed`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.distributed", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--partitions", type=int, default=1000, help="files, one partition each (default: 1000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per executor (default: 3)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--dir",
        type=Path,
        help="where the files and the runs' staging go (default: a new temporary directory, "
        "removed at the end)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table; 0 when every run staged what it read."""
    args = build_parser().parse_args(argv)
    if args.partitions < 1 or args.repeat < 1:
        raise SystemExit("--partitions and --repeat must be at least 1")
    environment.compile_sources()
    print(environment.describe(), flush=True)
    root = args.dir or Path(tempfile.mkdtemp(prefix="etlkit-distributed-"))
    try:
        data_dir = write_files(root / f"files-{args.partitions}", args.partitions)
        with Cluster() as cluster:
            print(
                f"LocalCluster of 2 worker processes x 1 thread started in "
                f"{cluster.start_seconds:.2f}s (not counted)",
                flush=True,
            )
            figures = measure(data_dir, root / "state", args.partitions, args.repeat, cluster)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nmedians of {args.repeat} runs after one warm-up run each\n")
    print(format_table(figures, args.partitions))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": ["python", "-m", "benchmarks.distributed", *(argv or sys.argv[1:])],
                    "machine": environment.machine(),
                    "versions": environment.versions(),
                    "partitions": args.partitions,
                    "cluster_start_seconds": cluster.start_seconds,
                    "seconds": figures,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
