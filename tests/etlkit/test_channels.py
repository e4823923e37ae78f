"""The local executor's bounded channels: depth per producer, cancellation, consumer start."""

from __future__ import annotations

import threading

import pytest

from etlkit.engine.channels import END, Inbox
from etlkit.engine.workers import Workers
from etlkit.errors import RunCancelledError


def test_a_fan_in_channel_holds_its_depth_per_producer() -> None:
    inbox = Inbox(producers=3, depth=2, cancel=threading.Event())

    for i in range(6):  # would block at the third put if the bound were per channel
        inbox.put(i)

    assert list(inbox.items) == [0, 1, 2, 3, 4, 5]
    seventh = threading.Thread(target=inbox.put, args=(6,), daemon=True)
    seventh.start()
    seventh.join(0.2)
    assert seventh.is_alive()  # full: the producer waits for the consumer
    assert next(iter(inbox)) == 0
    seventh.join(5)
    assert not seventh.is_alive()
    assert list(inbox.items) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("side", ["producer", "consumer"])
def test_a_thread_waiting_on_a_channel_is_released_by_cancellation(side: str) -> None:
    cancel = threading.Event()
    inbox = Inbox(producers=1, depth=1, cancel=cancel)
    if side == "producer":
        inbox.put(0)  # full: the next put waits
    errors: list[Exception] = []

    def waiter() -> None:
        try:
            if side == "producer":
                inbox.put(1)
            else:
                next(iter(inbox))  # empty: waits
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive()  # blocked, not polling its way out
    cancel.set()
    inbox.wake()
    thread.join(5)

    assert not thread.is_alive()
    assert [type(e) for e in errors] == [RunCancelledError]


def test_a_consumer_starts_when_its_channel_fills_or_all_its_producers_end() -> None:
    starts: list[bool] = []
    inbox = Inbox(producers=2, depth=2, cancel=threading.Event(), start=starts.append)

    inbox.put(1)
    inbox.put(END)  # the other producer may still send
    assert starts == []
    inbox.put(END)
    assert starts == [True]  # by the last producer, about to return: its thread may run it

    received: list[int] = []
    inbox = Inbox(producers=1, depth=2, cancel=threading.Event())
    inbox.start = lambda last: (  # type: ignore[method-assign]
        starts.append(last),
        threading.Thread(target=lambda: received.extend(inbox), daemon=True).start(),
    )
    starts.clear()
    inbox.put(1)
    inbox.put(2)
    assert starts == []
    inbox.put(3)  # the channel is full: the consumer starts, and drains it
    inbox.put(END)
    assert starts == [False]  # once
    for _ in range(100):
        if len(received) == 3:
            break
        threading.Event().wait(0.05)
    assert received == [1, 2, 3]


def test_a_node_blocked_on_its_channel_gives_its_place_to_the_producer() -> None:
    workers = Workers(1)
    inbox = Inbox(producers=1, depth=1, cancel=threading.Event(), workers=workers)
    received: list[int] = []
    done = threading.Event()

    def consume(name: str) -> None:
        received.extend(inbox)  # blocks on the empty channel, holding the only place
        done.set()

    def produce(name: str) -> None:
        for i in range(5):  # blocks on the full channel too
            inbox.put(i)
        inbox.put(END)

    workers.submit(consume, "consumer")
    workers.submit(produce, "producer")  # queued: no room until the consumer steps out
    try:
        assert done.wait(10), "deadlock: the producer never got a thread"
    finally:
        workers.close()
    assert received == [0, 1, 2, 3, 4]
    assert workers.started == 2
