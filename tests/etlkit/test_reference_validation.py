"""Parquet sources read in place: validated from footer statistics where they prove enough."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import ParquetSource
from etlkit.checks.validation import ChunkValidator
from etlkit.connector import Origin
from etlkit.engine.database import RunDatabase
from etlkit.storage.parquet import parquet_statistics
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink


class Reading(pdp.DataFrameModel):
    id: int = pdp.Field(nullable=False, ge=1)
    value: float = pdp.Field(le=100.0)
    level: int = pdp.Field(in_range={"min_value": 0, "max_value": 9})


def write(path: Path, groups: list[dict[str, list[object]]]) -> Path:
    schema = pa.schema([("id", pa.int64()), ("value", pa.float64()), ("level", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for group in groups:
            writer.write_table(pa.table(group, schema=schema))
    return path


CLEAN = [
    {"id": [1, 2], "value": [1.0, 2.0], "level": [0, 5]},
    {"id": [3, 4], "value": [3.0, 4.0], "level": [9, 1]},
]


def test_statistics_prove_range_and_null_checks_but_not_on_floats(tmp_path: Path) -> None:
    path = write(tmp_path / "r.parquet", CLEAN)
    stats = parquet_statistics([str(path)], ["id", "value", "level"])
    assert stats["id"].minimum == 1
    assert stats["id"].maximum == 4
    assert stats["level"].null_count == 0

    proven = ChunkValidator(Reading).proven_checks(stats)

    assert ("id", "not_nullable") in proven
    assert ("id", "greater_than_or_equal_to(1)") in proven
    assert ("level", "in_range(0, 9)") in proven
    assert ("value", "less_than_or_equal_to(100.0)") not in proven  # NaN escapes statistics
    assert ("value", "not_nullable") not in proven  # and counts as null


def test_a_violation_in_a_later_row_group_is_still_caught(tmp_path: Path) -> None:
    path = write(tmp_path / "r.parquet", [CLEAN[0], {"id": [3], "value": [3.0], "level": [12]}])
    stats = parquet_statistics([str(path)], ["id", "value", "level"])
    assert ("level", "in_range(0, 9)") not in ChunkValidator(Reading).proven_checks(stats)


def test_a_file_without_statistics_leaves_extremes_and_null_counts_unknown(
    tmp_path: Path,
) -> None:
    with_stats = write(tmp_path / "a.parquet", CLEAN)
    without = tmp_path / "b.parquet"
    pq.write_table(pa.table(CLEAN[1]), without, write_statistics=["id"])
    paths = [str(with_stats), str(without)]

    stats = parquet_statistics(paths, ["id", "value", "level"])

    assert (stats["id"].minimum, stats["id"].maximum, stats["id"].null_count) == (1, 4, 0)
    assert (stats["level"].minimum, stats["level"].maximum) == (None, None)
    assert stats["level"].null_count is None
    assert ChunkValidator(Reading).proven_checks(stats) == {
        ("id", "not_nullable"),
        ("id", "greater_than_or_equal_to(1)"),
    }
    # the footers a source parsed already give the same
    footers = [pq.read_metadata(path) for path in paths]
    assert parquet_statistics(paths, ["id", "value", "level"], metadata=footers) == stats


class Flagged(pdp.DataFrameModel):
    flag: str = pdp.Field(isin=["A", "N", "R"])
    code: str = pdp.Field(str_matches=r"^[A-Z]{2}$")


def write_flags(path: Path, groups: list[dict[str, list[object]]], **options: object) -> Path:
    schema = pa.schema([("flag", pa.string()), ("code", pa.string())])
    with pq.ParquetWriter(path, schema, **options) as writer:  # type: ignore[arg-type]
        for group in groups:
            writer.write_table(pa.table(group, schema=schema))
    return path


def test_dictionaries_prove_value_checks_on_text_columns(tmp_path: Path) -> None:
    path = write_flags(
        tmp_path / "f.parquet",
        [{"flag": ["A", "N"], "code": ["AB", "CD"]}, {"flag": ["R", None], "code": ["EF", "GH"]}],
    )
    stats = parquet_statistics([str(path)], ["flag", "code"], values_of=["flag", "code"])
    assert stats["flag"].values == {"A", "N", "R"}

    proven = ChunkValidator(Flagged).proven_checks(stats)

    assert ("flag", "isin(['A', 'N', 'R'])") in proven
    assert ("code", "str_matches('^[A-Z]{2}$')") in proven
    assert ("flag", "not_nullable") not in proven  # a null is there: the scan must report it


def test_a_value_outside_the_set_in_a_later_row_group_is_not_proven(tmp_path: Path) -> None:
    path = write_flags(
        tmp_path / "f.parquet",
        [{"flag": ["A"], "code": ["AB"]}, {"flag": ["X"], "code": ["abc"]}],
    )
    stats = parquet_statistics([str(path)], ["flag", "code"], values_of=["flag", "code"])

    proven = ChunkValidator(Flagged).proven_checks(stats)

    assert proven == {("flag", "not_nullable"), ("code", "not_nullable")}


def test_plain_encoded_text_is_not_read_for_values(tmp_path: Path) -> None:
    path = write_flags(
        tmp_path / "f.parquet", [{"flag": ["A"], "code": ["AB"]}], use_dictionary=False
    )
    stats = parquet_statistics([str(path)], ["flag", "code"], values_of=["flag", "code"])

    assert stats["flag"].values is None
    assert ("flag", "isin(['A', 'N', 'R'])") not in ChunkValidator(Flagged).proven_checks(stats)


class FlagPipe(ek.Pipeline):
    params: ClassVar[dict[str, str]] = {"path": ""}
    flags = ParquetSource("{path}", schema=Flagged)
    total = ek.Sql("select count(*) as n from {flags}")
    out = MemorySink(total)


def test_a_flag_outside_the_set_fails_a_referenced_source(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = write_flags(
        tmp_path / "f.parquet", [{"flag": ["A"], "code": ["AB"]}, {"flag": ["Z"], "code": ["CD"]}]
    )

    result = FlagPipe.run(settings=settings, params={"path": str(path)})

    assert isinstance(result.error, ek.DataValidationError)
    assert "column 'flag' failed isin(['A', 'N', 'R']) on 1 row (examples: Z)" in str(result.error)


class Pipe(ek.Pipeline):
    params: ClassVar[dict[str, str]] = {"path": ""}
    readings = ParquetSource("{path}", schema=Reading)
    total = ek.Sql("select count(*) as n, sum(value) as s from {readings}")
    out = MemorySink(total)


def run(settings: ek.Settings, path: Path) -> ek.RunResult:
    return Pipe.run(settings=settings, params={"path": str(path)})


def test_a_clean_file_is_staged_as_a_reference_without_a_copy(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = write(tmp_path / "r.parquet", CLEAN)

    result = run(settings, path)

    assert result.state == "success", result.error
    assert Pipe.out.table().to_pylist() == [{"n": 4, "s": 10.0}]
    manifest = Staging(settings.paths.staging_root).manifest("pipe", result.run_id, "readings")
    assert manifest is not None
    assert manifest.reference_select is not None
    assert [f.name for f in manifest.files] == [str(path)]


def test_the_sql_node_finds_the_database_opened_for_a_referenced_source(
    settings: ek.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's DuckDB able to read the source's files opens while the source is checked,
    not on the SQL node's thread once the reference commits."""
    path = write(tmp_path / "r.parquet", CLEAN)
    opened: list[tuple[str, list[str]]] = []
    locked = RunDatabase.locked_database

    def recording(self: RunDatabase, run_dir: str, files: Sequence[str]) -> Any:
        opened.append((threading.current_thread().name, list(files)))
        return locked(self, run_dir, files)

    monkeypatch.setattr(RunDatabase, "locked_database", recording)

    result = run(settings, path)

    assert result.state == "success", result.error
    assert opened[-1][1] == [str(path)]
    assert {thread for thread, _ in opened} == {"etlkit-duckdb"}


