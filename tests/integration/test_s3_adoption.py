"""A ParquetSink adopting its input's staged file across filesystems, on moto's S3 server:
to an S3 destination from local staging, and from staging on S3 to a local file, the staged
bytes are streamed (never decoded and encoded again) under a temporary name, then moved into
place; the result equals what encoding gives and leaves no temporary object."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import ParquetSink
from etlkit.settings import connections
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySource
from tests.connectors.test_parquet_adoption import Line, Upper, lines, run
from tests.s3_server import filesystem

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def pipeline(url: str, conn: str | None) -> type[ek.Pipeline]:
    class Adopted(ek.Pipeline):
        source = MemorySource(lines(3000), schema=Line, chunk_rows=500)
        upper = Upper(source)
        output = ParquetSink(url, upper, conn=conn)

    return Adopted


def test_a_sink_on_s3_streams_the_local_staged_file(
    tmp_path: Path, s3_bucket: str, s3_endpoint: str, lake: connections.Connection
) -> None:
    url = f"s3://{s3_bucket}/out/adopted.parquet"
    staging = tmp_path / "staging"

    result = run(pipeline(url, "lake"), staging)
    run(pipeline(str(tmp_path / "encoded.parquet"), None), staging, adopt_staged=False)

    write = result.nodes["output"].write
    assert write is not None
    assert write.extra["adopted"] == "streamed copy"
    assert write.uri == url
    fs = filesystem(s3_endpoint)
    assert fs.ls(f"{s3_bucket}/out") == [f"{s3_bucket}/out/adopted.parquet"]  # nothing else
    data = fs.cat_file(f"{s3_bucket}/out/adopted.parquet")
    (staged,) = Staging(str(staging)).files("adopted", result.run_id, "upper")
    assert data == Path(staged.removeprefix("file://")).read_bytes()
    assert pq.read_table(io.BytesIO(data)).equals(pq.read_table(tmp_path / "encoded.parquet"))


def test_staging_on_s3_is_streamed_to_a_local_sink(
    tmp_path: Path, s3_bucket: str, s3_endpoint: str
) -> None:
    out = tmp_path / "adopted.parquet"

    result = run(pipeline(str(out), None), f"s3://{s3_bucket}/staging")
    run(pipeline(str(tmp_path / "encoded.parquet"), None), tmp_path / "staging", adopt_staged=False)

    write = result.nodes["output"].write
    assert write is not None
    assert write.extra["adopted"] == "streamed copy"
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "encoded.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adopted.parquet",
        "encoded.parquet",
        "staging",
    ]
