"""Bounded channels: how chunks travel from a streaming node to its consumers on local threads.

An `Inbox` is the channel into one streaming node, fed by its producers (record batches, or
the polars frames a transform takes); `END` is the item a
producer puts when it is done. Memory is bounded by channel depth times chunk size. The local
executor alone uses channels: steps read plain iterators and call plain functions to send.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import polars as pl

from etlkit.engine.workers import Workers
from etlkit.errors import RunCancelledError

END: Any = object()


class Inbox:
    """The bounded channel into one streaming node, fed by one or more producers.

    It holds up to `depth` chunks per producer (the bound is per edge), so producers of a wide
    fan-in do not queue up behind each other's chunks.

    The consumer is started (`start`) when the channel fills, or when every producer has ended:
    a small output reaches its consumer whole, which then runs on the thread its last producer
    frees (no hand-over between threads per node), while a large one streams with the consumer
    running beside its producers from the first full channel on.

    A deque under a lock, with conditions made only when a thread must wait: most channels of
    a graph of quick nodes never block, and a `queue.Queue` (three conditions, a lock and their
    bound methods) per edge was most of a run's set-up and of its garbage collection.
    """

    def __init__(
        self,
        producers: int,
        depth: int,
        cancel: threading.Event,
        start: Callable[[bool], None] = lambda last: None,
        workers: Workers | None = None,
    ) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.limit = depth * max(1, producers)
        self.producers = producers
        self.open = producers  # producers the consumer has not seen end yet
        self.cancel = cancel
        self.workers = workers or Workers()  # a run's pool; without one, blocking costs nothing
        self.start = start  # gives the consumer a worker; True: from a producer about to return
        self.started = False
        self.lock = threading.Lock()
        # made by the first thread that must wait, on `lock`: an item arrived (the consumer
        # waits for one), an item was taken (producers wait for room)
        self.arrived: threading.Condition | None = None
        self.taken: threading.Condition | None = None
        self.ended = 0  # producers that put their end
        self.foreign = False  # read by threads not the pool's, for a running node (DuckDB's)

    def _conditions(self) -> tuple[threading.Condition, threading.Condition]:
        """Under the lock: (arrived, taken), made on first use."""
        if self.arrived is None or self.taken is None:
            self.arrived = threading.Condition(self.lock)
            self.taken = threading.Condition(self.lock)
        return self.arrived, self.taken

    def put(self, item: Any) -> None:
        with self.lock:
            full = len(self.items) >= self.limit
            if not full:
                self.items.append(item)
                if self.arrived is not None:
                    self.arrived.notify()
        if full:
            self.begin(last=False)  # the consumer must drain the channel: it starts now
            with self.workers.blocked(), self.lock:
                arrived, taken = self._conditions()
                while len(self.items) >= self.limit:
                    if self.cancel.is_set():
                        raise RunCancelledError("run cancelled")
                    taken.wait()  # cancellation wakes it (`wake`)
                self.items.append(item)
                arrived.notify()
        if item is END:
            with self.lock:
                self.ended += 1
                last = self.ended >= self.producers
            if last:
                self.begin(last=True)

    def begin(self, *, last: bool) -> None:
        if not self.started:
            self.started = True
            self.start(last)

    def wake(self) -> None:
        """Wake the threads waiting on the channel (the run is being cancelled)."""
        with self.lock:
            if self.arrived is not None and self.taken is not None:
                self.arrived.notify_all()
                self.taken.notify_all()

    def _take(self) -> Any:
        with self.lock:
            if self.items:
                item = self.items.popleft()
                if self.taken is not None:
                    self.taken.notify()  # one item out: room for one waiting producer
                return item
        with self.workers.blocked(force=self.foreign), self.lock:
            arrived, taken = self._conditions()
            while not self.items:
                if self.cancel.is_set():
                    raise RunCancelledError("run cancelled")
                arrived.wait()  # cancellation wakes it (`wake`)
            item = self.items.popleft()
            taken.notify()
            return item

    def __iter__(self) -> Iterator[pa.RecordBatch | pl.DataFrame]:
        while self.open:
            item = self._take()
            if self.cancel.is_set():
                raise RunCancelledError("run cancelled")
            if item is END:
                self.open -= 1
            else:
                yield item
