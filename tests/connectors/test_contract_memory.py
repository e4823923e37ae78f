"""The connector contract, run against the reference implementations MemorySource/MemorySink."""

from __future__ import annotations

import pyarrow as pa
import pytest

from etlkit.model.nodes import Sink, Source
from etlkit.testing import MemorySink, MemorySource
from tests.connectors.contract import (
    MakeSink,
    MakeSource,
    Model,
    ReadCommitted,
    SinkContract,
    SourceContract,
)


class TestMemorySourceContract(SourceContract):
    @pytest.fixture
    def make_source(self) -> MakeSource:
        def make(table: pa.Table, model: Model, *, chunk_rows: int | None = None) -> Source:
            return MemorySource(table, schema=model, chunk_rows=chunk_rows)

        return make


class TestMemorySinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self) -> MakeSink:
        def make(model: Model | None) -> tuple[Sink, ReadCommitted]:
            sink = MemorySink("upstream", schema=model)
            return sink, lambda: sink.table() if sink.committed else None

        return make
