"""Where a workload's tables live: the one thing every hand-written engine shares."""

from __future__ import annotations

from pathlib import Path

from benchmarks.workloads import Workload, table_files, table_path


class Tables:
    """Where a workload's tables live, in its format."""

    def __init__(self, data_dir: Path, workload: Workload) -> None:
        self.data_dir = data_dir
        self.workload = workload
        self.fmt = workload.fmt

    def path(self, table: str) -> str:
        return table_path(self.data_dir, self.workload.dataset, table, self.fmt)

    def files(self, table: str) -> list[Path]:
        return table_files(self.data_dir, self.workload.dataset, table, self.fmt)
