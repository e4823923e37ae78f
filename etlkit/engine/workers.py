"""The local executor's worker threads: reused across a run's nodes, never more than needed.

`Workers` runs each ready node on a thread: an idle one, a new one, or the thread of the node
that readied it (handoff). A node blocked on a channel, a slot or a sensor steps out of the
count (`blocked`), so whatever blocks, no node waits for a thread forever.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final


def default_workers() -> int:
    """Nodes a run runs at once by default: twice the CPU cores, at least 8 (nodes waiting on
    a network or a database count as running; nodes blocked on a channel do not)."""
    return max(8, 2 * (os.cpu_count() or 1))


#: While threads keep taking queued nodes, another thread is sent for the queue only when none
#: has taken one for this long: nodes quicker than that run one after another on the threads
#: already busy, instead of spreading over threads that take turns at the GIL.
_SPREAD_SECONDS: Final = 0.02


class Workers:
    """Daemon threads reused across a run's nodes, at most `size` running nodes at once.

    A ready node is queued. A thread that finishes a node takes the next queued one; a queued
    node gets another thread (an idle one, or a new one) when none is running, or when no
    thread has taken a queued node for `_SPREAD_SECONDS` (the threads are busy with long nodes),
    and only while fewer than `size` nodes run (0: no limit). A node that blocks on a channel,
    or waits as a sensor, steps out (`blocked`): it stops counting, and a queued node gets a
    thread, so whatever blocks, no node waits for a thread forever (no deadlock).

    Why: a wide graph readies hundreds of nodes at once. On threads taking turns at the GIL,
    nodes that take a millisecond spend more time handing the GIL over than working (a wide
    fan of trivial nodes runs faster on fewer threads, fastest on one), while nodes that
    wait on a database or run native code want threads of their own.
    """

    def __init__(self, size: int = 0) -> None:
        self.size = size
        self.tasks: collections.deque[tuple[Callable[[str], None], str]] = collections.deque()
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.idle = 0  # threads waiting for a task
        self.woken = 0  # of those, notified and not yet awake (each has a place kept)
        self.starting = 0  # threads started and not yet asking for a task (each has a place)
        self.running = 0  # threads running a node and not blocked
        self.started = 0
        self.closed = False
        self.threads: list[threading.Thread] = []
        self.local = threading.local()
        self.served = 0.0  # when a thread last took a queued node, or was sent for one
        self.spreading = threading.Condition(self.lock)
        self.spreader: threading.Thread | None = None  # sends threads for a queue left waiting

    def room(self) -> bool:
        return self.size <= 0 or self.running + self.woken + self.starting < self.size

    def dispatch(self, *, served: bool = False) -> bool:
        """Under the lock: wake an idle thread for a queued node if there is room and the queue
        is not being served already (`served`: the calling thread serves it next); True when a
        new thread must be started instead (outside the lock: `start`)."""
        if not self.tasks or not self.room():
            return False
        if self.running + self.woken + self.starting:
            if served:
                self.served = time.monotonic()  # the caller takes queued nodes in a moment
            if time.monotonic() - self.served < _SPREAD_SECONDS:
                self.spread_later()
                return False
        self.served = time.monotonic()
        if self.idle > self.woken:
            self.woken += 1
            self.wakeup.notify()
            return False
        if self.closed:
            return False
        self.starting += 1
        return True

    def spread_later(self) -> None:
        """Under the lock: have the spreader look at the queue again when it has waited."""
        if self.spreader is not None:
            self.spreading.notify()
        elif not self.closed:
            self.spreader = threading.Thread(target=self.spread, name="etlkit-spread", daemon=True)
            self.spreader.start()

    def spread(self) -> None:
        """The spreader: sends a thread for queued nodes no thread has taken in a while."""
        with self.lock:
            while not self.closed:
                wait = None
                if self.tasks and self.room():
                    wait = self.served + _SPREAD_SECONDS - time.monotonic()
                    if wait <= 0:
                        if self.dispatch():
                            self.lock.release()
                            try:
                                self.start()
                            finally:
                                self.lock.acquire()
                        continue
                self.spreading.wait(wait)

    def start(self) -> None:
        with self.lock:
            if self.closed:  # closed since `dispatch` asked for it: it would only end at once
                self.starting -= 1
                return
            self.started += 1
            thread = threading.Thread(
                target=self.loop, name=f"etlkit-worker-{self.started}", daemon=True
            )
            self.threads.append(thread)
        try:
            thread.start()
        except BaseException:  # no thread after all (e.g. the system's limit): its place is free
            with self.lock:
                self.starting -= 1
                self.threads.remove(thread)
            raise

    def submit(self, work: Callable[[str], None], name: str, *, handoff: bool = False) -> None:
        """Queue a node. `handoff`: the calling node is about to return; its thread runs this
        one next (the first such node), then serves the queue (other threads come for it only
        if that takes a while)."""
        handoff = handoff and getattr(self.local, "running", False)
        if handoff and self.local.next is None:
            self.local.next = (work, name)
            return
        with self.lock:
            self.tasks.append((work, name))
            new = self.dispatch(served=handoff)
        if new:
            self.start()

    def next_task(self, *, first: bool) -> tuple[Callable[[str], None], str] | None:
        with self.lock:
            if first:
                self.starting -= 1
            else:
                self.running -= 1
            while not (self.tasks and self.room()):
                if self.closed:
                    return None
                self.idle += 1
                self.wakeup.wait()
                self.idle -= 1
                self.woken = max(0, self.woken - 1)
            self.running += 1
            self.served = time.monotonic()
            return self.tasks.popleft()

    def loop(self) -> None:
        thread = threading.current_thread()
        self.local.next = None
        task = self.next_task(first=True)
        while task is not None:
            work, name = task
            thread.name = f"etlkit-{name}"
            self.local.running = True
            try:
                work(name)  # catches everything at the node boundary
            finally:
                self.local.running = False
                thread.name = "etlkit-idle"
            task, self.local.next = self.local.next, None  # handed over: keeps its place
            if task is not None:
                self.served = time.monotonic()
            else:
                task = self.next_task(first=False)

    @contextlib.contextmanager
    def blocked(self, *, force: bool = False) -> Iterator[None]:
        """Around a blocking wait of a running node: it does not count while it waits.

        `force`: the wait is a running node's even though this thread is not a worker (a
        DuckDB thread reading a SQL node's streamed input)."""
        if not (force or getattr(self.local, "running", False)):
            yield
            return
        with self.lock:
            self.running -= 1
            new = self.dispatch()
        if new:
            self.start()
        try:
            yield
        finally:
            with self.lock:
                self.running += 1

    def close(self) -> None:
        """Let idle threads end; busy ones (abandoned nodes) end when their node returns."""
        with self.lock:
            self.closed = True
            self.wakeup.notify_all()
            self.spreading.notify_all()
            threads = list(self.threads)
            if self.spreader is not None:
                threads.append(self.spreader)
        deadline = time.perf_counter() + 1.0
        for thread in threads:  # an abandoned node keeps its thread: do not wait on it long
            if thread.ident is None:
                continue  # `start` has yet to start it: it will find the pool closed and end
            thread.join(max(0.0, deadline - time.perf_counter()))