def test_a_referenced_source_locks_down_the_database_connected_at_run_start(
    settings: ek.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run connects one DuckDB database, not one ahead of need and another once the
    source's files are known: the first is locked down only when they are."""
    import duckdb

    path = write(tmp_path / "r.parquet", CLEAN)
    connected: list[str] = []
    connect = duckdb.connect

    def counting(*args: Any, **kwargs: Any) -> Any:
        connected.append(threading.current_thread().name)
        return connect(*args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counting)

    result = run(settings, path)

    assert result.state == "success", result.error
    assert result.nodes["total"].rows_out == 1
    assert connected == ["etlkit-duckdb"]


@pytest.mark.parametrize(
    ("bad", "check"),
    [
        ({"id": [3], "value": [3.0], "level": [12]}, "in_range(0, 9)"),
        ({"id": [0], "value": [3.0], "level": [1]}, "greater_than_or_equal_to(1)"),
        ({"id": [3], "value": [math.nan], "level": [1]}, "less_than_or_equal_to(100.0)"),
    ],
)
def test_bad_rows_in_a_referenced_file_fail_the_run_with_the_exact_check(
    settings: ek.Settings, tmp_path: Path, bad: dict[str, list[object]], check: str
) -> None:
    path = write(tmp_path / "r.parquet", [CLEAN[0], bad])

    result = run(settings, path)

    assert isinstance(result.error, ek.DataValidationError)
    assert check in str(result.error)
    assert result.nodes["out"].state == "cancelled"


class UniqueReading(pdp.DataFrameModel):
    id: int = pdp.Field(unique=True)


class Streamed(ek.Pipeline):
    """The source streams to a sink, so it is staged as a reference while it streams."""

    params: ClassVar[dict[str, str]] = {"path": ""}
    readings = ParquetSource("{path}", schema=UniqueReading, chunk_rows=2)
    out = MemorySink(readings)


def test_duplicates_across_chunks_of_a_streamed_reference_are_caught(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 1]}), path)

    result = Streamed.run(settings=settings, params={"path": str(path)})

    assert isinstance(result.error, ek.DataValidationError)
    assert "column 'id' must be unique across all chunks" in str(result.error)


