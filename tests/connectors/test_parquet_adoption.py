"""A ParquetSink adopts its input's committed staged file instead of encoding the rows again.

The adopted file must equal what encoding gives (rows, schema, values), be committed as
atomically and exactly once as a written one (SIGKILL before and during the adoption, then
`etlkit retry`), and every case it cannot take (other columns, codec, an empty output, an
input staged by an earlier attempt another way, no hard link possible) must fall back to
encoding or copying, saying so in the run log.
"""

from __future__ import annotations

import errno
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etlkit as ek
from connectors.files import ParquetSink
from connectors.files import adopt as adopting
from etlkit.engine.execution import RunOptions, execute
from etlkit.model.nodes import Context, StagedParquet
from etlkit.storage.staging import Staging
from etlkit.storage.store import new_run_id
from etlkit.testing import MemorySource
from tests.connectors.test_sink_retries import (
    ROWS,
    etlkit,
    hidden,
    project_with,
    read_back,
    retry,
    run_killed_at,
)

if TYPE_CHECKING:
    from etlkit.engine.execution import RunResult

SINKS = "etlkit.engine.steps.sinks"


class Short(pdp.DataFrameModel):
    id: int
    name: str


class Line(Short):  # so every staged line already passed `Short`: nothing left to check
    amount: float


class Upper(ek.Transform[Line, Line]):
    """Upper-cases the names and keeps the lines `keep` allows (all by default)."""

    def __init__(self, *inputs: ek.Node, keep: int = 1 << 62) -> None:
        super().__init__(*inputs)
        self.keep = keep

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.filter(pl.col("id") < self.keep).with_columns(
            pl.col("name").str.to_uppercase()
        )


def lines(count: int) -> pa.Table:
    return pa.table(
        {
            "id": list(range(count)),
            "name": [f"line number {i} of the table" for i in range(count)],
            "amount": [i / 4 for i in range(count)],
        }
    )


