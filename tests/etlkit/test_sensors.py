"""Sensors: FileSensor on fsspec paths, RunSensor against a real run store, and the wait loop."""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from etlkit.errors import ConfigError, PipelineDefinitionError, RunCancelledError
from etlkit.model.nodes import Context, Sensor
from etlkit.model.sensors import FileSensor, RunSensor, SensorTimeoutError, wait
from etlkit.settings import connections
from etlkit.storage.store import RunState, RunStore

MARCH_1 = datetime(2025, 3, 1, tzinfo=UTC)


def make_ctx(logical_date: datetime = MARCH_1, store_path: str | None = None) -> Context:
    return Context(
        pipeline="monthly_report", run_id="r1", logical_date=logical_date, store_path=store_path
    )


def named(sensor: FileSensor | RunSensor, name: str = "billing_ready") -> FileSensor | RunSensor:
    sensor.name = name
    return sensor


# -- FileSensor -----------------------------------------------------------------------------------


def test_file_sensor_passes_once_the_file_exists(tmp_path: Path) -> None:
    sensor = FileSensor(str(tmp_path / "ready.csv"))
    assert sensor.poke(make_ctx()) is False
    (tmp_path / "ready.csv").write_text("a\n1\n")
    assert sensor.poke(make_ctx()) is True


def test_file_sensor_renders_the_path_template_with_ds(tmp_path: Path) -> None:
    sensor = FileSensor(str(tmp_path / "billing" / "{ds}" / "billing_data.csv"))
    other_day = tmp_path / "billing" / "2025-02-01"
    other_day.mkdir(parents=True)
    (other_day / "billing_data.csv").write_text("x")
    assert sensor.poke(make_ctx()) is False

    today = tmp_path / "billing" / "2025-03-01"
    today.mkdir()
    (today / "billing_data.csv").write_text("x")
    assert sensor.poke(make_ctx()) is True
    assert sensor.describe(make_ctx()) == f"file {today / 'billing_data.csv'}"


def test_file_sensor_glob_passes_when_any_file_matches(tmp_path: Path) -> None:
    sensor = FileSensor(str(tmp_path / "in" / "{ds_nodash}_*.csv"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "20250301_a.json").write_text("x")
    assert sensor.poke(make_ctx()) is False
    (tmp_path / "in" / "20250301_part1.csv").write_text("x")
    assert sensor.poke(make_ctx()) is True


def test_file_sensor_min_size_ignores_smaller_files(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    sensor = FileSensor(str(path), min_size=10)
    path.write_text("")  # an empty file still being written
    assert sensor.poke(make_ctx()) is False
    path.write_text("0123456789")
    assert sensor.poke(make_ctx()) is True
    assert sensor.describe(make_ctx()) == f"file {path} (at least 10 bytes)"


def test_file_sensor_glob_with_min_size_needs_one_large_enough_file(tmp_path: Path) -> None:
    sensor = FileSensor(str(tmp_path / "*.csv"), min_size=5)
    (tmp_path / "a.csv").write_text("1")
    assert sensor.poke(make_ctx()) is False
    (tmp_path / "b.csv").write_text("12345")
    assert sensor.poke(make_ctx()) is True


def test_file_sensor_a_directory_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "2025-03-01").mkdir()
    assert FileSensor(str(tmp_path / "{ds}")).poke(make_ctx()) is False


def test_file_sensor_works_on_an_fsspec_url() -> None:
    import fsspec

    root = f"memory://etlkit-sensor-{uuid.uuid4().hex}"
    sensor = FileSensor(root + "/{ds}/done.flag")
    assert sensor.poke(make_ctx()) is False
    fs = fsspec.filesystem("memory")
    try:
        with fs.open(f"{root}/2025-03-01/done.flag", "wb") as fh:
            fh.write(b"ok")
        assert sensor.poke(make_ctx()) is True
    finally:
        fs.rm(root, recursive=True)


def test_file_sensor_with_an_unknown_connection_fails_at_poke(tmp_path: Path) -> None:
    previous = connections.activate({})
    try:
        sensor = FileSensor(str(tmp_path / "x.csv"), conn="lake")
        with pytest.raises(ConfigError, match="lake"):
            sensor.poke(make_ctx())
    finally:
        connections.activate(previous)


def test_file_sensor_takes_storage_options_from_its_connection(tmp_path: Path) -> None:
    lake = connections.Connection("lake", "file")
    previous = connections.activate({"lake": lake})
    try:
        (tmp_path / "x.csv").write_text("x")
        assert FileSensor(str(tmp_path / "x.csv"), conn="lake").poke(make_ctx()) is True
    finally:
        connections.activate(previous)


def test_file_sensor_rejects_a_negative_min_size() -> None:
    with pytest.raises(PipelineDefinitionError, match="min_size must be >= 0"):
        FileSensor("x.csv", min_size=-1)


def test_file_sensor_template_error_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"uses \{region\}"):
        FileSensor(str(tmp_path / "{region}.csv")).poke(make_ctx())


