"""`ek.Pipeline`, the class users subclass: a pipeline definition that can run itself.

`etlkit.model.pipeline.PipelineDefinition` says what a pipeline is; running one belongs here, above
the engine, so the model never imports what runs it. `run` and `retry` are also plain functions
for callers holding any definition (the CLI, the worker).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etlkit.model.pipeline import PipelineDefinition, parse_logical_date
from etlkit.runs.recording import retry_run, run_pipeline
from etlkit.settings.config import load_settings

if TYPE_CHECKING:
    from etlkit.engine.execution import Listener, RunResult
    from etlkit.settings.config import Settings
    from etlkit.storage.store import RunStore


def run(
    cls: type[PipelineDefinition],
    *,
    date: str | datetime | None = None,
    params: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    listeners: Sequence[Listener] = (),
    run_id: str | None = None,
    reuse: Collection[str] = (),
    skip: Collection[str] = (),
    store: RunStore | None = None,
    trigger: str = "manual",
    notifiers: Mapping[str, Any] | None = None,
    sleep: Callable[[float], None] | None = None,
    pools: Mapping[str, int] | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
    force: bool = False,
) -> RunResult:
    """Run pipeline `cls` once, now, in this process; return the result (check `.error`).

    Args:
        date: the logical date (`YYYY-MM-DD`, ISO datetime or datetime; naive means in the
            pipeline's `timezone`; default today there).
        params: values for the params the class declares (others are an error).
        settings: resolved settings (default: defaults and `etlkit.toml` of the working
            directory; the environment is not read). This class's attributes are applied
            on top, except for keys set by CLI flags.
        listeners: progress listeners called with every `Event`.
        run_id: reuse a run id (resume); default a new one.
        reuse: nodes whose committed output of `run_id` is reused instead of recomputed.
        skip: nodes not run at all.
        store: record the run and its node runs there (the CLI always passes one).
        trigger: why the run happens: manual, schedule, backfill.
        notifiers: configured notifiers by name, for `on_failure` & co.
        sleep: waits between node retries (tests pass a fake).
        pools: pool sizes by name (`[pools]` in etlkit.toml).
        data_interval: the `[start, end)` the run covers (`etlkit run` passes a scheduled
            pipeline's interval containing `date`).
        force: start the run even while another run for the same date is active in `store`.

    Raises:
        PipelineDefinitionError: the graph is invalid (nothing has run).
        ConfigError: a bad date or an undeclared param.
        StagingError: `run_id` already committed a node that is neither in `reuse` nor in
            `skip` (nothing has run).
        RunExistsError: without `force`, a run of this pipeline for `date` is active.
    """
    if settings is None:
        settings = load_settings(Path.cwd(), env={})
    return run_pipeline(
        cls,
        settings=cls.layered(settings),
        logical_date=parse_logical_date(date, cls.timezone),
        params=cls.resolve_params(params or {}),
        listeners=listeners,
        run_id=run_id,
        reuse=reuse,
        skip=skip,
        store=store,
        trigger=trigger,
        notifiers=notifiers,
        sleep=sleep or time.sleep,
        pools=pools,
        data_interval=data_interval,
        force=force,
    )


def retry(
    cls: type[PipelineDefinition],
    run_id: str,
    *,
    store: RunStore,
    settings: Settings | None = None,
    listeners: Sequence[Listener] = (),
    pools: Mapping[str, int] | None = None,
    notifiers: Mapping[str, Any] | None = None,
) -> RunResult:
    """Resume a failed run of pipeline `cls` under its run id: only what did not commit runs again.

    Raises:
        StoreError: the run is unknown, already succeeded, or still running.
    """
    if settings is None:
        settings = load_settings(Path.cwd(), env={})
    return retry_run(
        cls,
        run_id,
        settings=cls.layered(settings),
        store=store,
        listeners=listeners,
        pools=pools,
        notifiers=notifiers,
    )


class Pipeline(PipelineDefinition):
    """Base class of every pipeline. Subclass it and declare nodes as class attributes.

    See `PipelineDefinition` for the class attributes (schedule, params, retries, ...).
    `MyPipeline.run(...)` and `MyPipeline.retry(run_id, ...)` are `run` and `retry` above.
    """

    run = classmethod(run)
    retry = classmethod(retry)
