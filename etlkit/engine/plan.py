"""The plan of a run: plain data, built once from the graph, the run options and what committed.

A `Plan` says, before anything runs, which nodes run and which committed outputs are reused or
skipped, which nodes take their inputs' chunks from a channel as they come (the streaming edges)
and which read their inputs' committed staging, which outputs must be staged, which sources may
stage a reference to their files instead of a copy, and each node's pool, timeout and unique
keys. It holds no thread and no open resource: an executor reads it, a test asserts on it, and
`describe` prints it. `RunOptions` is what a caller decides about a run (chunking, validation,
DuckDB's resources, resume); `build_plan` turns options and graph into the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etlkit.model.nodes import Adoption, Policy, Sink, Source, Sql
from etlkit.model.schema import Model, column_names, has_regex, unique_sets

if TYPE_CHECKING:
    from etlkit.engine.slots import SlotProvider
    from etlkit.model.graph import Graph


@dataclass(frozen=True)
class RunOptions:
    """How a run executes: chunking, channel depth, validation, DuckDB resources, resume.

    `reuse` names nodes whose committed output of this run id is reused (read back only for
    streaming consumers); `skip` names nodes not run at all (sinks that already wrote).
    """

    chunk_rows: int = 131_072
    chunk_bytes: int = 64 * 1024 * 1024
    channel_depth: int = 4
    validate: bool = True
    on_invalid: Policy = "fail"
    max_invalid_fraction: float | None = None
    duckdb_memory_limit: str = "2GB"
    duckdb_threads: int = 0
    duckdb_temp_directory: str = ""
    reuse: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()
    run_timeout: float | None = None
    cancel_grace: float = 10.0
    reference_sources: bool = True
    adopt_staged: bool = True  # sinks may adopt their input's staged file (`Plan.adopts`)
    pools: Mapping[str, int] = dataclasses.field(default_factory=dict)
    slots: SlotProvider | None = None
    max_active_nodes: int = 0
    max_workers: int = 0  # nodes running at once (blocked ones do not count); 0: automatic
    # per incremental source, the hashes of the rows loaded at its stored cursor value
    cursor_seen: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What a run does, decided before it starts (see the module docstring).

    `channels`: nodes fed through a channel, chunk by chunk, by every input (an edge into one
    streams; an edge into any other node reads the input's committed staging). `streamed_sql`:
    SQL nodes among them, whose query scans its one input's chunks as they come.
    `refers_in_place`: sources staged as a reference to their files without reading them when
    the files validate (nothing streams from them); `references`: sources whose streamed
    output may be staged as a reference to their files instead of a copy. `adopts`: sinks
    offered their one input's committed staged file to adopt as their own instead of encoding
    it again (they read that staging, not a channel); `stage_as`: how each of those inputs is
    staged for it (the sink's codec and file types, in one part).
    """

    graph: Graph
    options: RunOptions
    reused: frozenset[str]
    skipped: frozenset[str]
    channels: frozenset[str]
    streamed_sql: frozenset[str]
    takes_out_repeats: frozenset[str]
    staged: frozenset[str]
    refers_in_place: frozenset[str]
    references: frozenset[str]
    adopts: frozenset[str]
    stage_as: Mapping[str, Adoption]
    pools: Mapping[str, str]
    timeouts: Mapping[str, float]
    unique_keys: Mapping[str, tuple[tuple[str, ...], ...]]

    @property
    def pipeline(self) -> str:
        return self.graph.pipeline

    @property
    def runs(self) -> tuple[str, ...]:
        """The nodes that run (neither reused nor skipped), in the graph's order."""
        idle = self.reused | self.skipped
        return tuple(n for n in self.graph.order if n not in idle)

    @property
    def sensors(self) -> tuple[str, ...]:
        """The sensors, which all pass before any other node starts."""
        return tuple(n for n in self.graph.order if self.graph.nodes[n].kind == "sensor")

    def streams(self, upstream: str, consumer: str) -> bool:
        """Whether the edge carries chunks as they come (else the consumer reads staging)."""
        return consumer in self.channels and upstream in self.graph.inputs[consumer]

    def streaming_consumers(self, name: str) -> tuple[str, ...]:
        """The consumers taking the node's chunks from a channel."""
        return tuple(c for c in self.graph.consumers[name] if c in self.channels)

    def describe(self) -> str:
        """The plan as text, one line per node (for people and tests)."""
        lines = [f"plan of {self.pipeline}"]
        for name in self.graph.order:
            node = self.graph.nodes[name]
            facts: list[str] = [node.kind]
            if name in self.reused:
                facts.append("reused")
            elif name in self.skipped:
                facts.append("skipped")
            if name in self.staged:
                facts.append("staged")
            if name in self.refers_in_place:
                facts.append("reference in place")
            elif name in self.references:
                facts.append("reference while streaming")
            if name in self.takes_out_repeats:
                facts.append("takes out repeats")
            if name in self.adopts:
                facts.append("adopts its input's staged file")
            if name in self.stage_as:
                facts.append(f"staged for its sink ({self.stage_as[name].compression}, one part)")
            if name in self.pools:
                facts.append(f"pool {self.pools[name]}")
            if name in self.timeouts:
                facts.append(f"timeout {self.timeouts[name]:g}s")
            edges = [
                f"{u} {'streams' if self.streams(u, name) else 'from staging'}"
                for u in self.graph.inputs[name]
            ]
            lines.append(f"  {name}: {', '.join(facts + edges)}")
        return "\n".join(lines)


