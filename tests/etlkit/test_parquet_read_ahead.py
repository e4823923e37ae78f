"""The second reader of `parquet_batches` decodes one window ahead of the consumer, no more:
memory stays bounded however slowly the chunks are taken."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etlkit.storage import parquet as parquet_module
from etlkit.storage.parquet import parquet_batches

READER = "etlkit-parquet-reader"


def test_the_second_reader_holds_at_most_one_window_while_the_consumer_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"n": list(range(2_000))}), path, row_group_size=10)
    window = parquet_module._PARALLEL_WINDOW_BATCHES
    blocked = threading.Event()
    held: list[int] = []

    class Watched(queue.Queue[Any]):
        """The read-ahead queue, telling when the second reader has to wait for room."""

        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            held.append(self.qsize())
            if self.full():
                blocked.set()
            super().put(item, block, timeout)

    monkeypatch.setattr(queue, "Queue", Watched)
    decoded: list[int] = []

    def convert(batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        if threading.current_thread().name == READER:
            decoded.append(first_row)
        return batch

    @contextlib.contextmanager
    def reopen() -> Iterator[pq.ParquetFile]:
        with path.open("rb") as handle:
            yield pq.ParquetFile(handle)

    batches = parquet_batches(pq.ParquetFile(path), batch_size=5, reopen=reopen, convert=convert)
    first = next(batches)  # the consumer takes one chunk, then waits
    # a reader without bound would never wait: this would time out
    assert blocked.wait(timeout=30), "the second reader never waited for the consumer"

    assert first.column("n")[0].as_py() == 0
    assert decoded == [20, 25, 30, 35]  # its first window (rows 20-39), nothing beyond
    assert len(decoded) == window
    assert max(held) <= window
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == READER]
