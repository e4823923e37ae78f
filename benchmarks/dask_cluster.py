"""The Dask cluster the `etlkit-dask` benchmark variant runs on, and what its workers use.

`benchmarks.tpch` starts one `LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
host="127.0.0.1")` without a dashboard (`DaskExecutor.connect`, as `etlkit run --executor dask`
without an address starts it) when `etlkit-dask` is among the variants, once for the whole
invocation, and gives its scheduler's address to each `etlkit-dask` child (`etlkit run
--executor dask --scheduler-address ADDR`): starting the cluster is not in any run's time. The
start is timed once, and includes importing in every worker what a run's tasks import (polars,
pyarrow, DuckDB, pandera, etlkit's worker side, the file connectors), so that the first run does
not pay what later runs, on the same reused workers, do not.

Workers outlive runs, so their own figures are taken around each run, from the workers
(`client.run`): before it, every worker's peak resident set (VmHWM) is reset to its current size
(writing 5 to `/proc/self/clear_refs`) and its CPU time read; after it, the sum of the workers'
peaks and of their CPU seconds (user + system) since. A worker's peak therefore includes what it
holds between runs (the interpreter, imported modules, cached pipeline classes), as the child's
own peak includes its imports; and the workers' peaks need not coincide, so their sum may
exceed the cluster's highest total at any one moment. Where the reset is refused, the peak is
the worker's since it started, and `WorkerUsage.reset` says so. A worker that died during the
run (its nanny starts another) counts with the CPU time of its replacement only.
"""

from __future__ import annotations

import gc
import importlib
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from benchmarks.workloads import DASK as DASK_VARIANT

if TYPE_CHECKING:
    from benchmarks.summaries import Summary

N_WORKERS: Final = 2
THREADS_PER_WORKER: Final = 1

#: What each worker imports when the cluster starts (what a partition's task imports).
WARM_IMPORTS: Final = (
    "polars",
    "pyarrow.parquet",
    "duckdb",
    "pandera.polars",
    "etlkit.engine.distributed.tasks",
    "connectors.files",
)


@dataclass(frozen=True)
class WorkerUsage:
    """What the cluster's workers used during one run, summed over the workers."""

    peak_rss_bytes: int
    cpu_seconds: float
    reset: bool  # every worker's peak was reset before the run (else: peak since its start)


def _warm(modules: Sequence[str]) -> None:
    """On a worker: import `modules`."""
    for module in modules:
        importlib.import_module(module)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset() -> tuple[bool, float]:
    """On a worker: reset its peak RSS to its current RSS; (reset, CPU seconds so far)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:  # not Linux, or refused: the peak stays the one since the worker started
        reset = False
    return reset, _cpu_seconds()


def _usage() -> tuple[int, float]:
    """On a worker: (peak RSS bytes, CPU seconds so far)."""
    return _peak_rss_bytes(), _cpu_seconds()


class Cluster:
    """A LocalCluster started for one benchmark invocation, and its workers' usage per run."""

    def __init__(self) -> None:
        from etlkit.engine.distributed import DaskExecutor

        began = time.perf_counter()
        self.executor = DaskExecutor.connect(
            n_workers=N_WORKERS, threads_per_worker=THREADS_PER_WORKER
        )
        self.client: Any = self.executor.client
        self.client.wait_for_workers(N_WORKERS)
        self.client.run(_warm, WARM_IMPORTS)
        self.start_seconds = time.perf_counter() - began
        self.address: str = self.client.scheduler.address

    def close(self) -> None:
        """Close the client and stop the cluster."""
        # a finished run's futures can outlive it in reference cycles until a collection; the
        # scheduler then warns, as the workers stop, that their results are lost
        gc.collect()
        self.executor.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def before_run(self) -> dict[str, tuple[bool, float]]:
        """Reset every worker's peak RSS; each worker's (reset, CPU seconds) by address."""
        found: dict[str, tuple[bool, float]] = self.client.run(_reset)
        return found

    def after_run(self, before: dict[str, tuple[bool, float]]) -> WorkerUsage:
        """The workers' usage since `before_run` gave `before`."""
        after: dict[str, tuple[int, float]] = self.client.run(_usage)
        cpu = sum(
            seconds - before[w][1] if w in before else seconds for w, (_, seconds) in after.items()
        )
        return WorkerUsage(
            peak_rss_bytes=sum(peak for peak, _ in after.values()),
            cpu_seconds=cpu,
            reset=all(reset for reset, _ in before.values()) and set(after) <= set(before),
        )

    def workers_cpu_seconds(self) -> float:
        """The CPU seconds (user + system) the workers now running used so far, summed."""
        return float(sum(self.client.run(_cpu_seconds).values()))

    def describe(self) -> dict[str, Any]:
        """The cluster, for the printed header and the JSON."""
        return {
            "kind": "LocalCluster",
            "n_workers": N_WORKERS,
            "threads_per_worker": THREADS_PER_WORKER,
            "processes": True,
            "host": "127.0.0.1",
            "start_seconds": self.start_seconds,
            "warm_imports": list(WARM_IMPORTS),
        }


def header(cluster: Cluster) -> str:
    """One line saying what the `etlkit-dask` runs share."""
    return (
        f"{DASK_VARIANT}: a LocalCluster of {N_WORKERS} worker processes x {THREADS_PER_WORKER} "
        f"thread on 127.0.0.1, started once in {cluster.start_seconds:.2f}s (workers' imports "
        "included) and shared by every run; a run's peak RSS is its own plus the sum of the "
        "workers' peaks during it, its CPU its own plus the workers'"
    )


def format_workers(summaries: Sequence[Summary]) -> str:
    """The workers' share of the `etlkit-dask` summaries' peak RSS and CPU time."""
    lines = [
        "| workload | variant | workers' peak RSS MiB (sum of peaks, highest run) "
        "| workers' CPU s (median) | all CPU s (median) |",
        "|---|---|--:|--:|--:|",
    ]
    for s in summaries:
        if s.worker_peak_rss_bytes is None or s.worker_cpu_seconds is None:
            continue
        name = f"SF{s.sf:g} {s.workload}" if s.sf is not None else s.workload
        lines.append(
            f"| {name} | {s.variant} | {s.worker_peak_rss_bytes / 2**20:.0f} "
            f"| {s.worker_cpu_seconds:.2f} | {s.cpu_seconds:.2f} |"
        )
    return "\n".join(lines)