def build_plan(graph: Graph, options: RunOptions) -> Plan:
    """Decide what a run of `graph` does under `options` (see `Plan`)."""
    idle = options.reuse | options.skip
    pools = {n: p for n in graph.order if (p := _pool_of(graph, options, n)) is not None}
    repeats = frozenset(n for n in graph.order if _takes_out_repeats(graph, options, n))
    streamed_sql = frozenset(n for n in graph.order if _streams_sql(graph, options, n))
    adoptions = {n: a for n in graph.order if (a := _adoption(graph, options, n)) is not None}
    channels = frozenset(
        name
        for name in graph.order
        if (graph.streams_into(name) or name in streamed_sql)
        and name not in pools
        and name not in idle
        and name not in adoptions
        and not any(i in repeats for i in graph.inputs[name])
    )
    staged = frozenset(n for n in graph.order if _must_stage(graph, options, channels, n))
    # sources that may stage a reference, each with whether its files are read in place
    referable = {
        n: node.files_in_place
        for n in graph.order
        if isinstance(node := graph.nodes[n], Source)
        and n not in idle
        and options.reference_sources
        and node.cursor_column is None
    }
    in_place = frozenset(
        n
        for n, files_in_place in referable.items()
        if files_in_place and not any(c in channels for c in graph.consumers[n])
    )
    references = frozenset(
        n
        for n, files_in_place in referable.items()
        if _judged_whole(graph, options, n)
        and (files_in_place or all(c in channels for c in graph.consumers[n]))
    )
    return Plan(
        graph=graph,
        options=options,
        reused=options.reuse,
        skipped=options.skip,
        channels=channels,
        streamed_sql=streamed_sql & channels,
        takes_out_repeats=repeats,
        staged=staged,
        refers_in_place=in_place,
        references=references,
        adopts=frozenset(adoptions),
        stage_as={graph.inputs[n][0]: a for n, a in adoptions.items()},
        pools=pools,
        timeouts={
            n: t for n in graph.order if (t := graph.nodes[n].run_options.timeout) is not None
        },
        unique_keys={n: tuple(_unique_keys(graph, options, n)) for n in graph.order},
    )


