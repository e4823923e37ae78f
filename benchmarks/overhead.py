"""Orchestration overhead: graphs of trivial nodes, and the cold start of the `etlkit` command.

Run from the repository root: `python -m benchmarks.overhead [--repeat 5] [--json PATH]`
(`--starts-only`: only the command starts, the last two tables below).

Graphs are built programmatically (a `Pipeline` subclass made with `type(...)`), from a
`MemorySource` of three rows, pass-through transforms and a `MemorySink`:

- a chain of 100 nodes and a chain of 1,000 nodes,
- a fan-out/fan-in: one source, 1,000 transforms reading it, one sink reading them all.

Each graph runs in this process with the defaults (every node's output staged), without staging
(`stage=False` on every node, to separate staging from threads and channels), and with the run
store `etlkit run` records into (one store file for every round, as a project has one, made
before the rounds), the modes and graphs taking turns round after round. Every run
stages into a state directory of its own under `--dir` (default: beside the benchmark data,
`~/.cache/etlkit-bench/overhead-*`, as a project's `.etlkit/` would be, not `/tmp`), and the
directories are deleted only at the end: on an ext4 file system without a journal,
creating a file costs many times its usual cost for minutes after thousands of files were
deleted nearby (the kernel skips recently deleted inodes one by one, `recently_deleted` in
`perf`), and deleting each round's 1,000 files before the next round measured that instead of
etlkit; so before the rounds it waits (up to `--settle` seconds) for creating a file there to
cost at most `SETTLED_MS` again. Reported:
building the class and checking its graph, the run (wall time, and the process's CPU time over
all threads, which moves less when the VM is slowed by its neighbours), and the per-node
overhead (run time / nodes, and the marginal cost between the 100- and 1,000-node chains),
with an empty 10^7-iteration Python loop timed before and after the rounds: a shared VM's speed
moves over a day, and per-node figures move with it. Cold starts are subprocess
wall times of `etlkit --help` and of `etlkit run` on a one-node pipeline, with `python -c pass`
for reference; all are medians.

etlkit's own start cost (issue 21: at most 0.1 s, measured in an install without the bench
extras, which bring pandas): `etlkit run one_task`, a pipeline of one `Task` that does nothing
in a file importing what pipeline files import (pandera.polars, polars, pyarrow), against
`python -c` importing those same modules, wall and CPU seconds (user + system: it moves less
when neighbours load the machine) of the commands taking turns. The run freezes what it
imported before it starts (`gc.freeze`), which spares it the full collection the bare import
pays at exit; so the import is also timed with a `gc.freeze()` at its end, for the cost net
of that saving. Likewise `etlkit list` and `etlkit validate` of the shipped pipelines
(`pipelines/`) against `python -c` importing them (bar: 1.2 times).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import polars as pl
import pyarrow as pa

import etlkit as ek
from benchmarks import datasets, environment
from etlkit.storage.store import RunStore
from etlkit.testing import MemorySink, MemorySource

TABLE: Final = pa.table({"x": [1, 2, 3]})

ONE_NODE: Final = '''
"""One node: the smallest pipeline `etlkit run` can run."""

import polars as pl

import etlkit as ek
from etlkit.testing import MemorySource


class OneNode(ek.Pipeline):
    numbers = MemorySource(pl.DataFrame({"x": [1, 2, 3]}).to_arrow())
'''

#: The same pipeline with its table built by `pa.table` from a Python list: pyarrow then
#: imports pandas if it is installed (slow to import), which etlkit does not need or install but
#: this benchmark's environment has (for the chunked-pandas baseline).
ONE_NODE_PA: Final = (
    ONE_NODE.replace("import polars as pl", "import pyarrow as pa")
    .replace('pl.DataFrame({"x": [1, 2, 3]}).to_arrow()', 'pa.table({"x": [1, 2, 3]})')
    .replace("class OneNode(", "class OneNodePa(")
)


ONE_TASK: Final = '''
"""One Task that does nothing, in a file that imports what pipeline files import: what
`etlkit run` costs beyond those imports is etlkit's own."""

