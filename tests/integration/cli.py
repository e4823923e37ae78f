"""`etlkit` run as a user runs it: a child process in a project folder, with the repository
importable and no `ETLKIT_*` variable of the test's own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def etlkit(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`etlkit ARGS` in `cwd`, with `env` added to the environment."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    return subprocess.run(
        [sys.executable, "-m", "etlkit", *args],
        cwd=cwd,
        env={**inherited, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,  # a sensor that never passes fails the test instead of hanging the suite
    )
