"""TPC-H and monthly-report benchmarks: etlkit against DuckDB, polars and chunked pandas.

Run from the repository root (`pip install -e '.[bench]'` first):

    python -m benchmarks.tpch --sf 1                       # every workload, 3 runs each
    python -m benchmarks.tpch --sf 1 --workloads q1-parquet,q3 --repeat 5 --json sf1.json
    python -m benchmarks.tpch --scaling 1,3,10             # peak RSS of Q1 as the data grows

Data is generated once with `tpchgen-cli` (and `data.generate` for the report) into
`--data-dir` (default `~/.cache/etlkit-bench`, see `benchmarks.datasets`). Workloads are listed in
`benchmarks.workloads`, variants in `benchmarks.engines`: etlkit with its defaults (staging and
validation on), etlkit with validation off, DuckDB SQL on the files, polars lazy with the
streaming engine, and pandas in chunks; and only when named in `--variants`, `etlkit-dask`:
`etlkit run --executor dask` on one LocalCluster started for the invocation
(`benchmarks.dask_cluster`: its start is reported once, its workers' peak RSS and CPU time are
added to each run's and shown apart).

Every run is a fresh child process (`benchmarks.child`), the variants taking turns within each
repetition. Per run: the wall time of the work inside the child (after imports), the wall time of
the whole child (interpreter start and imports included), the child's CPU time (user + sys, from
`os.wait4`), its peak RSS (its own high-water mark, VmHWM, and that of any process it started),
and the hypervisor's steal over the run (from `/proc/stat`: on a shared VM steal slows a run's
wall time, whatever the variant). Each variant's result is checked against
DuckDB's of the same repetition before anything is reported: a variant that fails or differs is
listed as such, without timings, and the command exits with 1. Measurements are saved to
`--json` after every workload.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import datasets, environment
from benchmarks.dask_cluster import DASK_VARIANT, Cluster, WorkerUsage, format_workers, header
from benchmarks.summaries import Measurement, format_scaling, format_table, summarize
from benchmarks.workloads import (
    KNOWN_VARIANTS,
    REFERENCE,
    REPO,
    VARIANTS,
    WORKLOADS,
    Fmt,
    Reference,
    Workload,
    input_rows,
)


@dataclass(frozen=True)
class Failure:
    """A run that failed, or a variant whose result differed from DuckDB's: no timings."""

    sf: float | None
    workload: str
    variant: str
    repetition: int
    reason: str


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def run_child(
    workload: Workload, variant: str, data_dir: Path, run_dir: Path, address: str | None = None
) -> tuple[dict[str, Any], float, Any]:
    """Run one variant in a fresh process; return its own stats, its wall time and rusage.
    `address`: the Dask scheduler an `etlkit-dask` run uses.

    Raises:
        RuntimeError: the child failed; the message holds the end of its stderr.
    """
    run_dir.mkdir(parents=True)
    spec = {
        "workload": workload.name,
        "variant": variant,
        "data_dir": str(data_dir),
        "out_dir": str(run_dir / "out"),
        "state_dir": str(run_dir / "state"),
        "stats": str(run_dir / "stats.json"),
        "scheduler_address": address,
    }
    (run_dir / "state").mkdir()
    with (run_dir / "stderr.txt").open("wb") as stderr:
        began = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.child", json.dumps(spec)],
            cwd=REPO,
            env=_child_env(),
            stdout=stderr,
            stderr=stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = (run_dir / "stderr.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"{workload.name} as {variant} exited with code {child.returncode}:\n{tail}"
        )
    stats: dict[str, Any] = json.loads((run_dir / "stats.json").read_text())
    return stats, wall, usage


def _read_result(path: Path) -> Any:
    import polars as pl

    return pl.read_parquet(path)


def _check(results: dict[str, Path], *, atol: float) -> Iterator[tuple[str, str]]:
    """Each variant whose result file differs from the reference's, with why; nothing when
    the reference has no result."""
    if REFERENCE not in results:
        return
    reference = Reference(_read_result(results[REFERENCE]), atol=atol)
    for variant, path in results.items():
        if variant == REFERENCE:
            continue
        result = _read_result(path)
        problems = reference.differences(result)
        if problems:
            reason = (
                f"result differs from {REFERENCE}'s: {'; '.join(problems[:5])}\n"
                f"{REFERENCE}:\n{reference.frame}\n{variant}:\n{result}"
            )
            yield variant, reason
        del result  # one variant's result in memory at a time


