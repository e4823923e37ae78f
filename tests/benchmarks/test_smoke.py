"""The benchmarks still work: at SF 0.01 every variant of every workload gives DuckDB's result.

Timings are never asserted. The variants run in this process (fast), then one workload goes
through the real harness, child processes and all (etlkit and pandas, checked against DuckDB).
Everything is written under tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from benchmarks import datasets, engines, tpch
from benchmarks.workloads import REFERENCE, VARIANTS, WORKLOADS, differences

SF = 0.01
REPORT_ROWS = 20_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-data")
    datasets.ensure_tpch(root, SF, ("parquet", "csv"), quiet=True)
    datasets.ensure_report(root, REPORT_ROWS, quiet=True)
    return root


def _data_dir(root: Path, name: str) -> Path:
    if WORKLOADS[name].dataset == "tpch":
        return datasets.tpch_dir(root, SF)
    return datasets.report_dir(root, REPORT_ROWS)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_variant_gives_duckdbs_result(name: str, data_root: Path, tmp_path: Path) -> None:
    workload = WORKLOADS[name]
    data_dir = _data_dir(data_root, name)
    results = {}
    for variant in VARIANTS:
        run_dir = tmp_path / variant
        path = engines.run(workload, variant, data_dir, run_dir / "out", run_dir / "state")
        results[variant] = pl.read_parquet(path)
    reference = results[REFERENCE]
    assert reference.height > 0
    for variant, result in results.items():
        assert differences(reference, result, atol=workload.atol) == [], variant


def test_data_is_generated_once(data_root: Path) -> None:
    lineitem = datasets.tpch_dir(data_root, SF) / "parquet" / "lineitem.parquet"
    before = lineitem.stat().st_mtime_ns
    datasets.ensure_tpch(data_root, SF, ("parquet", "csv"), quiet=True)
    assert lineitem.stat().st_mtime_ns == before


def test_differences_catch_a_wrong_result() -> None:
    expected = pl.DataFrame({"k": ["a", "b"], "v": [1.0, 2.0], "n": [1, 2]})
    assert differences(expected, expected.reverse()) == []
    assert differences(expected, expected.with_columns(v=pl.Series([1.0, 2.5]))) != []
    assert differences(expected, expected.head(1)) == ["1 rows instead of 2"]


def test_the_harness_runs_and_reports(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q6.json"
    code = tpch.main(
        [
            "--sf",
            str(SF),
            "--data-dir",
            str(data_root),
            "--workloads",
            "q6",
            "--variants",
            "etlkit,pandas",
            "--repeat",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    assert "every result reported equals DuckDB's" in capsys.readouterr().out
    summary = out.read_text()
    assert all(f'"variant": "{v}"' in summary for v in ("etlkit", "pandas", REFERENCE))
