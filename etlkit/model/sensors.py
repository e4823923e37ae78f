"""Sensors that wait for the outside world, and the loop that waits on one.

- `FileSensor` passes once a file (or any file matching a glob) exists on any fsspec filesystem.
- `RunSensor` passes once another pipeline has a successful run for the same logical date.
- `wait(sensor, ctx)` pokes a sensor every `poke_interval` seconds until it passes, times out
  (`SensorTimeoutError`) or, with `soft_fail`, gives up and returns "skipped".

`poke` never blocks: it is one cheap check, so the scheduler can poke many sensors from one loop
without holding a worker per sensor. `wait` is the in-process loop used when a run executes its
own sensors (`etlkit run`).

    class MonthlyReport(ek.Pipeline):
        billing_ready = FileSensor("s3://hospital-data/billing/{ds}/*.csv", conn="hospital_s3")
        upstream = RunSensor("patients_import", poke_interval=300, timeout=6 * 3600)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from etlkit.errors import (
    ConfigError,
    MissingDependencyError,
    PipelineDefinitionError,
    RunCancelledError,
)
from etlkit.errors import (
    SensorTimeoutError as SensorTimeoutError,
)
from etlkit.model.nodes import Context, Sensor

if TYPE_CHECKING:
    from etlkit.storage.store import RunState

logger = logging.getLogger(__name__)

#: How many of the other pipeline's newest successful runs `RunSensor` looks through.
RUN_SCAN_LIMIT: Final = 10_000
_GLOB_CHARS: Final = frozenset("*?[")
_SUCCESS: Final[tuple[RunState, ...]] = ("success",)

WaitOutcome = Literal["passed", "skipped"]


class FileSensor(Sensor):
    """Passes when a file exists, on any fsspec filesystem; a glob passes if any file matches.

        billing_ready = FileSensor(
            "s3://hospital-data/billing/{ds}/billing_data.csv", conn="hospital_s3", min_size=1
        )

    The path is a template rendered with the run's context (`{ds}`, `{ds_nodash}`, params).
    Only files count: a directory does not (wait for `dir/*` to wait for any file in it).
    Errors other than absence (bad credentials, no permission) are raised by `poke`, so a
    sensor that could never see its file fails at once instead of at its timeout.

    Args:
        path: the file's path or fsspec URL, or a glob.
        conn: a named connection whose `storage_options()` configure the filesystem.
        storage_options: fsspec options; they override the connection's.
        min_size: the least size in bytes a file must have to count (0: any size).
        poke_interval: seconds between pokes.
        timeout: seconds to wait in all.
        soft_fail: on timeout, skip the run instead of failing it.
    """

    def __init__(
        self,
        path: str,
        *,
        conn: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        min_size: int = 0,
        poke_interval: float = 60.0,
        timeout: float = 3600.0,
        soft_fail: bool = False,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, soft_fail=soft_fail)
        problems = []
        if not path:
            problems.append("FileSensor needs a path")
        if min_size < 0:
            problems.append(f"min_size must be >= 0, not {min_size}")
        if problems:
            raise PipelineDefinitionError(type(self).__name__, problems)
        self.path = path
        self.conn = conn
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.min_size = min_size

    def poke(self, ctx: Context) -> bool:
        """Whether a matching file (of at least `min_size` bytes) exists now: one listing.

        Raises:
            ConfigError: the path template names an unknown field.
            MissingDependencyError: the URL's filesystem needs a package that is missing.
        """
        url = ctx.render(self.path)
        fs, path = self._filesystem(url)
        fs.invalidate_cache()  # listings may be cached (s3fs): each poke must look afresh
        try:
            if _GLOB_CHARS.intersection(path):
                infos = list(fs.glob(path, detail=True).values())
            else:
                infos = [fs.info(path)]
        except FileNotFoundError:  # the file, or its bucket, is not there (yet)
            return False
        return any(
            info.get("type") == "file" and int(info.get("size") or 0) >= self.min_size
            for info in infos
        )

    def describe(self, ctx: Context) -> str:
        """`file <rendered path>` (and the least size, when there is one)."""
        text = f"file {ctx.render(self.path)}"
        return f"{text} (at least {self.min_size} bytes)" if self.min_size else text

    def _filesystem(self, url: str) -> tuple[Any, str]:
        options: dict[str, Any] = {}
        if self.conn is not None:
            from etlkit.settings.connections import resolve

            options.update(resolve(self.conn).storage_options())
        options.update(self.storage_options)
        try:
            from fsspec.core import url_to_fs

            fs, path = url_to_fs(url, **options)
        except ImportError as exc:
            raise MissingDependencyError(
                f"FileSensor '{self.name}' cannot open {url}: {exc}. Install the filesystem's "
                'package, e.g. pip install "etlkit-framework" s3fs.'
            ) from exc
        return fs, str(path)


class RunSensor(Sensor):
    """Passes when another pipeline has a successful run (for the same logical date).

        upstream = RunSensor("patients_import", poke_interval=300)

    Logical dates are compared as instants (UTC). The run store is `store_path` if given, else
    the running context's `store_path` (set by etlkit for runs that have a store).

    Args:
        pipeline: the other pipeline's name (snake_case, as in `etlkit runs`).
        store_path: the run store's file; None means the context's.
        same_logical_date: only a run for this run's logical date counts (off: any success).
        poke_interval: seconds between pokes.
        timeout: seconds to wait in all.
        soft_fail: on timeout, skip the run instead of failing it.
    """

    def __init__(
        self,
        pipeline: str,
        *,
        store_path: str | None = None,
        same_logical_date: bool = True,
        poke_interval: float = 60.0,
        timeout: float = 3600.0,
        soft_fail: bool = False,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, soft_fail=soft_fail)
        if not pipeline:
            raise PipelineDefinitionError(type(self).__name__, ["RunSensor needs a pipeline name"])
        self.pipeline = pipeline
        self.store_path = store_path
        self.same_logical_date = same_logical_date

    def poke(self, ctx: Context) -> bool:
        """Whether the store records a successful run of the pipeline (for the date) now.

        A store file that does not exist yet has no runs: the sensor does not create it.

        Raises:
            ConfigError: no store path, neither given nor in the context.
            StoreError: the store cannot be read.
        """
        from etlkit.storage.store import RunStore

        path = self._store_path(ctx)
        if not Path(path).exists():
            return False
        with RunStore(path) as store:
            found = store.runs(self.pipeline, limit=RUN_SCAN_LIMIT, states=_SUCCESS)
        if not self.same_logical_date:
            return bool(found)
        wanted = _utc(ctx.logical_date)
        return any(_utc(run.logical_date) == wanted for run in found)

    def describe(self, ctx: Context) -> str:
        """`a successful run of pipeline 'x' for 2025-03-01T00:00:00+00:00`."""
        text = f"a successful run of pipeline '{self.pipeline}'"
        if self.same_logical_date:
            text += f" for {_utc(ctx.logical_date).isoformat()}"
        return text

    def _store_path(self, ctx: Context) -> str:
        path = self.store_path or ctx.store_path
        if not path:
            raise ConfigError(
                f"RunSensor '{self.name}' in pipeline '{ctx.pipeline}' has no run store to look "
                f"in for runs of '{self.pipeline}': this run has none. Give the sensor "
                "store_path=..., or run the pipeline with a store (`etlkit run`, the scheduler)."
            )
        return str(path)


def wait(
    sensor: Sensor,
    ctx: Context,
    *,
    clock_sleep: Callable[[float], None] = time.sleep,
    clock_now: Callable[[], float] = time.monotonic,
    cancel: threading.Event | None = None,
) -> WaitOutcome:
    """Poke `sensor` every `poke_interval` seconds until it passes or its timeout ends.

    The first poke is immediate and the last one is at the timeout. Between pokes it waits on
    `cancel` when given (so cancelling the run ends the wait at once), else calls `clock_sleep`;
    it never busy-waits. `clock_now` measures the timeout (inject both in tests).

    Returns:
        "passed", or "skipped" when the sensor timed out and has `soft_fail`.

    Raises:
        SensorTimeoutError: the sensor timed out without `soft_fail`; names what it waited for.
        RunCancelledError: `cancel` was set while waiting.
    """
    name = sensor.name or type(sensor).__name__
    deadline = clock_now() + sensor.timeout
    logger.info(
        "sensor %s waiting for %s (every %gs, timeout %gs)",
        name,
        sensor.describe(ctx),
        sensor.poke_interval,
        sensor.timeout,
    )
    pokes = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise RunCancelledError(f"sensor '{name}' stopped waiting: the run was cancelled")
        pokes += 1
        if sensor.poke(ctx):
            logger.info("sensor %s passed after %d poke(s)", name, pokes)
            return "passed"
        logger.debug("sensor %s: poke %d, not yet", name, pokes)
        remaining = deadline - clock_now()
        if remaining <= 0:
            break
        interval = min(sensor.poke_interval, remaining)
        if cancel is not None:
            if cancel.wait(interval):
                raise RunCancelledError(f"sensor '{name}' stopped waiting: the run was cancelled")
        else:
            clock_sleep(interval)
    waited_for = sensor.describe(ctx)
    if sensor.soft_fail:
        logger.warning(
            "sensor %s timed out after %gs waiting for %s; skipping the run (soft_fail)",
            name,
            sensor.timeout,
            waited_for,
        )
        return "skipped"
    raise SensorTimeoutError(name, sensor.timeout, waited_for)


def _utc(moment: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
