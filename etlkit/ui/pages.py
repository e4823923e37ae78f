"""What each page shows, gathered from the run store, the pipelines folder and the run logs.

Functions here return plain values for the templates (and the JSON of live updates); they do
no HTML. Each page costs a bounded number of indexed store queries, whatever the history's
size: runs come a page at a time, and a grid of runs by nodes is one query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from etlkit.engine.runlog import LogLine, read_log
from etlkit.scheduling.control import PipelineStatus, status
from etlkit.storage.staging import check_path_part
from etlkit.storage.store import NodeRunRecord, PartitionRecord, RunRecord, RunStore
from etlkit.ui import svg

if TYPE_CHECKING:
    from markupsafe import Markup

    from etlkit.model.graph import Graph

#: Runs shown as squares per pipeline on the pipelines page.
SQUARES: Final = 30
#: Runs per page of a pipeline's grid, and nodes per page of it.
GRID_RUNS: Final = 25
GRID_NODES: Final = 200
#: Log lines shown per node on a run page.
LOG_LINES: Final = 200
#: Partitions of a distributed run shown per node on a run page.
PARTITIONS: Final = 100
#: Node runs are written a little after the event (see `runs.NodeRecorder`): live updates
#: look back this far past the reader's cursor, and the reader replaces what it had.
LIVE_OVERLAP: Final = timedelta(seconds=5)


@dataclass(frozen=True)
class PipelineRow:
    """One line of the pipelines page: the scheduler's view and the latest runs (oldest
    first by logical date)."""

    status: PipelineStatus
    overdue: bool
    runs: tuple[RunRecord, ...]

    @property
    def failing(self) -> bool:
        """Whether its newest finished run failed (such pipelines are listed first)."""
        finished = [r for r in self.runs if r.state not in ("queued", "running")]
        return bool(finished) and finished[-1].state in ("failed", "interrupted", "cancelled")


def overview(store: RunStore, pipelines_dir: Path, now: datetime) -> list[PipelineRow]:
    """Every pipeline of the folder (and every file that fails to load): failing ones first."""
    rows = []
    for each in status(store, pipelines_dir):
        recent = store.runs(each.name, limit=SQUARES)
        recent.sort(key=lambda r: (r.logical_date, r.created_at))
        overdue = each.next_due is not None and each.next_due < now and not each.paused
        rows.append(PipelineRow(each, overdue, tuple(recent)))
    rows.sort(key=lambda r: (not (r.failing or r.status.error), r.status.name))
    return rows


@dataclass(frozen=True)
class Grid:
    """A pipeline's runs (newest first, one page) by its nodes (one page), Airflow's grid."""

    pipeline: str
    runs: tuple[RunRecord, ...]
    nodes: tuple[str, ...]
    states: Mapping[str, Mapping[str, str]]
    next_before: str | None
    node_page: int
    more_nodes: bool


def grid(
    store: RunStore, pipeline: str, graph: Graph | None, *, before: str | None, node_page: int
) -> Grid:
    """One page of `pipeline`'s grid: `GRID_RUNS` runs created before run `before`, and the
    `node_page`-th `GRID_NODES` nodes in the graph's order (or as first recorded)."""
    runs = store.runs_before(pipeline, before=before, limit=GRID_RUNS + 1)
    page, more = runs[:GRID_RUNS], len(runs) > GRID_RUNS
    states = store.node_states([r.run_id for r in page])
    if graph is not None:
        names: list[str] = list(graph.order)
    else:
        seen: dict[str, None] = {}
        for run in page:
            seen.update(dict.fromkeys(states.get(run.run_id, {})))
        names = list(seen)
    start = node_page * GRID_NODES
    return Grid(
        pipeline=pipeline,
        runs=tuple(page),
        nodes=tuple(names[start : start + GRID_NODES]),
        states=states,
        next_before=page[-1].run_id if more and page else None,
        node_page=node_page,
        more_nodes=len(names) > start + GRID_NODES,
    )


@dataclass(frozen=True)
class RunPage:
    """Everything a run's page shows."""

    run: RunRecord
    nodes: tuple[NodeRunRecord, ...]
    graph_svg: Markup
    gantt_svg: Markup
    logs: Mapping[str, Sequence[LogLine]]
    run_logs: Sequence[LogLine]
    staged: Sequence[str] = field(default_factory=tuple)
    cursor: str = ""
    partitions: Mapping[str, Sequence[PartitionRecord]] = field(default_factory=dict)
    more_partitions: Mapping[str, int] = field(default_factory=dict)  # per node, not shown


