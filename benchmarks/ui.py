"""How fast the web UI answers with a big history: `python -m benchmarks.ui [--repeat 20]`.

Fills a store in a temporary project with a year of hourly runs of an 11-node pipeline
(8,760 runs, 96,360 node runs) and 4 runs of a 1,000-node pipeline (4,000 node runs), each
with a few failures, then serves `etlkit ui`'s app with uvicorn on 127.0.0.1 and times each
page over HTTP with urllib (the median and the worst of `--repeat` requests after one warm-up;
httpx2's client adds ~45 ms of its own to every request on this machine, even to a static
file, so it would measure itself):
the pipelines page, a pipeline's grid, a run page, a run's live changes. Nothing here is
asserted: the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import uvicorn

from etlkit.settings.config import load_settings
from etlkit.storage.store import NodeUpdate, RunStore
from etlkit.ui.app import UiConfig, create_app
from etlkit.ui.server import bind

HOURLY = '''
import pyarrow as pa
import polars as pl
import etlkit as ek
from etlkit.testing import MemorySource


class Same(ek.Transform):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


class Hourly(ek.Pipeline):
    """Eleven nodes, every hour."""

    schedule = "@hourly"
    start_date = "2025-01-01"
    n0 = MemorySource(pa.table({"x": [1, 2, 3]}))
    for _i in range(1, 11):
        locals()[f"n{_i}"] = Same(locals()[f"n{_i - 1}"])
'''

WIDE = '''
import pyarrow as pa
import polars as pl
import etlkit as ek
from etlkit.testing import MemorySource


class Same(ek.Transform):
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


class Wide(ek.Pipeline):
    """1,000 nodes: 10 layers of 100, each node reading one of the layer before."""

    for _j in range(100):
        locals()[f"l0_{_j}"] = MemorySource(pa.table({"x": [1]}))
    for _i in range(1, 10):
        for _j in range(100):
            locals()[f"l{_i}_{_j}"] = Same(locals()[f"l{_i - 1}_{(_j * 7) % 100}"])
'''


def fill(store: RunStore, pipeline: str, nodes: list[str], runs: int, step: timedelta) -> str:
    """`runs` finished runs of `pipeline`, every 50th failed; returns the newest run id."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    run_id = ""
    for index in range(runs):
        moment = start + index * step
        run_id = f"{moment:%Y%m%dT%H%M%SZ}-{pipeline[:6]:0<6}"
        store.create_run(
            run_id=run_id,
            pipeline=pipeline,
            logical_date=moment,
            params={},
            trigger="schedule",
            staging_root="unused",
            state="running",
            at=moment,
        )
        failed = index % 50 == 49
        updates = [
            NodeUpdate(
                node=name,
                kind="transform",
                attempt=1,
                state="failed" if failed and position == len(nodes) - 1 else "done",
                started_at=moment + timedelta(seconds=position),
                finished_at=moment + timedelta(seconds=position + 1),
                rows_in=1000,
                rows_out=1000,
                bytes_staged=4096,
                chunks=1,
            )
            for position, name in enumerate(nodes)
        ]
        store.record_nodes(run_id, updates)
        store.finish_run(run_id, "failed" if failed else "success", at=moment + step / 2)
    return run_id


def timed(url: str, repeat: int) -> tuple[float, float]:
    """Median and worst milliseconds of GET `url`, body read (after one warm-up request)."""
    with urllib.request.urlopen(url) as answer:
        answer.read()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        with urllib.request.urlopen(url) as answer:
            answer.read()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pipelines").mkdir()
        (root / "pipelines" / "hourly.py").write_text(HOURLY)
        (root / "pipelines" / "wide.py").write_text(WIDE)
        settings = load_settings(root, env={})
        began = time.perf_counter()
        with RunStore(settings.paths.store) as store:
            hourly_nodes = [f"n{i}" for i in range(11)]
            wide_nodes = [f"l{i}_{j}" for i in range(10) for j in range(100)]
            last_hourly = fill(store, "hourly", hourly_nodes, 8760, timedelta(hours=1))
            last_wide = fill(store, "wide", wide_nodes, 4, timedelta(days=1))
        print(f"store filled in {time.perf_counter() - began:.1f}s")
        config = UiConfig(project_dir=root, settings=settings, pipelines_dir=root / "pipelines")
        sock = bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        since = quote(datetime(2026, 1, 1, tzinfo=UTC).isoformat())
        pages = [
            ("pipelines page", "/"),
            ("hourly: grid (25 runs x 11 nodes)", "/pipelines/hourly"),
            ("hourly: newest run", f"/runs/{last_hourly}"),
            ("hourly: live changes of a run", f"/api/runs/{last_hourly}/changes?since={since}"),
            ("wide: grid (4 runs x 200 nodes)", "/pipelines/wide"),
            ("wide: run page (1,000 nodes)", f"/runs/{last_wide}"),
            ("pulse (live pipelines page)", "/api/pulse"),
            ("a static file (the floor)", "/static/ui.css"),
        ]
        print(f"{'page':<40} {'median ms':>10} {'worst ms':>9}")
        for name, path in pages:
            median, worst = timed(base + path, args.repeat)
            print(f"{name:<40} {median:>10.1f} {worst:>9.1f}")
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


if __name__ == "__main__":
    main()
