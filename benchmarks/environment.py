"""The machine and library versions a benchmark ran on, recorded next to its figures."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

_PACKAGES = ("etlkit-framework", "polars", "duckdb", "pyarrow", "pandas", "pandera", "tpchgen-cli")


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


def describe() -> str:
    """One paragraph for the top of a report."""
    m, v = machine(), versions()
    libs = ", ".join(f"{k} {v[k]}" for k in v)
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; "
        f"load average {m['load_average']}\n{libs}"
    )
