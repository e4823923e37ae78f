"""The CLI in-process: exit codes per error class, messages without tracebacks, params."""

from __future__ import annotations

from pathlib import Path

import pytest

import etlkit as ek
from etlkit.cli import exit_code, main

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


def test_list_shows_name_schedule_and_summary(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("tiny")
    assert "manual" in line
    assert "A tiny pipeline for CLI tests." in line


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
    from etlkit.store import RunStore

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
    from etlkit.store import RunStore

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

    from etlkit.store import RunStore

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

    from etlkit.store import RunStore

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
