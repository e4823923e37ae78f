"""File formats: one protocol, resolved by name (built-in Parquet, `etlkit.formats` entry points),
and the only place in etlkit that knows a format's layout."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.files.csv_format import CsvLayout
from etlkit.errors import StagingError
from etlkit.storage.formats import FileFormat, file_format
from etlkit.storage.parquet import PARQUET
from etlkit.storage.staging import Manifest, Staging

ETLKIT = Path(__file__).resolve().parents[2] / "etlkit"
#: The modules that may know how a file format is laid out.
FORMAT_MODULES = {ETLKIT / "storage" / "formats.py", ETLKIT / "storage" / "parquet.py"}
#: Names of CSV parsing: pyarrow's CSV reader and the layout that drives it.
CSV_PARSING = re.compile(r"pyarrow\.csv|\bpacsv\b|CsvLayout|csv_block_size|MAX_CSV_BLOCK")


def _csv_parsing(path: Path) -> list[str]:
    """Where a module imports pyarrow's CSV reader (any import form) or names CSV parsing."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}" for a in node.names if a.name == "pyarrow.csv"]
        elif isinstance(node, ast.ImportFrom) and node.module == "pyarrow":
            found += [f"line {node.lineno}" for a in node.names if a.name == "csv"]
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if CSV_PARSING.search(line):
            found.append(f"line {number}: {line.strip()}")
    return found


def test_no_etlkit_module_but_the_formats_knows_csv_parsing() -> None:
    offenders = {
        str(path.relative_to(ETLKIT.parent)): where
        for path in sorted(ETLKIT.rglob("*.py"))
        if path not in FORMAT_MODULES and (where := _csv_parsing(path))
    }

    assert offenders == {}


def test_the_check_sees_an_import_of_pyarrow_csv(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from pyarrow import csv\nimport pyarrow.csv as reader\n")

    assert _csv_parsing(module) == ["line 1", "line 2", "line 2: import pyarrow.csv as reader"]


def test_parquet_is_built_in_and_csv_comes_from_the_file_connectors_entry_point() -> None:
    layout = CsvLayout(pa.schema([("n", pa.int64())]), ";")

    assert file_format("parquet") is PARQUET
    assert file_format("csv", layout.to_json()) == layout


#: A third party's format: a module of its own, found only through its distribution's entry point.
PLUGIN = '''
from __future__ import annotations

import pyarrow as pa


class LinesFormat:
    """Files of one integer per line, read as column `n`."""

    def __init__(self, options):
        self.column = options["column"]

    name = "lines"
    schema = None

    def to_json(self):
        return {"column": self.column}

    def batches(self, urls, *, columns, batch_size):
        for url in urls:
            with open(url) as fh:
                yield pa.record_batch({self.column: [int(line) for line in fh]})

    def fingerprint(self, fs, path):
        return int(fs.size(path)), "lines"
'''


def _install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution on sys.path declaring format `lines` in the `etlkit.formats` group."""
    (tmp_path / "lines_format.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "lines_format-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lines-format\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[etlkit.formats]\nlines = lines_format:LinesFormat\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_third_party_format_is_found_through_its_entry_point_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install(site, monkeypatch)
    found = file_format("lines", {"column": "n"})
    assert (found.name, found.to_json()) == ("lines", {"column": "n"})
    data = tmp_path / "numbers.txt"
    data.write_text("1\n2\n3\n")
    staging = Staging(str(tmp_path / "staging"))

    staging.writer("p", "20250101T000000Z-aaaaaa", "src").commit_reference(
        urls=[str(data)],
        rows=3,
        sizes=[data.stat().st_size],
        checksums=["lines"],
        select=[("n", None)],
        read_as=found,  # type: ignore[arg-type]  # a partial format: what staging calls
    )

    manifest = staging.manifest("p", "20250101T000000Z-aaaaaa", "src")
    assert manifest is not None
    assert manifest.extra["reference"]["format"] == "lines"
    assert manifest.extra["reference"]["options"] == {"column": "n"}
    assert type(manifest.reference_format).__name__ == "LinesFormat"
    batches = staging.iter_batches("p", "20250101T000000Z-aaaaaa", "src", batch_size=10)
    assert [v for b in batches for v in b.column("n").to_pylist()] == [1, 2, 3]
    assert staging.verify("p", "20250101T000000Z-aaaaaa", "src") == []


def test_an_unknown_format_says_what_is_installed_and_what_to_install() -> None:
    with pytest.raises(
        StagingError,
        match=r"No file format is installed under the name 'orc'.*Installed: .*'csv'.*"
        r"'parquet'.*Install the package that provides it.*etlkit\.formats",
    ):
        file_format("orc", {})


def _manifest(reference: dict[str, object]) -> Manifest:
    return Manifest("p", "r", "n", 0, 0, (), (), "", {"reference": reference})


def test_references_staged_before_formats_were_named_are_still_read() -> None:
    layout = CsvLayout(pa.schema([("n", pa.int64())]), ";", blank_lines=False)

    assert _manifest({"select": [["n", None]], "csv": layout.to_json()}).reference_format == layout
    assert _manifest({"select": [["n", None]]}).reference_format is PARQUET
    assert _manifest(
        {"select": [], "format": "csv", "options": layout.to_json()}
    ).reference_format == (layout)
    assert Manifest("p", "r", "n", 0, 0, (), (), "").reference_format is None


def test_the_built_in_formats_satisfy_the_protocol() -> None:
    formats: list[FileFormat] = [PARQUET, CsvLayout(pa.schema([("n", pa.int64())]))]

    assert [f.name for f in formats] == ["parquet", "csv"]
    assert [f.duckdb_paths(["a"]) for f in formats] == [["a"], []]
