"""Staging on S3 (moto's server on 127.0.0.1): the workers write each partition's parts there,
the coordinator commits them as one output, and a SQL node on a worker reads them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import polars as pl
import pytest

from etlkit.engine.distributed import DaskExecutor
from etlkit.storage.staging import Staging
from tests.distributed.conftest import run
from tests.distributed.jobs import Bills, write_bills
from tests.s3_server import SECRET, storage_options

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def test_workers_stage_partitions_on_s3(
    dask_executor: DaskExecutor, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    ids = write_bills(tmp_path / "bills", files=3, rows=400)
    root = f"s3://{s3_bucket}/staging"
    # the workers get the endpoint and credentials from the run (not from this process's
    # environment, which they do not share)
    staging = Staging(root, storage_options=storage_options(s3_endpoint))
    params = {"data_dir": str(tmp_path / "bills"), "out_dir": str(tmp_path / "out")}

    specs: list[str] = []
    submit = dask_executor.client.submit

    def spy(function: Any, *args: Any, **kwargs: Any) -> Any:  # what crosses, as Dask logs it
        specs.append(repr(args))
        return submit(function, *args, **kwargs)

    with mock.patch.object(dask_executor.client, "submit", spy):
        result = run(Bills, staging, params, executor=dask_executor)

    result.raise_for_error()
    assert specs
    assert not [s for s in specs if SECRET in s]  # the staging's credentials cross sealed
    taxed = result.nodes["taxed"]
    assert len({p.worker for p in taxed.partitions}) >= 1
    assert len(taxed.partitions) == 3
    manifest = staging.manifest(Bills.name, result.run_id, "taxed")
    assert manifest is not None
    assert manifest.rows == len(ids)
    assert staging.verify(Bills.name, result.run_id, "taxed") == []
    run_dir = staging.run_dir(Bills.name, result.run_id)
    staging.fs.invalidate_cache()
    listed = {f"{run_dir}/{f.name}" for f in manifest.files}
    found = set(staging.fs.find(f"{run_dir}/taxed.parts"))
    assert found == listed - {f"{run_dir}/taxed.parquet"}  # one attempt each, no finishes left
    staged = pl.concat(
        pl.from_arrow(b)
        for b in staging.iter_batches(Bills.name, result.run_id, "taxed", batch_size=1000)
    )
    assert sorted(staged["bill_id"].to_list()) == ids
    summary = pl.read_parquet(tmp_path / "out" / "summary.parquet")  # SQL over S3, on a worker
    assert summary["n"].to_list() == [len(ids)]