def run_workload(
    workload: Workload,
    *,
    sf: float | None,
    data_dir: Path,
    variants: Sequence[str],
    repeat: int,
    work_dir: Path,
    rows: int,
    cluster: Cluster | None = None,
) -> tuple[list[Measurement], list[Failure]]:
    """Run every variant `repeat` times, taking turns; check results against DuckDB's.

    A variant that fails, or whose result differs from DuckDB's of the same repetition, is
    reported as a failure and none of its measurements of this workload are kept. Result files
    wait on disk until the repetition's variants have run, then are read one at a time: a
    reshape's result is half its input, too large to hold one per variant. `etlkit-dask` runs
    on `cluster`, whose workers' usage is added to the run's.
    """
    measurements: list[Measurement] = []
    failures: list[Failure] = []
    label = f"SF{sf:g} {workload.name}" if sf is not None else workload.name
    for repetition in range(1, repeat + 1):
        results: dict[str, Path] = {}
        kept_dir = work_dir / f"{label.replace(' ', '-')}-results-{repetition}"
        kept_dir.mkdir(parents=True)
        for variant in variants:
            if any(f.variant == variant for f in failures):
                continue
            run_dir = work_dir / f"{label.replace(' ', '-')}-{variant}-{repetition}"
            try:
                ticks = environment.cpu_ticks()
                if variant == DASK_VARIANT:
                    if cluster is None:
                        raise RuntimeError(f"{DASK_VARIANT} runs on a cluster; none was started")
                    before = cluster.before_run()
                    stats, wall, usage = run_child(
                        workload, variant, data_dir, run_dir, cluster.address
                    )
                    workers: WorkerUsage | None = cluster.after_run(before)
                else:
                    stats, wall, usage = run_child(workload, variant, data_dir, run_dir)
                    workers = None
                steal = environment.steal_share(ticks, environment.cpu_ticks())
                results[variant] = kept_dir / f"{variant}.parquet"
                shutil.move(stats["result"], results[variant])  # out of the run's directory
            except RuntimeError as exc:
                print(f"  {label} run {repetition}/{repeat} {variant:18} FAILED", flush=True)
                failures.append(Failure(sf, workload.name, variant, repetition, str(exc)))
                continue
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
            worker_rss, worker_cpu = (
                (workers.peak_rss_bytes, workers.cpu_seconds) if workers else (0, 0.0)
            )
            own_rss = max(stats["peak_rss_bytes"], stats["children_maxrss_kib"] * 1024)
            m = Measurement(
                sf=sf,
                workload=workload.name,
                variant=variant,
                repetition=repetition,
                rows=rows,
                work_seconds=stats["work_seconds"],
                process_seconds=wall,
                import_seconds=stats["import_seconds"],
                cpu_seconds=usage.ru_utime + usage.ru_stime + worker_cpu,
                work_cpu_seconds=stats["work_cpu_seconds"] + worker_cpu,
                peak_rss_bytes=own_rss + worker_rss,
                steal=steal,
                worker_peak_rss_bytes=workers.peak_rss_bytes if workers else None,
                worker_cpu_seconds=workers.cpu_seconds if workers else None,
                worker_peaks_reset=workers.reset if workers else None,
            )
            measurements.append(m)
            print(
                f"  {label} run {repetition}/{repeat} {variant:18} work {m.work_seconds:7.2f}s  "
                f"process {m.process_seconds:7.2f}s  cpu {m.cpu_seconds:7.2f}s  "
                f"peak {m.peak_rss_bytes / 2**20:7.0f} MiB  steal {environment.percent(m.steal)}",
                flush=True,
            )
        try:
            for variant, reason in _check(results, atol=workload.atol):
                print(f"  {label} run {repetition}/{repeat} {variant:18} WRONG RESULT", flush=True)
                failures.append(Failure(sf, workload.name, variant, repetition, reason))
        finally:
            shutil.rmtree(kept_dir, ignore_errors=True)
    if any(f.variant == REFERENCE for f in failures):
        failed = set(variants)  # nothing was checked
    else:
        failed = {f.variant for f in failures}
    kept = [m for m in measurements if m.variant not in failed]
    return kept, failures


