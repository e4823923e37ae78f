"""Named connections on the workers: the coordinator ships the connections the plan's nodes
name (only those) and each task makes them current, as a local run's threads have them; their
secrets never show in what crosses or is reported."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest

from etlkit.engine.distributed import DaskExecutor
from etlkit.engine.distributed.connections import current, seal, staging_options, unsealed
from etlkit.engine.distributed.tasks import _masked
from etlkit.settings import connections
from etlkit.storage.staging import Staging
from tests.connectors.test_postgres import PARTITIONED, put
from tests.distributed.conftest import run
from tests.distributed.jobs import LakeBills, PgEvents, write_bills
from tests.s3_server import storage_options

if TYPE_CHECKING:
    from collections.abc import Iterator

    from adbc_driver_manager.dbapi import Connection

pytestmark = pytest.mark.slow


@pytest.fixture
def warehouse(postgres_dsn: str, tmp_path: Path) -> Iterator[connections.Connection]:
    """The connection `warehouse` (the test's PostgreSQL schema) and another one no node
    names, activated for this test as `etlkit run` activates them (the previous restored)."""
    env = {
        "ETLKIT_CONN_WAREHOUSE": postgres_dsn,
        "ETLKIT_CONN_UNUSED": "postgresql://someone:unused-secret@127.0.0.1:1/nothing",
    }
    known = connections.load_connections(tmp_path, env=env)
    previous = connections.activate(known)
    yield known["warehouse"]
    connections.activate(previous)


def test_a_partitioned_postgres_source_reads_on_the_workers_through_its_connection(
    dask_executor: DaskExecutor,
    postgres_db: Connection,
    warehouse: connections.Connection,
    tmp_path: Path,
) -> None:
    put(postgres_db, "events", PARTITIONED)
    frames = []
    for name, executor in (("local", None), ("dask", dask_executor)):
        out = tmp_path / name / "out"
        staging = Staging(str(tmp_path / name / "staging"))
        result = run(PgEvents, staging, {"out_dir": str(out)}, executor=executor)
        result.raise_for_error()
        frames.append(pl.read_parquet(out / "events.parquet"))
    local, dask = frames
    assert dask.sort("id").equals(local.sort("id"))
    assert dask.height == PARTITIONED.num_rows
    partitions = result.nodes["events"].partitions
    assert len(partitions) >= 4  # the key ranges, each a task of its own
    assert {p.worker for p in partitions} <= set(dask_executor.client.scheduler_info()["workers"])


@pytest.mark.s3
def test_an_s3_file_source_reads_on_the_workers_through_its_connection(
    dask_executor: DaskExecutor,
    s3_endpoint: str,
    s3_bucket: str,
    lake: connections.Connection,
    tmp_path: Path,
) -> None:
    import s3fs

    ids = write_bills(tmp_path / "bills", files=3, rows=200)
    fs = s3fs.S3FileSystem(**storage_options(s3_endpoint))
    for file in sorted((tmp_path / "bills").iterdir()):
        fs.put(str(file), f"{s3_bucket}/bills/{file.name}")
    params = {"data_dir": f"s3://{s3_bucket}/bills", "out_dir": str(tmp_path / "out")}

    result = run(LakeBills, Staging(str(tmp_path / "staging")), params, executor=dask_executor)

    result.raise_for_error()
    assert len(result.nodes["bills"].partitions) == 3
    written = pl.read_parquet(tmp_path / "out" / "bills.parquet")
    assert sorted(written["bill_id"].to_list()) == ids


def test_only_the_named_connections_cross_and_their_secrets_never_show(
    warehouse: connections.Connection,
) -> None:
    sealed = seal(PgEvents.graph(), {"key": "k", "secret": "staging-secret"})

    shipped = unsealed(sealed)
    assert shipped is not None
    assert set(shipped) == {"warehouse"}  # not `unused`, which no node names
    assert shipped["warehouse"].uri == warehouse.uri
    secret = warehouse.password.get_secret_value() if warehouse.password else ""
    assert secret
    for shown in (repr(sealed), str(sealed), f"{(sealed,)}"):
        assert secret not in shown
        assert "unused-secret" not in shown
        assert "staging-secret" not in shown
    assert staging_options(sealed) == {"key": "k", "secret": "staging-secret"}
    logs = [{"message": f"connecting with {secret}", "exception": f"refused: {secret}"}]
    with current(sealed) as active:
        answer = _masked({"failed": {"message": f"login {secret} refused"}}, logs, active)
    assert answer["failed"]["message"] == "login *** refused"
    assert answer["logs"] == [{"message": "connecting with ***", "exception": "refused: ***"}]


def test_a_coordinator_without_connections_ships_none() -> None:
    previous = connections.activate(None)
    try:
        sealed = seal(PgEvents.graph(), {})
        with current(sealed), pytest.raises(connections.ConnectionNotFoundError) as caught:
            connections.resolve("warehouse")  # as on a worker: the fix is to activate them
    finally:
        connections.activate(previous)
    assert unsealed(sealed) is None
    assert "no connections are loaded" in str(caught.value)
