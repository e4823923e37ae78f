"""The SVG pictures and the store reads behind the pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from etlkit.storage.store import NodeUpdate, RunStore
from etlkit.ui import svg


def test_layout_puts_every_node_right_of_its_inputs() -> None:
    inputs = {"a": (), "b": (), "c": ("a", "b"), "d": ("c",), "e": ("a", "d")}
    placed = svg.layout(list(inputs), inputs)
    for name, sources in inputs.items():
        for source in sources:
            assert placed[source].x < placed[name].x
    assert len({(p.x, p.y) for p in placed.values()}) == len(inputs)  # no overlap


def test_dag_escapes_node_names_and_labels_edges_with_rows() -> None:
    drawn = svg.dag(["<b>", "out"], {"out": ("<b>",)}, {"<b>": "done"}, {"<b>": 1234})
    assert "&lt;b&gt;" in str(drawn)
    assert ">1,234</text>" in str(drawn)
    assert str(drawn).count("<b>") == 0


def test_gantt_grows_a_running_node_to_now() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    bars = [svg.Bar("a", "done", start, start + timedelta(seconds=1))]
    running = [*bars, svg.Bar("b", "running", start + timedelta(seconds=1), None)]
    early = str(svg.gantt(running, start + timedelta(seconds=2)))
    late = str(svg.gantt(running, start + timedelta(seconds=4)))
    assert "b: 1.00s" in early
    assert "b: 3.00s" in late


def _run(store: RunStore, run_id: str, at: datetime) -> None:
    store.create_run(
        run_id=run_id,
        pipeline="p",
        logical_date=at,
        params={},
        trigger="manual",
        staging_root="s",
        at=at,
    )


def test_store_pages_runs_and_reads_node_states_and_changes(tmp_path: Path) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with RunStore(tmp_path / "runs.db") as store:
        for i in range(5):
            _run(store, f"r{i}", start + timedelta(hours=i))
        assert [r.run_id for r in store.runs_before("p", before=None, limit=2)] == ["r4", "r3"]
        assert [r.run_id for r in store.runs_before("p", before="r3", limit=2)] == ["r2", "r1"]
        assert [r.run_id for r in store.runs_before("p", before="r0", limit=2)] == []
        first = store.fingerprint()
        store.record_nodes(
            "r1",
            [
                NodeUpdate("a", "source", 1, "failed", started_at=start, finished_at=start),
                NodeUpdate("a", "source", 2, "done", started_at=start + timedelta(minutes=1)),
            ],
        )
        assert store.node_states(["r1", "r2"]) == {"r1": {"a": "done"}}
        since = store.node_runs_since("r1", start + timedelta(seconds=30))
        assert [(n.node, n.attempt) for n in since] == [("a", 2)]
        store.pause_pipeline("p")
        assert store.fingerprint() != first
