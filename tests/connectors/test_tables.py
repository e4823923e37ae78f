"""What the database connectors share: names in messages, and batches cast to the model."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.tables import closest_name, conform_batch, listing
from etlkit.errors import ConnectorError

TARGET = pa.schema([("id", pa.int64()), ("amount", pa.float64())])


def test_a_batch_of_the_target_types_is_returned_as_it_is() -> None:
    batch = pa.record_batch([pa.array([1]), pa.array([2.5])], schema=TARGET)

    assert conform_batch(batch, TARGET, "Src 'a'", "table t") is batch


def test_columns_of_other_types_are_cast_and_driver_metadata_dropped() -> None:
    found = pa.schema([("id", pa.int32()), ("amount", pa.float64())], metadata={b"adbc": b"x"})
    batch = pa.record_batch([pa.array([1], pa.int32()), pa.array([2.5])], schema=found)

    conformed = conform_batch(batch, TARGET, "Src 'a'", "table t")

    assert conformed.schema.equals(TARGET, check_metadata=True)
    assert conformed.to_pylist() == [{"id": 1, "amount": 2.5}]


def test_a_column_that_cannot_be_cast_is_named() -> None:
    found = pa.schema([("id", pa.string()), ("amount", pa.float64())])
    batch = pa.record_batch([pa.array(["x1"]), pa.array([2.5])], schema=found)

    with pytest.raises(ConnectorError, match=r"Src 'a': column 'id' of table t arrives as string"):
        conform_batch(batch, TARGET, "Src 'a'", "table t")


def test_names_in_messages_are_listed_and_matched() -> None:
    assert listing([f"c{i}" for i in range(22)]).endswith(" and 2 more")
    assert closest_name("public.Patients", ["analytics.patients", "visits"]) == "analytics.patients"
    assert closest_name("vists", ["visits", "patients"]) == "visits"
    assert closest_name("zzz", ["visits"]) is None
