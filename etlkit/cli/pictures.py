"""Pictures of pipelines and runs as text: a DAG (a tree, Mermaid, Graphviz DOT) and a Gantt.

Pure functions from a `Graph` or a run's node records to text; the CLI prints them or hands the
DOT text to Graphviz for SVG and PNG. Names are escaped for each format, so a node or pipeline
name holding quotes, brackets or markup cannot break the picture or inject into it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from etlkit.errors import ConfigError, EtlkitError
from etlkit.model.graph import render_text

if TYPE_CHECKING:
    from pathlib import Path

    from etlkit.model.graph import Graph
    from etlkit.storage.store import NodeRunRecord

#: Fill colours by node kind, shared by Mermaid and DOT so both pictures read alike.
_KIND_COLOURS: Final = {
    "source": "#dbeafe",
    "transform": "#fef3c7",
    "sql": "#ede9fe",
    "lazy": "#ede9fe",
    "sink": "#dcfce7",
    "sensor": "#f3f4f6",
    "task": "#fce7f3",
}


def _label(graph: Graph, name: str) -> str:
    node = graph.nodes[name]
    return f"{node.kind} · {type(node).__name__}"


# -- text ----------------------------------------------------------------------------------------


def render_tree(graph: Graph) -> str:
    """The DAG as an indented tree from each root (a node without inputs) down its consumers.

    A node with several inputs appears under each; below its first appearance it is marked
    `(see above)` instead of being expanded again, so the picture stays as long as the graph.
    """
    lines = [f"{graph.pipeline} ({len(graph.order)} nodes)"]
    shown: set[str] = set()
    # (name, prefix, branch, below) in drawing order; a stack, not recursion: a long chain of
    # nodes is as deep as it is long
    roots = [n for n in graph.order if not graph.inputs[n]]
    stack = [(root, "", "", "") for root in reversed(roots)]
    while stack:
        name, prefix, branch, below = stack.pop()
        again = name in shown
        suffix = "  (see above)" if again else f"  [{_label(graph, name)}]"
        lines.append(f"{prefix}{branch}{name}{suffix}")
        if again:
            continue
        shown.add(name)
        consumers = graph.consumers[name]
        for index in reversed(range(len(consumers))):
            last = index == len(consumers) - 1
            branches = ("└─ ", "   ") if last else ("├─ ", "│  ")
            stack.append((consumers[index], prefix + below, *branches))
    return "\n".join(lines)


def render_graph_text(graph: Graph) -> str:
    """`etlkit graph --format text`: the tree, then one line per node with its edges."""
    return render_tree(graph) + "\n\n" + render_text(graph)


# -- Mermaid -------------------------------------------------------------------------------------

_MERMAID_PLAIN: Final = re.compile(r"[A-Za-z0-9 _.,:()/·-]")


def mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: anything but plain characters as an entity code
    (`#34;` for `"`), which Mermaid decodes; quotes, brackets, `<`, `;` and newlines then
    cannot end the label, open markup or start a statement."""
    return "".join(c if _MERMAID_PLAIN.fullmatch(c) else f"#{ord(c)};" for c in text)


def render_mermaid(graph: Graph) -> str:
    """The DAG as a Mermaid flowchart (left to right), nodes coloured by kind.

    Node ids are generated (`n0`, `n1`, ...); names appear only in quoted, escaped labels.
    """
    ids = {name: f"n{index}" for index, name in enumerate(graph.order)}
    lines = [f"%% pipeline {mermaid_text(graph.pipeline)}", "flowchart LR"]
    for name in graph.order:
        label = mermaid_text(name) + "<br/>" + mermaid_text(_label(graph, name))
        lines.append(f'    {ids[name]}["{label}"]')
    for name in graph.order:
        lines.extend(f"    {ids[upstream]} --> {ids[name]}" for upstream in graph.inputs[name])
    kinds = sorted({graph.nodes[n].kind for n in graph.order})
    for kind in kinds:
        colour = _KIND_COLOURS.get(kind, "#ffffff")
        lines.append(f"    classDef {kind} fill:{colour},stroke:#555")
        members = ",".join(ids[n] for n in graph.order if graph.nodes[n].kind == kind)
        lines.append(f"    class {members} {kind}")
    return "\n".join(lines)


# -- Graphviz DOT --------------------------------------------------------------------------------