def _list(text: str, known: Sequence[str], what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return items


def _formats(workloads: Sequence[Workload]) -> tuple[Fmt, ...]:
    needed = {w.fmt for w in workloads if w.dataset == "tpch"}
    return ("parquet", "csv") if "csv" in needed else ("parquet",)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks.tpch`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tpch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (default: 1)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=datasets.DEFAULT_ROOT,
        help=f"where generated data is cached (default: {datasets.DEFAULT_ROOT})",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (default: 3)")
    parser.add_argument(
        "--workloads",
        default="",
        help=f"comma-separated, from {', '.join(WORKLOADS)} (default: all; "
        "with --scaling: q1-parquet)",
    )
    parser.add_argument(
        "--variants",
        default="",
        help=f"comma-separated, from {', '.join(KNOWN_VARIANTS)} (default: all but "
        f"{DASK_VARIANT}; with --scaling: etlkit, etlkit-novalidate, duckdb)",
    )
    parser.add_argument(
        "--report-rows",
        type=int,
        default=10_000_000,
        help="invoices in the monthly report's data (default: 10,000,000)",
    )
    parser.add_argument(
        "--scaling",
        default="",
        metavar="SF,SF,...",
        help="instead of one --sf, run the TPC-H workloads at each of these scale factors "
        "and report peak RSS per size",
    )
    parser.add_argument("--json", type=Path, help="also write every run and summary here")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="where runs keep their state and results while they run (default: a new "
        "temporary directory, removed at the end)",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="generate the data, run nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every run succeeded with DuckDB's result, else 1."""
    args = build_parser().parse_args(argv)
    scaling = [float(x) for x in args.scaling.split(",") if x.strip()]
    default_workloads = "q1-parquet" if scaling else ",".join(WORKLOADS)
    workloads = [
        WORKLOADS[n]
        for n in _list(args.workloads or default_workloads, list(WORKLOADS), "workload(s)")
    ]
    default_variants = "etlkit,etlkit-novalidate,duckdb" if scaling else ",".join(VARIANTS)
    variants = _list(args.variants or default_variants, KNOWN_VARIANTS, "variant(s)")
    if REFERENCE not in variants:
        variants.append(REFERENCE)  # every result is checked against it
    if scaling and any(w.dataset != "tpch" for w in workloads):
        raise SystemExit("--scaling runs TPC-H workloads only (the report has no scale factor)")
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    sfs = scaling or [args.sf]
    root: Path = args.data_dir.expanduser().resolve()

    tpch = [w for w in workloads if w.dataset == "tpch"]
    data: dict[tuple[float | None, str], Path] = {}
    for scale in sfs if tpch else []:
        base = datasets.ensure_tpch(root, scale, _formats(tpch))
        for w in tpch:
            data[(scale, w.name)] = base
    if any(w.dataset == "report" for w in workloads):
        base = datasets.ensure_report(root, args.report_rows)
        for w in workloads:
            if w.dataset == "report":
                data[(None, w.name)] = base
    if args.generate_only:
        return 0

    environment.compile_sources()  # children read bytecode, as from an installed package
    print(environment.describe(), flush=True)
    stack = contextlib.ExitStack()
    cluster = stack.enter_context(Cluster()) if DASK_VARIANT in variants else None
    if cluster is not None:
        print(header(cluster), flush=True)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="etlkit-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    measurements: list[Measurement] = []
    failures: list[Failure] = []
    began = time.perf_counter()

    def save() -> None:
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "command": ["python", "-m", "benchmarks.tpch", *(argv or sys.argv[1:])],
                        "machine": environment.machine(),
                        "versions": environment.versions(),
                        "report_rows": args.report_rows,
                        "dask_cluster": cluster.describe() if cluster else None,
                        "summaries": [asdict(s) for s in summarize(measurements)],
                        "runs": [asdict(m) for m in measurements],
                        "failures": [asdict(f) for f in failures],
                    },
                    indent=2,
                )
            )

    try:
        for (sf, name), base in data.items():
            workload = WORKLOADS[name]
            found, failed = run_workload(
                workload,
                sf=sf,
                data_dir=base,
                variants=variants,
                repeat=args.repeat,
                work_dir=work_dir,
                rows=input_rows(workload, base),
                cluster=cluster,
            )
            measurements += found
            failures += failed
            save()  # after every workload: a crash later keeps what was measured
    finally:
        stack.close()
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    summaries = summarize(measurements)
    print(
        f"\n{len(measurements)} runs in {time.perf_counter() - began:.0f}s; medians of "
        f"{args.repeat}; every result reported equals DuckDB's.\n"
    )
    print(format_table(summaries))
    if scaling:
        print()
        print(format_scaling(summaries))
    if cluster is not None:
        print(f"\n{header(cluster)}\n")
        print(format_workers(summaries))
    for f in failures:
        where = f"SF{f.sf:g} {f.workload}" if f.sf is not None else f.workload
        print(f"\nFAILED, not reported: {where} {f.variant} run {f.repetition}: {f.reason}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
