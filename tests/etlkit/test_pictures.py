"""Pictures in the terminal: the DAG as a tree, Mermaid and DOT (SVG/PNG through Graphviz), and
a run's Gantt; names that would break a format are escaped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.cli import main
from etlkit.cli.pictures import render_dot, render_gantt, render_mermaid, render_tree
from etlkit.model.graph import Graph, build_graph
from etlkit.model.nodes import Node
from etlkit.storage.store import NodeRunRecord
from etlkit.testing import MemorySink, MemorySource

TABLE = pa.table({"x": [1, 2, 3]})
EVIL_SOURCE = 'src"]; click n0 "javascript:x" [x]'
EVIL_SINK = "out<script>alert(1)</script>\\N\n;end"
EVIL_PIPELINE = 'pipe"line {x} <b>'

needs_graphviz = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz is not installed (.ci/run installs it)"
)


def evil() -> Graph:
    source = MemorySource(TABLE)
    return build_graph(EVIL_PIPELINE, {EVIL_SOURCE: source, EVIL_SINK: MemorySink(source)})


# -- text ----------------------------------------------------------------------------------------

PIPELINE = '''
import pyarrow as pa
import polars as pl
import etlkit as ek
from etlkit.testing import MemorySink, MemorySource

class Double(ek.Transform):
    def process(self, batch, ctx):
        return batch.with_columns(pl.col("x") * 2)

class Shapes(ek.Pipeline):
    """Two sources joined, written twice."""
    left = MemorySource(pa.table({"x": [1, 2, 3]}))
    right = MemorySource(pa.table({"x": [4, 5]}))
    doubled = Double(left)
    joined = ek.Sql("select * from {doubled} union all select * from {right}")
    first = MemorySink(joined)
    second = MemorySink(joined)
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "shapes.py").write_text(PIPELINE)
    monkeypatch.chdir(tmp_path)
    for key in [k for k in __import__("os").environ if k.startswith("ETLKIT_")]:
        monkeypatch.delenv(key)
    return tmp_path


def test_graph_text_draws_a_tree_from_each_source_and_marks_a_node_seen_twice(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", "shapes"]) == 0
    tree = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert tree == [
        "shapes (6 nodes)",
        "left  [source · MemorySource]",
        "└─ doubled  [transform · Double]",
        "   └─ joined  [sql · Sql]",
        "      ├─ first  [sink · MemorySink]",
        "      └─ second  [sink · MemorySink]",
        "right  [source · MemorySource]",
        "└─ joined  (see above)",
    ]


def test_graph_text_still_lists_each_node_with_its_inputs_and_consumers(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", "shapes", "--format", "text"]) == 0
    table = capsys.readouterr().out.split("\n\n")[1]
    joined = next(line for line in table.splitlines() if line.split()[0] == "joined")
    assert "<- doubled, right" in joined
    assert joined.rstrip().endswith("-> first, second")


# -- Mermaid -------------------------------------------------------------------------------------


def _mermaid_decode(text: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


def test_mermaid_draws_every_node_and_edge(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", "shapes", "--format", "mermaid"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[1] == "flowchart LR"
    labels = dict(re.findall(r'^\s+(n\d+)\["([^"]*)"\]$', text, flags=re.MULTILINE))
    names = {_mermaid_decode(label).split("<br/>")[0]: id_ for id_, label in labels.items()}
    assert set(names) == {"left", "right", "doubled", "joined", "first", "second"}
    edges = set(re.findall(r"^\s+(n\d+) --> (n\d+)$", text, flags=re.MULTILINE))
    expected = [("left", "doubled"), ("doubled", "joined"), ("right", "joined")]
    expected += [("joined", "first"), ("joined", "second")]
    assert edges == {(names[a], names[b]) for a, b in expected}


#: A Mermaid label's text: plain characters and entity codes only.
LABEL = r"(?:[^\"<>\[\]#;\n]|#\d+;)*"


def test_mermaid_escapes_quotes_brackets_markup_and_line_breaks_in_names() -> None:
    text = render_mermaid(evil())
    lines = text.splitlines()
    # every line is a comment, the header, a node, an edge or a class line: nothing injected
    shapes = (
        r"%% pipeline [^\n]*",
        r"flowchart LR",
        rf'    n\d+\["{LABEL}<br/>{LABEL}"\]',
        r"    n\d+ --> n\d+",
        r"    classDef \w+ fill:#\w+,stroke:#555",
        r"    class [n\d,]+ \w+",
    )
    for line in lines:
        assert any(re.fullmatch(shape, line) for shape in shapes), line
    assert len(lines) == 2 + 2 + 1 + 4
    labels = re.findall(r'\["([^"]*)<br/>', text)
    assert [_mermaid_decode(label) for label in labels] == [EVIL_SOURCE, EVIL_SINK]
    assert _mermaid_decode(lines[0]) == f"%% pipeline {EVIL_PIPELINE}"


# -- DOT, SVG, PNG -------------------------------------------------------------------------------


@needs_graphviz
def test_dot_keeps_names_with_quotes_backslashes_and_line_breaks_intact() -> None:
    drawn = subprocess.run(
        ["dot", "-Tjson"], input=render_dot(evil()).encode(), capture_output=True, check=True
    )
    graph = json.loads(drawn.stdout)
    assert graph["name"] == EVIL_PIPELINE
    labels = [obj["label"] for obj in graph["objects"]]
    # Graphviz reports labels as written (escString): undo the DOT escapes to compare
    unescaped = [
        re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), label)
        for label in labels
    ]
    assert unescaped == [f"{EVIL_SOURCE}\nsource · MemorySource", f"{EVIL_SINK}\nsink · MemorySink"]
    assert [(e["tail"], e["head"]) for e in graph["edges"]] == [(0, 1)]


@needs_graphviz
def test_graph_svg_and_png_are_drawn_by_graphviz(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", "shapes", "--format", "svg"]) == 0
    assert capsys.readouterr().out == "wrote shapes.svg\n"
    svg = (project / "shapes.svg").read_text()
    assert svg.lstrip().startswith("<?xml")
    assert all(f">{name}</text>" in svg for name in ("left", "right", "joined", "second"))
    out = project / "pictures" / "shapes picture.png"  # a space: no shell in between
    out.parent.mkdir()
    assert main(["graph", "shapes", "--format", "png", "--output", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in out.parent.iterdir()) == ["shapes picture.png"]


def test_graph_svg_without_graphviz_says_how_to_install_it(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(project / "empty"))
    assert main(["graph", "shapes", "--format", "svg"]) == 2
    err = capsys.readouterr().err
    assert "install Graphviz: apt-get install graphviz (Debian/Ubuntu)" in err
    assert "brew install graphviz (macOS)" in err
    assert not (project / "shapes.svg").exists()


def test_graph_text_formats_write_to_output_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", "shapes", "--format", "dot", "--output", "shapes.dot"]) == 0
    assert capsys.readouterr().out == "wrote shapes.dot\n"
    assert (project / "shapes.dot").read_text().startswith('digraph "shapes" {')


# -- Gantt ---------------------------------------------------------------------------------------

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


def node_run(name: str, state: str, start: float | None, end: float | None) -> NodeRunRecord:
    return NodeRunRecord(
        run_id="r",
        node=name,
        kind="source",
        attempt=1,
        state=state,  # type: ignore[arg-type]  # the states under test, as text
        started_at=None if start is None else T0 + timedelta(seconds=start),
        finished_at=None if end is None else T0 + timedelta(seconds=end),
        rows_in=0,
        rows_out=0,
        invalid_rows=0,
        bytes_staged=0,
        chunks=0,
        error=None,
    )


def test_gantt_scales_bars_to_the_width_and_draws_running_nodes_to_now() -> None:
    nodes = [
        node_run("extract", "done", 0, 10),
        node_run("load", "running", 10, None),
        node_run("check", "failed", 5, 10),
        node_run("report", "pending", None, None),
    ]
    text = render_gantt(nodes, now=T0 + timedelta(seconds=20), width=44)
    lines = text.splitlines()
    assert all(len(line) <= 44 for line in lines)
    bars = {line.split()[0]: line.split("│")[1] for line in lines[:-1]}
    assert {len(bar) for bar in bars.values()} == {20}  # 44 - 7 (name) - 13 (label) - 4
    assert bars["extract"] == "█" * 10 + " " * 10
    assert bars["load"] == " " * 10 + "▒" * 9 + "▶"
    assert bars["check"] == " " * 5 + "X" * 5 + " " * 10
    assert bars["report"] == " " * 20
    assert lines[0].endswith("│ done 10.0s")
    assert lines[1].endswith("│ running 10.0s")
    assert lines[3].endswith("│ pending")
    assert lines[-1] == " " * 8 + "└0s" + " " * 13 + "20.0s┘"  # under the bars


def test_gantt_colours_states_only_when_asked() -> None:
    nodes = [node_run("a", "done", 0, 1), node_run("b", "failed", 1, 2)]
    plain = render_gantt(nodes, now=T0, width=40)
    coloured = render_gantt(nodes, now=T0, width=40, colour=True)
    assert "\x1b[" not in plain
    assert "\x1b[32m█" in coloured
    assert "\x1b[31;1mX" in coloured
    assert re.sub(r"\x1b\[[\d;]*m", "", coloured) == plain


def test_gantt_of_a_run_no_node_of_which_started_says_so() -> None:
    assert render_gantt([node_run("a", "pending", None, None)], now=T0, width=40) == (
        "no node has started yet"
    )


def test_show_gantt_draws_the_runs_timeline(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "shapes", "--progress", "none"]) == 0
    capsys.readouterr()
    assert main(["runs", "shapes"]) == 0
    run_id = capsys.readouterr().out.splitlines()[1].split()[0]
    assert main(["show", run_id, "--gantt", "--width", "70"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "│" in line]
    names = sorted(row.split()[0] for row in rows)
    assert names == ["doubled", "first", "joined", "left", "right", "second"]
    assert all(len(row) <= 70 and "█" in row and "│ done " in row for row in rows)
    assert "\x1b[" not in out  # not a terminal: no colour


class Passthrough(ek.Transform[Any, Any]):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


def test_tree_of_a_long_chain_of_nodes_is_drawn_whole() -> None:
    source = MemorySource(TABLE)
    nodes: dict[str, Node] = {"n0": source}
    for index in range(1, 1500):
        nodes[f"n{index}"] = Passthrough(f"n{index - 1}")
    graph = build_graph("chain", nodes)
    lines = render_tree(graph).splitlines()
    assert len(lines) == 1501
    assert lines[-1] == " " * 3 * 1498 + "└─ n1499  [transform · Passthrough]"
