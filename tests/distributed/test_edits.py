"""A pipeline file edited between two runs on one long-lived cluster: the workers import the
edited class, not the one they cached (their cache is keyed by the file's content hash)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from etlkit.engine.distributed import DaskExecutor
from etlkit.model.discovery import load_pipeline
from etlkit.storage.staging import Staging
from tests.distributed.conftest import run
from tests.distributed.jobs import write_bills

pytestmark = pytest.mark.slow

PIPELINE = """
import polars as pl

import etlkit as ek
from connectors.files import ParquetSink, ParquetSource
from tests.distributed.jobs import Bill

FACTOR = FACTOR_VALUE


class Scale(ek.Transform[Bill, Bill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(amount=pl.col("amount") * FACTOR)


class Edited(ek.Pipeline):
    params = {"data_dir": "data", "out_dir": "out"}

    bills = ParquetSource("{data_dir}/*.parquet", schema=Bill)
    scaled = Scale(bills)
    output = ParquetSink("{out_dir}/bills.parquet", scaled)
"""


def test_an_edited_pipeline_file_is_imported_again_by_the_workers(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    write_bills(tmp_path / "bills", files=2, rows=50)
    file = tmp_path / "pipelines" / "edited.py"
    file.parent.mkdir()
    totals = []
    for factor in (2, 3):
        file.write_text(PIPELINE.replace("FACTOR_VALUE", str(factor)))  # edited in place
        pipeline = load_pipeline(f"{file}:Edited", file.parent)
        out = tmp_path / f"out-{factor}"
        params = {"data_dir": str(tmp_path / "bills"), "out_dir": str(out)}
        staging = Staging(str(tmp_path / f"staging-{factor}"))
        result = run(pipeline, staging, params, executor=dask_executor)
        result.raise_for_error()
        totals.append(pl.read_parquet(out / "bills.parquet")["amount"].sum())
    plain = pl.read_parquet(sorted((tmp_path / "bills").glob("*.parquet")))["amount"].sum()
    assert totals == [pytest.approx(plain * 2), pytest.approx(plain * 3)]
