"""The UI's pages and actions through httpx (Starlette's TestClient), on a real store."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from etlkit.settings.config import Settings
from etlkit.storage.store import NodeUpdate, PartitionRecord, RunStore
from etlkit.ui import pages
from tests.ui.conftest import csrf_of
from tests.ui.project import SCRIPT, run


def test_pipelines_page_lists_schedule_paused_state_and_runs(
    client: TestClient, demo_run: str
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "@daily" in page.text
    assert f'href="/runs/{demo_run}"' in page.text
    assert 'class="sq s-success"' in page.text
    assert "overdue" in page.text  # start_date 2025-01-01: due long ago, no scheduler ran it


def test_failing_pipelines_come_first(
    client: TestClient, tmp_path: Path, settings: Settings, demo_run: str
) -> None:
    run(tmp_path, settings, "broken")
    text = client.get("/").text
    assert text.index('data-pipeline="broken"') < text.index('data-pipeline="demo"')


def test_pause_and_unpause_are_posts_with_a_csrf_token(
    client: TestClient, settings: Settings
) -> None:
    token = csrf_of(client.get("/").text)
    assert client.get("/pipelines/demo/pause").status_code == 405
    refused = client.post("/pipelines/demo/pause", data={"csrf": "wrong"})
    assert refused.status_code == 403
    with RunStore(settings.paths.store) as store:
        assert "demo" not in store.paused_pipelines()
    done = client.post("/pipelines/demo/pause", data={"csrf": token})
    assert done.status_code == 200  # followed the redirect to the pipelines page
    assert "Unpause" in done.text
    with RunStore(settings.paths.store) as store:
        assert "demo" in store.paused_pipelines()
    client.post("/pipelines/demo/unpause", data={"csrf": token})
    with RunStore(settings.paths.store) as store:
        assert "demo" not in store.paused_pipelines()


def test_run_page_shows_graph_gantt_nodes_logs_and_data_links(
    client: TestClient, demo_run: str
) -> None:
    page = client.get(f"/runs/{demo_run}")
    assert page.status_code == 200
    assert '<svg class="dag"' in page.text
    assert '<svg class="gantt"' in page.text
    assert 'id="node-labelled"' in page.text
    assert f'href="/runs/{demo_run}/data/labelled"' in page.text
    assert re.search(r'data-from="numbers"[^>]*>3</text>', page.text)  # rows on the edge
    assert 'id="partitions"' not in page.text  # a local run: nothing about workers
    assert 'id="run-executor"' not in page.text


def test_run_page_of_a_distributed_run_shows_its_executor_and_partitions(
    client: TestClient, settings: Settings, demo_run: str
) -> None:
    with RunStore(settings.paths.store) as store:
        store.record_executor(demo_run, "dask tcp://10.0.0.5:8786")
        part = PartitionRecord("numbers#0", "tcp://10.0.0.7:40001", 3, "1", 0.5)
        update = NodeUpdate("numbers", "source", 1, "done", partitions=(part,))
        store.record_nodes(demo_run, [update])
    page = client.get(f"/runs/{demo_run}").text
    assert '<code id="run-executor">dask tcp://10.0.0.5:8786</code>' in page
    table = page[page.index('id="partitions"') :]
    assert re.search(
        r"<td>numbers</td><td>numbers#0</td><td>tcp://10\.0\.0\.7:40001</td><td>3</td>"
        r"<td>1</td><td>0\.50</td>",
        table,
    )


def test_run_page_lists_the_first_partitions_of_each_node(
    client: TestClient, settings: Settings, demo_run: str
) -> None:
    parts = tuple(PartitionRecord(f"p{i}", "tcp://w:1", 1, "1", 0.1) for i in range(103))
    with RunStore(settings.paths.store) as store:
        store.record_nodes(demo_run, [NodeUpdate("numbers", "source", 1, "done", partitions=parts)])
    page = client.get(f"/runs/{demo_run}").text
    assert "<td>p99</td>" in page
    assert "<td>p100</td>" not in page
    assert "… 3 more partitions" in page


def test_params_and_data_are_escaped_everywhere(client: TestClient, demo_run: str) -> None:
    pages = [
        client.get(f"/runs/{demo_run}").text,
        client.get(f"/runs/{demo_run}/data/labelled").text,
        client.get(f"/runs/{demo_run}/data/labelled?sql=select+note+from+labelled").text,
    ]
    for text in pages:
        assert SCRIPT not in text
        assert "&lt;script&gt;" in text


def test_data_page_shows_rows_schema_summaries_and_history(
    client: TestClient, tmp_path: Path, settings: Settings, demo_run: str
) -> None:
    second = run(tmp_path, settings, "demo", date="2025-03-02")
    page = client.get(f"/runs/{second}/data/labelled")
    assert page.status_code == 200
    assert '<span id="row-count">3</span>' in page.text
    assert "<td>label</td>" in page.text  # schema
    assert "approx_unique" in page.text  # SUMMARIZE
    assert f'href="/runs/{demo_run}/data/labelled"' in page.text  # all_labelled: both runs
    assert '<svg class="bars"' in page.text


def test_sql_box_answers_queries_and_refuses_writes(client: TestClient, demo_run: str) -> None:
    ok = client.get(
        f"/runs/{demo_run}/data/labelled", params={"sql": "select sum(x) as total from labelled"}
    )
    assert 'id="sql-result"' in ok.text
    assert "<td>6</td>" in ok.text
    copy = client.get(
        f"/runs/{demo_run}/data/labelled",
        params={"sql": "copy labelled to '/tmp/stolen.csv'"},
    )
    assert "COPY statements are refused" in copy.text
    read = client.get(
        f"/runs/{demo_run}/data/labelled",
        params={"sql": "select * from read_csv('/etc/passwd')"},
    )
    assert 'id="sql-error"' in read.text
    assert "root:" not in read.text


def test_downloads_csv_and_parquet(client: TestClient, demo_run: str) -> None:
    csv = client.get(f"/runs/{demo_run}/data/labelled/download.csv")
    assert csv.status_code == 200
    assert csv.text.splitlines()[0] == "x,note,label"
    parquet = client.get(
        f"/runs/{demo_run}/data/labelled/download.parquet", params={"sql": "select x from labelled"}
    )
    assert pq.read_table(io.BytesIO(parquet.content)).column("x").to_pylist() == [1, 2, 3]


@pytest.mark.parametrize(
    "path",
    [
        "/runs/..%2F..%2Fetc/data/labelled",  # decoded to '/': no route has it
        "/runs/RUN/data/..%2F..%2Fpasswd",
        "/runs/RUN/data/a..b",
        "/runs/RUN/data/nothing_here",
        "/runs/RUN/data/labelled/download.csv?sql=select+*+from+read_text('/etc/passwd')",
        "/pipelines/a..b",
        "/runs/nope",
    ],
)
def test_bad_names_are_refused_before_any_file_is_read(
    client: TestClient, demo_run: str, path: str
) -> None:
    answer = client.get(path.replace("RUN", demo_run))
    assert answer.status_code in (400, 404)
    assert "root:" not in answer.text


def test_live_changes_send_only_nodes_that_changed_since_the_cursor(
    client: TestClient, demo_run: str
) -> None:
    everything = client.get(
        f"/api/runs/{demo_run}/changes", params={"since": "2000-01-01T00:00:00+00:00"}
    ).json()
    assert {n["node"] for n in everything["nodes"]} == {"numbers", "labelled"}
    assert everything["run"]["state"] == "success"
    later = client.get(
        f"/api/runs/{demo_run}/changes", params={"since": everything["cursor"]}
    ).json()
    assert later["nodes"] == []
    assert later["run"]["finished"] is True


def test_pulse_changes_only_when_runs_change(
    client: TestClient, tmp_path: Path, settings: Settings, demo_run: str
) -> None:
    first = client.get("/api/pulse").json()["fingerprint"]
    assert client.get("/api/pulse").json()["fingerprint"] == first
    run(tmp_path, settings, "demo", date="2025-03-05")
    assert client.get("/api/pulse").json()["fingerprint"] != first


def test_pipeline_grid_pages_through_runs(
    client: TestClient, tmp_path: Path, settings: Settings
) -> None:
    with RunStore(settings.paths.store) as store:
        for day in range(pages.GRID_RUNS + 2):
            store.create_run(
                run_id=f"20250101T0000{day:02d}Z-aaaaaa",
                pipeline="demo",
                logical_date=datetime(2025, 1, 1 + day, tzinfo=UTC),
                params={},
                trigger="schedule",
                staging_root=settings.paths.staging_root,
                state="success",
            )
    first = client.get("/pipelines/demo")
    assert first.status_code == 200
    assert "older runs" in first.text
    nxt = first.text.split('href="/pipelines/demo?before=')[1].split('"')[0]
    second = client.get(f"/pipelines/demo?before={nxt}")
    assert second.text.count('class="col"') == 2


def _spawned(client: TestClient) -> None:
    """Wait for the processes the UI started (retry, backfill) to end."""
    ui = client.app.state.ui
    for child in ui.children:
        assert child.wait(timeout=120) is not None


def test_backfill_from_the_page_runs_every_date(client: TestClient, settings: Settings) -> None:
    token = csrf_of(client.get("/pipelines/demo").text)
    bad = client.post(
        "/pipelines/demo/backfill", data={"csrf": token, "start": "2025-01-03", "end": "x"}
    )
    assert bad.status_code == 400
    assert "is not a date YYYY-MM-DD" in bad.text
    done = client.post(
        "/pipelines/demo/backfill",
        data={"csrf": token, "start": "2025-01-01", "end": "2025-01-02"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    _spawned(client)
    with RunStore(settings.paths.store) as store:
        runs = store.runs("demo")
    assert sorted((r.trigger, r.state) for r in runs) == [("backfill", "success")] * 2


def test_retry_from_the_run_page_runs_a_failed_run_again(
    client: TestClient, tmp_path: Path, settings: Settings
) -> None:
    failed = run(tmp_path, settings, "broken")
    page = client.get(f"/runs/{failed}")
    assert "boom &lt;b&gt;bold&lt;/b&gt;" in page.text  # the node's error, escaped
    answer = client.post(
        f"/runs/{failed}/retry", data={"csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert answer.status_code == 303
    _spawned(client)
    with RunStore(settings.paths.store) as store:
        again = store.get_run(failed)
    assert (again.attempt, again.state) == (2, "failed")
    refused = client.post(f"/runs/{failed}/retry", data={"csrf": "stale"})
    assert refused.status_code == 403


def test_rejects_of_a_run_are_shown_like_any_output(
    client: TestClient, tmp_path: Path, settings: Settings
) -> None:
    checked = run(tmp_path, settings, "checked")
    page = client.get(f"/runs/{checked}")
    assert f'href="/runs/{checked}/data/bills.rejects"' in page.text
    assert '<td data-field="invalid_rows">1</td>' in page.text
    rejects = client.get(f"/runs/{checked}/data/bills.rejects")
    assert rejects.status_code == 200
    assert '<span id="row-count">1</span>' in rejects.text
    assert "column &#39;amount&#39; failed greater_than_or_equal_to(0): -1.0" in rejects.text
    assert "all_bills_rejects" in rejects.text