class Noted(Upper):
    """Upper adding a column its model does not declare (only unvalidated runs let it by)."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return super().process(batch, ctx).with_columns(note=pl.lit("noted"))


def pipeline(
    out: Path,
    count: int,
    *,
    schema: type[pdp.DataFrameModel] | None = None,
    keep: int = 1 << 62,
    typed: bool = True,
) -> type[ek.Pipeline]:
    class Adopted(ek.Pipeline):
        source = MemorySource(lines(count), schema=Line, chunk_rows=max(1, count // 7))
        upper = (Upper if typed else Noted)(source, keep=keep)
        output = ParquetSink(str(out), upper, schema=schema)

    return Adopted


def run(
    cls: type[ek.Pipeline],
    staging: Path | str,
    run_id: str | None = None,
    **options: object,
) -> RunResult:
    ctx = Context(
        pipeline="adopted",
        run_id=run_id or new_run_id(),
        logical_date=datetime(2025, 3, 1, tzinfo=UTC),
    )
    result = execute(
        cls.graph(),
        ctx,
        staging=Staging(str(staging)),
        options=RunOptions(**options),  # type: ignore[arg-type]
    )
    assert result.error is None, result.error
    return result


def staged_file(staging: Path, result: RunResult) -> Path:
    (url,) = Staging(str(staging)).files("adopted", result.run_id, "upper")
    return Path(url.removeprefix("file://"))


@pytest.mark.parametrize("count", [100, 60_000])  # held in memory, written on the stage thread
def test_the_adopted_file_is_the_staged_file_and_equals_the_encoded_one(
    tmp_path: Path, count: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SINKS)
    adopted, encoded = tmp_path / "adopted.parquet", tmp_path / "encoded.parquet"

    first = run(pipeline(adopted, count), tmp_path / "staging")
    run(pipeline(encoded, count), tmp_path / "staging", adopt_staged=False)

    assert adopted.stat().st_ino == staged_file(tmp_path / "staging", first).stat().st_ino
    assert encoded.stat().st_nlink == 1  # written by the sink
    want, got = pq.read_table(encoded), pq.read_table(adopted)
    assert got.schema.equals(want.schema)  # `string`, as the sink writes it
    assert got.schema.field("name").type == pa.string()
    assert got.equals(want)
    assert got.num_rows == count
    assert pq.ParquetFile(adopted).metadata.row_group(0).column(1).compression == "ZSTD"
    assert first.nodes["output"].write is not None
    assert first.nodes["output"].write.extra["adopted"] == "hard link"
    assert f"adopted the staged output of upper (hard link) as file://{adopted}" in caplog.text
    # the staging still reads back as the node's output
    staged = Staging(str(tmp_path / "staging"))
    back = pa.Table.from_batches(
        staged.iter_batches("adopted", first.run_id, "upper", batch_size=1000)
    )
    assert back.equals(want)
    assert staged.verify("adopted", first.run_id, "upper") == []
    assert hidden(tmp_path) == []


def test_a_sink_writing_other_columns_encodes_its_input(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SINKS)
    planned, unplanned = tmp_path / "planned.parquet", tmp_path / "unplanned.parquet"

    # the models say so: the plan streams the input to the sink
    run(pipeline(planned, 50, schema=Short), tmp_path / "staging")
    assert caplog.text == ""
    # a column no model foresaw (unvalidated): the sink refuses the staged file
    run(pipeline(unplanned, 50, schema=Line, typed=False), tmp_path / "staging", validate=False)
    assert "encoding its input: the staged output of upper cannot be adopted (its columns" in (
        caplog.text
    )

    for out, columns in ((planned, ["id", "name"]), (unplanned, ["id", "name", "amount"])):
        assert out.stat().st_nlink == 1
        assert pq.read_table(out).column_names == columns
        assert pq.read_table(out)["name"][0].as_py() == "LINE NUMBER 0 OF THE TABLE"


def test_an_empty_output_is_encoded_with_its_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SINKS)
    out = tmp_path / "none.parquet"

    run(pipeline(out, 50, keep=0), tmp_path / "staging")

    assert pq.read_table(out).num_rows == 0
    assert pq.read_schema(out).names == ["id", "name", "amount"]
    assert "cannot be adopted (it is compressed with nothing (no row group)" in caplog.text


def test_an_input_staged_by_an_earlier_attempt_in_the_staging_codec_is_encoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SINKS)
    earlier = run(
        pipeline(tmp_path / "first.parquet", 50), tmp_path / "staging", adopt_staged=False
    )
    out = tmp_path / "resumed.parquet"

    run(
        pipeline(out, 50),
        tmp_path / "staging",
        run_id=earlier.run_id,
        reuse=frozenset({"source", "upper"}),
    )

    assert "cannot be adopted (it is compressed with SNAPPY, the sink's file with ZSTD)" in (
        caplog.text
    )
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "first.parquet"))
    assert out.stat().st_nlink == 1


def test_a_staged_file_that_cannot_be_linked_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(source: str, target: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", target)

    monkeypatch.setattr(adopting.os, "link", no_link)  # staging on another filesystem
    out = tmp_path / "copied.parquet"

    result = run(pipeline(out, 50), tmp_path / "staging")

    assert result.nodes["output"].write is not None
    assert result.nodes["output"].write.extra["adopted"] == "copy"
    assert out.stat().st_nlink == 1
    assert out.read_bytes() == staged_file(tmp_path / "staging", result).read_bytes()
    assert hidden(tmp_path) == []


def test_refusals_name_what_does_not_match(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64())])
    staged = StagedParquet("n", None, ("a", "b"), True, schema, 3, frozenset({"ZSTD"}))
    assert adopting.refusal(staged, "zstd", schema) == "it is 2 files and the sink writes one"
    one = StagedParquet("n", None, ("a",), True, schema, 3, frozenset({"ZSTD", "SNAPPY"}))
    assert adopting.refusal(one, "zstd", schema) == (
        "it is compressed with SNAPPY, ZSTD, the sink's file with ZSTD"
    )
    good = StagedParquet("n", None, ("a",), True, schema, 3, frozenset({"ZSTD"}))
    assert adopting.refusal(good, "zstd", schema) is None
    wide = pa.schema([("id", pa.int32())])
    assert adopting.refusal(good, "zstd", wide) == (
        "its columns are [id: int64], the sink's file has [id: int32]"
    )


# -- killed runs: `etlkit run` in a child process, SIGKILLed, then `etlkit retry` ------------


def expected_rows() -> pl.DataFrame:
    return pl.DataFrame({"id": range(ROWS), "part": [i % 4 for i in range(ROWS)]})


def test_a_run_killed_between_the_staging_commit_and_the_adoption_is_retried_once(
    tmp_path: Path,
) -> None:
    project = project_with(tmp_path, "parquet")
    before = project / "before.flag"
    before.write_text("")
    run_id = run_killed_at(project, "ADOPTING", before=str(before))
    assert not (project / "out" / "numbers.parquet").exists()
    before.unlink()

    retry(project, run_id)

    assert (
        "adopted the staged output of passed (hard link)" in etlkit(project, "logs", run_id).stdout
    )
    frame = read_back(project, "parquet").sort("id")
    assert frame.equals(expected_rows(), null_equal=True)
    assert sorted(p.name for p in (project / "out").iterdir()) == ["numbers.parquet"]
    # the staged output the sink adopted is still the node's, queryable by run
    sql = "select count(*) as n, sum(id) as s from passed"
    queried = etlkit(project, "query", "--run", run_id, sql, "--format", "csv")
    assert queried.returncode == 0, queried.stderr
    assert queried.stdout.split() == ["n,s", f"{ROWS},{ROWS * (ROWS - 1) // 2}"]


def test_a_run_killed_mid_adoption_leaves_the_target_untouched_and_retry_adopts_once(
    tmp_path: Path,
) -> None:
    project = project_with(tmp_path, "parquet")
    target = project / "out" / "numbers.parquet"
    target.parent.mkdir()
    target.write_bytes(b"the previous file")
    mid = project / "mid.flag"
    mid.write_text("")
    run_id = run_killed_at(project, "PLACED", mid=str(mid))
    (left,) = hidden(project / "out")
    assert left.startswith(f".numbers.parquet.tmp-{run_id}-")
    assert target.read_bytes() == b"the previous file"
    mid.unlink()

    retry(project, run_id)

    assert hidden(project / "out") == []
    assert read_back(project, "parquet").sort("id").equals(expected_rows())
    assert sorted(p.name for p in (project / "out").iterdir()) == ["numbers.parquet"]


@pytest.mark.parametrize("setting", ["true", "false"])
def test_the_run_setting_adopt_staged_turns_adoption_off(tmp_path: Path, setting: str) -> None:
    settings = ek.load_settings(
        tmp_path,
        env={"ETLKIT_RUN__ADOPT_STAGED": setting},
        cli={"paths.state_dir": str(tmp_path / "state")},
    )
    out = tmp_path / "out.parquet"

    result = pipeline(out, 50).run(settings=settings)

    assert result.error is None
    assert settings.run.adopt_staged is (setting == "true")
    write = result.nodes["output"].write
    assert write is not None
    assert ("adopted" in write.extra) is (setting == "true")
    assert out.stat().st_nlink == (2 if setting == "true" else 1)
    assert pq.read_table(out).num_rows == 50
