"""`PostgresSource` split into partitions: the key ranges of its partitioned read, each read on
its own, yield what `read` yields."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

import pytest

from etlkit.errors import ConnectorError
from etlkit.model.nodes import Partition
from tests.connectors.contract import assert_partitions_read_as_read
from tests.connectors.test_postgres import CTX, PARTITIONED, Partitioned, execute, put, source

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection


@pytest.mark.parametrize("column", ["n", "amount", "day", "at", "dec"])
def test_each_range_is_a_partition_read_as_read(
    postgres_dsn: str, postgres_db: Connection, column: str
) -> None:
    put(postgres_db, "events", PARTITIONED)
    execute(postgres_db, "ALTER TABLE events ADD COLUMN dec numeric(8, 2)",
            "UPDATE events SET dec = amount")  # fmt: skip
    node = source(postgres_dsn, Partitioned, table="events", partition_column=column, partitions=4)
    parts = assert_partitions_read_as_read(node, CTX)
    assert len(parts) == 5  # 4 ranges, then the nulls
    assert set(parts[0].data) == {"high"}
    assert set(parts[1].data) == {"low", "high"}
    assert set(parts[3].data) == {"low"}
    assert parts[4].data == {"null": True}
    assert re.fullmatch(rf"{column}-1-of-5-[0-9a-f]{{12}}", parts[0].id)


def test_a_column_of_one_value_is_one_partition_of_everything(
    postgres_dsn: str, postgres_db: Connection
) -> None:
    put(postgres_db, "events", PARTITIONED.slice(0, 1))
    node = source(postgres_dsn, Partitioned, table="events", partition_column="id", partitions=3)
    [part] = assert_partitions_read_as_read(node, CTX)
    assert part.data == {}


def test_incremental_partitions_read_as_read(postgres_dsn: str, postgres_db: Connection) -> None:
    put(postgres_db, "events", PARTITIONED)
    node = source(postgres_dsn, Partitioned, table="events", partition_column="id", partitions=3)
    node.incremental("id")
    later = dataclasses.replace(CTX, cursors={CTX.node: "150"})
    parts = assert_partitions_read_as_read(node, later)
    # the ranges split only the rows from the cursor on: ids 150 to 199
    assert [part.data for part in parts] == [
        {"high": "166"},
        {"low": "166", "high": "183"},
        {"low": "183"},
        {"null": True},
    ]


def test_an_unpartitioned_source_is_not_split(postgres_dsn: str) -> None:
    assert source(postgres_dsn, Partitioned, table="events").partitions(CTX) is None


@pytest.mark.parametrize(
    "data",
    [{"low": 1}, {"low": "1", "null": True}, {"where": "1=1"}, {"null": "yes"}],
)
def test_a_range_this_source_does_not_make_is_refused(
    postgres_dsn: str, postgres_db: Connection, data: dict[str, object]
) -> None:
    put(postgres_db, "events", PARTITIONED)
    node = source(postgres_dsn, Partitioned, table="events", partition_column="id", partitions=3)
    with pytest.raises(ConnectorError, match="is not a range of this source"):
        list(node.read_partition(CTX, Partition("p", data)))


def test_a_range_value_is_a_literal_never_sql(postgres_dsn: str, postgres_db: Connection) -> None:
    put(postgres_db, "events", PARTITIONED)
    node = source(postgres_dsn, Partitioned, table="events", partition_column="id", partitions=3)
    sneaky = Partition("p", {"low": "0' OR '1'='1"})
    with pytest.raises(ConnectorError, match="invalid input syntax for type bigint"):
        list(node.read_partition(CTX, sneaky))
