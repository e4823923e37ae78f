"""The Dask executor gives the local executor's answers: TPC-H Q1, Q3, Q5, the reshape job
(its source whole, and split into partitions of row groups) and the monthly report (a glob of
CSV files, one partition each) and a month of daily folders (a partition per day), over small
generated data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import polars as pl
import pytest

from benchmarks import datasets
from benchmarks.workloads import differences
from connectors.files import ParquetSource
from etlkit.engine.distributed import DaskExecutor
from etlkit.engine.execution import RunResult
from etlkit.model.pipeline import PipelineDefinition
from etlkit.storage.staging import Staging
from pipelines.monthly_report import MonthlyReport
from pipelines.tpch_q1 import TpchQ1
from pipelines.tpch_q3 import TpchQ3
from pipelines.tpch_q5 import TpchQ5
from pipelines.tpch_reshape import TpchReshape
from tests.distributed.conftest import run
from tests.distributed.jobs import DailyBills, ReshapeSplit, write_bills

pytestmark = pytest.mark.slow


def both(
    pipeline: type[PipelineDefinition],
    params: dict[str, str],
    tmp_path: Path,
    executor: DaskExecutor,
    output: str,
) -> tuple[pl.DataFrame, pl.DataFrame, RunResult]:
    """The pipeline's output file run locally and on Dask, and the Dask run's result (its
    staging under `tmp_path/dask/staging`)."""
    frames, result = [], None
    for name, runner in (("local", None), ("dask", executor)):
        out = tmp_path / name / "out"
        staging = Staging(str(tmp_path / name / "staging"))
        result = run(pipeline, staging, {**params, "out_dir": str(out)}, executor=runner)
        result.raise_for_error()
        frames.append(pl.read_parquet(next(out.rglob(output))))
    assert result is not None
    return frames[0], frames[1], result


@pytest.mark.parametrize(
    ("pipeline", "output"),
    [(TpchQ1, "tpch_q1.parquet"), (TpchQ3, "tpch_q3.parquet"), (TpchQ5, "tpch_q5.parquet")],
)
def test_tpch_queries_match_local(
    pipeline: type[PipelineDefinition],
    output: str,
    tpch_dir: Path,
    dask_executor: DaskExecutor,
    tmp_path: Path,
) -> None:
    local, dask, result = both(
        pipeline, {"data_dir": str(tpch_dir)}, tmp_path, dask_executor, output
    )
    assert local.height > 0
    assert differences(local, dask) == []
    assert result.state == "success"


@pytest.mark.parametrize("pipeline", [TpchReshape, ReshapeSplit])
def test_reshape_matches_local(
    pipeline: type[PipelineDefinition], tpch_dir: Path, dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    params = {"data_dir": str(tpch_dir)}
    local, dask, result = both(pipeline, params, tmp_path, dask_executor, "tpch_reshape.parquet")
    assert local.height > 0
    key = ["l_orderkey", "l_linenumber"]
    assert differences(local.sort(key), dask.sort(key)) == []
    # the source's files stand for its output, as in a local run: no partition copied them
    staged = Staging(str(tmp_path / "dask" / "staging"))
    manifest = staged.manifest(pipeline.name, result.run_id, "lineitem")
    assert manifest is not None
    assert [f.name for f in manifest.files] == [str(tpch_dir / "parquet" / "lineitem.parquet")]
    assert result.nodes["lineitem"].expected_rows == 60_175  # for the progress display
    parts = result.nodes["reshaped"].partitions
    assert sum(p.rows for p in parts) == dask.height
    assert all(p.worker.startswith("tcp://127.0.0.1:") for p in parts)
    if pipeline is ReshapeSplit:  # 60,175 rows in row groups of 8,192, 10,000 rows at most
        assert len(parts) == 8
        assert len({p.partition for p in parts}) == 8
    else:
        assert len(parts) == 1


def test_monthly_report_matches_local(
    dask_executor: DaskExecutor, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    root = tmp_path_factory.mktemp("report")
    data_dir = datasets.ensure_report(root, 20_000, quiet=True)
    params = {"data_dir": str(data_dir)}
    local, dask, result = both(
        MonthlyReport, params, tmp_path, dask_executor, "monthly_report.parquet"
    )
    assert local.height > 0
    assert differences(local, dask) == []
    files = sorted(data_dir.glob("billing/*/billing.csv"))
    billing = result.nodes["billing"]
    assert len(files) > 1
    assert len(billing.partitions) == len(files)  # one partition per file of the glob
    assert [p.rows for p in billing.partitions] == [pl.read_csv(f).height for f in files]


def test_a_local_run_reads_a_split_source_whole(tpch_dir: Path, tmp_path: Path) -> None:
    # a ParquetSource splits a big file by default; only a partitioned executor asks it to
    staging = Staging(str(tmp_path / "staging"))
    params = {"data_dir": str(tpch_dir), "out_dir": str(tmp_path / "out")}
    with mock.patch.object(ParquetSource, "partitions", side_effect=AssertionError("asked")):
        result = run(ReshapeSplit, staging, params)
    result.raise_for_error()
    assert result.nodes["lineitem"].rows_out == 60_175
    assert result.nodes["reshaped"].partitions == []


def test_a_month_of_daily_folders_runs_a_partition_per_day(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    # a range of logical dates: each day's file of the run's month is a partition of its own
    expected: list[int] = []
    for day in range(1, 32):
        folder = tmp_path / "bills" / f"2025-03-{day:02d}"
        expected += write_bills(folder, files=1, rows=10 + day, first_id=1000 * day)
    write_bills(tmp_path / "bills" / "2025-04-01", files=1, rows=7)  # the next month's
    march = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
    outputs = []
    for name, executor in (("local", None), ("dask", dask_executor)):
        params = {"data_dir": str(tmp_path / "bills"), "out_dir": str(tmp_path / name)}
        staging = Staging(str(tmp_path / name / "staging"))
        result = run(DailyBills, staging, params, executor=executor, interval=march)
        result.raise_for_error()
        outputs.append(pl.read_parquet(tmp_path / name / "bills.parquet"))
    local, dask = outputs
    assert sorted(local["bill_id"].to_list()) == sorted(expected)
    assert differences(local, dask) == []
    days = result.nodes["taxed"].partitions
    assert sorted(p.rows for p in days) == sorted(10 + day for day in range(1, 32))
