"""Incremental-load cursors: read from the store before a run, advanced after it succeeds.

A cursor is stored as `cursor.<node>`; with it, `boundary.<node>` keeps the hashes of the rows
loaded at that cursor value, so the next run skips rows it already loaded at the boundary.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from etlkit.model.graph import Graph
    from etlkit.runs.spec import RunSpec
    from etlkit.storage.staging import Staging
    from etlkit.storage.store import RunStore

logger = logging.getLogger(__name__)

_BOUNDARY: Final = "boundary."  # state key prefix: rows an incremental source loaded at its cursor


def cursors(store: RunStore, pipeline: RunSpec) -> dict[str, str]:
    """The stored cursor of each incremental source of `pipeline`, by node."""
    return {
        key.removeprefix("cursor."): value
        for key, value in store.states(pipeline.name).items()
        if key.startswith("cursor.")
    }


def cursor_seen(store: RunStore, pipeline: RunSpec) -> dict[str, frozenset[str]]:
    """Per incremental source, the hashes of the rows it loaded at its stored cursor value
    (none when the stored boundary belongs to another value: the cursor was reset or set)."""
    states = store.states(pipeline.name)
    seen: dict[str, frozenset[str]] = {}
    for key, value in states.items():
        if not key.startswith(_BOUNDARY):
            continue
        node = key.removeprefix(_BOUNDARY)
        boundary = json.loads(value)
        if boundary.get("cursor") == states.get(f"cursor.{node}"):
            seen[node] = frozenset(boundary.get("seen", ()))
    return seen


def store_cursors(
    store: RunStore, pipeline: RunSpec, graph: Graph, staging: Staging, run_id: str
) -> None:
    """Advance each incremental source's cursor to what its committed output read.

    The committed output says it, whichever attempt committed it (this one, an in-run retry
    reusing it, or the attempt `etlkit retry` resumes). A cursor another run moved since
    this one's source read is left alone: storing an older value would load rows twice.
    """
    for name in graph.order:
        if graph.nodes[name].cursor_column is None:
            continue
        manifest = staging.manifest(pipeline.name, run_id, name)
        cursor = manifest.extra.get("cursor") if manifest is not None else None
        if not isinstance(cursor, dict) or cursor.get("value") is None:
            continue  # nothing new was read: the stored cursor stays
        stored = store.get_state(pipeline.name, f"cursor.{name}")
        if stored != cursor.get("since"):
            logger.warning(
                "run %s: node %s read from cursor %s, but the stored cursor is now %s (another"
                " run or a reset moved it); the stored cursor is kept",
                run_id,
                name,
                cursor.get("since"),
                stored,
                extra={"run_id": run_id, "node": name},
            )
            continue
        boundary = {"cursor": cursor["value"], "seen": cursor.get("seen", [])}
        store.set_states(
            pipeline.name,
            {
                f"cursor.{name}": str(cursor["value"]),
                _BOUNDARY + name: json.dumps(boundary, separators=(",", ":")),
            },
        )
