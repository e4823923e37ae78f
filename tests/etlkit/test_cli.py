"""The CLI in-process: exit codes per error class, messages without tracebacks, params."""

from __future__ import annotations

from pathlib import Path

import pytest

import etlkit as ek
from etlkit.cli import exit_code, main
from etlkit.storage.store import RunStore

PIPELINE = '''
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class Tiny(ek.Pipeline):
    """A tiny pipeline for CLI tests."""
    params = {"rows": "3"}
    numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
    out = MemorySink(numbers)
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "tiny.py").write_text(PIPELINE)
    monkeypatch.chdir(tmp_path)
    for key in [k for k in __import__("os").environ if k.startswith("ETLKIT_")]:
        monkeypatch.delenv(key)
    return tmp_path


def test_run_prints_plain_progress_outside_a_terminal(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "tiny", "--date", "2025-01-31", "--param", "rows=3"]) == 0
    out = capsys.readouterr().out
    assert "node numbers done: 3 rows in, 3 rows out" in out
    assert (project / ".etlkit" / "staging" / "tiny").is_dir()


INTERVAL_PIPELINE = """
from datetime import timedelta
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class EverySixHoursWithLongName(ek.Pipeline):
    \"\"\"Runs on an interval.\"\"\"
    schedule = timedelta(hours=6)
    numbers = MemorySource(pa.table({"x": [1]}))
    out = MemorySink(numbers)
"""


def test_list_shows_a_header_and_aligned_name_schedule_file_and_summary(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "pipelines" / "every_six_hours_with_long_name.py").write_text(INTERVAL_PIPELINE)
    assert main(["list"]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["pipeline", "schedule", "file", "description"]
    by_name = {line.split()[0]: line for line in lines}
    assert set(by_name) == {"tiny", "every_six_hours_with_long_name"}
    assert "manual" in by_name["tiny"]
    assert "A tiny pipeline for CLI tests." in by_name["tiny"]
    assert "every 6h" in by_name["every_six_hours_with_long_name"]
    for column in ("schedule", "file", "description"):
        starts = {line.index(word) for line, word in _cells(header, lines, column)}
        assert len(starts) == 1, f"column {column} is not aligned"


def _cells(header: str, lines: list[str], column: str) -> list[tuple[str, str]]:
    """(line, its word in `column`) for the header and every line, columns split on 2+ spaces."""
    import re

    index = header.split().index(column)
    return [(line, re.split(r"\s{2,}", line)[index]) for line in [header, *lines]]


def test_errors_print_one_line_and_map_to_exit_codes(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "tiny", "--param", "rowz=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Pipeline 'tiny' has no param 'rowz'")
    assert "Traceback" not in err

    assert main(["run", "nope"]) == 3
    assert "No pipeline named 'nope'" in capsys.readouterr().err

    assert main(["run", "tiny", "--param", "novalue"]) == 2
    assert "--param 'novalue' is not key=value" in capsys.readouterr().err


def test_exit_code_follows_the_error_a_node_error_wraps() -> None:
    wrapped = ek.NodeError("x", pipeline="p", node="n", run_id="r")
    wrapped.__cause__ = ek.ConnectorError("file missing")
    assert exit_code(wrapped) == 5
    plain = ek.NodeError("x", pipeline="p", node="n", run_id="r")
    plain.__cause__ = ValueError("boom")
    assert exit_code(plain) == 1
    assert exit_code(ek.DataValidationError("bad")) == 4
    assert exit_code(ek.ConfigError("bad")) == 2
    assert exit_code(RuntimeError("unexpected")) == 1


def test_settings_file_is_read_from_the_project(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "etlkit.toml").write_text("[run]\nchunk_rowz = 5\n")
    assert main(["run", "tiny"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_connections_list_masks_secrets_and_test_reports_failure(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETLKIT_CONN_WAREHOUSE", "postgresql://etl:hunter2@127.0.0.1:9/dw")
    assert main(["connections", "list"]) == 0
    out = capsys.readouterr().out
    assert "warehouse" in out
    assert "postgresql://etl:***@127.0.0.1:9/dw" in out
    assert "hunter2" not in out

    assert main(["connections", "test", "warehouse", "--timeout", "1"]) == 5
    captured = capsys.readouterr()
    assert "warehouse: FAILED" in captured.out
    assert "hunter2" not in captured.out + captured.err

    assert main(["connections", "test", "warehouse_x"]) == 2
    assert "Did you mean 'warehouse'" in capsys.readouterr().err


def test_state_show_and_reset_incremental_cursors(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        store.set_state("tiny", "cursor.numbers", "42")
    assert main(["state", "show", "tiny"]) == 0
    assert "cursor.numbers = 42" in capsys.readouterr().out
    assert main(["state", "reset", "tiny", "numbers"]) == 0
    assert "reset 1 value(s)" in capsys.readouterr().out
    assert main(["state", "show", "tiny"]) == 0
    assert "no state stored" in capsys.readouterr().out


INVALID = """
import pandera.polars as pdp
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class Claim(pdp.DataFrameModel):
    amount: int = pdp.Field(ge=0)

class Insurance(ek.Pipeline):
    insurance = MemorySource(pa.table({"amount": [1, -2, 3]}), schema=Claim)
    out = MemorySink(insurance)
"""


def test_retry_of_a_run_that_failed_validation_reports_the_validation_error_again(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from etlkit.storage.store import RunStore

    (project / "pipelines" / "insurance.py").write_text(INVALID)
    assert main(["run", "insurance", "--date", "2025-01-31", "--progress", "none"]) == 4
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        run_id = store.runs("insurance")[0].run_id
    capsys.readouterr()

    assert main(["retry", run_id, "--progress", "none"]) == 4

    err = capsys.readouterr().err
    assert "broke schema Claim" in err
    assert "immutable" not in err
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        assert (store.get_run(run_id).state, store.get_run(run_id).attempt) == ("failed", 2)


def test_a_node_retried_after_a_validation_error_reports_the_validation_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    retried = INVALID.replace(
        "schema=Claim)",
        "schema=Claim).options(\n        retries=1, retry_delay=0, retry_validation_errors=True)",
    )
    (project / "pipelines" / "insurance.py").write_text(retried)

    assert main(["run", "insurance", "--progress", "none"]) == 4

    err = capsys.readouterr().err
    assert "broke schema Claim" in err
    assert "immutable" not in err


BERLIN = """
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class Berlin(ek.Pipeline):
    schedule = "@daily"
    timezone = "Europe/Berlin"
    numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
    out = MemorySink(numbers)
"""


def test_run_of_a_scheduled_pipeline_reads_its_date_in_the_pipelines_timezone(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from etlkit.storage.store import RunStore

    (project / "pipelines" / "berlin.py").write_text(BERLIN)

    assert main(["run", "berlin", "--date", "2026-03-29", "--progress", "none"]) == 0

    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        record = store.runs("berlin")[0]
    assert record.logical_date == datetime(2026, 3, 28, 23, tzinfo=UTC)  # Berlin midnight
    assert record.timezone == "Europe/Berlin"
    assert (record.data_interval_start, record.data_interval_end) == (
        datetime(2026, 3, 28, 23, tzinfo=UTC),
        datetime(2026, 3, 29, 22, tzinfo=UTC),  # a 23-hour day: summer time starts
    )
    capsys.readouterr()
    assert main(["runs", "berlin"]) == 0
    assert " 2026-03-29 " in capsys.readouterr().out.splitlines()[1]
    assert main(["show", record.run_id]) == 0
    assert "date       2026-03-29 " in capsys.readouterr().out


NOTIFYING = """
import json
from pathlib import Path

import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource


def page(ctx):
    with open(Path(__file__).parent.parent / "pages.jsonl", "a") as fh:
        fh.write(json.dumps(ctx.as_dict()) + "\\n")


class Paged(ek.Pipeline):
    on_failure = [page]
    numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
    out = MemorySink(numbers)
"""


def test_a_run_whose_process_was_killed_is_failed_and_notified_once_by_the_next_command(
    project: Path, capsys: pytest.CaptureFixture[str], dead_pid: int
) -> None:
    import json
    from datetime import UTC, datetime

    from etlkit.storage.store import RunStore

    (project / "pipelines" / "paged.py").write_text(NOTIFYING)
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        store.create_run(
            run_id="20250131T000000Z-abcdef",
            pipeline="paged",
            logical_date=datetime(2025, 1, 31, tzinfo=UTC),
            params={},
            trigger="manual",
            staging_root=str(project / ".etlkit" / "staging"),
        )
        store.start_run("20250131T000000Z-abcdef", pid=dead_pid)  # then it was SIGKILLed

    assert main(["runs"]) == 0
    assert main(["status"]) == 0
    assert main(["run", "paged", "--date", "2025-01-31", "--progress", "none"]) == 0

    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[:5] == [
        "20250131T000000Z-abcdef",
        "paged",
        "2025-01-31",
        "manual",
        "failed",
    ]
    [page] = [json.loads(x) for x in (project / "pages.jsonl").read_text().splitlines()]
    assert (page["event"], page["run_id"], page["state"]) == (
        "failure",
        "20250131T000000Z-abcdef",
        "failed",
    )
    assert f"its process {dead_pid} on" in page["error"]
    assert page["started_at"] is not None
    assert page["finished_at"] is not None


def test_backfill_help_says_missing_keeps_failed_runs(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["backfill", "--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert "missing: only dates without a finished run (default; failed runs stay failed)" in text
    assert "successful" not in text


def test_version_prints_the_installed_distribution_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"etlkit {version('etlkit-framework')}\n"


def test_help_shows_examples_and_param_is_described(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text
    assert "etlkit run monthly_report --date 2025-03-01" in text
    assert "python -m data.generate" in text
    for command in ("run", "trigger"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "set a param the pipeline declares" in capsys.readouterr().out


POOLED = """
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class Pooled(ek.Pipeline):
    numbers = MemorySource(pa.table({"x": [1]}))
    out = MemorySink(numbers).options(pool="warehous")
"""


def test_validate_reports_a_node_in_an_undefined_pool(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "etlkit.toml").write_text("[pools]\nwarehouse = 2\nbatch = 1\n")
    (project / "pipelines" / "pooled.py").write_text(POOLED)
    assert main(["validate"]) == 3
    out = capsys.readouterr().out
    assert "ok   tiny" in out
    assert (
        "pipelines/pooled.py: pipeline 'pooled': node 'out' uses pool 'warehous', which is "
        "not defined; pools are 'batch' and 'warehouse' (add `warehous = N` under [pools] in "
        "etlkit.toml). Did you mean 'warehouse'?"
    ) in out
    assert out.rstrip().endswith("2 pipeline(s) checked, 1 problem(s)")


@pytest.mark.parametrize("date", ["9999-12-31T23:59:59-05:00", "9999-12-31", "0001-01-01"])
def test_a_date_at_the_end_of_the_calendar_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str], date: str
) -> None:
    for command in ("run", "trigger"):
        assert main([command, "tiny", "--date", date]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: Logical date '{date}' is out of range: use a date between")


def test_query_rejects_an_unsafe_pipeline_name_as_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "tiny", "--progress", "none"]) == 0
    assert main(["query", "--pipeline", "../tiny", "select 1"]) == 2
    assert "error: --pipeline '../tiny' is not safe in a staging path" in capsys.readouterr().err


def test_query_shell_says_which_run_it_opened(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    assert main(["run", "tiny", "--progress", "none"]) == 0
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        latest = store.runs("tiny", limit=1)[0].run_id
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(".tables\n"))
    assert main(["query", "--shell"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Views over run {latest} of pipeline 'tiny' (")
    assert "numbers" in out


FAILING = """
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class Explode(ek.Transform[None, None]):
    def process(self, batch, ctx):
        raise ZeroDivisionError("division by zero in amount")

class Failing(ek.Pipeline):
    numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
    exploded = Explode(numbers)
    out = MemorySink(exploded)
"""


@pytest.mark.parametrize("level", ["warning", "info"])
def test_a_failed_run_prints_its_error_once_and_its_log_keeps_it(
    project: Path, capsys: pytest.CaptureFixture[str], level: str
) -> None:
    (project / "pipelines" / "failing.py").write_text(FAILING)
    assert main(["--log-level", level, "run", "failing", "--progress", "none"]) == 1
    err = capsys.readouterr().err
    assert err.count("division by zero in amount") == 1, err
    assert err.startswith("error: Node 'exploded' in pipeline 'failing'") or level == "info"

    assert main(["--log-level", level, "retry", "latest", "--progress", "none"]) == 1
    assert capsys.readouterr().err.count("division by zero in amount") == 1

    assert main(["logs", "latest", "exploded"]) == 0
    log = capsys.readouterr().out
    assert "ERROR" in log
    assert "division by zero in amount" in log


def test_show_logs_and_retry_take_latest(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "latest"]) == 6
    assert "No runs yet in the run store" in capsys.readouterr().err
    assert main(["run", "tiny", "--progress", "none"]) == 0
    (project / "pipelines" / "failing.py").write_text(FAILING)
    assert main(["run", "failing", "--progress", "none"]) == 1
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        newest = store.runs(limit=1)[0]
    assert newest.pipeline == "failing"
    capsys.readouterr()

    assert main(["show", "latest"]) == 0
    assert f"run        {newest.run_id}" in capsys.readouterr().out
    assert main(["logs", "latest"]) == 0
    assert "division by zero" in capsys.readouterr().out
    assert main(["retry", "latest", "--progress", "none"]) == 1
    assert f"(run {newest.run_id})" in capsys.readouterr().err


def test_a_fresh_clone_without_sample_data_gets_a_hint_to_generate_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "pipelines" / "needs_data.py").write_text(
        "import pandera.polars as pdp\n"
        "import etlkit as ek\n"
        "from connectors.files import CsvSource\n"
        "from etlkit.testing import MemorySink\n\n"
        "class Row(pdp.DataFrameModel):\n"
        "    x: int\n\n"
        "class NeedsData(ek.Pipeline):\n"
        "    params = {'data_dir': 'data/demo'}\n"
        "    rows = CsvSource('{data_dir}/*.csv', schema=Row)\n"
        "    out = MemorySink(rows)\n"
    )
    (project / "data").mkdir()
    (project / "data" / "generate.py").write_text("")
    assert main(["run", "needs_data", "--progress", "none"]) == 5
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: Node 'rows' in pipeline 'needs_data'")
    assert err[1].startswith("hint: no sample data yet? Generate it with `python -m data.generate")

    (project / "data" / "demo").mkdir()
    assert main(["run", "needs_data", "--progress", "none"]) == 5
    assert "hint:" not in capsys.readouterr().err


SCHEDULED = """
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class {name}(ek.Pipeline):
    schedule = "@daily"
    start_date = "{start}"
    numbers = MemorySource(pa.table({{"x": [1]}}))
    out = MemorySink(numbers)
"""


def test_status_marks_a_next_due_time_in_the_past_as_overdue(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipelines = project / "pipelines"
    (pipelines / "late.py").write_text(SCHEDULED.format(name="Late", start="2025-01-01"))
    (pipelines / "later.py").write_text(SCHEDULED.format(name="Later", start="2999-01-01"))
    assert main(["status"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "(overdue)" in lines["late"]
    assert " 2999-01-0" in lines["later"]
    assert "overdue" not in lines["later"]
    assert "overdue" not in lines["tiny"]


def test_status_forgets_schedulers_that_were_killed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys
    from datetime import UTC, datetime

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        store.scheduler_heartbeat("killed", pid=int(gone.stdout), started_at=datetime.now(UTC))
    assert main(["status"]) == 0
    with RunStore(project / ".etlkit" / "etlkit.sqlite") as store:
        assert store.schedulers() == []


SUMMARIZED = """
import pandera.polars as pdp
import pyarrow as pa
import etlkit as ek
from connectors.files import ParquetSink
from etlkit.testing import MemorySink, MemorySource

class Row(pdp.DataFrameModel):
    x: int = pdp.Field(ge=0)

class Summarized(ek.Pipeline):
    kept = MemorySource(pa.table({"x": [1, -2, 3, 4]}), schema=Row).expect(on_invalid="quarantine")
    dropped = MemorySource(pa.table({"x": [-1, 5]}), schema=Row).expect(on_invalid="drop")
    both = ek.Sql("select x from {kept} union all select x from {dropped}")
    total = ek.Sql("select sum(x) as total, count(*) as n from {both}")
    out = ParquetSink("out/both.parquet", both)
    memory = MemorySink(total)
"""


def test_run_summary_and_show_say_what_sinks_wrote_where_and_what_sql_read(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "pipelines" / "summarized.py").write_text(SUMMARIZED)
    assert main(["run", "summarized", "--progress", "plain"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "  " in line}
    # node, kind, state, rows in, rows out, ...
    assert rows["both"][3:5] == ["4", "4"]  # 3 kept + 1 not dropped, read by DuckDB
    assert rows["total"][3:5] == ["4", "1"]
    assert rows["out"][3:5] == ["4", "4"]  # written, not 0
    assert rows["memory"][3:5] == ["1", "1"]
    target = (project / "out" / "both.parquet").as_uri()
    assert f"out wrote 4 rows to {target}" in out
    assert "memory wrote 1 rows to memory://memory" in out
    assert "kept left out 1 invalid rows" in out
    assert "dropped left out 1 invalid rows" in out

    assert main(["show", "latest"]) == 0
    shown = capsys.readouterr().out
    table = {line.split()[0]: line.split() for line in shown.splitlines() if "  " in line}
    assert table["out"][3:5] == ["4", "4"]
    assert table["both"][3:5] == ["4", "4"]
    assert f"out wrote 4 rows to {target}" in shown
    assert "memory wrote 1 rows to memory://memory" in shown
    assert (
        'kept: 1 invalid rows quarantined (etlkit query "select * from kept_rejects" --run' in shown
    )
    assert "dropped: 1 invalid rows dropped" in shown


FROM_CSV = """
import pandera.polars as pdp
import etlkit as ek
from connectors.files import CsvSource
from etlkit.testing import MemorySink

class Row(pdp.DataFrameModel):
    x: int

class FromCsv(ek.Pipeline):
    rows = CsvSource("input/*.csv", schema=Row)
    total = ek.Sql("select sum(x) as total from {rows}")
    out = MemorySink(total)
"""


def test_query_show_tables_lists_the_views_not_internal_registrations(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "pipelines" / "from_csv.py").write_text(FROM_CSV)
    (project / "input").mkdir()
    (project / "input" / "a.csv").write_text("x\n1\n2\n")
    assert main(["run", "from_csv", "--progress", "none"]) == 0
    capsys.readouterr()
    assert main(["query", "--pipeline", "from_csv", "show tables", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["name", "all_rows", "all_total", "rows", "total"]
    assert main(["query", "--pipeline", "from_csv", "SHOW ALL TABLES"]) == 0
    out = capsys.readouterr().out
    assert "all_rows" in out
    assert "__etlkit" not in out
    assert main(["query", "--pipeline", "from_csv", "select * from rows", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["x", "1", "2"]
