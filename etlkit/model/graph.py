"""The dependency graph of a pipeline: input resolution, checks before any data moves, order.

`build_graph` finds every problem at once (unknown inputs, nodes used under two names, role
misuse, cycles, schema mismatches on edges, unknown template names in SQL) and raises one
`PipelineDefinitionError` listing them all.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from etlkit.errors import PipelineDefinitionError, quoted
from etlkit.model.nodes import TEMPLATE_NAMES, Node, Sql
from etlkit.model.schema import edge_problems, model_name, unique_sets


@dataclass(frozen=True)
class Graph:
    """A checked DAG. `order` is topological (inputs before consumers, ties by declaration)."""

    pipeline: str
    nodes: Mapping[str, Node]
    inputs: Mapping[str, tuple[str, ...]]
    consumers: Mapping[str, tuple[str, ...]]
    order: tuple[str, ...]

    def upstream_of(self, names: Collection[str]) -> set[str]:
        """Every node the given nodes depend on, directly or not (the nodes excluded)."""
        seen: set[str] = set()
        stack = [i for n in names for i in self.inputs[n]]
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(self.inputs[name])
        return seen

    def downstream_of(self, names: Collection[str]) -> set[str]:
        """Every node that depends on the given nodes (the nodes excluded)."""
        seen: set[str] = set()
        stack = [c for n in names for c in self.consumers[n]]
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(self.consumers[name])
        return seen

    def resume_plan(
        self, committed: Collection[str], done_sinks: Collection[str]
    ) -> tuple[frozenset[str], frozenset[str]]:
        """What a retry reuses and skips: `(reuse, skip)`.

        Committed outputs are reused; sinks that already wrote from reused inputs are skipped,
        and so is any uncommitted node no rerunning node needs. Everything else runs again.
        """
        reuse = {n for n in committed if self.nodes[n].kind != "sink"}
        skip = {n for n in done_sinks if all(i in reuse for i in self.inputs[n])}
        for name in reversed(self.order):
            if name in reuse or name in skip or self.nodes[name].kind == "sink":
                continue
            consumers = self.consumers[name]
            if consumers and all(c in reuse or c in skip for c in consumers):
                skip.add(name)
        return frozenset(reuse), frozenset(skip)

    def needs_staging(self, name: str) -> bool:
        """Whether the node's output must be staged: asked for, or read by a blocking consumer."""
        node = self.nodes[name]
        if node.kind in ("sink", "sensor", "task"):
            return False
        if node.stage or node.expectations.dataset_checks or node.cursor_column is not None:
            return True  # an incremental source's cursor is kept with its committed output
        if node.output_model is not None and unique_sets(node.output_model):
            return True  # uniqueness across chunks is checked over the staged output
        return any(
            not self.streams_into(c) and self.nodes[c].kind != "task" for c in self.consumers[name]
        )

    def streams_into(self, name: str) -> bool:
        """Whether the node consumes its inputs through channels as they are produced.

        Transforms and sinks do, except those in a pool: a node waiting for a pool slot must not
        hold up the producers its siblings need, so it reads its inputs' staged outputs instead.
        """
        node = self.nodes[name]
        return node.streaming and node.run_options.pool is None

    def pool_problems(self, pools: Mapping[str, int]) -> list[str]:
        """Nodes naming a pool `pools` does not define (a run would fail when they start)."""
        return [
            f"node '{name}' uses pool '{pool}', which is not defined; pools are "
            f"{quoted(sorted(pools))} (add `{pool} = N` under [pools] in etlkit.toml)."
            + _did_you_mean(pool, pools)
            for name in self.order
            if (pool := self.nodes[name].run_options.pool) is not None and pool not in pools
        ]


