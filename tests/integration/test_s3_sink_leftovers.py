"""On S3 (moto's server on 127.0.0.1), a sink finds and removes its run's temporary objects."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from connectors.files import ParquetDatasetSink, ParquetSink
from etlkit.model.nodes import Context
from etlkit.settings import connections
from tests.s3_server import filesystem

pytestmark = [pytest.mark.integration, pytest.mark.s3]

CTX = Context(
    pipeline="p",
    run_id="20250301T000000Z-abc123",
    logical_date=datetime(2025, 3, 1, tzinfo=UTC),
    node="report",
)
OTHER_RUN = "20250302T000000Z-def456"


def test_file_sinks_on_s3_remove_only_their_runs_temporary_objects(
    s3_endpoint: str, s3_bucket: str, lake: connections.Connection
) -> None:
    fs = filesystem(s3_endpoint)
    out = f"{s3_bucket}/out"
    fs.pipe(f"{out}/.report.parquet.tmp-{CTX.run_id}-0a1b2c3d", b"half a file")
    fs.pipe(f"{out}/.report.parquet.tmp-{OTHER_RUN}-0a1b2c3d", b"another run's")
    fs.pipe(f"{out}/.parts.tmp-{CTX.run_id}-4e5f6a7b/part=0/part-0.parquet", b"half a dataset")
    report = ParquetSink(f"s3://{out}/report.parquet", "x", conn="lake")
    parts = ParquetDatasetSink(f"s3://{out}/parts", "x", partition_by=["part"], conn="lake")

    assert report.discard_leftovers(CTX) == [
        f"s3://{out}/.report.parquet.tmp-{CTX.run_id}-0a1b2c3d"
    ]
    assert parts.discard_leftovers(CTX) == [f"s3://{out}/.parts.tmp-{CTX.run_id}-4e5f6a7b"]

    fs.invalidate_cache()
    assert fs.find(out) == [f"{out}/.report.parquet.tmp-{OTHER_RUN}-0a1b2c3d"]
    written = report.write(iter(pa.table({"id": [1, 2]}).to_batches()), CTX)
    assert written.rows == 2
