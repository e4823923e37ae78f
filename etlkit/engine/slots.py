"""Pool slots: how many nodes of a pool (or of a whole run) run at once.

`SlotProvider` is the seam: the run store leases slots shared across runs and processes;
`LocalSlots` leases the slots of one run only, for runs without a store. The executor takes a
node's slots before the node runs (`take_slots`) and gives them back when it ends.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Final, Protocol

from etlkit.errors import ConfigError, RunCancelledError, quoted

logger = logging.getLogger(__name__)

ALL_NODES_POOL: Final = "__all_nodes__"


class SlotProvider(Protocol):
    """Leases of pool slots shared across runs and processes (the run store implements it)."""

    def acquire_slot(self, pool: str, slots: int, run_id: str, node: str, pid: int) -> bool: ...

    def release_slot(self, pool: str, run_id: str, node: str) -> bool: ...


class LocalSlots:
    """Pool slots of one run only: used when a run has no store, so that two runs in one
    process never count each other's slots (runs share slots through their store)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, set[tuple[str, str]]] = {}

    def acquire_slot(self, pool: str, slots: int, run_id: str, node: str, pid: int) -> bool:
        with self.lock:
            holders = self.held.setdefault(pool, set())
            if (run_id, node) in holders or len(holders) < slots:
                holders.add((run_id, node))
                return True
            return False

    def release_slot(self, pool: str, run_id: str, node: str) -> bool:
        with self.lock:
            holders = self.held.get(pool, set())
            found = (run_id, node) in holders
            holders.discard((run_id, node))
            return found


def take_slots(
    slots: SlotProvider,
    wanted: list[tuple[str, int]],
    held: list[str],
    *,
    run_id: str,
    node: str,
    cancel: threading.Event,
    blocked: Callable[[], AbstractContextManager[None]],
) -> None:
    """Wait for a slot of each `(pool, size)` in turn, as leases, adding each pool to `held`
    once its slot is taken (the caller releases `held`, whatever happens). `blocked`: around
    each wait, which does not count as running."""
    for pool_name, size in wanted:
        waited = False
        while not slots.acquire_slot(pool_name, size, run_id, node, os.getpid()):
            if not waited:
                logger.info(
                    "node %s waits for a slot of pool %s (%d slots)",
                    node,
                    pool_name,
                    size,
                    extra={"run_id": run_id, "node": node},
                )
                waited = True
            with blocked():
                if cancel.wait(0.2):
                    raise RunCancelledError("run cancelled")
        held.append(pool_name)


def wanted_slots(
    node: str, kind: str, pool: str | None, pools: Mapping[str, int], max_active_nodes: int
) -> list[tuple[str, int]]:
    """The slots a node needs: of its pool, and of the run's node limit (sensors aside).

    Raises:
        ConfigError: the node's pool is not defined.
    """
    wanted: list[tuple[str, int]] = []
    if max_active_nodes and kind != "sensor":
        wanted.append((ALL_NODES_POOL, max_active_nodes))
    if pool is not None:
        if pool not in pools:
            raise ConfigError(
                f"Node '{node}' uses pool '{pool}', which is not defined; pools are "
                f"{quoted(sorted(pools))} (add `{pool} = N` under [pools] "
                "in etlkit.toml)"
            )
        wanted.append((pool, pools[pool]))
    return wanted
