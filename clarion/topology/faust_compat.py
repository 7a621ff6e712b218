"""Every faust-streaming and aiokafka internal clarion touches, in one place.

Written against faust-streaming 0.15 and aiokafka 0.13-0.14 (pyproject.toml pins both). Nothing
else in clarion reaches past their public API; `tests/test_faust_compat.py` checks that each
internal below still exists with the shape used here, so an upgrade that moves one fails
there, naming it, and not in a worker under load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import faust

# The (package, version prefix) pairs these internals were read from.
TESTED_WITH = (("faust-streaming", "0.15."), ("aiokafka", ("0.13.", "0.14.")))

# faust's consumer thread: what clarion's fetch-wait and Tansu patches replace.
PATCHED_THREAD_METHODS = ("_create_worker_consumer", "_fetch_records", "_highwaters")


def consumer_thread() -> type:
    """faust's AIOKafkaConsumerThread: the thread that owns the worker's aiokafka consumer."""
    from faust.transport.drivers import aiokafka as driver

    return driver.AIOKafkaConsumerThread


def original_thread_method(name: str) -> Callable[..., Any]:
    """faust's own `name` of the consumer thread, even after clarion patched it."""
    method = getattr(consumer_thread(), name)
    return getattr(method, "_clarion_original", method)


def patch_thread_method(name: str, replacement: Callable[..., Any]) -> None:
    """Replace the consumer thread's `name`, keeping faust's own for `original_thread_method`."""
    replacement._clarion_original = original_thread_method(name)  # type: ignore[attr-defined]
    setattr(consumer_thread(), name, replacement)


# aiokafka's Fetcher.close cancels its pending fetch tasks and then awaits each, so the CancelledError
# one ends with escapes consumer.stop(): a worker stopped while its broker is away (a fetch task is
# sleeping between retries) crashed on the way out, exit 1. The same close, waiting for them instead.
FETCHER_CLOSE_AWAITS = "x.cancel()\n            await x"  # the lines of aiokafka's close this replaces


def patch_fetcher_close() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    if getattr(Fetcher.close, "_clarion_original", None) is not None:
        return

    async def close(self: Any) -> None:
        self._closed = True
        self._fetch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._fetch_task
        for waiter in self._fetch_waiters:  # fail every pending fetchone/fetchall call
            self._notify(waiter)
        pending = list(self._pending_tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)  # a cancellation of close itself still propagates
        for task in pending:
            if not task.cancelled():
                task.exception()  # retrieved: ended before the cancel, nothing to report on the way out

    close._clarion_original = Fetcher.close  # type: ignore[attr-defined]
    Fetcher.close = close


# aiokafka's consumer: its fetch wait (faust has no setting) and its assignment's positions.


def set_fetch_wait(consumer: Any, wait_ms: int) -> None:
    """The longest a fetch waits for records: before start() (its fetcher copies it) and after."""
    consumer._fetch_max_wait_ms = wait_ms
    if getattr(consumer, "_fetcher", None) is not None:
        consumer._fetcher._fetch_max_wait_ms = wait_ms


def has_fetcher(consumer: Any) -> bool:
    return getattr(consumer, "_fetcher", None) is not None


def partition_states(consumer: Any) -> Iterator[Any]:
    """aiokafka's state of each assigned partition (paused, position, highwater); none before an assignment."""
    try:
        assignment = consumer._subscription.subscription.assignment
    except AttributeError:
        return
    if assignment is None:
        return
    for tp in assignment.tps:
        yield assignment.state_value(tp)


# faust's consumer: which offsets are acked, committed and in hand (topology/gaps.py).


def acked_offsets(consumer: Any) -> dict[Any, list[int]]:
    return dict(getattr(consumer, "_acked", {}))


def committed_offset(consumer: Any, tp: Any) -> int | None:
    return consumer._committed_offset.get(tp)


def unacked_messages(consumer: Any) -> list[Any]:
    return list(getattr(consumer, "_unacked_messages", ()))


# faust's RocksDB table store: one database per partition (tables/store.py).


def partition_db(data: Any, partition: int) -> Any | None:
    """The RocksDB database of one partition; None for the in-memory store (agent tests)."""
    open_db = getattr(data, "_db_for_partition", None)
    return open_db(partition) if open_db is not None else None


def active_dbs(data: Any) -> list[Any] | None:
    """The databases of the partitions this worker serves, opened if need be (faust's own
    `_dbs_for_actives` skips those not opened since the last rebalance); None in memory."""
    if getattr(data, "_db_for_partition", None) is None:
        return None
    topic = data.table.changelog_topic_name
    return [partition_db(data, tp.partition) for tp in active_assignment(data.app) if tp.topic == topic]


def offset_key(data: Any) -> bytes | None:
    """The key under which faust keeps a partition's persisted changelog offset, in the table's own store."""
    return getattr(data, "offset_key", None)


# A stream's queue and the app's rebalance generation (agents/guard.py).


def peek_message(queue: asyncio.Queue[Any]) -> Any | None:
    """The message of the next queued event, without taking it (asyncio.Queue's deque)."""
    return getattr(queue._queue[0], "message", None)  # type: ignore[attr-defined]


def is_current(app: faust.App, message: Any) -> bool:
    """Whether faust will hand `message` on: flow is on and it was fetched in this generation."""
    return app.flow_control.is_active() and message.generation_id == app.consumer_generation_id


def active_assignment(app: faust.App) -> set[Any]:
    """The topic partitions this worker is assigned as active (not standby)."""
    return set(app.assignor.assigned_actives())


def owned_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of `topic` this worker is assigned as active."""
    return {tp.partition for tp in active_assignment(app) if tp.topic == topic}


def recovered(app: faust.App) -> bool:
    """Whether table recovery has finished (tables are whole)."""
    return app.tables.recovery.completed.is_set()
