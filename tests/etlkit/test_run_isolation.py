"""Two runs in one process see only their own connections, pool slots and log lines."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import etlkit as ek
from etlkit.engine import runlog
from etlkit.engine.runlog import read_log
from etlkit.settings import connections

WAIT_SECONDS = 10.0  # a bound on a wait that the fixed code never reaches


class Tenant(ek.Task):
    """Resolves the connection `lake`, logs, and waits inside pool `shared` for the other run."""

    def __init__(self, seen: dict[str, str], meet: threading.Barrier) -> None:
        super().__init__()
        self.seen = seen
        self.meet = meet

    def run(self, ctx: ek.Context) -> None:
        database = connections.resolve("lake").database or ""
        self.seen[ctx.pipeline] = database
        logging.getLogger("etlkit.tests.tenant").info("%s resolved %s", ctx.pipeline, database)
        # both runs' nodes are inside the pool at once only if each run counts its own slots
        self.meet.wait(WAIT_SECONDS)


def test_two_runs_in_threads_see_only_their_own_connections_pool_slots_and_logs(
    tmp_path: Path,
) -> None:
    seen: dict[str, str] = {}
    meet = threading.Barrier(2)
    activated = threading.Barrier(2)

    class Alpha(ek.Pipeline):
        work = Tenant(seen, meet).options(pool="shared")

    class Beta(ek.Pipeline):
        work = Tenant(seen, meet).options(pool="shared")

    results: dict[str, ek.RunResult] = {}

    def run(pipeline: type[ek.Pipeline], database: str) -> None:
        state = tmp_path / pipeline.name
        settings = ek.load_settings(tmp_path, env={}, cli={"paths.state_dir": str(state)})
        connections.activate({"lake": connections.Connection("lake", "duckdb", database=database)})
        activated.wait(WAIT_SECONDS)  # both threads have activated before either run starts
        results[pipeline.name] = pipeline.run(settings=settings, pools={"shared": 1})

    threads = [
        threading.Thread(target=run, args=(Alpha, "alpha.duckdb")),
        threading.Thread(target=run, args=(Beta, "beta.duckdb")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for name in ("alpha", "beta"):
        assert results[name].state == "success", results[name].error
    assert seen == {"alpha": "alpha.duckdb", "beta": "beta.duckdb"}
    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        logs_dir = ek.load_settings(
            tmp_path, env={}, cli={"paths.state_dir": str(tmp_path / name)}
        ).paths.logs_dir
        messages = [line.message for line in read_log(logs_dir, name, results[name].run_id)]
        assert f"{name} resolved {name}.duckdb" in messages
        assert not any(other in message for message in messages)


def test_a_run_ending_keeps_the_info_lines_of_a_run_still_capturing(tmp_path: Path) -> None:
    package = logging.getLogger("etlkit")
    before = package.level
    package.setLevel(logging.WARNING)  # as when the console shows warnings only
    try:
        first = runlog.capture(str(tmp_path), "alpha", "run-a")
        second = runlog.capture(str(tmp_path), "beta", "run-b")
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # alpha ends while beta still runs
        logging.getLogger("etlkit.tests").info("beta goes on", extra={"run_id": "run-b"})
        second.__exit__(None, None, None)

        assert [line.message for line in read_log(str(tmp_path), "beta", "run-b")] == [
            "beta goes on"
        ]
        assert package.level == logging.WARNING  # the last run to end gave the level back
    finally:
        package.setLevel(before)


def test_a_thread_that_activated_nothing_is_told_connections_belong_to_a_thread() -> None:
    previous = connections.activate({"lake": connections.Connection("lake", "duckdb")})
    errors: list[Exception] = []

    def resolve() -> None:
        try:
            connections.resolve("lake")
        except Exception as exc:  # the assertion below reads it
            errors.append(exc)

    try:
        thread = threading.Thread(target=resolve)
        thread.start()
        thread.join()
    finally:
        connections.activate(previous)

    assert len(errors) == 1
    assert isinstance(errors[0], ek.ConnectionNotFoundError)
    assert "or not in this thread" in str(errors[0])
    assert "in the thread that starts the run" in str(errors[0])
