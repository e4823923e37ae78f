"""`Partition`: plain JSON-able data with a stable, path-safe id; `Source.partitions` is
optional (None: the source is read whole)."""

from __future__ import annotations

import math
import re

import pyarrow as pa
import pytest

from etlkit.errors import ConnectorError
from etlkit.model.nodes import Partition, Source
from etlkit.testing import MemorySource
from tests.connectors.contract import make_context

SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@pytest.mark.parametrize(
    "label",
    [
        "billing/2025-01.csv",
        "../../etc/passwd",
        "_SUCCESS",
        ".hidden",
        "a b/ü ñ.csv",
        "",
        "x" * 500,
    ],
)
def test_a_labelled_id_is_path_safe_and_the_same_every_time(label: str) -> None:
    made = Partition.labelled(label, {"path": label})
    assert SAFE.fullmatch(made.id), made.id
    assert Partition.labelled(label, {"path": label}).id == made.id


def test_a_labelled_id_reads_as_its_label_and_differs_by_data() -> None:
    first = Partition.labelled("billing/2025-01.csv", {"path": "/a/billing/2025-01.csv"})
    other = Partition.labelled("billing/2025-01.csv", {"path": "/b/billing/2025-01.csv"})
    assert re.fullmatch(r"billing_2025-01\.csv-[0-9a-f]{12}", first.id)
    assert first.id != other.id


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "_x", ".x", "a b", "x" * 129])
def test_an_id_that_is_not_path_safe_is_refused(bad: str) -> None:
    with pytest.raises(ConnectorError, match="is not path-safe"):
        Partition(bad, {})


@pytest.mark.parametrize("data", [{"a": {1, 2}}, {"a": math.nan}, {"a": b"x"}, {"a": object()}])
def test_data_must_be_json_able(data: dict[str, object]) -> None:
    with pytest.raises(ConnectorError, match="must be JSON-able"):
        Partition("p1", data)


def test_a_partition_equals_its_json_round_trip() -> None:
    made = Partition("f-1", {"path": "/x.parquet", "row_groups": (0, 3), "null": None})
    assert made.data == {"path": "/x.parquet", "row_groups": [0, 3], "null": None}
    sent = Partition.from_json(made.to_json())
    assert sent == made
    assert hash(sent) == hash(made)


@pytest.mark.parametrize(
    "text", ["", "[]", '{"id": "p"}', '{"id": 1, "data": {}}', '{"id": "p", "data": {}, "x": 1}']
)
def test_text_that_is_not_a_partition_is_refused(text: str) -> None:
    with pytest.raises(ConnectorError, match="not a partition's JSON"):
        Partition.from_json(text)


def test_a_source_is_not_split_unless_it_says_so() -> None:
    memory = MemorySource(pa.table({"id": [1, 2]}))
    assert memory.partitions(make_context()) is None
    with pytest.raises(NotImplementedError, match="must implement read_partition"):
        next(iter(Source().read_partition(make_context(), Partition("p", {}))))
