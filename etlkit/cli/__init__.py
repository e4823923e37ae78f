"""The command line: `etlkit run`, `retry`, `show`, `query`, `scheduler`, `ui`, ... (`main`).

Thin over the packages below it: it parses arguments (`parser`), resolves the project from
them (`project`), calls the packages below, prints what they return (`tables`, `progress` for
live runs, `pictures` for graphs and Gantt charts) and maps errors to the exit codes the README
documents (`exit_codes`, `entry`). Commands are grouped by what they do: `running`,
`inspecting`, `query`, `scheduling`, `maintenance`, `ui`, `airflow`. Nothing imports it but
`etlkit.__main__`.
"""

from __future__ import annotations

from etlkit.cli.entry import main
from etlkit.cli.exit_codes import exit_code

__all__ = ["exit_code", "main"]
