"""What a run reports: live node statistics, the run's result and the progress events.

`NodeStats` is written by the step running its node (and read by listeners); `RunResult` is
the run as a whole; an `Event` hands both to the `Listener`s (the CLI's progress display, the
run recorder) as the run goes. An executor reports through these, whichever runs the steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from etlkit.storage.store import NodeState, RunState

if TYPE_CHECKING:
    from etlkit.errors import EtlkitError
    from etlkit.model.nodes import WriteResult

EventKind = Literal["run_started", "node_started", "node_progress", "node_finished", "run_finished"]


@dataclass
class PartitionStats:
    """One partition of a node run by a partitioned executor: which worker ran it, the rows
    it gave, the attempt that wrote them and how long it took. A partition an earlier attempt
    of the run finished, and a retry reused, keeps that attempt's facts."""

    partition: str
    worker: str
    rows: int
    attempt: str
    seconds: float


@dataclass
class NodeStats:
    """Live facts about one node in a run (updated by its worker only)."""

    name: str
    kind: str
    state: NodeState = "pending"
    rows_in: int = 0
    chunks_in: int = 0
    rows_out: int = 0
    chunks_out: int = 0
    invalid_rows: int = 0
    bytes_staged: int = 0
    cursor: str | None = None  # an incremental source's largest cursor value, as text
    cursor_value: Any = None
    cursor_seen: set[str] = dataclasses.field(default_factory=set)  # rows read at that value
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    write: WriteResult | None = None
    expected_rows: int | None = None  # a source's estimate of its input (`Source.estimate`)
    partitions: list[PartitionStats] = dataclasses.field(default_factory=list)  # (Dask) ran apart

    @property
    def seconds(self) -> float:
        """Time spent so far (or in all, once finished)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.perf_counter()) - self.started


@dataclass
class RunResult:
    """The outcome of a run; `error` is the first failure, which cancelled the rest."""

    pipeline: str
    run_id: str
    state: RunState
    nodes: dict[str, NodeStats]
    started: float
    finished: float | None = None
    error: EtlkitError | None = None
    staging_root: str = ""

    @property
    def seconds(self) -> float:
        """Wall time of the run."""
        return (self.finished or time.perf_counter()) - self.started

    def raise_for_error(self) -> None:
        """Raise the run's error, if it failed."""
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class Event:
    """A progress event; `result` is the live run (read it, never change it)."""

    kind: EventKind
    result: RunResult
    node: str = ""


Listener = Callable[[Event], None]
