"""`python -m etlkit.scheduling --project DIR`: run the scheduler until SIGINT or SIGTERM.

Exit codes: 0 stopped, 2 could not start (bad configuration, unreadable store).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from etlkit.errors import EtlkitError
from etlkit.scheduling.scheduler import Scheduler, serve
from etlkit.settings.config import load_settings
from etlkit.storage.store import RunStore

logger = logging.getLogger("etlkit.scheduling")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, configure logging to stderr, run the scheduler."""
    parser = argparse.ArgumentParser(
        prog="python -m etlkit.scheduling", description="Run pipelines on their schedules."
    )
    parser.add_argument("--project", default=".", help="project directory (default: .)")
    parser.add_argument("--config", help="config file (default: <project>/etlkit.toml)")
    parser.add_argument("--pipelines", help="pipelines folder (default: paths.pipelines_dir)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--once", action="store_true", help="run one round and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    project = Path(args.project).resolve()
    config = Path(args.config) if args.config else None
    pipelines = Path(args.pipelines) if args.pipelines else None
    try:
        settings = load_settings(project, config_file=config)
        if args.once:
            with RunStore(settings.paths.store) as store:
                scheduler = Scheduler(
                    store,
                    settings,
                    project_dir=project,
                    pipelines_dir=pipelines,
                    config_file=config,
                    log_level=args.log_level,
                )
                scheduler.tick()
                scheduler.store.remove_scheduler(scheduler.scheduler_id)
        else:
            serve(
                project,
                settings=settings,
                config_file=config,
                pipelines_dir=pipelines,
                log_level=args.log_level,
            )
    except EtlkitError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
