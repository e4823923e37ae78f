"""End-to-end through the `etlkit` command (a subprocess), on generated sample data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

import data.generate as datagen

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "pipelines"

pytestmark = pytest.mark.integration


def etlkit(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env = {k: v for k, v in env.items() if not k.startswith("ETLKIT_")}
    result = subprocess.run(
        [sys.executable, "-m", "etlkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> datagen.GeneratedPaths:
    return datagen.generate(tmp_path_factory.mktemp("demo"), 20_000)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory with a copy of the shipped pipelines."""
    shutil.copytree(PIPELINES, tmp_path / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def run_report(project: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return etlkit(
        "run",
        "monthly_report",
        "--date",
        "2025-03-01",
        "--param",
        f"data_dir={data_dir}",
        "--param",
        f"out_dir={project / 'reports'}",
        *extra,
        cwd=project,
    )


def expected_report(data_dir: Path) -> pl.DataFrame:
    con = duckdb.connect()
    return con.sql(
        f"""
        select strftime(b.billed_at, '%Y-%m') as month, trim(i.payer_name) as payer_name,
               count(*)::bigint as invoices, round(sum(round(b.amount, 2)), 2) as billed
        from read_csv('{data_dir}/billing/*/billing.csv') b
        join read_csv('{data_dir}/insurance.csv') i using (patient_id)
        where b.status <> 'denied'
        group by all order by 1, 2
        """
    ).pl()


def test_demo_report_runs_and_matches_a_direct_duckdb_query(
    project: Path, demo: datagen.GeneratedPaths
) -> None:
    result = run_report(project, demo.patients.parent)

    assert result.returncode == 0, result.stderr
    assert "node billing done" in result.stdout
    assert "node report done" in result.stdout
    assert "rows/s" in result.stdout  # the summary table
    report = pl.read_parquet(project / "reports/2025-03-01/monthly_report.parquet")
    expected = expected_report(demo.patients.parent)
    assert report.select("month", "payer_name", "invoices").equals(
        expected.select("month", "payer_name", "invoices")
    )
    assert report["billed"].to_list() == pytest.approx(expected["billed"].to_list(), abs=0.011)
    csv = pl.read_csv(project / "reports/2025-03-01/monthly_report.csv")
    assert csv.height == report.height
    assert list((project / ".etlkit" / "staging" / "monthly_report").iterdir())


def test_run_accepts_a_file_path_and_a_module_path(
    project: Path, demo: datagen.GeneratedPaths
) -> None:
    params = ["--param", f"data_dir={demo.patients.parent}", "--param", "out_dir=out"]
    by_file = etlkit(
        "run", "pipelines/monthly_report.py", *params, "--progress", "none", cwd=project
    )
    assert by_file.returncode == 0, by_file.stderr
    by_module = etlkit(
        "run", "pipelines.monthly_report", *params, "--progress", "none", cwd=project
    )
    assert by_module.returncode == 0, by_module.stderr


def test_list_graph_and_validate_the_shipped_pipelines(project: Path) -> None:
    listing = etlkit("list", cwd=project, check=True)
    assert "monthly_report" in listing.stdout
    assert "patient_data" in listing.stdout

    graph = etlkit("graph", "monthly_report", cwd=project, check=True)
    for node in ("billing", "insurance", "billing_clean", "coverage", "report", "report_csv"):
        assert node in graph.stdout
    assert "<- billing_clean, coverage" in graph.stdout

    validate = etlkit("validate", cwd=project, check=True)
    assert validate.stdout.rstrip().endswith("pipeline(s) checked, 0 problem(s)")
    assert "ok   monthly_report (7 nodes)" in validate.stdout


BROKEN = """
import etlkit as ek
from etlkit.testing import MemorySink

class Loop(ek.Pipeline):
    a = ek.Sql("select * from {b}")
    b = ek.Sql("select * from {a}")
    out = MemorySink(a)
"""


def test_validate_reports_every_problem_and_fails(project: Path) -> None:
    (project / "pipelines" / "loop.py").write_text(BROKEN)
    (project / "pipelines" / "broken_import.py").write_text("import no_such_module\n")

    result = etlkit("validate", cwd=project)

    assert result.returncode == 3
    assert "cycle: a -> b -> a" in result.stdout or "cycle: b -> a -> b" in result.stdout
    assert "broken_import.py" in result.stdout
    assert "No module named 'no_such_module'" in result.stdout
    assert "ok   monthly_report" in result.stdout


FAILING = """
import polars as pl
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySource
from connectors.files import ParquetSink

class Explode(ek.Transform[None, None]):
    def process(self, batch, ctx):
        if batch["x"][0] >= 20:
            raise ZeroDivisionError("division by zero in amount")
        return batch

class Failing(ek.Pipeline):
    numbers = MemorySource(pa.table({"x": list(range(100))}), chunk_rows=10)
    exploded = Explode(numbers)
    out = ParquetSink("out/result.parquet", exploded)
"""


def test_a_failing_node_gives_one_clear_message_and_no_output(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "failing.py").write_text(FAILING)

    result = etlkit("run", "failing", cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: Node 'exploded' in pipeline 'failing' (run " in result.stderr
    assert "failed on chunk 3: ZeroDivisionError: division by zero in amount" in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    debug = etlkit("--debug", "run", "failing", cwd=tmp_path)
    assert "Traceback" in debug.stderr


def test_unknown_param_and_bad_date_are_usage_errors(project: Path) -> None:
    unknown = etlkit("run", "monthly_report", "--param", "data_dri=x", cwd=project)
    assert unknown.returncode == 2
    assert "Did you mean 'data_dir'?" in unknown.stderr

    bad_date = etlkit("run", "monthly_report", "--date", "March", cwd=project)
    assert bad_date.returncode == 2
    assert "'March' is not a date" in bad_date.stderr

    missing = etlkit("run", "monthly_reprot", cwd=project)
    assert missing.returncode == 3
    assert "Did you mean 'monthly_report'?" in missing.stderr


def broken_copy(demo: datagen.GeneratedPaths, tmp_path: Path) -> Path:
    data_dir = tmp_path / "broken"
    shutil.copytree(demo.patients.parent, data_dir)
    return data_dir


def billing_file(data_dir: Path, month: str = "2025-02-01") -> Path:
    return data_dir / "billing" / month / "billing.csv"


def assert_failed_cleanly(result: subprocess.CompletedProcess[str], project: Path) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Node 'billing' in pipeline 'monthly_report'" in result.stderr
    assert not (project / "reports").exists() or not list((project / "reports").rglob("*.*"))


def test_missing_input_file_names_the_path(
    project: Path, demo: datagen.GeneratedPaths, tmp_path: Path
) -> None:
    data_dir = broken_copy(demo, tmp_path)
    shutil.rmtree(data_dir / "billing")

    result = run_report(project, data_dir)

    assert_failed_cleanly(result, project)
    assert result.returncode == 5
    assert f"{data_dir}/billing/*/billing.csv" in result.stderr


def test_ragged_row_names_file_and_line(
    project: Path, demo: datagen.GeneratedPaths, tmp_path: Path
) -> None:
    data_dir = broken_copy(demo, tmp_path)
    path = billing_file(data_dir)
    lines = path.read_text().splitlines()
    lines[100] += ",unexpected"
    path.write_text("\n".join(lines) + "\n")

    result = run_report(project, data_dir)

    assert_failed_cleanly(result, project)
    assert str(path) in result.stderr
    assert "line 101" in result.stderr


def test_bad_value_deep_in_a_file_names_file_line_column_and_value(
    project: Path, demo: datagen.GeneratedPaths, tmp_path: Path
) -> None:
    data_dir = broken_copy(demo, tmp_path)
    path = billing_file(data_dir)
    lines = path.read_text().splitlines()
    fields = lines[6000].split(",")
    fields[2] = "12,50".replace(",", ";")  # amount
    lines[6000] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")

    result = run_report(project, data_dir, "--chunk-rows", "1000")

    assert_failed_cleanly(result, project)
    assert str(path) in result.stderr
    assert "amount" in result.stderr
    assert "12;50" in result.stderr
    assert "line 6001" in result.stderr


def test_invalid_utf8_names_the_file(
    project: Path, demo: datagen.GeneratedPaths, tmp_path: Path
) -> None:
    data_dir = broken_copy(demo, tmp_path)
    path = billing_file(data_dir)
    raw = bytearray(path.read_bytes())
    position = raw.index(b"paid", len(raw) // 2)
    raw[position : position + 4] = b"p\xffid"
    path.write_bytes(bytes(raw))

    result = run_report(project, data_dir)

    assert_failed_cleanly(result, project)
    assert str(path) in result.stderr
    assert "UTF-8" in result.stderr


def test_empty_file_names_the_file(
    project: Path, demo: datagen.GeneratedPaths, tmp_path: Path
) -> None:
    data_dir = broken_copy(demo, tmp_path)
    billing_file(data_dir).write_bytes(b"")

    result = run_report(project, data_dir)

    assert_failed_cleanly(result, project)
    assert str(billing_file(data_dir)) in result.stderr
    assert "empty" in result.stderr


def test_patient_data_loads_duckdb_and_an_empty_extract_keeps_the_old_table(
    project: Path, demo: datagen.GeneratedPaths, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    params = ["--param", f"warehouse={warehouse}"]

    first = etlkit(
        "run", "patient_data", "--param", f"data_dir={demo.patients.parent}", *params, cwd=project
    )
    assert first.returncode == 0, first.stderr
    with duckdb.connect(str(warehouse), read_only=True) as con:
        count, nulls, upper = con.execute(
            "select count(*), count(*) filter (where patient_id is null), "
            "count(*) filter (where email <> lower(email)) from patients"
        ).fetchone()  # type: ignore[misc]
    assert (count, nulls, upper) == (demo_patients(demo), 0, 0)

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    header = demo.patients.read_text().splitlines()[0]
    (empty_dir / "patients.csv").write_text(header + "\n")
    second = etlkit("run", "patient_data", "--param", f"data_dir={empty_dir}", *params, cwd=project)

    assert second.returncode == 4
    assert "Output of node 'patients' in pipeline 'patient_data'" in second.stderr
    assert "has 0 rows; expected at least 1" in second.stderr
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from patients").fetchone() == (count,)


def demo_patients(demo: datagen.GeneratedPaths) -> int:
    return pl.scan_csv(demo.patients).select(pl.len()).collect().item()


def test_query_reads_staged_outputs_of_the_latest_or_a_named_run(
    project: Path, demo: datagen.GeneratedPaths
) -> None:
    assert run_report(project, demo.patients.parent).returncode == 0
    assert run_report(project, demo.patients.parent).returncode == 0

    table = etlkit("query", "select count(*) as n from billing_clean", cwd=project)
    assert table.returncode == 0, table.stderr
    kept = pl.read_csv(demo.patients.parent / "billing" / "*" / "billing.csv").filter(
        pl.col("status") != "denied"
    )
    assert f"{kept.height}" in table.stdout

    runs = etlkit(
        "query",
        "select run_id, count(*) as n from all_report group by 1 order by 1",
        "--format",
        "csv",
        cwd=project,
    )
    lines = runs.stdout.strip().splitlines()
    assert lines[0] == "run_id,n"
    assert len(lines) == 3  # two runs
    first_run = lines[1].split(",")[0]

    out = project / "report.parquet"
    exported = etlkit(
        "query",
        "select * from report",
        "--run",
        first_run[:18],
        "--format",
        "parquet",
        "--output",
        str(out),
        cwd=project,
    )
    assert exported.returncode == 0, exported.stderr
    assert pl.read_parquet(out).equals(
        pl.read_parquet(project / "reports/2025-03-01/monthly_report.parquet")
    )

    as_json = etlkit("query", "select 1 as one", "--format", "json", cwd=project)
    assert as_json.stdout.strip() == '[{"one":1}]'

    bad = etlkit("query", "select * from reprot", cwd=project)
    assert bad.returncode == 7
    assert "Available views:" in bad.stderr
    assert "report" in bad.stderr
