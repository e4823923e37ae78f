"""The coordinator's commit of a partitioned node: each partition's finish read once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from etlkit.engine.distributed import DaskExecutor
from etlkit.storage.partitions import FINISHED
from etlkit.storage.staging import Staging
from tests.distributed.conftest import run
from tests.distributed.jobs import Bills, write_bills

pytestmark = pytest.mark.slow


def test_a_commit_reads_each_partition_finish_once(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    ids = write_bills(tmp_path / "bills", files=4, rows=100)
    params = {"data_dir": str(tmp_path / "bills"), "out_dir": str(tmp_path / "out")}
    staging = Staging(str(tmp_path / "staging"))
    fs = staging.fs  # the coordinator's: the workers, other processes, have their own
    reads: Counter[str] = Counter()

    def counting(method: Any) -> Any:
        def read(path: str, *args: Any, **kwargs: Any) -> Any:
            if str(path).endswith(FINISHED):
                reads[str(path).split("/staging/", 1)[1]] += 1
            return method(path, *args, **kwargs)

        return read

    # every read of a local file opens it (`cat_file` too): count the opens
    with mock.patch.object(fs, "open", counting(fs.open)):
        result = run(Bills, staging, params, executor=dask_executor)

    result.raise_for_error()
    assert staging.manifest(Bills.name, result.run_id, "taxed").rows == len(ids)  # type: ignore[union-attr]
    taxed = {path for path in reads if "/taxed.parts/" in path}
    assert len(taxed) == 4  # the node with dataset checks (a unique key): checked, committed
    assert set(reads.values()) == {1}, reads  # one read per partition and node, no more
