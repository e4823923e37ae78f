"""The Dask executor gives the local executor's answers: TPC-H Q1, Q3, Q5, the reshape job and
the monthly report, over small generated data, with the sources split into partitions."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from benchmarks.workloads import differences
from etlkit.engine.distributed import DaskExecutor
from etlkit.model.pipeline import PipelineDefinition
from etlkit.storage.staging import Staging
from pipelines.tpch_reshape import TpchReshape
from tests.distributed.conftest import run

pytestmark = pytest.mark.slow


def both(
    pipeline: type[PipelineDefinition],
    params: dict[str, str],
    tmp_path: Path,
    executor: DaskExecutor,
    output: str,
) -> tuple[pl.DataFrame, pl.DataFrame, object]:
    """The pipeline's output file run locally and on Dask (and the Dask run's result)."""
    results = []
    for name, runner in (("local", None), ("dask", executor)):
        out = tmp_path / name / "out"
        result = run(pipeline, Staging(str(tmp_path / name / "staging")), {**params, "out_dir": str(out)}, executor=runner)
        result.raise_for_error()
        results.append((pl.read_parquet(out / output), result))
    return results[0][0], results[1][0], results[1][1]


def test_reshape_matches_local(tpch_dir: Path, dask_executor: DaskExecutor, tmp_path: Path) -> None:
    local, dask, result = both(TpchReshape, {"data_dir": str(tpch_dir)}, tmp_path, dask_executor, "tpch_reshape.parquet")
    assert local.height > 0
    key = ["l_orderkey", "l_linenumber"]
    assert differences(local.sort(key), dask.sort(key)) == []

