"""The local executor's worker threads: reuse, handoff, spreading to new threads, closing."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from etlkit.engine.workers import Workers


def counting(
    expected: int,
) -> tuple[list[str], threading.Event, Callable[[str], None]]:
    """A trivial node recording its name, the names so far, and an event set at `expected`."""
    ran: list[str] = []
    done = threading.Event()

    def node(name: str) -> None:
        ran.append(name)
        if len(ran) == expected:
            done.set()

    return ran, done, node


def test_nodes_readied_by_a_returning_node_run_on_its_thread_when_quick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a hiccup of a loaded machine must not pass for a queue left waiting
    monkeypatch.setattr("etlkit.engine.workers._SPREAD_SECONDS", 0.2)
    workers = Workers(2)
    ran, done, node = counting(51)

    def source(name: str) -> None:  # like a source ending, readying its 50 consumers at once
        node(name)
        threading.Event().wait(0.3)  # long enough that an idle queue would get a thread at once
        for i in range(50):
            workers.submit(node, f"n{i}", handoff=True)

    workers.submit(source, "source")
    try:
        assert done.wait(10)
    finally:
        workers.close()
    assert sorted(ran) == sorted(["source", *(f"n{i}" for i in range(50))])
    assert workers.started == 1  # no thread per ready node, nor a second one for quick nodes


def test_queued_nodes_get_threads_of_their_own_while_the_busy_ones_are_slow() -> None:
    workers = Workers(4)
    ran, done, node = counting(3)

    def slow(name: str) -> None:
        for i in range(3):
            workers.submit(node, f"n{i}")
        done.wait(10)  # would wait in vain if the queued nodes had to wait for this thread

    workers.submit(slow, "slow")
    try:
        assert done.wait(10)
    finally:
        workers.close()
    assert sorted(ran) == ["n0", "n1", "n2"]
    assert workers.started >= 2  # a second thread came for the queue (a stalled one, a third)


def test_closing_the_pool_while_a_thread_is_being_started_does_not_fail() -> None:
    """`start` adds a thread to the pool under its lock and starts it after releasing it: a
    run ending in between (a DuckDB thread stepping out of the pool, say) used to make
    `close` join a thread not started yet ("cannot join thread before it is started")."""
    workers = Workers(2)
    with workers.lock:
        workers.starting += 1  # as `dispatch` does before `start`
    listed = threading.Thread(target=lambda: None)
    workers.threads.append(listed)  # listed by `start`, not started yet

    workers.close()

    workers.start()  # asked for before the pool closed: starts nothing now
    assert workers.starting == 0
    assert workers.threads == [listed]
