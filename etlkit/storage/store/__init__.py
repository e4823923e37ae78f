"""The run history store: runs, node runs, events, pipeline state and scheduling state in one
SQLite file.

`RunStore` is the one class callers use; it is composed of one part per concept, each a module
here: `connection` (opening, migrating, locking: every part's base), `runs` (a run's life),
`history` (reading runs back), `nodes` (node attempts), `events` (the event log and notification
claims), `state` (per-pipeline cursors), `scheduling` (claims, requeues, pauses, scheduler
heartbeats) and `pools` (slot leases). `schema` holds the SQLite schema and its migrations,
`records` the dataclasses read back, `vocabulary` the one `RunState`, `NodeState` and
`new_run_id`, and `owners` how a run's process is named and found gone. This package imports only
`etlkit.errors` and the standard library.

Threads share a `RunStore` (one lock around its connection); processes share the file (WAL mode,
and every write is one `BEGIN IMMEDIATE` transaction).
"""

from __future__ import annotations

from etlkit.errors import RunExistsError as RunExistsError
from etlkit.storage.store.connection import BUSY_TIMEOUT_MS as BUSY_TIMEOUT_MS
from etlkit.storage.store.events import RunEvents
from etlkit.storage.store.history import RunHistory
from etlkit.storage.store.nodes import NodeRuns
from etlkit.storage.store.owners import owner_gone as owner_gone
from etlkit.storage.store.owners import owner_of as owner_of
from etlkit.storage.store.owners import pid_alive as pid_alive
from etlkit.storage.store.owners import process_start as process_start
from etlkit.storage.store.pools import PoolSlots
from etlkit.storage.store.records import EventRecord as EventRecord
from etlkit.storage.store.records import NodeRunRecord as NodeRunRecord
from etlkit.storage.store.records import NodeUpdate as NodeUpdate
from etlkit.storage.store.records import PartitionRecord as PartitionRecord
from etlkit.storage.store.records import RunRecord as RunRecord
from etlkit.storage.store.records import SchedulerRecord as SchedulerRecord
from etlkit.storage.store.records import SlotLease as SlotLease
from etlkit.storage.store.runs import RunLifecycle
from etlkit.storage.store.scheduling import SchedulingState
from etlkit.storage.store.state import PipelineState
from etlkit.storage.store.vocabulary import ACTIVE_STATES as ACTIVE_STATES
from etlkit.storage.store.vocabulary import FINAL_STATES as FINAL_STATES
from etlkit.storage.store.vocabulary import NODE_STATES as NODE_STATES
from etlkit.storage.store.vocabulary import RETRYABLE_STATES as RETRYABLE_STATES
from etlkit.storage.store.vocabulary import RUN_STATES as RUN_STATES
from etlkit.storage.store.vocabulary import NodeState as NodeState
from etlkit.storage.store.vocabulary import RunState as RunState
from etlkit.storage.store.vocabulary import new_run_id as new_run_id


class RunStore(
    RunLifecycle,
    RunHistory,
    NodeRuns,
    RunEvents,
    PipelineState,
    SchedulingState,
    PoolSlots,
):
    """The run history in one SQLite file; safe to share between threads and processes.

    Every method raises StoreError when the file cannot be opened, read or written.

    Example:
        ```python
        with RunStore(state_dir / "runs.db") as store:
            store.create_run(run_id=rid, pipeline="monthly_report", logical_date=ds,
                             params={}, trigger="schedule", staging_root="data/staging")
            store.start_run(rid, pid=os.getpid())
            store.finish_run(rid, "success")
        ```
    """
