"""A pipelines folder is importable: a pipeline file imports the modules beside it (item 18)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import etlkit as ek
import etlkit.model.discovery as discovery_module
from etlkit.model.discovery import discover, load_pipeline

PIPELINE = '''
import polars as pl
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource
from common import LABEL


class Tag(ek.Transform[None, None]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        from helpers.tags import suffix  # imported at run time, from the folder too

        return batch.with_columns(tag=pl.lit(LABEL + suffix()))


class Tagged(ek.Pipeline):
    """Tags its rows with the folder's label."""

    rows = MemorySource(pa.table({"x": [1]}))
    tagged = Tag(rows)
    out = MemorySink(tagged)
'''


def folder(root: Path, label: str) -> Path:
    pipelines = root / label / "pipelines"
    (pipelines / "helpers").mkdir(parents=True)
    (pipelines / "common.py").write_text(f"LABEL = {label!r}\n")
    (pipelines / "helpers" / "__init__.py").write_text("")
    (pipelines / "helpers" / "tags.py").write_text(f"def suffix() -> str:\n    return '-{label}'\n")
    (pipelines / "tagged.py").write_text(PIPELINE)
    return pipelines


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """sys.path and the folders etlkit made importable are restored after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(discovery_module, "_FOLDERS", {}, raising=False)
    monkeypatch.setattr(discovery_module, "_CURRENT", [], raising=False)
    yield
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def tag(cls: type[ek.Pipeline], tmp_path: Path) -> str:
    settings = ek.load_settings(tmp_path, env={}, cli={"paths.state_dir": str(tmp_path / "s")})
    result = cls.run(date="2025-03-01", settings=settings)
    assert result.state == "success", result.error
    sink = cls.out  # type: ignore[attr-defined]  # the class declares it
    return str(sink.table().column("tag")[0])


def test_a_pipeline_imports_a_module_beside_it_by_name_and_by_path(tmp_path: Path) -> None:
    pipelines = folder(tmp_path, "north")

    by_name = load_pipeline("tagged", pipelines)
    by_path = load_pipeline(str(pipelines / "tagged.py"), pipelines)

    assert tag(by_name, tmp_path) == "north-north"
    assert tag(by_path, tmp_path) == "north-north"


def test_discovery_imports_helpers_beside_the_pipelines_without_errors(tmp_path: Path) -> None:
    found = discover(folder(tmp_path, "north"))

    assert [f.error for f in found] == [None, None]
    assert [[c.name for c in f.pipelines] for f in found] == [[], ["tagged"]]


def test_two_pipelines_folders_in_one_process_each_see_their_own_modules(
    tmp_path: Path,
) -> None:
    north, south = folder(tmp_path, "north"), folder(tmp_path, "south")

    from_north = load_pipeline("tagged", north)
    from_south = load_pipeline("tagged", south)

    assert str(south.resolve()) in sys.path
    assert str(north.resolve()) not in sys.path
    assert tag(from_south, tmp_path) == "south-south"
    assert tag(load_pipeline("tagged", north), tmp_path) == "north-north"
    assert tag(from_north, tmp_path) == "north-north"


def test_the_folder_goes_after_the_standard_library_on_the_path(tmp_path: Path) -> None:
    pipelines = folder(tmp_path, "north")
    (pipelines / "colorsys.py").write_text("raise RuntimeError('shadowed the standard library')\n")
    (pipelines / "tagged.py").write_text("import colorsys\n" + PIPELINE)

    cls = load_pipeline(str(pipelines / "tagged.py"), pipelines)

    assert sys.path[-1] == str(pipelines.resolve())
    assert tag(cls, tmp_path) == "north-north"
