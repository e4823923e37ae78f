"""File sources with `each_day=True`: the path rendered for each day of the run's data
interval, every day's files read day after day, one partition per file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.files import ParquetSource
from connectors.files.paths import FileSource
from etlkit.errors import ConfigError, ConnectorError
from etlkit.model.nodes import Context, Partition
from tests.connectors.contract import (
    ContractModel,
    assert_partitions_read_as_read,
    contract_table,
    make_context,
)
from tests.connectors.test_file_partitions import FORMATS

MARCH = dataclasses.replace(
    make_context("src"),
    logical_date=datetime(2025, 3, 1, tzinfo=UTC),
    data_interval_start=datetime(2025, 3, 1, tzinfo=UTC),
    data_interval_end=datetime(2025, 4, 1, tzinfo=UTC),
)


def daily_files(root: Path, kind: str, days: Iterable[int], rows: int = 3) -> list[int]:
    """One file of `rows` rows in `root/2025-03-DD/` for each day of March in `days`, its ids
    starting at day * 100; the ids written, in day order."""
    _, write = FORMATS[kind]
    ids = []
    for day in days:
        folder = root / f"2025-03-{day:02d}"
        folder.mkdir(parents=True)
        write(contract_table(rows, offset=day * 100), folder / f"part.{kind}")
        ids.extend(range(day * 100, day * 100 + rows))
    return ids


def ids_read(source: FileSource, ctx: Context) -> list[int]:
    return [i for batch in source.read(ctx) for i in batch.column("id").to_pylist()]


@pytest.mark.parametrize("kind", ["csv", "ndjson", "parquet"])
def test_a_monthly_run_reads_every_day_of_its_month_in_order(tmp_path: Path, kind: str) -> None:
    expected = daily_files(tmp_path, kind, range(1, 32))
    cls, _ = FORMATS[kind]
    source = cls(f"{tmp_path}/{{ds}}/*.{kind}", schema=ContractModel, each_day=True)
    source.name = "src"

    assert ids_read(source, MARCH) == expected
    parts = assert_partitions_read_as_read(source, MARCH)
    assert len(parts) == 31  # one file a day


def test_without_each_day_only_the_logical_dates_day_is_read(tmp_path: Path) -> None:
    daily_files(tmp_path, "parquet", range(1, 4))
    source = ParquetSource(f"{tmp_path}/{{ds}}/*.parquet", schema=ContractModel)
    source.name = "src"
    assert ids_read(source, MARCH) == [100, 101, 102]


def test_a_missing_day_fails_naming_its_path_unless_empty_days_are_allowed(
    tmp_path: Path,
) -> None:
    daily_files(tmp_path, "parquet", [d for d in range(1, 32) if d != 17])
    (tmp_path / "2025-03-17").mkdir()
    source = ParquetSource(f"{tmp_path}/{{ds}}/*.parquet", schema=ContractModel, each_day=True)
    source.name = "src"
    with pytest.raises(ConnectorError, match=r"ParquetSource 'src': no file matches .*2025-03-17"):
        ids_read(source, MARCH)

    lenient = ParquetSource(
        f"{tmp_path}/{{ds}}/*.parquet", schema=ContractModel, each_day=True, allow_empty=True
    )
    lenient.name = "src"
    assert len(ids_read(lenient, MARCH)) == 30 * 3


def test_days_follow_the_schedules_clock_and_stop_before_the_intervals_end(
    tmp_path: Path,
) -> None:
    # a daily run at 02:00 covers one day; a week across the spring change of clocks (Paris,
    # 2025-03-30) covers seven, each rendered on the local calendar
    paris = ZoneInfo("Europe/Paris")
    daily = dataclasses.replace(
        MARCH,
        logical_date=datetime(2025, 3, 5, 2, tzinfo=paris),
        data_interval_start=datetime(2025, 3, 5, 2, tzinfo=paris),
        data_interval_end=datetime(2025, 3, 6, 2, tzinfo=paris),
    )
    assert [d.ds for d in daily.days()] == ["2025-03-05"]
    week = dataclasses.replace(
        daily,
        data_interval_start=datetime(2025, 3, 27, tzinfo=paris),
        data_interval_end=datetime(2025, 4, 3, tzinfo=paris),
    )
    assert [d.ds for d in week.days()] == [f"2025-03-{d}" for d in range(27, 32)] + [
        "2025-04-01",
        "2025-04-02",
    ]
    assert all(d.logical_date.hour == 0 for d in week.days())
    no_interval = make_context("src")
    assert no_interval.days() == [no_interval]


def test_each_day_needs_a_day_in_the_path() -> None:
    with pytest.raises(ConfigError, match=r"each_day=True .* put \{ds\}, \{ds_nodash\}"):
        ParquetSource("data/{data_dir}/*.parquet", schema=ContractModel, each_day=True)
    ParquetSource("data/{ds_nodash}.parquet", schema=ContractModel, each_day=True)
    ParquetSource("data/{logical_date:.7}/x.parquet", schema=ContractModel, each_day=True)


def test_a_partition_outside_the_runs_days_is_refused(tmp_path: Path) -> None:
    daily_files(tmp_path, "parquet", range(1, 32))
    (tmp_path / "2025-04-01").mkdir()
    pq.write_table(contract_table(2), tmp_path / "2025-04-01" / "part.parquet")
    source = ParquetSource(f"{tmp_path}/{{ds}}/*.parquet", schema=ContractModel, each_day=True)
    source.name = "src"
    april = Partition.labelled("x", {"path": f"{tmp_path}/2025-04-01/part.parquet"})
    with pytest.raises(ConnectorError, match=r"names no file under .*on any day"):
        list(source.read_partition(MARCH, april))
    march = Partition.labelled("x", {"path": f"{tmp_path}/2025-03-31/part.parquet"})
    batches = list(source.read_partition(MARCH, march))
    assert pa.Table.from_batches(batches).column("id").to_pylist() == [3100, 3101, 3102]


MONTHLY = """
import pandera.polars as pdp

import etlkit as ek
from connectors.files import ParquetSink, ParquetSource


class Row(pdp.DataFrameModel):
    id: int


class MonthOfDays(ek.Pipeline):
    schedule = "@monthly"
    params = {"data_dir": "data", "out_dir": "out"}

    days = ParquetSource("{data_dir}/{ds}/*.parquet", schema=Row, each_day=True)
    total = ek.Sql("select count(*) as n, min(id) as first, max(id) as last from {days}")
    report = ParquetSink("{out_dir}/{ds}/total.parquet", total)
"""


@pytest.mark.integration
def test_etlkit_run_of_a_monthly_pipeline_reads_the_days_of_its_scheduled_month(
    tmp_path: Path,
) -> None:
    from tests.integration.cli import etlkit

    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "month_of_days.py").write_text(MONTHLY)
    daily_files(tmp_path / "data", "parquet", range(1, 32))
    april = tmp_path / "data" / "2025-04-01"
    april.mkdir()
    pq.write_table(contract_table(5), april / "part.parquet")  # the next month: not read

    done = etlkit(
        "run",
        "pipelines/month_of_days.py",
        "--date",
        "2025-03-01",
        "--param",
        f"data_dir={tmp_path / 'data'}",
        "--param",
        f"out_dir={tmp_path / 'out'}",
        "--progress",
        "none",
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    total = pq.read_table(tmp_path / "out" / "2025-03-01" / "total.parquet").to_pylist()
    assert total == [{"n": 31 * 3, "first": 100, "last": 3102}]
