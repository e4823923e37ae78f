"""Choosing the executor on the command line (`run`, `retry`, `backfill`, `scheduler`), passing
it on to the scheduler's workers, and `etlkit show` of a run a distributed executor ran."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etlkit.cli import main
from etlkit.cli.parser import build_parser
from etlkit.cli.project import executor_options
from etlkit.runs import worker
from etlkit.runs.executors import executor_flags, worker_flags
from etlkit.scheduling.warmstart import launcher_for
from etlkit.settings.config import load_settings
from etlkit.storage.store import NodeUpdate, PartitionRecord, RunStore

PIPELINE = """
import pyarrow as pa
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class Tiny(ek.Pipeline):
    numbers = MemorySource(pa.table({"x": [1, 2, 3]}))
    out = MemorySink(numbers)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "tiny.py").write_text(PIPELINE)
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("ETLKIT_")]:
        monkeypatch.delenv(key)
    return tmp_path


def store_of(project: Path) -> RunStore:
    return RunStore(project / ".etlkit" / "etlkit.sqlite")


@pytest.mark.parametrize("command", ["run tiny", "retry latest", "backfill tiny", "scheduler"])
def test_every_command_that_starts_runs_takes_the_executor_flags(command: str) -> None:
    extra = (
        ["--start", "2025-01-01", "--end", "2025-01-02"] if command.startswith("backfill") else []
    )
    argv = [*command.split(), *extra, "--executor", "dask", "--scheduler-address", "tcp://h:8786"]
    args = build_parser().parse_args(argv)
    assert executor_options(args) == {"run.executor": "dask", "dask.address": "tcp://h:8786"}


def test_an_unknown_executor_flag_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "tiny", "--executor", "ray"])
    assert exited.value.code == 2
    assert "invalid choice: 'ray' (choose from 'local', 'dask')" in capsys.readouterr().err


def test_an_unknown_executor_setting_exits_with_the_configuration_code(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ETLKIT_RUN__EXECUTOR", "ray")
    assert main(["run", "tiny", "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "run.executor = ray (from env ETLKIT_RUN__EXECUTOR) must be one of local, dask" in err


def test_an_address_alone_means_dask_and_an_explicit_executor_wins() -> None:
    assert executor_flags(None, None) == {}
    assert executor_flags(None, "tcp://h:1") == {
        "run.executor": "dask",
        "dask.address": "tcp://h:1",
    }
    assert executor_flags("local", "tcp://h:1")["run.executor"] == "local"


def test_a_local_run_records_its_executor_and_shows_nothing_extra(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "tiny", "--executor", "local", "--progress", "none"]) == 0
    with store_of(project) as store:
        assert store.runs(limit=1)[0].executor == "local"
    capsys.readouterr()
    assert main(["show", "latest"]) == 0
    out = capsys.readouterr().out
    assert "executor" not in out
    assert "worker" not in out


def test_show_says_which_worker_ran_which_partition(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "tiny", "--progress", "none"]) == 0
    with store_of(project) as store:
        run_id = store.runs(limit=1)[0].run_id
        store.record_executor(run_id, "dask LocalCluster tcp://127.0.0.1:40211 (2 workers)")
        parts = (
            PartitionRecord("numbers#0", "tcp://127.0.0.1:41001", 2, "1", 0.3),
            PartitionRecord("numbers#1", "tcp://127.0.0.1:41002", 1_234, "0123456789abcdef", 1.5),
        )
        store.record_nodes(run_id, [NodeUpdate("numbers", "source", 1, "done", partitions=parts)])
    capsys.readouterr()
    assert main(["show", run_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "executor   dask LocalCluster tcp://127.0.0.1:40211 (2 workers)" in lines
    header = next(
        i for i, line in enumerate(lines) if line.split()[:3] == ["node", "partition", "worker"]
    )
    assert lines[header].split() == ["node", "partition", "worker", "rows", "attempt", "time"]
    assert lines[header + 1].split() == [
        "numbers",
        "numbers#0",
        "tcp://127.0.0.1:41001",
        "2",
        "1",
        "0.3s",
    ]
    assert lines[header + 2].split() == [
        "numbers",
        "numbers#1",
        "tcp://127.0.0.1:41002",
        "1,234",
        "01234567",
        "1.5s",
    ]


def test_the_scheduler_passes_its_executor_flags_to_every_worker(tmp_path: Path) -> None:
    from_cli = load_settings(tmp_path, env={}, cli=executor_flags("dask", "tcp://h:8786"))
    from_env = load_settings(tmp_path, env={"ETLKIT_RUN__EXECUTOR": "dask"})
    assert worker_flags(from_cli) == ["--executor", "dask", "--scheduler-address", "tcp://h:8786"]
    assert worker_flags(from_env) == []  # the worker reads the environment itself
    for start in ("cold", "warm"):
        launcher = launcher_for(
            start, tmp_path, pipelines_dir=tmp_path, worker_flags=worker_flags(from_cli)
        )
        cold = getattr(launcher, "cold", launcher)
        assert cold.command("r1")[-4:] == [
            "--executor",
            "dask",
            "--scheduler-address",
            "tcp://h:8786",
        ]


def test_the_worker_takes_the_executor_flags_above_the_settings_file(project: Path) -> None:
    (project / "etlkit.toml").write_text('[run]\nexecutor = "dask"\n')
    with store_of(project) as store:
        run = store.create_run(
            run_id="r1",
            pipeline="tiny",
            logical_date=datetime(2025, 3, 10, tzinfo=UTC),
            params={},
            trigger="manual",
            staging_root=str(project / ".etlkit" / "staging"),
        )
        argv = ["--project", str(project), "--run-id", run.run_id, "--log-level", "WARNING"]
        # a flag the settings refuse stops the worker before the run starts: the flags are read
        assert worker.main([*argv, "--scheduler-address", "not an address"]) == 2
        assert store.get_run("r1").state == "queued"
        assert worker.main([*argv, "--executor", "local"]) == 0
        assert (store.get_run("r1").state, store.get_run("r1").executor) == ("success", "local")


def test_show_lists_the_first_partitions_of_each_node_unless_asked_for_all(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "tiny", "--progress", "none"]) == 0
    with store_of(project) as store:
        run_id = store.runs(limit=1)[0].run_id
        parts = tuple(
            PartitionRecord(f"numbers#{i}", f"tcp://127.0.0.1:4100{i % 3}", 1, "1", 0.1)
            for i in range(25)
        )
        store.record_nodes(run_id, [NodeUpdate("numbers", "source", 1, "done", partitions=parts)])
    capsys.readouterr()
    assert main(["show", run_id]) == 0
    out = capsys.readouterr().out
    assert "numbers#19 " in out
    assert "numbers#20 " not in out
    assert "... 5 more on 3 workers (--partitions lists all)" in out
    assert main(["show", run_id, "--partitions"]) == 0
    out = capsys.readouterr().out
    assert "numbers#24 " in out
    assert "more on" not in out


def test_dask_without_dask_installed_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from etlkit.errors import ConfigError
    from etlkit.runs.executors import open_executor

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    settings = load_settings(tmp_path, env={"ETLKIT_RUN__EXECUTOR": "dask"})
    with (
        pytest.raises(ConfigError, match=r"from env ETLKIT_RUN__EXECUTOR\) needs Dask") as caught,
        open_executor(settings),
    ):
        pass
    assert 'pip install "etlkit-framework[dask]"' in str(caught.value)
    with open_executor(load_settings(tmp_path, env={})) as local:
        assert (local.executor, local.description) == (None, "local")