def _adoption(graph: Graph, options: RunOptions, name: str) -> Adoption | None:
    """How a sink's one input is staged for the sink to adopt it, if it may: the sink can
    (`Sink.adoption`), the input is staged anyway, read by this sink alone, not a source (its
    output may be a reference to its files), no check of the sink's input model is left to
    run on arrival (the staged chunks already passed a model that is one, or a subclass), and
    the models, if both have one, name the same columns in the same order (a sink writing a
    subset reads the staging back to encode it: streaming it is cheaper)."""
    node = graph.nodes[name]
    if not options.adopt_staged or not isinstance(node, Sink) or len(graph.inputs[name]) != 1:
        return None
    if name in options.reuse | options.skip:
        return None
    upstream = graph.inputs[name][0]
    producer = graph.nodes[upstream]
    if isinstance(producer, Source) or not graph.needs_staging(upstream):
        return None
    if tuple(graph.consumers[upstream]) != (name,):
        return None
    wanted, model = node.input_model, producer.output_model
    if options.validate and wanted is not None and (model is None or not issubclass(model, wanted)):
        return None
    if wanted is not None and model is not None and not _same_columns(wanted, model):
        return None  # the sink writes other columns than are staged: it encodes them
    return node.adoption()


def _same_columns(wanted: Model, model: Model) -> bool:
    """Whether two models name the same columns in the same order (True when a regex column
    leaves it to the data)."""
    if has_regex(wanted) or has_regex(model):
        return True
    return column_names(wanted) == column_names(model)


def _judged_whole(graph: Graph, options: RunOptions, name: str) -> bool:
    """Whether a source's output is judged as a whole, so its files may stand for it: every
    chunk passes (no rows taken out by a drop or quarantine policy), and no dataset check
    reads staging."""
    node = graph.nodes[name]
    guarded = options.validate and node.output_model is not None
    policy = node.expectations.on_invalid or options.on_invalid
    return (not guarded or policy == "fail") and not node.expectations.dataset_checks


def _takes_out_repeats(graph: Graph, options: RunOptions, name: str) -> bool:
    """Whether a node may take rows out of its output after its last chunk (a unique key
    repeating across chunks, under drop or quarantine): its consumers then read its committed
    output instead of taking its chunks as they come."""
    node = graph.nodes[name]
    model = node.output_model
    if not options.validate or model is None or name in options.reuse | options.skip:
        return False
    policy = node.expectations.on_invalid or options.on_invalid
    return policy != "fail" and bool(unique_sets(model))


def _streams_sql(graph: Graph, options: RunOptions, name: str) -> bool:
    """Whether a SQL node scans its input's chunks as they come (an Arrow stream) instead of
    its staged output: one input, which streams (not reused from an earlier attempt, not a
    source whose Parquet files may be read in place: DuckDB reads those better itself)."""
    node = graph.nodes[name]
    if not isinstance(node, Sql) or len(graph.inputs[name]) != 1:
        return False
    upstream = graph.inputs[name][0]
    producer = graph.nodes[upstream]
    if upstream in options.reuse or upstream in options.skip:
        return False
    if producer.kind in ("sink", "sensor", "task"):
        return False
    return not (
        isinstance(producer, Source)
        and options.reference_sources
        and producer.cursor_column is None
        and type(producer).files is not Source.files
        and producer.files_in_place
    )


def _pool_of(graph: Graph, options: RunOptions, name: str) -> str | None:
    """The node's pool: its own `options(pool=...)`, else its connection's, if one is sized.

    A connection with `pool_slots` (or a `[pools]` entry named like it) bounds how many
    nodes using that connection run at once, so parallel nodes cannot exhaust a database.
    """
    node = graph.nodes[name]
    if node.run_options.pool is not None:
        return node.run_options.pool
    conn = getattr(node, "conn", None)
    return conn if isinstance(conn, str) and conn in options.pools else None


def _must_stage(graph: Graph, options: RunOptions, channels: frozenset[str], name: str) -> bool:
    """Whether a node's output must be staged: the graph says so, or a pooled consumer
    reads it back from staging instead of a channel."""
    if graph.needs_staging(name):
        return True
    return any(
        graph.nodes[c].streaming and c not in channels and c not in options.reuse | options.skip
        for c in graph.consumers[name]
    )


def _unique_keys(graph: Graph, options: RunOptions, name: str) -> list[tuple[str, ...]]:
    """The column sets the node's output must hold unique across all its chunks."""
    node = graph.nodes[name]
    keys: list[tuple[str, ...]] = []
    if options.validate and node.output_model is not None:
        keys.extend(unique_sets(node.output_model))
    if node.expectations.unique:
        keys.append(node.expectations.unique)
    return keys
