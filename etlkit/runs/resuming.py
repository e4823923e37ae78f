"""Resuming a run under its id: what an earlier attempt committed is verified and reused, sinks
that wrote are skipped, and what the rerun nodes left behind (staged companions, sinks' temporary
objects) is cleared away first.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from etlkit.model.nodes import Context
from etlkit.storage.staging import Staging

if TYPE_CHECKING:
    from etlkit.runs.spec import RunSpec
    from etlkit.storage.store import RunRecord, RunStore

logger = logging.getLogger(__name__)


def resume_plan(
    pipeline: RunSpec, run_id: str, staging_root: str, store: RunStore
) -> tuple[frozenset[str], frozenset[str]]:
    """`(reuse, skip)` for rerunning `run_id`: its intact committed outputs and written sinks."""
    graph = pipeline.graph()
    staging = Staging(staging_root)
    committed = set()
    for name in graph.order:
        if staging.manifest(pipeline.name, run_id, name) is None:
            continue
        problems = staging.verify(pipeline.name, run_id, name)
        if problems:
            logger.warning("staged output of %s is damaged, recomputing: %s", name, problems[0])
            staging.discard(pipeline.name, run_id, name)
        else:
            committed.add(name)
    done_sinks = {n.node for n in store.node_runs(run_id) if n.kind == "sink" and n.state == "done"}
    reuse, skip = graph.resume_plan(committed, done_sinks)
    discard_companions(staging, pipeline.name, run_id, set(graph.order) - reuse - skip)
    return reuse, skip


def discard_sink_leftovers(pipeline: RunSpec, record: RunRecord) -> list[str]:
    """Remove the temporary objects the sinks of a run no process runs any more left behind.

    `etlkit gc` calls it for dead runs (a retry's sinks do it themselves before writing). A
    sink's target is rendered as the run rendered it: with its params and logical date, in UTC
    and in the pipeline's timezone (manual and scheduled runs render dates in either).
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from etlkit.model.nodes import Sink

    dates = {record.logical_date}
    with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
        dates.add(record.logical_date.astimezone(ZoneInfo(pipeline.timezone)))
    removed: list[str] = []
    graph = pipeline.graph()
    for name in graph.order:
        node = graph.nodes[name]
        if not isinstance(node, Sink):
            continue
        for date in sorted(dates, key=lambda d: d.isoformat()):
            ctx = Context(
                pipeline=pipeline.name,
                run_id=record.run_id,
                logical_date=date,
                node=name,
                params=dict(record.params),
                data_interval_start=record.data_interval_start,
                data_interval_end=record.data_interval_end,
            )
            removed += node.discard_leftovers(ctx)
    return removed


def discard_companions(staging: Staging, pipeline: str, run_id: str, rerun: set[str]) -> None:
    """Remove the `<node>.failures` and `<node>.rejects` an earlier attempt committed for the
    nodes that run again: their new attempt stages its own, and committed outputs are immutable.
    """
    for name in staging.committed(pipeline, run_id):
        node, dot, _ = name.partition(".")
        if dot and node in rerun:
            staging.discard(pipeline, run_id, name)
