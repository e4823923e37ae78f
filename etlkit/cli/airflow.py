"""`etlkit import-airflow`: turn an Airflow DAG file into a pipeline module and a review report."""

from __future__ import annotations

import argparse
from pathlib import Path

from etlkit.cli.exit_codes import EXIT_REVIEW
from etlkit.cli.project import project_dir


def cmd_import_airflow(args: argparse.Namespace) -> int:
    """`etlkit import-airflow`: write a pipeline from a DAG (exit 8: review it)."""
    from etlkit.airflow_import import import_dag

    project = project_dir(args)
    result = import_dag(
        Path(args.dag_file),
        out_dir=Path(args.out) if args.out else project / "pipelines",
        project_dir=project,
        name=args.name,
        check=args.check,
        force=args.force,
    )
    print(result.report)
    if not args.check:
        print(f"wrote {result.pipeline_path} and {result.report_path}")
    for name in result.notifiers:
        verb = "would add" if args.check else "added"
        print(f"{verb} the stub [notifiers.{name}] to {project / 'etlkit.toml'}: complete it")
    return EXIT_REVIEW if result.findings else 0