@pytest.fixture
def s3_lake(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server with an empty bucket, and the connection `lake` to it activated."""
    s3_server = pytest.importorskip("tests.s3_server", reason="needs moto (tests/s3_server.py)")
    import s3fs

    for name in s3_server.AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    server = s3_server.S3Server()
    endpoint = server.start()
    for name, value in s3_server.aws_env(endpoint).items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    previous = connections.activate({"lake": s3_server.connection(endpoint)})
    try:
        server.create_bucket("sensor-bucket")
        yield endpoint
    finally:
        connections.activate(previous)
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.mark.s3
@pytest.mark.slow
def test_file_sensor_on_s3_with_a_connection(s3_lake: str) -> None:
    import fsspec

    sensor = FileSensor("s3://sensor-bucket/billing/{ds}/*.csv", conn="lake")
    assert sensor.poke(make_ctx()) is False
    fs = fsspec.filesystem("s3", **connections.resolve("lake").storage_options())
    fs.pipe("s3://sensor-bucket/billing/2025-03-01/part-0.csv", b"a\n1\n")
    assert sensor.poke(make_ctx()) is True  # the listing is not served from a stale cache
    assert FileSensor("s3://sensor-bucket/billing/{ds}/part-0.csv", conn="lake").poke(make_ctx())


# -- RunSensor ------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def add_run(
    store: RunStore, run_id: str, date: datetime, state: RunState, pipeline: str = "imports"
) -> None:
    store.create_run(
        run_id=run_id,
        pipeline=pipeline,
        logical_date=date,
        params={},
        trigger="schedule",
        staging_root="staging",
    )
    if state != "queued":
        store.start_run(run_id)
        if state != "running":
            store.finish_run(run_id, state)


def test_run_sensor_needs_a_successful_run_for_the_same_logical_date(store: RunStore) -> None:
    sensor = RunSensor("imports", store_path=str(store.path))
    assert sensor.poke(make_ctx()) is False  # no run at all

    add_run(store, "a", MARCH_1, "failed")
    add_run(store, "b", MARCH_1 - timedelta(days=1), "success")
    add_run(store, "c", MARCH_1, "success", pipeline="other")
    assert sensor.poke(make_ctx()) is False

    store.retry_run("a")
    store.finish_run("a", "success")
    assert sensor.poke(make_ctx()) is True


def test_run_sensor_compares_logical_dates_as_instants(store: RunStore) -> None:
    add_run(store, "a", MARCH_1, "success")
    paris = timezone(timedelta(hours=1))
    same_instant = datetime(2025, 3, 1, 1, 0, tzinfo=paris)
    assert RunSensor("imports", store_path=str(store.path)).poke(make_ctx(same_instant)) is True


def test_run_sensor_without_same_logical_date_takes_any_success(store: RunStore) -> None:
    sensor = RunSensor("imports", store_path=str(store.path), same_logical_date=False)
    add_run(store, "a", MARCH_1, "running")
    assert sensor.poke(make_ctx()) is False
    add_run(store, "b", MARCH_1 - timedelta(days=30), "success")
    assert sensor.poke(make_ctx()) is True
    assert sensor.describe(make_ctx()) == "a successful run of pipeline 'imports'"


def test_run_sensor_reads_the_store_path_from_the_context(store: RunStore) -> None:
    add_run(store, "a", MARCH_1, "success")
    sensor = RunSensor("imports")
    assert sensor.poke(make_ctx(store_path=str(store.path))) is True
    assert sensor.describe(make_ctx()) == (
        "a successful run of pipeline 'imports' for 2025-03-01T00:00:00+00:00"
    )


def test_run_sensor_without_a_store_says_how_to_give_one() -> None:
    sensor = named(RunSensor("imports"), "upstream")
    with pytest.raises(ConfigError, match=r"RunSensor 'upstream'.*store_path="):
        sensor.poke(make_ctx())


def test_run_sensor_does_not_create_a_missing_store(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "runs.db"
    assert RunSensor("imports", store_path=str(path)).poke(make_ctx()) is False
    assert not path.parent.exists()


# -- wait -----------------------------------------------------------------------------------------


class Clock:
    """Fake monotonic time: `sleep` advances it and records the naps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.naps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


class Countdown(Sensor):
    """Passes on poke number `passes_on` (never, if None); counts pokes."""

    def __init__(
        self,
        passes_on: int | None,
        *,
        poke_interval: float = 60.0,
        timeout: float = 3600.0,
        soft_fail: bool = False,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, soft_fail=soft_fail)
        self.passes_on = passes_on
        self.pokes = 0

    def poke(self, ctx: Context) -> bool:
        self.pokes += 1
        return self.pokes == self.passes_on

    def describe(self, ctx: Context) -> str:
        return f"file billing/{ctx.ds}/billing_data.csv"


def test_wait_pokes_every_interval_until_the_sensor_passes() -> None:
    clock = Clock()
    sensor = Countdown(3, poke_interval=30, timeout=600)
    outcome = wait(sensor, make_ctx(), clock_sleep=clock.sleep, clock_now=clock.monotonic)
    assert outcome == "passed"
    assert sensor.pokes == 3
    assert clock.naps == [30, 30]


def test_wait_passes_at_once_without_sleeping() -> None:
    clock = Clock()
    outcome = wait(Countdown(1), make_ctx(), clock_sleep=clock.sleep, clock_now=clock.monotonic)
    assert outcome == "passed"
    assert clock.naps == []


def test_wait_times_out_naming_the_sensor_and_what_it_waited_for() -> None:
    clock = Clock()
    sensor = Countdown(None, poke_interval=30, timeout=100)
    sensor.name = "billing_ready"
    with pytest.raises(
        SensorTimeoutError,
        match=r"sensor 'billing_ready' timed out after 100 s waiting for "
        r"file billing/2025-03-01/billing_data\.csv",
    ) as caught:
        wait(sensor, make_ctx(), clock_sleep=clock.sleep, clock_now=clock.monotonic)
    assert clock.naps == [30, 30, 30, 10]  # the last poke is at the timeout
    assert sensor.pokes == 5
    assert caught.value.sensor == "billing_ready"
    assert caught.value.waited_for == "file billing/2025-03-01/billing_data.csv"


def test_wait_soft_fail_skips_instead_of_failing(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    sensor = Countdown(None, poke_interval=60, timeout=120, soft_fail=True)
    sensor.name = "billing_ready"
    outcome = wait(sensor, make_ctx(), clock_sleep=clock.sleep, clock_now=clock.monotonic)
    assert outcome == "skipped"
    assert "skipping the run (soft_fail)" in caplog.text


class FakeEvent(threading.Event):
    """An Event whose `wait` advances a fake clock instead of blocking; set after `set_after`."""

    def __init__(self, clock: Clock, set_after: int | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.set_after = set_after
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None, "wait must never block without a timeout"
        self.waits.append(timeout)
        self.clock.now += timeout
        if self.set_after is not None and len(self.waits) >= self.set_after:
            self.set()
        return self.is_set()


def test_wait_waits_on_the_cancel_event_between_pokes() -> None:
    clock = Clock()
    cancel = FakeEvent(clock)
    sensor = Countdown(3, poke_interval=5, timeout=60)
    outcome = wait(sensor, make_ctx(), clock_now=clock.monotonic, cancel=cancel)
    assert outcome == "passed"
    assert cancel.waits == [5, 5]


def test_wait_stops_when_the_run_is_cancelled() -> None:
    clock = Clock()
    cancel = FakeEvent(clock, set_after=2)
    sensor = Countdown(None, poke_interval=5, timeout=60)
    with pytest.raises(RunCancelledError, match="cancelled"):
        wait(sensor, make_ctx(), clock_now=clock.monotonic, cancel=cancel)
    assert sensor.pokes == 2


def test_wait_does_not_poke_a_cancelled_run() -> None:
    cancel = threading.Event()
    cancel.set()
    sensor = Countdown(1)
    with pytest.raises(RunCancelledError):
        wait(sensor, make_ctx(), cancel=cancel)
    assert sensor.pokes == 0


def test_sensor_timeout_error_pickles() -> None:
    error = SensorTimeoutError("billing_ready", 3600, "file x.csv")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert copy.waited_for == "file x.csv"
