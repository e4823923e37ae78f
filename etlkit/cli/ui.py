"""`etlkit ui`: serve the web UI over the project (loopback by default, a token elsewhere)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from etlkit.cli.project import pipelines_dir, project_dir, settings_for


def cmd_ui(args: argparse.Namespace) -> int:
    """`etlkit ui`: serve the web UI until stopped."""
    from etlkit.ui.server import require

    require()  # before anything else: without the `ui` extra, say what to install
    from etlkit.ui.app import UiConfig
    from etlkit.ui.server import serve

    settings = settings_for(args)
    token = args.token or os.environ.get("ETLKIT_UI_TOKEN") or None
    config = UiConfig(
        project_dir=project_dir(args),
        settings=settings,
        pipelines_dir=pipelines_dir(args).resolve(),
        config_file=Path(args.config).resolve() if args.config else None,
        token=token,
        loopback=_loopback(args.host),
    )

    def announce(url: str) -> None:
        print(f"etlkit ui: open {url}  (Ctrl-C stops it)", flush=True)

    serve(config, args.host, args.port, announce=announce)
    return 0


def _loopback(host: str) -> bool:
    from etlkit.ui.server import is_loopback

    return is_loopback(host)
