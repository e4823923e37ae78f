"""The one vocabulary of runs: `RunState`, `NodeState`, their groups, and the run-id function.

The store records these states and the engine reports them; everything else imports them from here
(through `etlkit.storage.store`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Final, Literal, get_args

#: The one vocabulary of run and node states: the store records them, the engine reports them
#: (a run in the engine is never "queued" or "interrupted"; those are the store's and scheduler's).
RunState = Literal["queued", "running", "success", "failed", "cancelled", "interrupted", "skipped"]
NodeState = Literal["pending", "running", "done", "failed", "cancelled", "reused", "skipped"]

RUN_STATES: Final[tuple[str, ...]] = get_args(RunState)
NODE_STATES: Final[tuple[str, ...]] = get_args(NodeState)
ACTIVE_STATES: Final[tuple[RunState, ...]] = ("queued", "running")
FINAL_STATES: Final[tuple[RunState, ...]] = (
    "success",
    "failed",
    "cancelled",
    "interrupted",
    "skipped",  # a sensor timed out with soft_fail: the run had nothing to do
)
RETRYABLE_STATES: Final[tuple[RunState, ...]] = ("failed", "cancelled", "interrupted")


def new_run_id(now: datetime | None = None) -> str:
    """A unique, sortable, path-safe run id from its creation time: `20250301T020000Z-7f3a2c`.

    The one run-id function: manual runs, scheduled runs and backfills all take theirs here.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"
