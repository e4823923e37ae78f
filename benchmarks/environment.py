"""The machine and library versions a benchmark ran on, recorded next to its figures."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

_PACKAGES = ("etlkit-framework", "polars", "duckdb", "pyarrow", "pandas", "pandera", "tpchgen-cli")
#: The repository's packages that the benchmarks' child processes import.
_SOURCES = ("etlkit", "connectors", "pipelines", "benchmarks", "data")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int:
    try:
        import psutil
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(psutil.virtual_memory().total)


def machine() -> dict[str, object]:
    """Cores, memory, CPU model, OS and the load when asked (the machines are shared)."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_bytes() / 2**30, 1),
        "cpu": _cpu_model(),
        "os": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    """Python's version and the installed versions of the libraries compared."""
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def cpu_ticks() -> tuple[int, int] | None:
    """(stolen, all) clock ticks of every CPU since boot, from /proc/stat (None elsewhere).

    Steal is time a virtual machine's CPUs were ready to run but the hypervisor ran someone
    else: a share of it during a measurement tells a slowed machine from a slow program.
    """
    try:
        with open("/proc/stat") as stat:  # noqa: PTH123
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user .. steal (guest time is inside user)
    return ticks[7], sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of all CPU time the hypervisor stole between two `cpu_ticks` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def percent(share: float | None) -> str:
    """A share as a whole percentage (`12%`), `-` when unknown."""
    return f"{share * 100:.0f}%" if share is not None else "-"


def compile_sources(root: Path | None = None) -> None:
    """Byte-compile the repository's packages into their `__pycache__`, as installing them
    does (a module that does not compile is printed, and imported from source as before).

    Every variant's child imports its libraries from compiled bytecode, and so must etlkit's:
    where PYTHONDONTWRITEBYTECODE is set (this machine's environment sets it) and nothing
    compiled the repository, each etlkit child compiled the modules it imports from source,
    a cost in its work and its start that no installed package pays (pip
    compiles at install time; an editable install writes `__pycache__` on its first run).
    `compileall` writes bytecode whatever that variable says.
    """
    import compileall

    base = root or Path(__file__).resolve().parent.parent
    for name in _SOURCES:
        if (base / name).is_dir():
            compileall.compile_dir(base / name, quiet=1)


def describe() -> str:
    """One paragraph for the top of a report."""
    m, v = machine(), versions()
    libs = ", ".join(f"{k} {v[k]}" for k in v)
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; "
        f"load average {m['load_average']}\n{libs}"
    )