def _did_you_mean(name: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _resolve_inputs(
    name: str, node: Node, by_id: Mapping[int, str], nodes: Mapping[str, Node], problems: list[str]
) -> tuple[str, ...]:
    resolved: list[str] = []
    for item in node.inputs:
        if isinstance(item, str):
            if item in nodes:
                resolved.append(item)
            elif not isinstance(node, Sql):
                problems.append(
                    f"node '{name}' has unknown input '{item}'.{_did_you_mean(item, nodes)}"
                )
            continue
        upstream = by_id.get(id(item))
        if upstream is None:
            problems.append(
                f"node '{name}' reads from {item!r}, which is not a node of this pipeline "
                "(declare it as a class attribute; was its attribute name reused?)"
            )
        else:
            resolved.append(upstream)
    return tuple(dict.fromkeys(resolved))


def _sql_template_problems(
    name: str, node: Sql, nodes: Mapping[str, Node], params: Collection[str]
) -> list[str]:
    problems = []
    for _, field, _, _ in string.Formatter().parse(node.query):
        if not field:
            continue
        root = field.split(".")[0].split("[")[0]
        if root in nodes or root in TEMPLATE_NAMES or root in params:
            continue
        hint = _did_you_mean(root, [*nodes, *params])
        problems.append(
            f"SQL of node '{name}' refers to {{{root}}}, which is neither a node, a built-in "
            f"template name nor a declared param.{hint}"
        )
    return problems


def _role_problems(name: str, node: Node) -> list[str]:
    if node.kind == "source" and node.inputs:
        return [f"source '{name}' cannot have inputs"]
    if node.kind not in ("source", "sensor", "task") and not node.inputs:
        return [f"{node.kind} node '{name}' has no inputs"]
    return []


def _find_cycle(inputs: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for upstream in inputs[name]:
            if state.get(upstream) == 1:
                return [*path[path.index(upstream) :], upstream]
            if upstream not in state:
                found = visit(upstream)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in inputs:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def _topological(names: list[str], inputs: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    # Each step places the first declared node whose inputs are all placed, so a declaration
    # that is already topological is kept as is.
    placed: dict[str, None] = {}
    remaining = list(names)
    while remaining:
        ready = next(n for n in remaining if all(i in placed for i in inputs[n]))
        placed[ready] = None
        remaining.remove(ready)
    return tuple(placed)


def build_graph(
    pipeline: str,
    nodes: Mapping[str, Node],
    *,
    params: Collection[str] = (),
    replaced: Mapping[str, Collection[Node]] | None = None,
) -> Graph:
    """Resolve and check a pipeline's nodes; return the graph or raise with every problem.

    Args:
        pipeline: the pipeline's name, for messages.
        nodes: the nodes by name, in declaration order.
        params: the declared param names (usable in SQL templates).
        replaced: node objects that `nodes[name]` replaces (a base pipeline's node overridden
            in a subclass): inputs pointing at them resolve to `name`.

    Raises:
        PipelineDefinitionError: lists each problem, naming the pipeline, nodes and columns.
    """
    problems: list[str] = []
    if not nodes:
        problems.append(
            "pipeline has no nodes; declare sources, transforms and sinks as class attributes"
        )
    by_id = _node_ids(nodes, replaced or {}, problems)
    inputs = {n: _resolve_inputs(n, node, by_id, nodes, problems) for n, node in nodes.items()}
    for name, node in nodes.items():
        problems.extend(_role_problems(name, node))
        if isinstance(node, Sql):
            problems.extend(_sql_template_problems(name, node, nodes, params))
        problems.extend(_no_output_problems(name, node, inputs[name], nodes))

    cycle = _find_cycle(inputs)
    if cycle:
        problems.append("cycle: " + " -> ".join(cycle))
    problems.extend(_schema_problems(nodes, inputs))

    if problems:
        raise PipelineDefinitionError(pipeline, problems)

    consumers: dict[str, list[str]] = {n: [] for n in nodes}
    for name in nodes:
        for upstream in inputs[name]:
            consumers[upstream].append(name)
    order = _topological(list(nodes), inputs)
    return Graph(
        pipeline=pipeline,
        nodes={n: nodes[n] for n in order},
        inputs=inputs,
        consumers={n: tuple(c) for n, c in consumers.items()},
        order=order,
    )


def _node_ids(
    nodes: Mapping[str, Node], replaced: Mapping[str, Collection[Node]], problems: list[str]
) -> dict[int, str]:
    """Each node object's name, by `id`, and the objects `replaced` by a subclass's nodes;
    appends to `problems` the reserved names and objects declared under two names."""
    by_id: dict[int, str] = {}
    for name, node in nodes.items():
        if name in TEMPLATE_NAMES:
            problems.append(f"node name '{name}' is reserved for templates; rename the node")
        if id(node) in by_id:
            problems.append(
                f"the same node object is declared as both '{by_id[id(node)]}' and '{name}'; "
                "create one node per name"
            )
        else:
            by_id[id(node)] = name
    for name, olds in replaced.items():
        for old in olds:
            by_id.setdefault(id(old), name)
    return by_id


def _no_output_problems(
    name: str, node: Node, upstreams: Sequence[str], nodes: Mapping[str, Node]
) -> list[str]:
    """A node reading from a sink, sensor or task, which have no output (a task may follow)."""
    problems = []
    for upstream in upstreams:
        upstream_kind = nodes[upstream].kind
        if upstream_kind in ("sink", "sensor", "task") and node.kind != "task":
            problems.append(
                f"node '{name}' reads from {upstream_kind} '{upstream}', which has no output"
                + (
                    "; to run after it, make this a Task with after="
                    if upstream_kind == "sink"
                    else ""
                )
            )
    return problems


def _schema_problems(nodes: Mapping[str, Node], inputs: Mapping[str, Sequence[str]]) -> list[str]:
    """Every edge whose upstream's output model does not fit the node's input model."""
    problems = []
    for name, node in nodes.items():
        for upstream in inputs[name]:
            produced, expected = nodes[upstream].output_model, node.input_model
            if produced is None or expected is None:
                continue
            for problem in edge_problems(produced, expected):
                problems.append(
                    f"edge '{upstream}' -> '{name}' ({model_name(produced)} -> "
                    f"{model_name(expected)}): {problem}"
                )
    return problems


def render_text(graph: Graph) -> str:
    """A readable text rendering of the DAG: one line per node, in order, with its edges.

    monthly_report (7 nodes)
      billing        source  CsvSource  RawBilling  <- (none)   -> billing_clean
      ...
    """
    rows = []
    for name in graph.order:
        node = graph.nodes[name]
        model = model_name(node.output_model if node.kind != "sink" else node.input_model)
        rows.append(
            (
                name,
                node.kind,
                type(node).__name__,
                model,
                "<- " + (", ".join(graph.inputs[name]) or "(none)"),
                "-> " + (", ".join(graph.consumers[name]) or "(none)"),
            )
        )
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(5)]
    lines = [f"{graph.pipeline} ({len(graph.order)} nodes)"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[5]]).rstrip())
    return "\n".join(lines)
