"""Params given on the command line never become shell commands or SQL (issue 18, items 6-7)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.integration.cli import etlkit

pytestmark = pytest.mark.integration

PIPELINE = """
import pyarrow as pa
import etlkit as ek
from etlkit.model.commands import Command
from etlkit.testing import MemorySource
from connectors.files import ParquetSink

class Injectable(ek.Pipeline):
    params = {"label": "x", "flt": "0"}
    rows = MemorySource(pa.table({"a": [1, 2, 3]}))
    more = MemorySource(pa.table({"a": [4]}))
    picked = ek.Sql("select a from {rows} where a >= {flt} union all select a from {more}")
    out = ParquetSink("out/picked.parquet", picked)
    echo = Command("echo {params[label]} > echoed.txt", shell=True, after=[out])
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "injectable.py").write_text(PIPELINE)
    return tmp_path


def test_an_injected_label_is_echoed_not_run(project: Path) -> None:
    pwned = project / "PWNED"
    label = f"x; touch {pwned}; echo"

    result = etlkit("run", "injectable", "--param", f"label={label}", cwd=project)

    assert result.returncode == 0, result.stderr
    assert not pwned.exists()
    assert (project / "echoed.txt").read_text() == f"{label}\n"


def test_an_injected_filter_writes_no_file_and_fails_the_node(project: Path) -> None:
    target = project / "x.csv"
    flt = f"0; COPY (select 1) TO '{target}'; select 1"

    result = etlkit("run", "injectable", "--param", f"flt={flt}", cwd=project)

    assert result.returncode == 1, result.stderr
    assert "Node 'picked' in pipeline 'injectable'" in result.stderr
    assert "Could not convert string" in result.stderr
    assert "IndexError" not in result.stderr
    assert not target.exists()
    assert not (project / "out").exists() or not list((project / "out").iterdir())


def test_a_numeric_filter_still_filters(project: Path) -> None:
    result = etlkit("run", "injectable", "--param", "flt=2", cwd=project)

    assert result.returncode == 0, result.stderr

    assert sorted(pq.read_table(project / "out" / "picked.parquet")["a"].to_pylist()) == [2, 3, 4]
