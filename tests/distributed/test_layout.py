"""How a plan is cut for a cluster, what a run sends the workers, and when a cluster is
refused: plain functions, no cluster needed."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etlkit.engine.distributed.cluster import check_staging_reachable, elsewhere, host_of
from etlkit.engine.distributed.segments import adjusted, layout
from etlkit.engine.distributed.spec import (
    context_from,
    context_json,
    options_from,
    options_json,
    pipeline_ref,
)
from etlkit.engine.plan import RunOptions, build_plan
from etlkit.errors import EtlkitError
from etlkit.model.nodes import Context
from pipelines.monthly_report import MonthlyReport
from pipelines.tpch_q1 import TpchQ1
from tests.distributed.jobs import Bills


def test_a_source_and_its_chain_of_transforms_is_one_segment() -> None:
    plan = build_plan(Bills.graph(), RunOptions())
    cut = layout(plan)
    assert cut.segments == (("bills", "taxed"),)
    assert cut.singles == ("total", "output", "summary")  # SQL and sinks read staging
    assert "taxed" in cut.staged  # read back by the SQL node and the sink
    assert cut.channels == {"taxed"}


def test_branches_are_segments_of_their_own_and_nothing_streams_into_sql() -> None:
    plan = build_plan(MonthlyReport.graph(), RunOptions())
    cut = layout(plan)
    assert cut.segments == (("billing", "billing_clean"), ("insurance", "coverage"))
    assert cut.singles == ("report", "report_parquet", "report_csv")
    assert {"billing_clean", "coverage", "report"} <= cut.staged
    assert adjusted(plan, cut.fields()).streamed_sql == frozenset()


def test_a_source_read_in_place_by_sql_runs_whole() -> None:
    plan = build_plan(TpchQ1.graph(), RunOptions())
    cut = layout(plan)
    assert cut.segments == ()
    assert cut.singles == ("lineitem", "summary", "report")


def test_a_node_judged_as_a_whole_is_not_split() -> None:
    # under drop, a unique key repeating across chunks is taken out after the last chunk
    plan = build_plan(Bills.graph(), RunOptions(on_invalid="drop"))
    cut = layout(plan)
    assert cut.segments == ()
    assert "bills" in cut.singles
    assert "bills" in cut.staged


def test_a_reused_output_is_read_back_from_staging() -> None:
    plan = build_plan(Bills.graph(), RunOptions(reuse=frozenset({"bills"})))
    cut = layout(plan)
    assert cut.segments == ()
    assert cut.singles == ("taxed", "total", "output", "summary")


def test_the_run_crosses_as_json_and_comes_back_equal() -> None:
    ctx = Context(
        pipeline="bills",
        run_id="r1",
        logical_date=datetime(2025, 3, 1, tzinfo=UTC),
        params={"data_dir": "x"},
        data_interval_start=datetime(2025, 2, 1, tzinfo=UTC),
        cursors={"bills": "42"},
    )
    assert context_from(context_json(ctx)) == ctx
    options = RunOptions(
        reuse=frozenset({"bills"}), cursor_seen={"bills": frozenset({"h1"})}, pools={"db": 2}
    )
    assert options_from(options_json(options)) == options
    ref = pipeline_ref(Bills.graph())
    assert (ref.module, ref.qualname) == ("tests.distributed.jobs", "Bills")
    assert ref.folder == str(Path(__file__).resolve().parents[2])


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("tcp://10.0.0.5:8786", "10.0.0.5"),
        ("tls://worker-3.internal:40000", "worker-3.internal"),
        ("tcp://[fe80::1]:8786", "fe80::1"),
        ("inproc://10.0.0.5/123/1", ""),
    ],
)
def test_the_host_of_a_dask_address(address: str, host: str) -> None:
    assert host_of(address) == host


def test_local_staging_with_workers_elsewhere_is_refused() -> None:
    here = {"node-a", "10.0.0.5"}
    workers = ["tcp://10.0.0.5:4000", "tcp://127.0.0.1:4001", "tcp://10.0.0.7:4000"]
    assert elsewhere(workers, here) == ["tcp://10.0.0.7:4000"]
    with pytest.raises(EtlkitError, match=r"workers tcp://10\.0\.0\.7:4000 are on other") as err:
        check_staging_reachable("bills", True, "/srv/staging", workers, here)
    assert "[staging] root" in str(err.value)
    assert "s3://" in str(err.value)
    check_staging_reachable("bills", False, "s3://lake/staging", workers, here)  # shared
    check_staging_reachable("bills", True, "/srv/staging", workers[:2], here)  # all here


def test_the_executor_imports_dask_only_when_used() -> None:
    code = (
        "import sys, etlkit.engine.distributed, etlkit.engine.execution\n"
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_importing_the_executor_leaves_how_exceptions_pickle_alone() -> None:
    # distributed registers tblib's reducers for every exception class on import, which then
    # pickle their causes too: a cause that cannot be rebuilt from its args (a database
    # driver's error, say) makes its wrapper unpicklable (tests/connectors/test_postgres.py)
    code = (
        "import pickle\n"
        "class DriverError(Exception):\n"
        "    def __init__(self, message, *, status_code):\n"
        "        super().__init__(message)\n"
        "    def __reduce__(self):\n"
        "        return (type(self), self.args)\n"
        "try:\n"
        "    try:\n"
        "        raise DriverError('password authentication failed', status_code=7)\n"
        "    except DriverError as exc:\n"
        "        raise ValueError('the connection failed') from exc\n"
        "except ValueError as exc:\n"
        "    error = exc\n"
        "import etlkit.engine.distributed.plugin\n"
        "from etlkit.engine.distributed.cluster import start_client\n"
        "print(pickle.loads(pickle.dumps(error)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "the connection failed"