class NullableUniqueReading(pdp.DataFrameModel):
    id: int = pdp.Field(unique=True, nullable=True)
    level: int = pdp.Field(nullable=True)


class NullablePairReading(pdp.DataFrameModel):
    id: int = pdp.Field(nullable=True)
    level: int = pdp.Field(nullable=True)

    class Config:
        unique = [["id", "level"], ["level"]]  # noqa: RUF012  (Pandera reads a plain attribute)


@pytest.mark.parametrize("policy", ["fail", "drop", "quarantine"])
@pytest.mark.parametrize("model", [NullableUniqueReading, NullablePairReading])
def test_nulls_repeating_across_chunks_of_a_file_fail_a_unique_key_as_in_pandera(
    settings: ek.Settings, tmp_path: Path, model: type[pdp.DataFrameModel], policy: str
) -> None:
    path = tmp_path / "r.parquet"
    table = pa.table(
        {"id": pa.array([1, None, 2, None], pa.int64()), "level": pa.array([1, None, 2, None])}
    )
    pq.write_table(table, path, row_group_size=2)  # one null in each row group and chunk
    with pytest.raises(pdp.errors.SchemaErrors):  # Pandera: the nulls repeat
        model.validate(pl.from_arrow(table), lazy=True)  # type: ignore[arg-type]

    class Nulls(ek.Pipeline):
        params: ClassVar[dict[str, str]] = {"path": ""}
        readings = ParquetSource("{path}", schema=model, chunk_rows=2).expect(
            on_invalid=policy  # type: ignore[arg-type]
        )
        out = MemorySink(readings)

    result = Nulls.run(settings=settings, params={"path": str(path)})

    if policy == "fail":
        assert isinstance(result.error, ek.DataValidationError), result.error
        assert "must be unique across all chunks" in str(result.error)
    else:
        assert result.state == "success", result.error
        assert Nulls.out.table().column("id").to_pylist() == [1, 2]
        assert result.nodes["readings"].invalid_rows == 2


class Numbered(pdp.DataFrameModel):
    col: int = pdp.Field(alias=r"^col_\d+$", regex=True, unique=True)


@pytest.mark.parametrize("policy", ["fail", "drop"])
def test_a_parquet_source_with_a_regex_model_reads_the_columns_it_matches(
    settings: ek.Settings, tmp_path: Path, policy: str
) -> None:
    path = tmp_path / "r.parquet"
    table = pa.table({"other": ["x"] * 4, "col_1": [1, 2, 3, 4], "col_2": [5, 6, 7, 5]})
    pq.write_table(table, path, row_group_size=2)
    with pytest.raises(pdp.errors.SchemaErrors):  # Pandera: col_2 repeats 5
        Numbered.validate(pl.from_arrow(table), lazy=True)  # type: ignore[arg-type]

    class Regex(ek.Pipeline):
        params: ClassVar[dict[str, str]] = {"path": ""}
        readings = ParquetSource("{path}", schema=Numbered, chunk_rows=2).expect(
            on_invalid=policy  # type: ignore[arg-type]
        )
        out = MemorySink(readings)

    result = Regex.run(settings=settings, params={"path": str(path)})

    if policy == "fail":
        assert isinstance(result.error, ek.DataValidationError), result.error
        assert "column 'col_2' must be unique across all chunks" in str(result.error)
    else:
        assert result.state == "success", result.error
        assert Regex.out.table().to_pydict() == {"col_1": [2, 3], "col_2": [6, 7]}


