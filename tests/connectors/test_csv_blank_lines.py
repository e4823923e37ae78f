"""A blank line in a CSV file is a row of empty fields, as `polars.read_csv` (and so Pandera)
sees it: counted and validated, not skipped, whether the source streams or its files are
referenced and parsed again."""

from __future__ import annotations

from pathlib import Path

import pandera.polars as pdp
import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from connectors.files import CsvSource
from connectors.files.csv_format import CsvLayout
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink

BLANK_INSIDE = "a\n1\n\n2\n"
BLANK_AT_THE_END = "a\n1\n2\n\n"


class Required(pdp.DataFrameModel):
    a: int = pdp.Field(nullable=False)


class Optional(pdp.DataFrameModel):
    a: int = pdp.Field(nullable=True)


@pytest.mark.parametrize("text", [BLANK_INSIDE, BLANK_AT_THE_END])
def test_a_blank_line_fails_a_required_column_as_pandera_on_read_csv_does(
    settings: ek.Settings, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(pdp.errors.SchemaErrors, match="not_nullable"):
        Required.validate(pl.read_csv(path), lazy=True)

    class Strict(ek.Pipeline):
        src = CsvSource(str(path), schema=Required)
        out = MemorySink(src)

    result = Strict.run(settings=settings)

    assert result.state == "failed"
    assert "not_nullable" in str(result.nodes["src"].error)


def test_a_blank_line_is_a_null_row_streamed_and_in_the_reference(
    settings: ek.Settings, tmp_path: Path
) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n\n2\n\n\n3\n")
    expected = pl.read_csv(path).get_column("a").to_list()
    assert expected == [1, None, 2, None, None, 3]

    class Counted(ek.Pipeline):
        src = CsvSource(str(path), schema=Optional, chunk_rows=2)
        out = MemorySink(src)

    result = Counted.run(settings=settings)

    assert result.state == "success", result.error
    assert Counted.out.table().column("a").to_pylist() == expected
    assert result.nodes["src"].rows_out == len(expected)
    staging = Staging(settings.paths.staging_root)
    manifest = staging.manifest("counted", result.run_id, "src")
    assert manifest is not None
    assert isinstance(manifest.reference_format, CsvLayout)
    again = staging.iter_batches("counted", result.run_id, "src", batch_size=2)
    assert [v for b in again for v in b.column("a").to_pylist()] == expected


def test_a_layout_committed_before_blank_lines_counted_still_skips_them(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(BLANK_INSIDE)
    layout = CsvLayout(pa.schema([("a", pa.int64())]))
    older = {k: v for k, v in layout.to_json().items() if k != "blank_lines"}

    replayed = CsvLayout.from_json(older).batches([str(path)], batch_size=10)

    assert [v for b in replayed for v in b.column("a").to_pylist()] == [1, 2]
