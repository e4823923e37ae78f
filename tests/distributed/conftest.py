"""Fixtures for the Dask executor: one LocalCluster on 127.0.0.1 for the session, small data.

The cluster has two worker processes of one thread each (started with spawn by their nannies,
so a few seconds once); tests share it, and one kills a worker on purpose (its nanny starts
another). Runs go through `execute` with a `DaskExecutor` and again with the local executor,
whose results they must match.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from etlkit.engine.distributed import DaskExecutor
from etlkit.engine.execution import Listener, RunOptions, RunResult, execute, new_run_id
from etlkit.model.nodes import Context
from etlkit.model.pipeline import PipelineDefinition
from etlkit.storage.staging import Staging

# PostgreSQL's fixtures, for the sources reading on the workers through a connection
from tests.connectors.conftest import (  # noqa: F401
    postgres_admin,
    postgres_db,
    postgres_dsn,
    postgres_server,
)

# the S3 server's fixtures, for the tests staging on S3 or reading through a connection
from tests.integration.conftest import lake, s3_bucket, s3_endpoint, s3_server  # noqa: F401

SF = 0.01


@pytest.fixture(scope="session")
def dask_executor() -> Iterator[DaskExecutor]:
    """A `DaskExecutor` on a LocalCluster(n_workers=2, threads_per_worker=1, processes) on
    127.0.0.1, without a dashboard."""
    with DaskExecutor.connect(n_workers=2, threads_per_worker=1) as executor:
        yield executor


@pytest.fixture(scope="session")
def tpch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TPC-H at scale factor 0.01 (60,175 lineitem rows), Parquet; lineitem in row groups of
    8,192 rows, so that a source with `partition_rows` splits it."""
    import pyarrow.parquet as pq

    from benchmarks import datasets

    root = tmp_path_factory.mktemp("tpch")
    datasets.ensure_tpch(root, SF, ("parquet",), quiet=True)
    lineitem = datasets.tpch_dir(root, SF) / "parquet" / "lineitem.parquet"
    pq.write_table(pq.read_table(lineitem), lineitem, row_group_size=8192)
    return datasets.tpch_dir(root, SF)


def run(
    pipeline: type[PipelineDefinition],
    staging: Staging,
    params: dict[str, str],
    *,
    executor: Any = None,
    run_id: str | None = None,
    listeners: Sequence[Listener] = (),
    interval: tuple[datetime, datetime] | None = None,
    **options: Any,
) -> RunResult:
    """Run `pipeline` once with `executor` (None: the local one), as `etlkit run` would, for
    2025-03-01 (and the data `interval` given)."""
    ctx = Context(
        pipeline=pipeline.name,
        run_id=run_id or new_run_id(),
        logical_date=datetime(2025, 3, 1, tzinfo=UTC),
        params=pipeline.resolve_params(params),
        data_interval_start=interval[0] if interval else None,
        data_interval_end=interval[1] if interval else None,
    )
    return execute(
        pipeline.graph(),
        ctx,
        staging=staging,
        options=RunOptions(**options),
        listeners=listeners,
        executor=executor,
    )
