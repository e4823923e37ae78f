"""Workers on other machines get the pipeline's code uploaded: a run whose pipeline folder
this machine's workers cannot read (moved away once shipped, as if they were elsewhere)
imports the class from the copy unpacked in each worker's directory."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import polars as pl
import pytest

from etlkit.engine.distributed import DaskExecutor, cluster
from etlkit.engine.distributed.plugin import PipelinesUpload, pack
from etlkit.errors import EtlkitError
from etlkit.model.discovery import load_pipeline
from etlkit.model.pipeline import PipelineDefinition
from etlkit.storage.staging import Staging
from tests.distributed.conftest import run
from tests.distributed.jobs import write_bills
from tests.s3_server import storage_options

pytestmark = [pytest.mark.slow, pytest.mark.s3]

JOB = """
import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import ParquetSink, ParquetSource


class Bill(pdp.DataFrameModel):
    bill_id: int
    amount: float


class Doubled(ek.Transform[Bill, Bill]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(amount=pl.col("amount") * 2)


class UploadedBills(ek.Pipeline):
    params = {"data_dir": "data", "out_dir": "out"}

    bills = ParquetSource("{data_dir}/*.parquet", schema=Bill)
    doubled = Doubled(bills)
    output = ParquetSink("{out_dir}/bills.parquet", doubled)
"""


def from_file(code: Path) -> type[PipelineDefinition]:
    """The class as `etlkit run pipelines/<file>.py` imports it (a file, not a module)."""
    name = f"uploaded_{uuid.uuid4().hex[:8]}"
    (code / "pipelines").mkdir(parents=True)
    (code / "pipelines" / f"{name}.py").write_text(JOB)
    (code / "pipelines" / "__pycache__").mkdir()
    (code / "pipelines" / "__pycache__" / "junk.pyc").write_bytes(b"x")
    path = code / "pipelines" / f"{name}.py"
    return load_pipeline(f"{path}:UploadedBills", path.parent)


def from_module(code: Path) -> type[PipelineDefinition]:
    """The class of a package importable by name (`etlkit run mypkg.jobs:UploadedBills`)."""
    name = f"uploadedpkg_{uuid.uuid4().hex[:8]}"
    (code / name).mkdir(parents=True)
    (code / name / "__init__.py").write_text("")
    (code / name / "jobs.py").write_text(JOB)
    sys.path.append(str(code))
    try:
        found: Any = importlib.import_module(f"{name}.jobs").UploadedBills
    finally:
        sys.path.remove(str(code))
    return found  # type: ignore[no-any-return]


@pytest.mark.parametrize("load", [from_file, from_module], ids=["file", "module"])
def test_workers_elsewhere_import_the_pipeline_from_its_uploaded_code(
    load: Any, dask_executor: DaskExecutor, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    pipeline = load(tmp_path / "code")
    ids = write_bills(tmp_path / "bills", files=2, rows=50)
    staging = Staging(f"s3://{s3_bucket}/up-{uuid.uuid4().hex[:6]}", **_s3(s3_endpoint))
    params = {"data_dir": str(tmp_path / "bills"), "out_dir": str(tmp_path / "out")}
    ship = cluster.ship_pipelines

    def shipped_then_gone(*args: Any, **kwargs: Any) -> None:
        ship(*args, **kwargs)
        (tmp_path / "code").rename(tmp_path / "gone")  # no worker can read it where it was

    with (
        mock.patch.object(cluster, "elsewhere", lambda addresses, here: list(addresses)),
        mock.patch.object(cluster, "ship_pipelines", shipped_then_gone),
    ):
        result = run(pipeline, staging, params, executor=dask_executor)

    result.raise_for_error()
    assert not (tmp_path / "code").exists()
    output = pl.read_parquet(tmp_path / "out" / "bills.parquet").sort("bill_id")
    assert output["bill_id"].to_list() == ids
    assert output["amount"].to_list() == [2 * float(i % 97) for i in ids]
    uploaded = dask_executor.client.run(
        lambda: [e for e in sys.path if "etlkit-pipelines" in e and Path(e).is_dir()]
    )
    assert all(uploaded.values()), uploaded


def _s3(endpoint: str) -> dict[str, Any]:
    return {"storage_options": storage_options(endpoint)}


def test_an_edited_upload_takes_the_place_of_the_one_before(tmp_path: Path) -> None:
    class Worker:
        local_directory = str(tmp_path / "worker")

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "mod.py").write_text("VERSION = 1\n")
    first = PipelinesUpload(str(tmp_path / "v"), pack(tmp_path / "v", ["mod.py"], "p"))
    (tmp_path / "v" / "mod.py").write_text("VERSION = 2\n")
    second = PipelinesUpload(str(tmp_path / "v"), pack(tmp_path / "v", ["mod.py"], "p"))
    before = list(sys.path)
    try:
        first.setup(Worker())
        second.setup(Worker())
        added = [e for e in sys.path if e not in before]
        assert len(added) == 1  # the first version's entry is gone
        assert sys.path[0] == added[0]
        assert (Path(added[0]) / "mod.py").read_text() == "VERSION = 2\n"
    finally:
        sys.path[:] = before


def test_code_packed_for_upload_leaves_caches_and_hidden_files_and_has_a_limit(
    tmp_path: Path,
) -> None:
    import io
    import zipfile

    code = tmp_path / "pipelines"
    for name in ("a.py", "sub/b.py", "sub/data.csv", ".env", "__pycache__/a.pyc", ".git/x"):
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text("x = 1\n")
    names = sorted(p.name for p in code.iterdir())
    archive = zipfile.ZipFile(io.BytesIO(pack(code, names, "p")))
    assert sorted(archive.namelist()) == ["a.py", "sub/b.py", "sub/data.csv"]

    with (
        mock.patch("etlkit.engine.distributed.plugin.UPLOAD_LIMIT", 10),
        pytest.raises(EtlkitError, match=r"Pipeline 'p': its code in .* over the 0 MiB .*biggest"),
    ):
        pack(code, names, "p")
