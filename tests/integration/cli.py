"""`etlkit` run as a user runs it: a child process in a project folder, with the repository
importable and no `ETLKIT_*` variable of the test's own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def etlkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETLKIT_")}
    return subprocess.run(
        [sys.executable, "-m", "etlkit", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,  # a sensor that never passes fails the test instead of hanging the suite
    )
