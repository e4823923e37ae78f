"""A failing run whose connection holds a password leaves that password nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "Pa55-w0rd.secret"

pytestmark = pytest.mark.integration

LEAKY = '''
import logging
import pyarrow as pa
import pandera.polars as pdp
import etlkit as ek
from etlkit.settings.connections import resolve
from etlkit.testing import MemorySource
from connectors.postgres import PostgresSource

logger = logging.getLogger("pipelines.leaky")


class Row(pdp.DataFrameModel):
    id: int


class Careless(ek.Transform[Row, Row]):
    """Logs and raises with the full DSN, as careless user code does."""

    def process(self, batch, ctx):
        uri = resolve("hospital_db").uri
        logger.warning("connecting to %s", uri)
        raise RuntimeError(f"could not reach {uri}")


class Leaky(ek.Pipeline):
    rows = MemorySource(pa.table({"id": [1, 2]}), schema=Row)
    careless = Careless(rows)
    patients = PostgresSource(conn="hospital_db", table="patients", schema=Row)
'''


def test_secrets_appear_in_no_output_log_store_or_staged_file(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "leaky.py").write_text(LEAKY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    env.update(
        PYTHONPATH=str(REPO),
        ETLKIT_CONN_HOSPITAL_DB=f"postgresql://etl:{PASSWORD}@127.0.0.1:9/hospital",
    )

    def etlkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "etlkit", "--log-level", "info", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    run = etlkit("run", "leaky", "--progress", "plain")
    assert run.returncode != 0
    assert "***" in run.stderr  # the error was there, masked
    runs = etlkit("runs")
    run_id = runs.stdout.splitlines()[1].split()[0]
    outputs = [run, runs, etlkit("show", run_id), etlkit("logs", run_id)]

    for result in outputs:
        assert PASSWORD not in result.stdout + result.stderr, result.args
    assert "***" in outputs[2].stdout  # `etlkit show` has the masked errors
    state = tmp_path / ".etlkit"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files)
    assert any(p.suffix == ".jsonl" for p in files)
    assert any(p.suffix == ".parquet" for p in files)  # staged outputs, manifests inside
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path
