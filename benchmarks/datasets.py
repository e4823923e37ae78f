"""Benchmark input data, generated once into a cache directory outside the repository.

Layout under the root (default `~/.cache/etlkit-bench`):

    sf{N}/parquet/{table}.parquet     tpchgen-cli parquet -s N  (the six tables Q1-Q6 read)
    sf{N}/csv/{table}.csv             tpchgen-cli csv -s N      (only when a CSV workload runs)
    report-{rows}/                    python -m data.generate --rows ROWS --format both

Each directory is generated under a temporary name and renamed when complete, so a directory
that exists is complete and generation is skipped; an interrupted one is started again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from benchmarks.workloads import Fmt

DEFAULT_ROOT: Final = Path("~/.cache/etlkit-bench").expanduser()
TPCH_TABLES: Final = ("lineitem", "orders", "customer", "supplier", "nation", "region")


def tpchgen() -> str:
    """The `tpchgen-cli` executable (next to this Python first, then on PATH).

    Raises:
        SystemExit: it is not installed; says what to install.
    """
    beside = Path(sys.executable).parent / "tpchgen-cli"
    if beside.is_file():
        return str(beside)
    found = shutil.which("tpchgen-cli")
    if found is None:
        raise SystemExit(
            "tpchgen-cli is not installed; run: pip install -e '.[bench]' (or pip install "
            "tpchgen-cli)"
        )
    return found


def tpch_dir(root: Path, sf: float) -> Path:
    """Where scale factor `sf` lives under `root` (`sf1`, `sf10`, `sf0.01`)."""
    return root / f"sf{sf:g}"


def _fresh(target: Path) -> Path:
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.parent.mkdir(parents=True, exist_ok=True)
    return temp


def ensure_tpch(root: Path, sf: float, formats: tuple[Fmt, ...], *, quiet: bool = False) -> Path:
    """Generate scale factor `sf` in `formats` under `root` unless present; return its dir."""
    base = tpch_dir(root, sf)
    for fmt in formats:
        target = base / fmt
        if target.is_dir():
            continue
        temp = _fresh(target)
        if not quiet:
            print(f"generating TPC-H SF{sf:g} as {fmt} into {target} ...", flush=True)
        began = time.perf_counter()
        command = [tpchgen(), fmt, "-s", f"{sf:g}", "-o", str(temp), "-q"]
        subprocess.run([*command, "--tables", ",".join(TPCH_TABLES)], check=True)
        temp.rename(target)
        if not quiet:
            print(f"  done in {time.perf_counter() - began:.1f}s", flush=True)
    return base


def report_dir(root: Path, rows: int) -> Path:
    """Where the report's sample data of `rows` invoices lives under `root`."""
    return root / f"report-{rows}"


def ensure_report(root: Path, rows: int, *, quiet: bool = False) -> Path:
    """Generate the report's sample data (CSV and Parquet) unless present; return its dir."""
    from data.generate import generate

    target = report_dir(root, rows)
    if target.is_dir():
        return target
    temp = _fresh(target)
    if not quiet:
        print(f"generating {rows:,} invoices as CSV and Parquet into {target} ...", flush=True)
    began = time.perf_counter()
    generate(temp, rows, fmt="both")
    temp.rename(target)
    if not quiet:
        print(f"  done in {time.perf_counter() - began:.1f}s", flush=True)
    return target