class StreamedReadings(ek.Pipeline):
    """The source streams to a sink: proven checks are skipped per chunk, the others run."""

    params: ClassVar[dict[str, str]] = {"path": ""}
    readings = ParquetSource("{path}", schema=Reading, chunk_rows=2)
    out = MemorySink(readings)


def test_a_streamed_reference_still_fails_on_what_statistics_cannot_prove(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = write(tmp_path / "r.parquet", [CLEAN[0], {"id": [3], "value": [math.nan], "level": [1]}])

    result = StreamedReadings.run(settings=settings, params={"path": str(path)})

    assert isinstance(result.error, ek.DataValidationError)
    assert "less_than_or_equal_to(100.0)" in str(result.error)
    assert "chunk 2" in str(result.error)


def test_assumed_checks_are_skipped_in_chunks() -> None:
    import polars as pl

    validator = ChunkValidator(Reading)
    bad = pl.DataFrame({"id": [0], "value": [1.0], "level": [12]})
    assert not validator.check(bad).ok

    validator.assume(
        frozenset({("id", "greater_than_or_equal_to(1)"), ("level", "in_range(0, 9)")})
    )

    assert validator.check(bad).ok


class Level(pdp.DataFrameModel):
    id: int = pdp.Field(ge=1)
    level: int = pdp.Field(in_range={"min_value": 0, "max_value": 9}, nullable=True)


def test_batches_with_every_check_proven_pass_without_a_look_at_their_values() -> None:
    every = frozenset(
        {("id", "not_nullable"), ("id", "greater_than_or_equal_to(1)"), ("level", "in_range(0, 9)")}
    )
    right = pa.schema([("id", pa.int64()), ("level", pa.int64())])
    validator = ChunkValidator(Level)
    assert not validator.nothing_to_check(right)  # checks to run

    validator.assume(every)

    assert validator.nothing_to_check(right)
    assert not validator.nothing_to_check(pa.schema([("id", pa.int64())]))  # missing column
    assert not validator.nothing_to_check(  # a wrong type
        pa.schema([("id", pa.int64()), ("level", pa.string())])
    )
    validator.assume(every - {("id", "not_nullable")})
    assert not validator.nothing_to_check(right)  # the cache follows what is assumed


def test_the_chunks_of_a_source_share_one_answer_whatever_their_origins() -> None:
    """Each chunk of a file source names its origin in its schema's metadata: the answer for
    its columns is kept once, not once per chunk."""
    validator = ChunkValidator(Level)
    validator.assume(
        frozenset(
            {
                ("id", "not_nullable"),
                ("id", "greater_than_or_equal_to(1)"),
                ("level", "in_range(0, 9)"),
            }
        )
    )
    batch = pa.record_batch({"id": [1, 2], "level": [3, None]})

    for first_row in range(0, 1_000, 2):
        chunk = Origin("levels.parquet", first_row).attach(batch)
        assert validator.nothing_to_check(chunk.schema)

    assert len(validator._trivial) == 1
    assert not validator.nothing_to_check(  # other columns, whatever the metadata
        Origin("levels.parquet", 0).attach(pa.record_batch({"id": [1]})).schema
    )


def test_a_guard_passes_a_proven_batch_through_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from etlkit.checks.guard import OutputGuard
    from etlkit.testing import MemorySource

    def no_conversion(batch: pa.RecordBatch) -> None:
        raise AssertionError("converted to polars")

    node = MemorySource(pa.table({"id": [1], "level": [2]}), schema=Level)
    guard = OutputGuard(
        pipeline="p",
        run_id="r",
        name="n",
        node=node,
        staging=Staging(str(tmp_path)),
        default_policy="fail",
        default_max_fraction=None,
    )
    guard.validator.assume(
        frozenset(
            {
                ("id", "not_nullable"),
                ("id", "greater_than_or_equal_to(1)"),
                ("level", "in_range(0, 9)"),
            }
        )
    )
    batch = pa.record_batch({"id": [0, 5], "level": [None, 12]})  # breaks what was "proven"
    monkeypatch.setattr("etlkit.checks.guard.to_polars", no_conversion)

    assert guard.check(batch, 1)[0] is batch
    assert guard.checked_rows == 2
