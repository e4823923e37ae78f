"""The connector SDK: everything a connector may use of etlkit, and nothing else.

Connectors (`connectors/` here, third-party packages through the `etlkit.connectors` entry points)
import only this module and `etlkit.errors`, so etlkit's packages can change behind it. It offers:

- node bases: `Source`, `Sink`, `Node`, the run's `Context`, `WriteResult`, `Origin` (where a
  failing row came from), and `bind_sql` for params in a connector's own SQL; `Adoption` and
  `StagedParquet`, for a sink that adopts its input's staged Parquet instead of encoding it
  again (`Sink.adoption`, `adoption_refused`, `adopt`);
- schema helpers between Pandera models and Arrow: `arrow_schema`, `columns`, `column_names`,
  `model_name`, `matched`, `has_regex`, `cast_array`, `ColumnSpec`, `Model`;
- the file-format protocol: `SourceFiles` (a source's own files, which etlkit may stage as a
  verified reference instead of a copy, in their `FileFormat`), what a format gives
  (`ColumnStats`) and the helpers formats use (`file_fingerprint`, and Parquet's
  `footer_checksum`, `parquet_batches`); a format is found by name through the
  `etlkit.formats` entry points;
- partitioned reads: `Partition` (one piece of a source, plain JSON-able data with a stable,
  path-safe id), which a source that can be split returns from `Source.partitions(ctx)` and
  reads with `Source.read_partition(ctx, partition)`, maybe on another machine; reading every
  partition in order yields what `read` yields (rows, order, each row's `Origin`);
- connection resolution: `resolve(name)`, a named connection of `etlkit.toml` or the environment.

Rank: between the model and storage below it and the engine above (tests/test_layering.py).
"""

from __future__ import annotations

from etlkit.model.nodes import (
    Adoption,
    Context,
    Model,
    Node,
    Origin,
    Partition,
    Sink,
    Source,
    SourceFiles,
    StagedParquet,
    WriteResult,
    bind_sql,
)
from etlkit.model.schema import (
    ColumnSpec,
    arrow_schema,
    cast_array,
    column_names,
    columns,
    has_regex,
    matched,
    model_name,
)
from etlkit.settings.connections import resolve
from etlkit.storage.formats import FileFormat, file_fingerprint
from etlkit.storage.parquet import ColumnStats, footer_checksum, parquet_batches

__all__ = [
    "Adoption",
    "ColumnSpec",
    "ColumnStats",
    "Context",
    "FileFormat",
    "Model",
    "Node",
    "Origin",
    "Partition",
    "Sink",
    "Source",
    "SourceFiles",
    "StagedParquet",
    "WriteResult",
    "arrow_schema",
    "bind_sql",
    "cast_array",
    "column_names",
    "columns",
    "file_fingerprint",
    "footer_checksum",
    "has_regex",
    "matched",
    "model_name",
    "parquet_batches",
    "resolve",
]
