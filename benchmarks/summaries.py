"""What `benchmarks.tpch` measures, and how it sums it up: runs, medians per variant, tables.

A `Measurement` is one run of one variant of one workload; `summarize` gives each variant of
each workload its medians (and highest peak RSS) with ratios to DuckDB and pandas of the same
runs; `format_table` and `format_scaling` print them as Markdown.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks import environment


@dataclass(frozen=True)
class Measurement:
    """One run of one variant of one workload."""

    sf: float | None  # None for the report, whose size is its row count
    workload: str
    variant: str
    repetition: int
    rows: int
    work_seconds: float  # inside the child, after imports
    process_seconds: float  # the whole child, interpreter start included
    import_seconds: float
    cpu_seconds: float  # user + sys of the whole child
    work_cpu_seconds: float
    peak_rss_bytes: int
    steal: float | None = None  # the hypervisor's share of all CPU time during the child
    # etlkit-dask: the workers' part of peak_rss_bytes, cpu_seconds and work_cpu_seconds
    worker_peak_rss_bytes: int | None = None
    worker_cpu_seconds: float | None = None
    worker_peaks_reset: bool | None = None  # False: a worker's peak since its start


@dataclass(frozen=True)
class Summary:
    """A variant of a workload over its repetitions: medians, and the highest peak RSS."""

    sf: float | None
    workload: str
    variant: str
    runs: int
    rows: int
    work_seconds: float
    best_work_seconds: float
    process_seconds: float
    cpu_seconds: float
    work_cpu_seconds: float
    peak_rss_bytes: int
    rows_per_second: float
    vs_duckdb: float | None  # work wall
    vs_pandas: float | None  # work wall
    process_vs_duckdb: float | None  # process wall
    cpu_vs_duckdb: float | None  # work CPU: steadier than wall on a busy machine
    steal: float | None = None  # median over the runs: wall times are slower by about that
    worker_peak_rss_bytes: int | None = None  # etlkit-dask: highest over the runs
    worker_cpu_seconds: float | None = None  # etlkit-dask: median over the runs


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None; None if none is."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarize(measurements: Sequence[Measurement]) -> list[Summary]:
    """Medians per (sf, workload, variant), with ratios to DuckDB and pandas of the same runs."""
    groups: dict[tuple[float | None, str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.sf, m.workload, m.variant), []).append(m)

    def median(key: tuple[float | None, str, str], field: str) -> float | None:
        found = groups.get(key)
        return statistics.median(getattr(m, field) for m in found) if found else None

    summaries = []
    for (sf, workload, variant), runs in groups.items():
        work = statistics.median(m.work_seconds for m in runs)
        process = statistics.median(m.process_seconds for m in runs)
        work_cpu = statistics.median(m.work_cpu_seconds for m in runs)
        duckdb = median((sf, workload, "duckdb"), "work_seconds")
        duckdb_process = median((sf, workload, "duckdb"), "process_seconds")
        duckdb_cpu = median((sf, workload, "duckdb"), "work_cpu_seconds")
        pandas = median((sf, workload, "pandas"), "work_seconds")
        stolen = [m.steal for m in runs if m.steal is not None]
        summaries.append(
            Summary(
                sf=sf,
                workload=workload,
                variant=variant,
                runs=len(runs),
                rows=runs[0].rows,
                work_seconds=work,
                best_work_seconds=min(m.work_seconds for m in runs),
                process_seconds=process,
                cpu_seconds=statistics.median(m.cpu_seconds for m in runs),
                work_cpu_seconds=work_cpu,
                peak_rss_bytes=max(m.peak_rss_bytes for m in runs),
                rows_per_second=runs[0].rows / work if work else 0.0,
                vs_duckdb=work / duckdb if duckdb else None,
                vs_pandas=work / pandas if pandas else None,
                process_vs_duckdb=process / duckdb_process if duckdb_process else None,
                cpu_vs_duckdb=work_cpu / duckdb_cpu if duckdb_cpu else None,
                steal=statistics.median(stolen) if stolen else None,
                worker_peak_rss_bytes=max(
                    (m.worker_peak_rss_bytes for m in runs if m.worker_peak_rss_bytes is not None),
                    default=None,
                ),
                worker_cpu_seconds=median_or_none([m.worker_cpu_seconds for m in runs]),
            )
        )
    return summaries


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def format_table(summaries: Sequence[Summary]) -> str:
    """The summaries as a Markdown table, one row per variant of each workload."""
    lines = [
        "| workload | variant | work s | process s | CPU s | peak RSS MiB | Mrows/s "
        "| / DuckDB | / pandas | process / DuckDB | work CPU / DuckDB | steal |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        name = f"SF{s.sf:g} {s.workload}" if s.sf is not None else f"{s.workload}"
        lines.append(
            f"| {name} | {s.variant} | {s.work_seconds:.2f} | {s.process_seconds:.2f} "
            f"| {s.cpu_seconds:.2f} | {s.peak_rss_bytes / 2**20:.0f} "
            f"| {s.rows_per_second / 1e6:.2f} | {_ratio(s.vs_duckdb)} | {_ratio(s.vs_pandas)} "
            f"| {_ratio(s.process_vs_duckdb)} | {_ratio(s.cpu_vs_duckdb)} "
            f"| {environment.percent(s.steal)} |"
        )
    return "\n".join(lines)


def format_scaling(summaries: Sequence[Summary]) -> str:
    """Peak RSS per scale factor for each variant, and its growth from the smallest to largest."""
    sfs = sorted({s.sf for s in summaries if s.sf is not None})
    keys = list(dict.fromkeys((s.workload, s.variant) for s in summaries))
    by = {(s.sf, s.workload, s.variant): s for s in summaries}
    header = " | ".join(f"SF{sf:g} MiB" for sf in sfs)
    lines = [
        f"| workload | variant | {header} | growth | SF{sfs[-1]:g} work s |",
        "|---|---|" + "--:|" * (len(sfs) + 2),
    ]
    for workload, variant in keys:
        found = [by.get((sf, workload, variant)) for sf in sfs]
        cells = " | ".join(f"{s.peak_rss_bytes / 2**20:.0f}" if s else "-" for s in found)
        first, last = found[0], found[-1]
        growth = (
            f"{(last.peak_rss_bytes / first.peak_rss_bytes - 1) * 100:+.0f}%"
            if first and last
            else "-"
        )
        work = f"{last.work_seconds:.2f}" if last else "-"
        lines.append(f"| {workload} | {variant} | {cells} | {growth} | {work} |")
    return "\n".join(lines)
