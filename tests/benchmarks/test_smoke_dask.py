"""The Dask benchmarks still work: `etlkit-dask` at SF 0.01 through the real harness (child
processes, a LocalCluster the parent starts) gives DuckDB's results, and
`benchmarks.distributed` runs a small N on both executors and checks what they staged.

Timings are never asserted. Everything is written under tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import datasets, distributed, engines, tpch
from benchmarks.workloads import DASK, KNOWN_VARIANTS, REFERENCE, VARIANTS, WORKLOADS
from etlkit.storage.staging import Staging

SF = 0.01

pytestmark = pytest.mark.slow


def test_etlkit_dask_is_known_but_not_run_by_default() -> None:
    assert DASK in KNOWN_VARIANTS
    assert DASK not in VARIANTS  # the default list: a cluster only when asked for


def test_etlkit_dask_needs_a_scheduler_address(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="address of its scheduler"):
        engines.run(WORKLOADS["q1-parquet"], DASK, tmp_path, tmp_path / "out", tmp_path / "st")


def test_etlkit_dask_runs_on_one_cluster_and_reports_its_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_root = tmp_path / "data"
    datasets.ensure_tpch(data_root, SF, ("parquet",), quiet=True)
    out = tmp_path / "dask.json"
    code = tpch.main(
        [
            "--sf",
            str(SF),
            "--data-dir",
            str(data_root),
            "--workloads",
            "q1-parquet,reshape-parquet",
            "--variants",
            DASK,
            "--repeat",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "every result reported equals DuckDB's" in printed
    assert "LocalCluster of 2 worker processes x 1 thread on 127.0.0.1, started once" in printed
    assert "| workers' CPU s (median) |" in printed
    report = json.loads(out.read_text())
    assert report["dask_cluster"]["n_workers"] == 2
    assert report["dask_cluster"]["start_seconds"] > 0
    assert {(s["workload"], s["variant"]) for s in report["summaries"]} == {
        (w, v) for w in ("q1-parquet", "reshape-parquet") for v in (DASK, REFERENCE)
    }
    for run in report["runs"]:
        if run["variant"] == DASK:
            # two workers' peaks (each an interpreter with polars, DuckDB, etlkit) on top of
            # the child's own, and the CPU the workers spent on the run
            assert run["worker_peak_rss_bytes"] > 2 * 50 * 2**20
            assert run["peak_rss_bytes"] > run["worker_peak_rss_bytes"]
            assert 0 < run["worker_cpu_seconds"] < run["cpu_seconds"]
            assert run["worker_peaks_reset"] is True
        else:
            assert run["worker_peak_rss_bytes"] is None


def test_distributed_overhead_runs_both_executors_and_checks_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "distributed.json"
    code = distributed.main(
        ["--partitions", "12", "--repeat", "1", "--dir", str(tmp_path), "--json", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| executor (12 partitions) | wall s | wall ms/partition |" in printed
    report = json.loads(out.read_text())
    assert report["partitions"] == 12
    assert sorted(report["seconds"]) == sorted(
        f"{e} {f}" for e in distributed.EXECUTORS for f in distributed.FIGURES
    )
    assert all(len(values) == 1 and values[0] >= 0 for values in report["seconds"].values())
    assert report["seconds"]["dask wall"][0] > 0


def test_distributed_check_fails_a_run_that_staged_other_rows(tmp_path: Path) -> None:
    data_dir = distributed.write_files(tmp_path / "files", 5)
    staging = Staging(str(tmp_path / "staging"))
    result = distributed.run_once(data_dir, staging, None)
    distributed.check(result, staging, 5, dask=False)
    with pytest.raises(AssertionError, match="staged 5 rows, not the files' 6"):
        distributed.check(result, staging, 6, dask=False)
    # a local run is one partition: as a Dask run's count it is wrong
    with pytest.raises(AssertionError, match="partitions ran on Dask, not 5"):
        distributed.check(result, staging, 5, dask=True)