import pandera.polars as pdp
import polars as pl
import pyarrow as pa

import etlkit as ek


class Nothing(ek.Task):
    """Does nothing."""

    def run(self, ctx: ek.Context) -> None:
        pass


class OneTask(ek.Pipeline):
    nothing = Nothing()
'''

#: The modules `ONE_TASK` imports itself (etlkit aside).
ONE_TASK_IMPORTS: Final = "pandera.polars, polars, pyarrow"

#: The repository root, whose `pipelines/` `etlkit list` and `etlkit validate` read.
REPOSITORY: Final = Path(__file__).resolve().parent.parent


class PassThrough(ek.Transform[Any, Any]):
    """Returns each chunk unchanged."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


def chain(nodes: int, *, stage: bool = True) -> type[ek.Pipeline]:
    """A pipeline of `nodes` nodes in a line: a source, pass-through transforms, a sink."""
    source = MemorySource(TABLE, stage=stage)
    attrs: dict[str, object] = {"source": source}
    previous: ek.Source | PassThrough = source
    for i in range(1, nodes - 1):
        previous = attrs[f"t{i:04d}"] = PassThrough(previous, stage=stage)
    attrs["sink"] = MemorySink(previous)
    return type(f"Chain{nodes}", (ek.Pipeline,), attrs)


def fan(width: int, *, stage: bool = True) -> type[ek.Pipeline]:
    """A source read by `width` pass-through transforms, all read by one sink."""
    source = MemorySource(TABLE, stage=stage)
    attrs: dict[str, object] = {"source": source}
    middle = [PassThrough(source, stage=stage) for _ in range(width)]
    attrs.update({f"t{i:04d}": node for i, node in enumerate(middle)})
    attrs["sink"] = MemorySink(*middle)
    return type(f"Fan{width}", (ek.Pipeline,), attrs)


def time_graph(
    make: Callable[[bool], type[ek.Pipeline]],
    state_dir: Path,
    *,
    stage: bool,
    store: bool,
    store_file: Path | None = None,
) -> tuple[float, float, float, int]:
    """Build and run one pipeline; return (build seconds, run seconds, run CPU seconds of the
    process, all threads, nodes). `store_file`: the run store to open (default: a new one in
    `state_dir`)."""
    began = time.perf_counter()
    cls = make(stage)
    graph = cls.graph()
    built, cpu = time.perf_counter(), time.process_time()  # the run's figures start here
    cli = {"paths.state_dir": str(state_dir)}
    if store_file is not None:
        cli["paths.store"] = str(store_file)
    settings = ek.load_settings(state_dir, env={}, cli=cli)
    if store:
        with RunStore(settings.paths.store) as runs:
            result = cls.run(date="2025-03-01", settings=settings, store=runs)
    else:
        result = cls.run(date="2025-03-01", settings=settings)
    done, cpu = time.perf_counter(), time.process_time() - cpu
    result.raise_for_error()
    return built - began, done - built, cpu, len(graph.nodes)


def file_creation_ms(directory: Path, files: int = 200) -> float:
    """The mean cost of creating an empty file in a new subdirectory of `directory`, in ms.

    Staging a small output is one file created and renamed; on ext4 without a journal a
    file costs many times more to create for minutes after many files were deleted
    nearby, which moves every staged figure. The files are left for the caller to delete.
    """
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=directory))
    began = time.perf_counter()
    for i in range(files):
        (probe / f"f{i}").touch(exist_ok=False)
    return (time.perf_counter() - began) / files * 1e3


#: Above this cost of creating a file (ms), recent deletions nearby still slow the file system.
SETTLED_MS: Final = 0.03


def settle(directory: Path, seconds: float, pause: float = 20.0) -> float:
    """Wait, up to `seconds`, until creating a file in `directory` costs at most `SETTLED_MS`
    (files deleted nearby in the last minutes, by an earlier run of this benchmark say, make
    it cost many times that for minutes); return the last cost measured."""
    cost = file_creation_ms(directory)
    deadline = time.monotonic() + seconds
    while cost > SETTLED_MS and time.monotonic() < deadline:
        print(f"  creating a file there: {cost:.3f} ms; waiting for it to settle", flush=True)
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        cost = file_creation_ms(directory)
    return cost


def python_loop_seconds(iterations: int = 10_000_000) -> float:
    """Wall seconds of an empty Python loop: how fast this machine runs the interpreter just
    now (a shared VM's speed moves over a day; per-node figures move with it)."""
    began = time.perf_counter()
    for _ in range(iterations):
        pass
    return time.perf_counter() - began


def cold_start(command: Sequence[str], cwd: Path, repeat: int) -> float:
    """The median wall time of running `command` to completion in a fresh process."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def cold_starts(
    commands: dict[str, list[str]], cwd: Path, repeat: int
) -> dict[str, tuple[float, float]]:
    """The median wall and CPU seconds (user + system of the child) of running each command to
    completion in a fresh process, the commands taking turns `repeat` times, so that the
    machine's drift weighs on each alike."""
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            began = time.perf_counter()
            child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)
            walls[name].append(time.perf_counter() - began)
            child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            if child.returncode:
                raise subprocess.CalledProcessError(child.returncode, command)
            cpus[name].append(usage.ru_utime + usage.ru_stime)
    return {
        name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in commands
    }


def start_costs(project: Path, repeat: int) -> dict[str, dict[str, tuple[float, float]]]:
    """etlkit's own start: `etlkit run` of `ONE_TASK` (written into `project`) against importing
    what it imports, and `etlkit list` / `validate` of the shipped pipelines against importing
    them; (wall, CPU) medians by command."""
    etlkit = _etlkit()
    (project / "pipelines").mkdir(parents=True, exist_ok=True)
    (project / "pipelines" / "one_task.py").write_text(textwrap.dedent(ONE_TASK))
    imports = f"import {ONE_TASK_IMPORTS}"
    run = cold_starts(
        {
            f"python -c 'import {ONE_TASK_IMPORTS}'": [sys.executable, "-c", imports],
            "the same, then gc.freeze()": [
                sys.executable,
                "-c",
                f"{imports}; import gc; gc.freeze()",
            ],
            "etlkit run one_task": [*etlkit, "run", "one_task", "--progress", "none"],
        },
        project,
        repeat,
    )
    shipped = sorted(p.stem for p in (REPOSITORY / "pipelines").glob("*.py"))
    modules = ", ".join(f"pipelines.{name}" for name in shipped)
    discovery = cold_starts(
        {
            f"python -c 'import {modules}'": [sys.executable, "-c", f"import {modules}"],
            "etlkit list": [*etlkit, "list"],
            "etlkit validate": [*etlkit, "validate"],
        },
        REPOSITORY,
        repeat,
    )
    return {"run": run, "discovery": discovery}


def print_start_costs(costs: dict[str, dict[str, tuple[float, float]]], repeat: int) -> None:
    """The tables of `start_costs`, with etlkit's own cost and the ratios to the imports."""
    imported, frozen, run = costs["run"]  # the commands' names, in `start_costs`'s order
    pipelines, *commands = costs["discovery"]
    print(f"\n| etlkit's own start (median of {repeat}, cold process) | wall s | CPU s |")
    print("|---|--:|--:|")
    for command, (wall, cpu) in costs["run"].items():
        print(f"| `{command}` | {wall:.3f} | {cpu:.3f} |")
    for label, base in (("the import", imported), ("the import, then gc.freeze()", frozen)):
        wall = costs["run"][run][0] - costs["run"][base][0]
        cpu = costs["run"][run][1] - costs["run"][base][1]
        print(f"| etlkit's own cost: the run less {label} | {wall:+.3f} | {cpu:+.3f} |")
    print(f"\n| the shipped pipelines (median of {repeat}, cold process) | wall s | CPU s |")
    print("|---|--:|--:|")
    base_wall, base_cpu = costs["discovery"][pipelines]
    print(
        f"| `python -c 'import` every module of pipelines/`' | {base_wall:.3f} | {base_cpu:.3f} |"
    )
    for command in commands:
        wall, cpu = costs["discovery"][command]
        print(
            f"| `{command}` | {wall:.3f} ({wall / base_wall:.2f}x) "
            f"| {cpu:.3f} ({cpu / base_cpu:.2f}x) |"
        )


def _etlkit() -> list[str]:
    script = Path(sys.executable).parent / "etlkit"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "etlkit"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the overhead benchmark and print its table."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (default: 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--dir",
        type=Path,
        default=datasets.DEFAULT_ROOT,
        help=f"where the runs' state directories go (default: {datasets.DEFAULT_ROOT})",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=360.0,
        help="seconds to wait at most for file creation to cost its usual ~0.02 ms there, "
        "after files were deleted nearby (default: 360; 0: do not wait)",
    )
    parser.add_argument(
        "--starts-only",
        action="store_true",
        help="measure only etlkit's own start cost (`etlkit run one_task`, list, validate)",
    )
    args = parser.parse_args(argv)
    environment.compile_sources()  # children read bytecode, as from an installed package
    print(environment.describe(), flush=True)
    if args.starts_only:
        repeat = max(args.repeat, 10)
        with tempfile.TemporaryDirectory(prefix="overhead-starts-") as project:
            costs = start_costs(Path(project), repeat)
        print_start_costs(costs, repeat)
        if args.json:
            args.json.write_text(json.dumps({"start_costs": costs}, indent=2))
        return 0

    graphs: dict[str, Callable[[bool], type[ek.Pipeline]]] = {
        "chain of 100": lambda stage: chain(100, stage=stage),
        "chain of 1,000": lambda stage: chain(1_000, stage=stage),
        "fan 1 -> 1,000 -> 1": lambda stage: fan(1_000, stage=stage),
    }
    modes = {"defaults": (True, False), "no staging": (False, False), "with store": (True, True)}
    rows: list[dict[str, Any]] = []
    args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="overhead-", dir=args.dir))
    print(f"state directories under {root}", flush=True)
    try:
        # modes and graphs take turns, round after round: the machine's drift (this VM's file
        # system, above all) then weighs on every figure alike, not on whichever runs last
        measured: dict[tuple[str, str], tuple[list[float], list[float], list[float], int]] = {}
        # one run store for every round, as a project has one: each run opens it as `etlkit
        # run` does, but creating it (once per project) is not a run's cost
        store_file = root / "etlkit.sqlite"
        RunStore(str(store_file)).close()
        creation = [settle(root, args.settle)]
        print(f"  creating a file there: {creation[0]:.3f} ms", flush=True)
        loop = [python_loop_seconds()]
        print(f"  a loop of 10^7 empty iterations: {loop[0]:.2f} s", flush=True)
        rounds_began = environment.cpu_ticks()
        for i in range(args.repeat):
            for mode, (stage, store) in modes.items():
                for name, make in graphs.items():
                    state = root / f"{mode}-{name}-{i}".replace(" ", "_")
                    began = environment.cpu_ticks()
                    build, run, cpu, nodes = time_graph(
                        make, state, stage=stage, store=store, store_file=store_file
                    )
                    stolen = environment.steal_share(began, environment.cpu_ticks())
                    builds, runs, cpus, _ = measured.setdefault((mode, name), ([], [], [], nodes))
                    builds.append(build)
                    runs.append(run)
                    cpus.append(cpu)
                    print(
                        f"  round {i + 1} {mode:10} {name:20} build {build:6.3f}s  "
                        f"run {run:6.3f}s  {run / nodes * 1e3:6.2f} ms/node  "
                        f"CPU {cpu / nodes * 1e3:6.2f} ms/node steal {environment.percent(stolen)}",
                        flush=True,
                    )
        steal = environment.steal_share(rounds_began, environment.cpu_ticks())
        creation.append(file_creation_ms(root))
        print(f"  creating a file there, after the rounds: {creation[1]:.3f} ms", flush=True)
        loop.append(python_loop_seconds())
        print(f"  a loop of 10^7 empty iterations, after the rounds: {loop[1]:.2f} s", flush=True)
        for (mode, name), (builds, runs, cpus, nodes) in measured.items():
            run_seconds = statistics.median(runs)
            rows.append(
                {
                    "graph": name,
                    "mode": mode,
                    "nodes": nodes,
                    "build_seconds": statistics.median(builds),
                    "run_seconds": run_seconds,
                    "ms_per_node": run_seconds / nodes * 1e3,
                    "cpu_seconds": statistics.median(cpus),
                    "cpu_ms_per_node": statistics.median(cpus) / nodes * 1e3,
                }
            )
        project = root / "project"
        (project / "pipelines").mkdir(parents=True)
        (project / "pipelines" / "one_node.py").write_text(textwrap.dedent(ONE_NODE))
        (project / "pipelines" / "one_node_pa.py").write_text(textwrap.dedent(ONE_NODE_PA))
        etlkit = _etlkit()
        repeat = max(args.repeat, 10)
        starts = {
            "python -c pass": cold_start([sys.executable, "-c", "pass"], project, repeat),
            "etlkit --help": cold_start([*etlkit, "--help"], project, repeat),
            "etlkit run one_node": cold_start(
                [*etlkit, "run", "one_node", "--progress", "none"], project, repeat
            ),
            "etlkit run one_node_pa (pa.table from a list: imports pandas)": cold_start(
                [*etlkit, "run", "one_node_pa", "--progress", "none"], project, repeat
            ),
        }
        costs = start_costs(project, repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    by = {(r["mode"], r["graph"]): r for r in rows}
    marginal = {
        mode: (
            by[(mode, "chain of 1,000")]["run_seconds"] - by[(mode, "chain of 100")]["run_seconds"]
        )
        / 900
        * 1e3
        for mode in modes
    }
    print(f"\nmedians of {args.repeat} runs\n")
    print("| graph | mode | nodes | build s | run s | ms/node | CPU s | CPU ms/node |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['graph']} | {r['mode']} | {r['nodes']:,} | {r['build_seconds']:.3f} "
            f"| {r['run_seconds']:.3f} | {r['ms_per_node']:.2f} "
            f"| {r['cpu_seconds']:.3f} | {r['cpu_ms_per_node']:.2f} |"
        )
    print()
    for mode, ms in marginal.items():
        print(f"marginal cost of a chain node ({mode}): {ms:.2f} ms")
    print(
        f"creating an empty file in the state directory: {creation[0]:.3f} ms before the "
        f"rounds, {creation[1]:.3f} ms after"
    )
    print(
        f"a loop of 10^7 empty iterations (this machine's speed at the time): {loop[0]:.2f} s "
        f"before the rounds, {loop[1]:.2f} s after"
    )
    if steal is not None:
        stolen_share = environment.percent(steal)
        print(f"CPU time the hypervisor stole during the rounds (steal): {stolen_share}")
    print(f"\n| command (median of {repeat}, cold process) | wall s |")
    print("|---|--:|")
    for command, seconds in starts.items():
        print(f"| `{command}` | {seconds:.3f} |")
    print_start_costs(costs, repeat)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": environment.machine(),
                    "versions": environment.versions(),
                    "graphs": rows,
                    "marginal_ms_per_chain_node": marginal,
                    "file_creation_ms": {"before": creation[0], "after": creation[1]},
                    "python_loop_seconds": {"before": loop[0], "after": loop[1]},
                    "steal_share": steal,
                    "cold_start_seconds": starts,
                    "start_costs": costs,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
