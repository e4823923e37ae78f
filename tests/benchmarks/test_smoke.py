"""The benchmarks still work: at SF 0.01 every variant of every workload gives DuckDB's result.

Timings are never asserted. The variants run in this process (fast), then one workload goes
through the real harness, child processes and all (etlkit and pandas, checked against DuckDB).
Everything is written under tmp_path.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

import etlkit as ek
from benchmarks import backfill, datasets, engines, environment, overhead, tpch
from benchmarks.workloads import REFERENCE, VARIANTS, WORKLOADS, Workload, differences
from etlkit.storage.store import RunStore
from etlkit.testing import MemorySink

SF = 0.01
REPORT_ROWS = 20_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-data")
    datasets.ensure_tpch(root, SF, ("parquet", "csv"), quiet=True)
    datasets.ensure_report(root, REPORT_ROWS, quiet=True)
    return root


def _data_dir(root: Path, name: str) -> Path:
    if WORKLOADS[name].dataset == "tpch":
        return datasets.tpch_dir(root, SF)
    return datasets.report_dir(root, REPORT_ROWS)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_variant_gives_duckdbs_result(name: str, data_root: Path, tmp_path: Path) -> None:
    workload = WORKLOADS[name]
    data_dir = _data_dir(data_root, name)
    results = {}
    for variant in VARIANTS:
        run_dir = tmp_path / variant
        path = engines.run(workload, variant, data_dir, run_dir / "out", run_dir / "state")
        results[variant] = pl.read_parquet(path)
    reference = results[REFERENCE]
    assert reference.height > 0
    for variant, result in results.items():
        assert differences(reference, result, atol=workload.atol) == [], variant


def test_data_is_generated_once(data_root: Path) -> None:
    lineitem = datasets.tpch_dir(data_root, SF) / "parquet" / "lineitem.parquet"
    before = lineitem.stat().st_mtime_ns
    datasets.ensure_tpch(data_root, SF, ("parquet", "csv"), quiet=True)
    assert lineitem.stat().st_mtime_ns == before


def test_differences_catch_a_wrong_result() -> None:
    expected = pl.DataFrame({"k": ["a", "b"], "v": [1.0, 2.0], "n": [1, 2]})
    assert differences(expected, expected.reverse()) == []
    assert differences(expected, expected.with_columns(v=pl.Series([1.0, 2.5]))) != []
    assert differences(expected, expected.head(1)) == ["1 rows instead of 2"]


def test_float_columns_compare_as_math_isclose_does() -> None:
    values = [0.0, 1.0, 1.0000001, 1.00001, -1.0, 1e12, 1e12 + 1, math.inf, -math.inf, math.nan]
    for atol in (1e-6, 0.011):
        for want, have in itertools.product([*values, None], repeat=2):
            if want is None or have is None:
                expected = want is None and have is None
            else:
                expected = math.isclose(want, have, rel_tol=1e-9, abs_tol=atol)
            frames = [
                pl.DataFrame({"v": [value]}, schema={"v": pl.Float64}) for value in (want, have)
            ]
            assert (differences(*frames, atol=atol) == []) == expected, (want, have, atol)


def test_the_harness_runs_and_reports(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q6.json"
    code = tpch.main(
        [
            "--sf",
            str(SF),
            "--data-dir",
            str(data_root),
            "--workloads",
            "q6",
            "--variants",
            "etlkit,pandas",
            "--repeat",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "every result reported equals DuckDB's" in printed
    assert "| work CPU / DuckDB | steal |" in printed
    summary = json.loads(out.read_text())
    assert {s["variant"] for s in summary["summaries"]} == {"etlkit", "pandas", REFERENCE}
    if environment.cpu_ticks() is not None:  # Linux: every run knows its steal
        assert all(0 <= run["steal"] <= 1 for run in summary["runs"])


def test_a_variant_whose_result_differs_is_reported_and_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def child(
        workload: Workload, variant: str, data_dir: Path, run_dir: Path
    ) -> tuple[dict[str, Any], float, Any]:
        run_dir.mkdir(parents=True)
        result = run_dir / "out" / "result.parquet"
        result.parent.mkdir()
        pl.DataFrame({"revenue": [2.5 if variant == "pandas" else 1.0]}).write_parquet(result)
        stats = {
            "result": str(result),
            "work_seconds": 1.0,
            "import_seconds": 0.5,
            "work_cpu_seconds": 1.0,
            "peak_rss_bytes": 2**20,
            "children_maxrss_kib": 0,
        }
        return stats, 1.5, SimpleNamespace(ru_utime=1.0, ru_stime=0.25)

    monkeypatch.setattr(tpch, "run_child", child)
    work_dir = tmp_path / "work"
    kept, failures = tpch.run_workload(
        WORKLOADS["q6"],
        sf=SF,
        data_dir=tmp_path,
        variants=["etlkit", "duckdb", "pandas"],
        repeat=2,
        work_dir=work_dir,
        rows=10,
    )
    assert [(m.variant, m.repetition) for m in kept] == [
        ("etlkit", 1),
        ("duckdb", 1),
        ("etlkit", 2),
        ("duckdb", 2),
    ]
    assert [(f.variant, f.repetition) for f in failures] == [("pandas", 1)]
    assert "row 0, column 'revenue': 2.5 instead of 1.0" in failures[0].reason
    assert list(work_dir.iterdir()) == []  # every result file removed once checked


@pytest.mark.parametrize(("stage", "store"), [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("make", [overhead.chain, overhead.fan])
def test_overhead_graphs_pass_their_rows_through(
    make: Callable[..., type[ek.Pipeline]], stage: bool, store: bool, tmp_path: Path
) -> None:
    made: list[type[ek.Pipeline]] = []

    def build(stage: bool) -> type[ek.Pipeline]:
        made.append(make(6, stage=stage))
        return made[-1]

    build_seconds, run_seconds, cpu_seconds, nodes = overhead.time_graph(
        build, tmp_path, stage=stage, store=store
    )
    assert (build_seconds >= 0, run_seconds > 0, cpu_seconds > 0) == (True, True, True)
    graph = made[0].graph()
    assert nodes == len(graph.nodes) == (6 if make is overhead.chain else 8)
    sink = graph.nodes["sink"]
    assert isinstance(sink, MemorySink)
    expected = 1 if make is overhead.chain else 6  # the fan's sink reads each transform
    assert sink.table().num_rows == 3 * expected
    staged = list((tmp_path / "staging").rglob("*.parquet"))
    assert len(staged) == (nodes - 1 if stage else 0)  # every node but the sink
    assert (tmp_path / "etlkit.sqlite").exists() == store


def test_overhead_store_runs_can_share_one_store_file(tmp_path: Path) -> None:
    shared = tmp_path / "etlkit.sqlite"
    for i in range(2):
        overhead.time_graph(
            lambda stage: overhead.chain(4, stage=stage),
            tmp_path / f"run-{i}",
            stage=True,
            store=True,
            store_file=shared,
        )

    with RunStore(shared) as store:
        runs = store.runs()
    assert len(runs) == 2
    assert {r.state for r in runs} == {"success"}
    assert not list(tmp_path.glob("run-*/etlkit.sqlite"))


def test_overhead_graphs_are_wired_as_named() -> None:
    chain = overhead.chain(4).graph()
    assert [list(chain.inputs[n]) for n in chain.order] == [[], ["source"], ["t0001"], ["t0002"]]
    fan = overhead.fan(3).graph()
    assert sorted(fan.inputs["sink"]) == ["t0000", "t0001", "t0002"]
    assert all(list(fan.inputs[f"t000{i}"]) == ["source"] for i in range(3))


def test_the_python_loop_calibration_times_its_loop() -> None:
    assert 0 < overhead.python_loop_seconds(1_000) < overhead.python_loop_seconds(3_000_000)


def test_file_creation_probe_measures_and_leaves_its_files(tmp_path: Path) -> None:
    assert overhead.file_creation_ms(tmp_path, files=20) > 0
    (probe,) = tmp_path.iterdir()
    assert len(list(probe.iterdir())) == 20


def test_settle_probes_until_creating_a_file_is_cheap_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    costs = iter([0.3, 0.2, 0.02, 0.02])
    probed: list[Path] = []

    def probe(directory: Path, files: int = 200) -> float:
        probed.append(directory)
        return next(costs)

    monkeypatch.setattr(overhead, "file_creation_ms", probe)
    assert overhead.settle(tmp_path, 0) == 0.3  # no time to wait: one probe
    assert overhead.settle(tmp_path, 60, pause=0) == 0.02  # waited until it settled
    assert probed == [tmp_path] * 3


def test_sources_are_compiled_even_where_bytecode_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE=1
    (tmp_path / "etlkit").mkdir()
    (tmp_path / "etlkit" / "good.py").write_text("VALUE = 1\n")
    (tmp_path / "etlkit" / "broken.py").write_text("def (\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "other.py").write_text("VALUE = 2\n")
    environment.compile_sources(tmp_path)  # a module that does not compile is only reported
    compiled = sorted(p.name.split(".")[0] for p in (tmp_path / "etlkit").glob("__pycache__/*"))
    assert compiled == ["good"]
    assert not (tmp_path / "elsewhere" / "__pycache__").exists()  # not one of the packages


def test_steal_share_is_the_stolen_part_of_all_cpu_time_between_readings() -> None:
    assert environment.steal_share((10, 1_000), (15, 1_100)) == 0.05
    assert environment.steal_share((10, 1_000), (10, 1_000)) is None  # no time passed
    assert environment.steal_share(None, (10, 1_000)) is None  # no /proc/stat
    assert (environment.percent(0.05), environment.percent(None)) == ("5%", "-")
    ticks = environment.cpu_ticks()
    if ticks is not None:  # Linux
        stolen, total = ticks
        assert 0 <= stolen <= total


@pytest.mark.parametrize("mode", backfill.MODES)
def test_backfill_launches_no_op_runs_cold_and_warm(tmp_path: Path, mode: str) -> None:
    project = backfill.make_project(tmp_path)
    seconds = backfill.time_launches(project, mode, 2)
    assert len(seconds) == 2


def test_overhead_start_costs_time_the_one_task_run_and_the_pipelines_commands(
    tmp_path: Path,
) -> None:
    costs = overhead.start_costs(tmp_path, repeat=1)
    assert [list(costs["run"]), list(costs["discovery"])[1:]] == [
        [
            f"python -c 'import {overhead.ONE_TASK_IMPORTS}'",
            "the same, then gc.freeze()",
            "etlkit run one_task",
        ],
        ["etlkit list", "etlkit validate"],
    ]
    figures = [f for table in costs.values() for pair in table.values() for f in pair]
    assert all(f > 0 for f in figures)
    overhead.print_start_costs(costs, 1)
