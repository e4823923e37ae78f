"""How a plan is cut for a cluster: streaming segments split by partitions, and single nodes.

A *segment* is a source and the chain of per-chunk transforms its chunks flow through, each
the only streaming consumer of the one before; it runs as one task per partition of the
source, the nodes chained as generators. Every other node that runs is a *single*: one task
running the node whole over its inputs' committed staging (SQL, lazy, sinks, tasks, a source
referred to in place, and per-chunk nodes that cannot be split: several inputs, a
`takes_out_repeats` output, a drop or quarantine policy, whose verdict spans the whole
output). `layout` decides it from the local plan; `adjusted` gives the plan the steps then
see, where every edge leaving a segment or into a single reads committed staging: its
producer's output is staged, and nothing streams into SQL. A split source whose files may
stand for its output (`Plan.references`) stages a reference to them, decided by the
coordinator before its partitions run (`copies`: the nodes whose partitions write parts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from etlkit.model.nodes import Source, Transform

if TYPE_CHECKING:
    from etlkit.engine.plan import Plan

#: Node kinds with no data output.
_NO_OUTPUT: Final = ("sink", "task", "sensor")
#: Node kinds reading no data (an `after=` edge into one only orders them).
_NO_INPUT: Final = ("task", "sensor")


@dataclass(frozen=True)
class Layout:
    """The cut of a plan (see the module docstring): `segments`, each a chain of node names
    (the source first), `singles` in the graph's order, and the plan's adjusted fields."""

    segments: tuple[tuple[str, ...], ...]
    singles: tuple[str, ...]
    channels: frozenset[str]
    staged: frozenset[str]
    references: frozenset[str]

    def fields(self) -> dict[str, list[str]]:
        """The adjusted plan fields as JSON, for the workers (`adjusted` applies them)."""
        return {
            "channels": sorted(self.channels),
            "staged": sorted(self.staged),
            "references": sorted(self.references),
        }

    def segment_of(self, name: str) -> tuple[str, ...] | None:
        return next((s for s in self.segments if name in s), None)


def layout(plan: Plan) -> Layout:
    """Cut the plan into segments and singles (see the module docstring)."""
    graph = plan.graph
    runs = [n for n in plan.runs if graph.nodes[n].kind != "sensor"]
    running = set(runs)
    segments: list[tuple[str, ...]] = []
    members: set[str] = set()
    for name in runs:
        node = graph.nodes[name]
        if not isinstance(node, Source) or name in plan.refers_in_place:
            continue
        if not _splittable(plan, name):
            continue
        chain = [name]
        while True:
            consumers = [c for c in graph.consumers[chain[-1]] if c in plan.channels]
            if len(consumers) != 1:
                break
            (next_,) = consumers
            node = graph.nodes[next_]
            if (
                not isinstance(node, Transform)
                or len(graph.inputs[next_]) != 1
                or next_ not in running
                or next_ in plan.streamed_sql
                or not _splittable(plan, next_)
            ):
                break
            chain.append(next_)
        segments.append(tuple(chain))
        members.update(chain)
    channels = frozenset(n for s in segments for n in s[1:])
    staged = set(plan.staged)
    following = {s[i]: s[i + 1] for s in segments for i in range(len(s) - 1)}
    for name in graph.order:
        if graph.nodes[name].kind in _NO_OUTPUT:
            continue
        readers = [c for c in graph.consumers[name] if graph.nodes[c].kind not in _NO_INPUT]
        if any(c != following.get(name) for c in readers):
            staged.add(name)  # read back from staging by a consumer outside its chain
    return Layout(
        segments=tuple(segments),
        singles=tuple(n for n in runs if n not in members),
        channels=channels,
        staged=frozenset(staged),
        references=plan.references,
    )


def _splittable(plan: Plan, name: str) -> bool:
    """Whether a node's chunks may be judged apart, partition by partition: its guard (if
    any) fails the run at the first invalid chunk, its output needs no second look at
    repeated keys, and it holds no pool slot."""
    node = plan.graph.nodes[name]
    options = plan.options
    if name in plan.takes_out_repeats or name in plan.pools:
        return False
    if node.cursor_column is not None and plan.graph.inputs[name]:
        return False
    guarded = options.validate and (node.output_model is not None or node.input_model is not None)
    policy = node.expectations.on_invalid or options.on_invalid
    fraction = node.expectations.max_invalid_fraction
    if fraction is None:
        fraction = options.max_invalid_fraction
    return not guarded or (policy == "fail" and fraction is None)


def copies(plan: Plan, segment: Sequence[str], referenced: bool) -> list[str]:
    """The nodes of a segment whose partitions write parts: the staged ones, but a source
    staged as a reference to its files (`referenced`)."""
    return [n for n in segment if n in plan.staged and not (referenced and n == segment[0])]


def adjusted(plan: Plan, fields: Mapping[str, Sequence[str]]) -> Plan:
    """The plan the steps see on a cluster: `fields` (from `Layout.fields`) replace the local
    plan's; nothing streams into SQL (it reads its input's committed staging)."""
    return dataclasses.replace(
        plan,
        channels=frozenset(fields["channels"]),
        staged=frozenset(fields["staged"]),
        references=frozenset(fields["references"]),
        streamed_sql=frozenset(),
    )