def run_page(
    store: RunStore,
    run_id: str,
    graph: Graph | None,
    *,
    logs_dir: str,
    staged: Sequence[str],
    now: datetime,
) -> RunPage:
    """A run's page: its node attempts (latest), the DAG and the Gantt, the log per node, and
    for a distributed run the partitions of each node with the worker that ran each.

    Raises:
        StoreError: no such run.
    """
    record = store.get_run(check_path_part("run id", run_id))
    nodes = store.node_runs(record.run_id)
    partitions = store.node_partitions(record.run_id)
    lines = read_log(logs_dir, record.pipeline, record.run_id)
    by_node: dict[str, list[LogLine]] = {}
    run_lines = []
    for line in lines:
        if line.node:
            by_node.setdefault(line.node, []).append(line)
        else:
            run_lines.append(line)
    return RunPage(
        run=record,
        nodes=tuple(nodes),
        graph_svg=graph_svg(record, nodes, graph),
        gantt_svg=gantt_svg(nodes, now),
        logs={node: found[-LOG_LINES:] for node, found in by_node.items()},
        run_logs=run_lines[-LOG_LINES:],
        staged=staged,
        cursor=now.isoformat(),
        partitions={node: found[:PARTITIONS] for node, found in partitions.items()},
        more_partitions={
            n: len(f) - PARTITIONS for n, f in partitions.items() if len(f) > PARTITIONS
        },
    )


def graph_svg(record: RunRecord, nodes: Sequence[NodeRunRecord], graph: Graph | None) -> Markup:
    """The run's DAG: the pipeline's graph as it is now, coloured by this run's node states;
    without a loadable pipeline, its recorded nodes unconnected."""
    states = {n.node: n.state for n in nodes}
    rows = {n.node: n.rows_out for n in nodes}
    if graph is not None:
        order: Sequence[str] = graph.order
        inputs: Mapping[str, Sequence[str]] = graph.inputs
    else:
        order, inputs = [n.node for n in nodes], {}
    return svg.dag(order, inputs, states, rows, link=f"/runs/{record.run_id}#node-")


def gantt_svg(nodes: Sequence[NodeRunRecord], now: datetime) -> Markup:
    """The Gantt of the nodes that started (running ones reach `now`)."""
    bars = [
        svg.Bar(n.node, n.state, n.started_at, n.finished_at)
        for n in nodes
        if n.started_at is not None
    ]
    return svg.gantt(bars, now)


def node_json(node: NodeRunRecord) -> dict[str, Any]:
    """A node attempt as the live updates send it."""
    return {
        "node": node.node,
        "kind": node.kind,
        "attempt": node.attempt,
        "state": node.state,
        "colour": svg.colour(node.state),
        "rows_in": node.rows_in,
        "rows_out": node.rows_out,
        "invalid_rows": node.invalid_rows,
        "bytes_staged": node.bytes_staged,
        "error": node.error,
        "started_at": node.started_at.isoformat() if node.started_at else None,
        "finished_at": node.finished_at.isoformat() if node.finished_at else None,
    }


def changes(store: RunStore, run_id: str, since: datetime, now: datetime) -> dict[str, Any]:
    """What changed in a run since `since`: its state, and the node attempts that started or
    ended since (a little before, see `LIVE_OVERLAP`). `cursor` is the next `since`.

    Raises:
        StoreError: no such run.
    """
    record = store.get_run(check_path_part("run id", run_id))
    # A run's node runs are all written before its end is (and a retry clears the end): a
    # reader whose cursor is past the end has seen them all.
    ended = record.finished_at is not None and since > record.finished_at
    nodes = [] if ended else store.node_runs_since(record.run_id, since - LIVE_OVERLAP)
    return {
        "run": {
            "state": record.state,
            "colour": svg.colour(record.state),
            "attempt": record.attempt,
            "error": record.error,
            "finished": record.state not in ("queued", "running"),
            "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        },
        "nodes": [node_json(n) for n in nodes],
        "running": any(n.state == "running" for n in nodes) or record.state == "running",
        "cursor": now.isoformat(),
    }