def dot_string(text: str) -> str:
    """A DOT double-quoted string holding `text`: backslashes doubled (labels read `\\N`,
    `\\G` and `\\l` as escapes), quotes escaped, line breaks as `\\n`."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def render_dot(graph: Graph) -> str:
    """The DAG as a Graphviz digraph (left to right), nodes coloured by kind.

    Node ids are generated (`n0`, `n1`, ...); names appear only in quoted, escaped labels.
    """
    ids = {name: f"n{index}" for index, name in enumerate(graph.order)}
    lines = [
        f"digraph {dot_string(graph.pipeline)} {{",
        "    rankdir=LR;",
        f"    label={dot_string(graph.pipeline)}; labelloc=t;",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for name in graph.order:
        colour = _KIND_COLOURS.get(graph.nodes[name].kind, "#ffffff")
        label = dot_string(f"{name}\n{_label(graph, name)}")
        lines.append(f'    {ids[name]} [label={label}, fillcolor="{colour}"];')
    for name in graph.order:
        lines.extend(f"    {ids[upstream]} -> {ids[name]};" for upstream in graph.inputs[name])
    lines.append("}")
    return "\n".join(lines)


GRAPHVIZ_HINT: Final = (
    "install Graphviz: apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS)"
)


def render_image(dot: str, fmt: Literal["svg", "png"], output: Path) -> None:
    """Draw DOT text with Graphviz's `dot` program into `output` (SVG or PNG).

    The picture is written next to `output` and moved into place once whole.

    Raises:
        ConfigError: `dot` is not installed (the message says how to install it), or the
            folder of `output` does not exist.
        EtlkitError: `dot` failed; its own message is included.
    """
    program = shutil.which("dot")
    if program is None:
        raise ConfigError(
            f"--format {fmt} needs Graphviz's dot program, which is not on PATH; "
            f"{GRAPHVIZ_HINT}. --format dot and --format mermaid need nothing installed."
        )
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: folder {output.parent} does not exist")
    temp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        # an argument list, never a shell: the path is passed as it is
        done = subprocess.run(
            [program, f"-T{fmt}", "-o", str(temp)],
            input=dot.encode(),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()
            raise EtlkitError(
                f"Graphviz's dot could not draw {output} (exit {done.returncode}): {message}"
            )
        temp.replace(output)
    finally:
        temp.unlink(missing_ok=True)


# -- Gantt ---------------------------------------------------------------------------------------

#: Bar character and ANSI colour per node state; the character alone tells states apart.
_BARS: Final = {
    "done": ("█", "32"),
    "reused": ("░", "36"),
    "running": ("▒", "33"),
    "failed": ("X", "31;1"),
    "cancelled": ("/", "35"),
    "skipped": (" ", "2"),
    "pending": (" ", "2"),
}
_MIN_BAR: Final = 10


def duration_text(seconds: float) -> str:
    """A short duration: `0.42s`, `12.3s`, `4m05s`, `2h03m`."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _span(node: NodeRunRecord, now: datetime) -> tuple[datetime, datetime] | None:
    if node.started_at is None:
        return None
    end = node.finished_at or (now if node.state == "running" else node.started_at)
    return node.started_at, max(end, node.started_at)


def render_gantt(
    nodes: Sequence[NodeRunRecord], *, now: datetime, width: int, colour: bool = False
) -> str:
    """A run's node timeline: one row per node, bars on a shared time axis fitted to `width`.

    Running nodes are drawn up to `now`; each row ends with the node's state and duration.
    States differ by bar character (█ done, ▒ running, X failed, / cancelled, ░ reused) and,
    with `colour`, by ANSI colour. Nodes that never started have an empty row.
    """
    spans = {n.node: _span(n, now) for n in nodes}
    starts = [s[0] for s in spans.values() if s is not None]
    ends = [s[1] for s in spans.values() if s is not None]
    if not starts:
        return "no node has started yet"
    t0 = min(starts)
    total = max((max(ends) - t0).total_seconds(), 1e-6)
    labels = [f"{n.state} {_duration(spans[n.node])}".rstrip() for n in nodes]
    name_width = min(max(len(n.node) for n in nodes), 30)
    label_width = max(len(label) for label in labels)
    bar_width = max(width - name_width - label_width - 4, _MIN_BAR)
    lines = []
    for node, label in zip(nodes, labels, strict=True):
        bar = _bar(node.state, spans[node.node], t0, total, bar_width, colour)
        name = node.node if len(node.node) <= name_width else node.node[: name_width - 1] + "…"
        lines.append(f"{name.ljust(name_width)} │{bar}│ {label}".rstrip())
    axis_end = duration_text(total)
    lines.append(" " * name_width + " └" + "0s".ljust(bar_width - len(axis_end)) + axis_end + "┘")
    return "\n".join(lines)


def _duration(span: tuple[datetime, datetime] | None) -> str:
    return "" if span is None else duration_text((span[1] - span[0]).total_seconds())


def _bar(
    state: str,
    span: tuple[datetime, datetime] | None,
    t0: datetime,
    total: float,
    width: int,
    colour: bool,
) -> str:
    if span is None:
        return " " * width
    start = math.floor((span[0] - t0).total_seconds() / total * width)
    end = math.ceil((span[1] - t0).total_seconds() / total * width)
    start = min(start, width - 1)
    end = min(max(end, start + 1), width)
    char, code = _BARS.get(state, ("?", "0"))
    if state == "running":
        fill = char * (end - start - 1) + "▶"
    else:
        fill = (char if char != " " else "·") * (end - start)
    if colour:
        fill = f"\x1b[{code}m{fill}\x1b[0m"
    return " " * start + fill + " " * (width - end)
