"""What nodes log on the workers comes back with each task's answer, bounded, and lands in the
run's log as a local run's lines do (`etlkit logs` and `show` read it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etlkit.engine import runlog
from etlkit.engine.distributed import DaskExecutor
from etlkit.engine.distributed.tasks import LOG_LIMIT
from etlkit.engine.execution import new_run_id
from etlkit.storage.staging import Staging
from tests.distributed.conftest import run
from tests.distributed.jobs import LoggingBills, write_bills

pytestmark = pytest.mark.slow


def logged(
    executor: DaskExecutor | None, tmp_path: Path, name: str, chatter: int
) -> list[dict[str, str]]:
    """The run's log lines of node `taxed`, from a run captured as `etlkit run` captures it."""
    params = {
        "data_dir": str(tmp_path / "bills"),
        "out_dir": str(tmp_path / name / "out"),
        "chatter": str(chatter),
    }
    run_id = new_run_id()
    with runlog.capture(str(tmp_path / "logs"), LoggingBills.name, run_id) as path:
        result = run(
            LoggingBills,
            Staging(str(tmp_path / name / "staging")),
            params,
            executor=executor,
            run_id=run_id,
        )
    result.raise_for_error()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    read = runlog.read_log(str(tmp_path / "logs"), LoggingBills.name, run_id, node="taxed")
    assert len(read) == len([line for line in lines if line["node"] == "taxed"])
    return [line for line in lines if line["node"] == "taxed"]


def test_what_a_node_logs_on_a_worker_lands_in_the_runs_log(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    write_bills(tmp_path / "bills", files=3, rows=200)

    local = logged(None, tmp_path, "local", 0)
    dask = logged(dask_executor, tmp_path, "dask", 0)

    def said(lines: list[dict[str, str]]) -> list[str]:
        return sorted(
            line["message"] for line in lines if line["logger"] == "tests.distributed.jobs"
        )

    assert said(local)
    assert said(dask) == said(local)  # every line a local run logs, tagged with its node
    ours = [line for line in dask if line["logger"] == "tests.distributed.jobs"]
    assert {line["level"] for line in ours} == {"WARNING"}
    assert all(line["worker"].startswith("tcp://127.0.0.1:") for line in ours)
    assert len({line["partition"] for line in ours}) == 3  # which partition logged it


def test_a_task_sends_back_a_bounded_log_and_says_what_it_cut(
    dask_executor: DaskExecutor, tmp_path: Path
) -> None:
    write_bills(tmp_path / "bills", files=1, rows=200)

    lines = logged(dask_executor, tmp_path, "dask", 1_000)

    assert sum(len(str(value)) for line in lines for value in line.values()) < 2 * LOG_LIMIT
    [cut] = [line for line in lines if "were cut" in line["message"]]
    assert cut["level"] == "WARNING"
    assert f"at most {LOG_LIMIT} characters" in cut["message"]
    assert lines[0]["message"].startswith("taxing bills 0 to ")  # the first lines are kept
