"""File sources and sinks on any fsspec filesystem: CSV, Parquet and newline-delimited JSON.

Paths are templates rendered with the run's context (`billing/{ds}/*.csv`), then resolved on the
filesystem their URL names (a local path, `s3://bucket/key`, `memory://...`). Sources read
files one chunk at a time, never a whole file at once, and read only the columns of their model,
with the model's types. Sinks write to a hidden temporary object next to the target and move it
into place only once every batch was written: a failed or cancelled run leaves the target as it
was.

    billing = CsvSource("s3://hospital-data/billing/{ds}/*.csv", schema=RawBilling)
    report = ParquetSink("reports/{ds}/totals.parquet", totals)

A path with glob characters (`*`, `?`, `[`) reads every matching file in sorted order; a
directory reads every file below it. Files and directories whose name starts with `.` or `_`
(temporary objects, `_SUCCESS` markers) are skipped. A glob matching no file, or a directory
holding none, is an error unless the source is given `allow_empty=True`. `each_day=True` reads
the path rendered for each day of the run's data interval (`{ds}` each day in turn). CSV and
NDJSON files named `.gz`, `.bz2` or `.zst` are decompressed as they are read. Every chunk a
source yields carries its file and first row (`etlkit.connector.Origin`), so validation names the
file and line of a failing row. An `OSError` reading or writing is a `ConnectorError` naming
the file.
Sources split into partitions (`Source.partitions`), one per file (`ParquetSource` also a
file of more than `partition_rows` rows, 4 million by default, by runs of row groups), each read
on its own as `read` reads it.

Object stores: `conn="lake"` takes the credentials and endpoint of that named connection (an s3,
http(s) or file connection matching the path's scheme). Without it, s3fs finds them itself: the
AWS_* environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and `AWS_ENDPOINT_URL`
for S3-compatible stores), `~/.aws`, instance roles. Sinks never create buckets. On S3 a move is a
copy then a delete: a sink's target still appears only once complete, but a dataset is replaced
object by object.

    billing = CsvSource("s3://hospital-data/billing/{ds}/*.csv", schema=RawBilling, conn="lake")

- `paths`: resolving paths and globs on fsspec, connections, the atomic write of every sink.
- `columns`: the model's columns against a file's, and messages naming the one at fault.
- `delimited`: `CsvSource`, `CsvSink`.
- `parquet`: `ParquetSource`, `ParquetSink`.
- `ndjson`: `NdjsonSource`, `NdjsonSink`.
- `dataset`: `ParquetDatasetSink`.
"""

from __future__ import annotations

from connectors.files.dataset import ParquetDatasetSink
from connectors.files.delimited import CsvSink, CsvSource
from connectors.files.ndjson import NdjsonSink, NdjsonSource
from connectors.files.parquet import ParquetSink, ParquetSource

__all__ = [
    "CsvSink",
    "CsvSource",
    "NdjsonSink",
    "NdjsonSource",
    "ParquetDatasetSink",
    "ParquetSink",
    "ParquetSource",
]
