"""What a step gets: its node, the node's `Context` and `NodeStats`, and the run's resources.

A `StepContext` is made by an executor for one node (or one partition of a node); the steps
read their inputs from iterators and call `progress` and the functions they are given to send
chunks on, so they know nothing of threads, channels or who calls them.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from etlkit.engine.database import RunDatabase
    from etlkit.engine.events import NodeStats
    from etlkit.engine.plan import Plan, RunOptions
    from etlkit.model.graph import Graph
    from etlkit.model.nodes import Context, Node
    from etlkit.storage.staging import Staging


@dataclass(frozen=True)
class StepContext:
    """One node's step: `ctx` is the node's own `Context`, `stats` its live statistics.

    `database` opens connections to the run's DuckDB; `cancelled` tells whether the run is
    being cancelled (a step checks it at chunk boundaries); `progress` reports a chunk (an
    event); `output_schemas` holds the columns each node of the run produced (written by the
    node's step, read by consumers that received no chunk).
    """

    plan: Plan
    name: str
    node: Node
    ctx: Context
    stats: NodeStats
    staging: Staging
    database: RunDatabase
    cancelled: Callable[[], bool]
    progress: Callable[[], None]
    output_schemas: MutableMapping[str, pa.Schema]

    @property
    def graph(self) -> Graph:
        return self.plan.graph

    @property
    def options(self) -> RunOptions:
        return self.plan.options

    @property
    def pipeline(self) -> str:
        return self.plan.graph.pipeline

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def inputs(self) -> Sequence[str]:
        """The node's inputs, by name."""
        return self.plan.graph.inputs[self.name]
