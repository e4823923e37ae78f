"""The executor interface: what runs a plan, and what every executor does the same way.

An `Executor` runs a `Plan` with the steps (`etlkit.engine.steps`) and reports `Event`s to
listeners, returning the `RunResult`. `LocalExecutor` (`etlkit.engine.local`) runs nodes on
threads of this process; a partitioned executor runs the same steps per partition of a source
(see docs/architecture.md, "The engine"). `new_result`, `settle`, `overdue` and `node_error`
are shared: the run's result as it starts and ends, the timeouts it enforces, and the error a
failing node reports.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from etlkit.engine.events import NodeStats, RunResult
from etlkit.errors import (
    EtlkitError,
    NodeError,
    NodeTimeoutError,
    RunCancelledError,
    RunTimeoutError,
)
from etlkit.model.nodes import Sql

if TYPE_CHECKING:
    from polars.exceptions import PanicException

    from etlkit.engine.events import Listener
    from etlkit.engine.plan import Plan
    from etlkit.model.nodes import Context
    from etlkit.storage.staging import Staging


class Executor(Protocol):
    """Runs every node of a plan once (its reused and skipped nodes aside) and reports."""

    def run(
        self,
        plan: Plan,
        ctx: Context,
        *,
        staging: Staging,
        listeners: Sequence[Listener] = (),
    ) -> RunResult:
        """Run the plan; return the result (check `.error`, or `raise_for_error`).

        The first failure cancels the run: every node stops at its next chunk boundary and
        uncommitted staging is discarded. Events go to every listener as the run goes.
        """
        ...


def new_result(plan: Plan, ctx: Context, staging: Staging) -> RunResult:
    """The result of a run just started: every node pending."""
    return RunResult(
        pipeline=plan.pipeline,
        run_id=ctx.run_id,
        state="running",
        nodes={n: NodeStats(n, node.kind) for n, node in plan.graph.nodes.items()},
        started=time.perf_counter(),
        staging_root=staging.root_url,
    )


def settle(result: RunResult, *, skipped: bool) -> None:
    """Give an ended run its state (`skipped`: a soft-failing sensor skipped it)."""
    result.finished = time.perf_counter()
    if result.error is None and skipped:
        result.state = "skipped"
        for stats in result.nodes.values():
            if stats.state == "pending":
                stats.state = "skipped"
    elif result.error is None:
        result.state = "success"
    elif isinstance(result.error, RunCancelledError):
        result.state = "cancelled"
    else:
        result.state = "failed"


def node_error(
    plan: Plan, run_id: str, stats: NodeStats, exc: Exception | PanicException, cause: str
) -> NodeError:
    """The node boundary's wrap of a foreign failure: which node, run and chunk, and why."""
    from etlkit.engine.steps.queries import SQL_FILES_HINT

    name = stats.name
    node = plan.graph.nodes[name]
    if node.streaming:
        chunk = stats.chunks_in  # the input chunk being processed
    elif node.kind == "source":
        chunk = stats.chunks_in + 1 if stats.chunks_in else 0  # 0: before any data
    else:
        chunk = stats.chunks_out + 1 if stats.chunks_out else 0
    where = f" on chunk {chunk}" if chunk else ""
    if isinstance(node, Sql):
        import duckdb

        if isinstance(exc, duckdb.PermissionException):
            cause += f" {SQL_FILES_HINT}"
    error = NodeError(
        f"Node '{name}' in pipeline '{plan.pipeline}' (run {run_id}) failed{where}: {cause}",
        pipeline=plan.pipeline,
        node=name,
        run_id=run_id,
        chunk=chunk or None,
    )
    error.__cause__ = exc
    return error


def overdue(
    plan: Plan, result: RunResult, run_id: str, now: float
) -> Iterator[tuple[str, EtlkitError]]:
    """The timeouts passed at `now` (`time.perf_counter`): the run's alone (node ""), else
    each running node's past its own, judged one at a time as the caller fails each."""
    limit = plan.options.run_timeout
    if limit is not None and now - result.started > limit:
        yield (
            "",
            RunTimeoutError(
                f"Run {run_id} of pipeline '{plan.pipeline}' timed out after "
                f"{limit:g}s (the pipeline's timeout); running nodes were cancelled"
            ),
        )
        return
    for name, stats in result.nodes.items():
        timeout = plan.timeouts.get(name)
        if timeout is None or stats.state != "running" or stats.started is None:
            continue
        if now - stats.started > timeout:
            yield (
                name,
                NodeTimeoutError(
                    f"Node '{name}' in pipeline '{plan.pipeline}' (run {run_id}) "
                    f"timed out after {timeout:g}s (its timeout); it was cancelled",
                    pipeline=plan.pipeline,
                    node=name,
                    run_id=run_id,
                ),
            )
