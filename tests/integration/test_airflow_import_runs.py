"""Pipelines imported from Airflow DAG files run end to end through `etlkit`, on real files:
a sensor waiting for the day's file, a bash step writing one, retries of a flaky callable,
TaskFlow return values and DataFrames."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli import REPO, etlkit

DAGS = REPO / "tests" / "airflow_dags"

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    # the callables' module, beside the DAG files, goes beside the pipeline too
    shutil.copy(DAGS / "dag_helpers.py", tmp_path / "pipelines" / "dag_helpers.py")
    return tmp_path


def imported_and_run(project: Path, dag: str) -> subprocess.CompletedProcess[str]:
    imported = etlkit("import-airflow", str(DAGS / f"{dag}.py"), cwd=project)
    assert imported.returncode in (0, 8), imported.stdout + imported.stderr
    return etlkit("run", dag, "--date", "2025-03-01", "--progress", "none", cwd=project)


def test_legacy_dag_runs_sensor_python_with_context_retries_and_bash(project: Path) -> None:
    (project / "in" / "2025-03-01").mkdir(parents=True)
    (project / "in" / "2025-03-01" / "ready.flag").write_text("")
    run = imported_and_run(project, "legacy_etl")
    assert run.returncode == 0, run.stdout + run.stderr
    out = project / "out"
    assert (out / "orders_20250301.csv").read_text() == "day,amount\n2025-03-01,3\n2025-03-01,4\n"
    assert (out / "loaded_2025-03-01.txt").read_text() == "loaded after 2 attempts\n"
    assert (out / "report_20250301.txt").read_text() == "orders of 2025-03-01\n"


def test_legacy_dag_sensor_fails_the_run_without_the_days_file(project: Path) -> None:
    (project / "in" / "2025-02-28").mkdir(parents=True)
    (project / "in" / "2025-02-28" / "ready.flag").write_text("")  # another day's file
    imported = etlkit("import-airflow", str(DAGS / "legacy_etl.py"), cwd=project)
    assert imported.returncode == 8  # the pool's size to review
    code = (project / "pipelines" / "legacy_etl.py").read_text()
    # a sensor that gives up at once, so the test does not wait
    code = code.replace("poke_interval=1.0, timeout=5.0", "poke_interval=0.01, timeout=0.05")
    (project / "pipelines" / "legacy_etl.py").write_text(code)
    run = etlkit("run", "legacy_etl", "--date", "2025-03-01", "--progress", "none", cwd=project)
    assert run.returncode != 0
    assert "in/2025-03-01/ready.flag" in run.stderr
    assert not (project / "out").exists()


def test_taskflow_dag_passes_return_values_and_dataframes(project: Path) -> None:
    run = imported_and_run(project, "taskflow_etl")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (project / "out" / "total_2025-03-01.txt").read_text() == "6"
    assert (project / "out" / "total.txt").read_text() == "14\n"
    handoff = list((project / ".etlkit").rglob("handoff/taskflow_etl/*/extract.json"))
    assert len(handoff) == 1  # the return value, kept as JSON under the run's id


def test_airflow3_sdk_dag_runs(project: Path) -> None:
    (project / "in").mkdir()
    (project / "in" / "20250301.csv").write_text("x\n")
    run = imported_and_run(project, "sdk_etl")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (project / "out" / "done_2025-03-01").is_file()
    assert (project / "out" / "orders_20250301.csv").is_file()


@pytest.mark.s3
def test_modern_dag_runs_its_sensors_group_chain_and_email(
    project: Path, s3_server: Any, s3_endpoint: str, lake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from etlkit.model.discovery import load_pipeline
    from etlkit.model.nodes import Context, Sensor
    from tests.s3_server import filesystem

    (project / "in" / "2025-03-01").mkdir(parents=True)
    (project / "in" / "2025-03-01" / "ready.flag").write_text("")
    assert imported_and_run(project, "legacy_etl").returncode == 0
    imported = etlkit("import-airflow", str(DAGS / "modern_etl.py"), cwd=project)
    assert imported.returncode == 8, imported.stdout + imported.stderr
    modern = load_pipeline("modern_etl", project / "pipelines")
    store = project / ".etlkit" / "etlkit.sqlite"
    day = datetime(2025, 3, 1, tzinfo=UTC)

    def poke(node: str, when: datetime) -> bool:
        sensor = modern.nodes[node]
        assert isinstance(sensor, Sensor)
        return sensor.poke(Context("modern_etl", "r1", when, node=node, store_path=str(store)))

    # ExternalTaskSensor -> RunSensor: legacy_etl succeeded for that day, not the next
    assert poke("wait_upstream", day)
    assert not poke("wait_upstream", datetime(2025, 3, 2, tzinfo=UTC))
    # S3KeySensor -> FileSensor on s3:// through the connection named like aws_conn_id
    s3_server.create_bucket("raw")
    assert not poke("landed", day)
    filesystem(s3_endpoint).pipe("raw/orders/2025-03-01/orders.csv", b"x\n1\n")
    assert poke("landed", day)
    # and the whole pipeline runs: task group, chain, bash, Python callables, EmailOperator
    from tests.s3_server import KEY, SECRET
    from tests.smtp_server import SmtpServer

    (project / "in" / "eu.csv").write_text("day,amount\n2025-03-01,3\n2025-03-01,4\n")
    toml = project / "etlkit.toml"
    with SmtpServer.start() as server:
        toml.write_text(
            toml.read_text().replace("port = 25", f"port = {server.port}")
            + f'\n[connections.lake]\nkind = "s3"\nlogin = "{KEY}"\n'
            + f"password_env = 'LAKE_SECRET'\nextra = {{ endpoint_url = '{s3_endpoint}' }}\n"
        )
        monkeypatch.setenv("LAKE_SECRET", SECRET)  # the child's environment
        # the instant legacy_etl ran for: a plain date would be midnight in modern_etl's
        # Europe/Paris, an hour before it, where the RunSensor (as Airflow's ExternalTaskSensor
        # without an execution_delta) finds no upstream run
        at = "2025-03-01T00:00:00+00:00"
        run = etlkit("run", "modern_etl", "--date", at, "--progress", "none", cwd=project)
        assert run.returncode == 0, run.stdout + run.stderr
        assert [m.rcpt_tos for m in server.messages] == [("team@example.com",)]
    assert (project / "out" / "2025-03-01.csv").read_text().startswith("day,amount")
    assert (project / "out" / "summary_2025-03-01.txt").read_text() == "0 rows\n"
