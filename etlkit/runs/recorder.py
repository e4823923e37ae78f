"""Recording node runs (with the partitions a distributed executor ran, and where) and run events
in the store as they happen (`Recorder`), secrets masked."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from etlkit.settings import connections
from etlkit.storage.store import NodeUpdate, PartitionRecord

if TYPE_CHECKING:
    from etlkit.engine.execution import Event, NodeStats
    from etlkit.storage.store import RunStore

logger = logging.getLogger(__name__)


#: The event a sink's write leaves in the store: `{"rows": n, "uri": where}` (`etlkit show`).
SINK_WROTE: Final = "sink_wrote"


class Recorder:
    """A listener writing node runs and run events to the store as they happen.

    A node's start or finish only marks it; its row is built from its live statistics and
    written with the others at most `_RECORD_SECONDS` later (a timer flushes what waits), at
    once when a node fails, and by `flush` at the end of the run: one SQLite transaction per
    node start and finish cost more than a trivial node itself, and so did building each
    update on the node's thread (twice per node).
    """

    def __init__(self, store: RunStore, run_id: str, attempt: int) -> None:
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.lock = threading.Lock()
        self.pending: dict[str, NodeStats] = {}  # nodes started or finished since the last flush
        self.timer: threading.Timer | None = None
        # one flush at a time: the run's last flush waits for the timer's, if one is writing,
        # so no update is written after the run ends (or into a closed store) or lost
        self.flushing = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind not in ("node_started", "node_finished"):
            return
        stats = event.result.nodes[event.node]
        failed = stats.state == "failed"
        with self.lock:
            self.pending[event.node] = stats
            if self.timer is None and not failed:
                self.timer = threading.Timer(_RECORD_SECONDS, self._flush_later)
                self.timer.daemon = True
                self.timer.start()
        if failed:
            self.flush()
            self.store.add_event(
                self.run_id, "node_failed", node=event.node, payload={"error": masked(stats.error)}
            )
        elif event.kind == "node_finished" and stats.write is not None:
            payload = {"rows": stats.write.rows, "uri": masked(stats.write.uri)}
            self.store.add_event(self.run_id, SINK_WROTE, node=event.node, payload=payload)

    def flush(self) -> None:
        """Write the marked nodes' current state, in one transaction.

        Raises:
            StoreError: the store could not be written; the nodes stay marked for the next
                flush.
        """
        with self.flushing:
            with self.lock:
                marked, self.pending = list(self.pending.values()), {}
                timer, self.timer = self.timer, None
            if timer is not None:
                timer.cancel()
            if not marked:
                return
            now_perf, now = time.perf_counter(), datetime.now(UTC)
            try:
                self.store.record_nodes(
                    self.run_id, [self._update(s, now_perf, now) for s in marked]
                )
            except BaseException:
                with self.lock:  # written by the next flush (the run's last, at the latest)
                    for stats in marked:
                        self.pending.setdefault(stats.name, stats)
                raise

    def _flush_later(self) -> None:
        """The timer's flush: a failure is logged, and the run's last flush tries again."""
        try:
            self.flush()
        except Exception as exc:  # a timer thread has nobody to raise to
            logger.warning(
                "run %s: recording node states failed (%s); retrying",
                self.run_id,
                exc,
                extra={"run_id": self.run_id},
            )

    def _update(self, stats: NodeStats, now_perf: float, now: datetime) -> NodeUpdate:
        def wall(perf: float | None) -> datetime | None:
            return None if perf is None else now - timedelta(seconds=now_perf - perf)

        return NodeUpdate(
            stats.name,
            kind=stats.kind,
            attempt=self.attempt,
            state=stats.state,
            started_at=wall(stats.started),
            finished_at=wall(stats.finished),
            rows_in=stats.rows_in,
            rows_out=stats.rows_out,
            invalid_rows=stats.invalid_rows,
            bytes_staged=stats.bytes_staged,
            chunks=max(stats.chunks_in, stats.chunks_out),
            error=masked(stats.error),
            partitions=tuple(
                PartitionRecord(p.partition, p.worker, p.rows, p.attempt, p.seconds)
                for p in list(stats.partitions)  # a copy: the executor may still report more
            ),
        )


#: How long node updates may wait before they reach the store.
_RECORD_SECONDS: Final = 0.2


def masked(text: str | None) -> str | None:
    """`text` with every active connection's secrets replaced by `***`."""
    if text is None:
        return None
    return connections.mask(text, connections.active_connections())
