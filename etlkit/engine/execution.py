"""One run of a pipeline graph: `execute` plans the run and has the local executor run it.

The engine's entry point, as `etlkit.runs` calls it: it builds the run's `Plan` (`plan`) from
the graph and the `RunOptions`, and runs it with `LocalExecutor` (`local`), whose threads run
the steps of each node role (`steps`), or with the executor it is given (a `DaskExecutor`,
`distributed`). The names callers import with it (the run's options, events and result, the
store's states and run ids) are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from etlkit.engine.events import Event as Event
from etlkit.engine.events import EventKind as EventKind
from etlkit.engine.events import Listener as Listener
from etlkit.engine.events import NodeStats as NodeStats
from etlkit.engine.events import RunResult as RunResult
from etlkit.engine.local import LocalExecutor
from etlkit.engine.plan import RunOptions as RunOptions
from etlkit.engine.plan import build_plan
from etlkit.engine.slots import ALL_NODES_POOL as ALL_NODES_POOL
from etlkit.engine.slots import SlotProvider as SlotProvider
from etlkit.storage.store import NodeState as NodeState
from etlkit.storage.store import RunState as RunState
from etlkit.storage.store import new_run_id as new_run_id

if TYPE_CHECKING:
    from etlkit.engine.executor import Executor
    from etlkit.model.graph import Graph
    from etlkit.model.nodes import Context
    from etlkit.storage.staging import Staging


def execute(
    graph: Graph,
    ctx: Context,
    *,
    staging: Staging,
    options: RunOptions | None = None,
    listeners: Sequence[Listener] = (),
    executor: Executor | None = None,
) -> RunResult:
    """Run every node of `graph` once; return the result (check `.error`, or `raise_for_error`).

    Nodes named in `options.reuse` are not run: their committed staged output of this run id is
    reused (read back only for streaming consumers). `executor` runs the plan: None, the
    `LocalExecutor` (threads of this process); a `DaskExecutor` runs it on a Dask cluster.
    """
    plan = build_plan(graph, options or RunOptions())
    runner = executor if executor is not None else LocalExecutor()
    return runner.run(plan, ctx, staging=staging, listeners=listeners)
