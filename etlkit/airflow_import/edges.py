"""A DAG's dependencies made concrete: task groups replaced by their tasks, and cycles found."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from etlkit.airflow_import.model import Edge


def resolve(edges: Sequence[Edge], groups: Mapping[str, Sequence[str]]) -> list[Edge]:
    """The edges between tasks: a group upstream stands for its last tasks, downstream for its
    first ones (as Airflow's `group >> task` and `task >> group`); duplicates dropped."""

    def expand(ref: str, *, leaves: bool) -> list[str]:
        if not ref.startswith("group:"):
            return [ref]
        group = ref.removeprefix("group:")
        members = [
            t for g, ts in groups.items() if g == group or g.startswith(group + ".") for t in ts
        ]
        inner = [e for e in edges if e.upstream in members and e.downstream in members]
        ends = {e.upstream for e in inner} if leaves else {e.downstream for e in inner}
        return [t for t in members if t not in ends]

    resolved = [
        Edge(up, down, edge.line)
        for edge in edges
        for up in expand(edge.upstream, leaves=True)
        for down in expand(edge.downstream, leaves=False)
    ]
    return list(dict.fromkeys(resolved))


def find_cycle(edges: Sequence[Edge], tasks: Iterable[str]) -> tuple[Edge, list[str]] | None:
    """An edge closing a cycle and the cycle's tasks (first = last), or None.

    Iterative depth-first search, so a chain of thousands of tasks needs no deep recursion.
    """
    downstream: dict[str, list[Edge]] = {}
    for each in edges:
        downstream.setdefault(each.upstream, []).append(each)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in tasks:
        if root in state:
            continue
        state[root] = 1
        path: list[Edge] = []
        stack = [iter(downstream.get(root, []))]
        while stack:
            edge = next(stack[-1], None)
            if edge is None:
                stack.pop()
                done = path.pop().downstream if path else root
                state[done] = 2
                continue
            if state.get(edge.downstream) == 1:
                loop = [*path, edge]
                start = next(i for i, e in enumerate(loop) if e.upstream == edge.downstream)
                return edge, [e.upstream for e in loop[start:]] + [edge.downstream]
            if edge.downstream not in state:
                state[edge.downstream] = 1
                path.append(edge)
                stack.append(iter(downstream.get(edge.downstream, [])))
    return None
