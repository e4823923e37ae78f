"""The command line: `etlkit run`, `retry`, `show`, `query`, `scheduler`, `ui`, ... (`main`).

Thin over the packages below it: it parses arguments, calls them, prints what they return
(`progress` for live runs, `pictures` for graphs and Gantt charts) and maps errors to the exit
codes the README documents. Nothing imports it but `etlkit.__main__`.
"""

from etlkit.cli.commands import main

__all__ = ["main"]
