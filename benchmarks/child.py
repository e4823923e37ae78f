"""One benchmark run in a fresh process: `python -m benchmarks.child SPEC_JSON`.

The parent (`benchmarks.tpch`) starts one child per run, so every variant starts cold and its
peak RSS is its own. The child imports the variant's libraries (timed apart), then times the
work alone: reading, computing and writing the result file. For etlkit the work is the whole of
`etlkit run` after the imports (loading the pipeline, checking its graph, the run store, staging,
validation, the sinks); interpreter start and imports are in the process wall the parent
measures around the child.

The spec is a JSON object: workload, variant, data_dir, out_dir, state_dir, stats (where to
write the child's own measurements as JSON), scheduler_address (the Dask scheduler an
`etlkit-dask` run uses; its workers' usage is measured by the parent).
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path

_STARTED = time.perf_counter()

#: What each variant imports before its work is timed.
IMPORTS: dict[str, tuple[str, ...]] = {
    "etlkit": (
        "polars",
        "pyarrow",
        "pyarrow.parquet",
        "duckdb",
        "pandera.polars",
        "etlkit.cli",
        "etlkit.model.pipeline",
        "etlkit.model.discovery",
        "etlkit.runs.pipeline",
        "etlkit.engine.execution",
        "connectors.files",
    ),
    "duckdb": ("duckdb",),
    "polars": ("polars",),
    "pandas": ("pandas", "pyarrow", "pyarrow.parquet"),
}
IMPORTS["etlkit-novalidate"] = IMPORTS["etlkit"]
# the coordinator's side of a Dask run (its client), imported before the work as etlkit's are
IMPORTS["etlkit-dask"] = (*IMPORTS["etlkit"], "distributed", "etlkit.engine.distributed")


def peak_rss() -> int:
    """This process's peak resident set size in bytes.

    Linux's VmHWM, the high-water mark of this program's own memory. Not `ru_maxrss`: for a
    process started with vfork and exec (as `subprocess` does) that also counts the parent's
    memory at the time of the fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> int:
    """Run the spec given as the only argument; write the measurements; 0 on success."""
    spec = json.loads(argv[0])
    variant = spec["variant"]
    for module in IMPORTS[variant]:
        importlib.import_module(module)
    from benchmarks.engines import run
    from benchmarks.workloads import WORKLOADS

    imported = time.perf_counter()
    cpu = time.process_time()
    result = run(
        WORKLOADS[spec["workload"]],
        variant,
        Path(spec["data_dir"]),
        Path(spec["out_dir"]),
        Path(spec["state_dir"]),
        scheduler_address=spec.get("scheduler_address"),
    )
    done = time.perf_counter()
    stats = {
        "import_seconds": imported - _STARTED,
        "work_seconds": done - imported,
        "work_cpu_seconds": time.process_time() - cpu,
        "result": str(result),
        "peak_rss_bytes": peak_rss(),
        # descendants' peak, if a variant ever starts processes of its own (KiB on Linux)
        "children_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    Path(spec["stats"]).write_text(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
