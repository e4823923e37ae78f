"""Through `etlkit`: a pipeline file imports a module beside it, as Airflow's dags do (item 18)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.integration.cli import etlkit

pytestmark = pytest.mark.integration

COMMON = '''
import pandera.polars as pdp


class Billing(pdp.DataFrameModel):
    """Shared by every pipeline of the folder."""

    amount: float


PAYER = "acme"
'''

BILLING = '''
import polars as pl
import pyarrow as pa
import etlkit as ek
from connectors.files import ParquetSink
from etlkit.testing import MemorySource
from common import Billing


class Label(ek.Transform[Billing, None]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        from common import PAYER  # at run time too, in the worker process

        return batch.with_columns(payer=pl.lit(PAYER))


class Billed(ek.Pipeline):
    """Bills, with the folder's shared model."""

    schedule = "@daily"
    start_date = "2025-01-01"
    bills = MemorySource(pa.table({"amount": [1.5, 2.5]}), schema=Billing)
    labelled = Label(bills)
    out = ParquetSink("out/{ds}.parquet", labelled)
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "common.py").write_text(COMMON)
    (tmp_path / "pipelines" / "billed.py").write_text(BILLING)
    return tmp_path


def payers(project: Path, ds: str) -> list[str]:
    return pq.read_table(project / "out" / f"{ds}.parquet").column("payer").to_pylist()


def test_run_by_name_and_by_path_imports_the_module_beside_the_pipeline(project: Path) -> None:
    by_name = etlkit("run", "billed", "--date", "2025-03-01", cwd=project)
    assert by_name.returncode == 0, by_name.stderr
    assert payers(project, "2025-03-01") == ["acme", "acme"]

    by_path = etlkit("run", "pipelines/billed.py", "--date", "2025-03-02", cwd=project)
    assert by_path.returncode == 0, by_path.stderr
    assert payers(project, "2025-03-02") == ["acme", "acme"]


def test_list_and_validate_load_the_folder_with_its_shared_module(project: Path) -> None:
    listing = etlkit("list", cwd=project)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "billed" in listing.stdout
    assert "ERROR" not in listing.stdout

    validate = etlkit("validate", cwd=project)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "1 pipeline(s) checked, 0 problem(s)" in validate.stdout


def test_the_schedulers_worker_process_imports_the_module_beside_the_pipeline(
    project: Path,
) -> None:
    backfill = etlkit(
        "backfill", "billed", "--start", "2025-01-01", "--end", "2025-01-02", cwd=project
    )

    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert "2 interval(s); 2 success" in backfill.stdout
    assert payers(project, "2025-01-02") == ["acme", "acme"]
