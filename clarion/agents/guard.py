"""The loop every agent runs: take what is waiting, decode it, handle it, never die on one item.

A faust event costs ~80 µs before any work is done, and each record a stage produces
becomes another event downstream. So a stage takes several records at once (see
`take_waiting`), handles them together, and emits one record per topic partition for
all of them. An idle stage handles a lone record at once; a busy one keeps its batch
open for up to `stage_batch_wait_ms`. (faust's `take(n, within)` wakes every actor every
`within` even when idle: with ~40 actors and a 2 ms window that cost more CPU than the
work.) Each record holds one item or a batch of items for one partition (codec.py).

faust skips offsets after an agent crashes and acks on noack (FAUST-NOTES), so failures
are routed explicitly: undecodable or invalid items go to the DLQ with a reason, an
unexpected error dead-letters the items it hit, and the loop goes on. Records are acked
only after the handler and the outbox flush are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import faust
import msgspec

from clarion.logs import event
from clarion.schemas.codec import decode_batch, encode
from clarion.topology import faust_compat
from clarion.topology.catalog import USER_KEY
from clarion.topology.outbox import Outbox
from clarion.topology.partitioning import partition_for

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.agents")
R = TypeVar("R", bound=msgspec.Struct)


@dataclass
class Part(Generic[R]):
    """The decoded items of one record, and where the record came from."""

    partition: int
    key: bytes | None
    items: list[R]


BatchHandler = Callable[[Sequence[Part[R]], Outbox], Awaitable[None]]


def ids_of(record: Any) -> dict[str, Any]:
    """The ids a dead letter (and a log line) carries for `record`."""
    return {
        "notification_id": getattr(record, "notification_id", None),
        "delivery_id": getattr(record, "delivery_id", None),
        "trace_id": getattr(record, "trace_id", "") or "",
    }


def dead_letter_item(topo: Topology, out: Outbox, source: str, record: Any, reason: str, key: Any) -> None:
    """Dead-letter one decoded item (its re-encoded JSON is the payload)."""
    topo.emit.dead_letter(out, topo.declared.specs[source].topic, reason, encode(record), key, **ids_of(record))


def forward_misplaced(topo: Topology, source: str, partition: int, items: list[R], out: Outbox) -> list[R]:
    """The items whose key belongs on `partition`; the others are re-produced to their own partition."""
    partitions = topo.declared.specs[source].partitions
    here = []
    for item in items:
        key = item.user_key  # type: ignore[attr-defined]
        if partition_for(key, partitions) == partition:
            here.append(item)
        else:
            out.add(source, key, encode(item))
            topo.emit.counters[("stage", source, "forwarded")] += 1
    if len(here) < len(items):
        event(log, "items on the wrong partition for their key forwarded", logging.WARNING, source=source,
              partition=partition, forwarded=len(items) - len(here))  # fmt: skip
    return here


async def guarded(
    topo: Topology,
    source: str,
    stream: faust.StreamT,
    model: type[R],
    handle: BatchHandler,
    after: Callable[[Sequence[faust.EventT]], Awaitable[None]] | None = None,
    max_records: int | None = None,
) -> None:
    """Consume `stream` of raw `model` values (or batches of them) with `handle`.

    `after` runs once the records taken are fully handled (their output handed to the producer);
    `max_records` caps the records taken at once (default `stage_batch_records`).
    """
    topic = topo.declared.specs[source].topic
    counters = topo.emit.counters
    settings = topo.declared.settings
    # Keyed by client/user_id: an item on another partition than its key's was produced with another
    # partitioner (librdkafka's default is not murmur2); its user's tables live elsewhere, so it moves there.
    placed = topo.declared.specs[source].key == USER_KEY
    most = max_records or settings.stage_batch_records
    async for events in take_waiting(stream, most, settings.stage_batch_wait_ms / 1000):
        counters[("stage", source, "takes")] += 1
        counters[("stage", source, "records")] += len(events)
        out = topo.emit.outbox()
        parts: list[Part[R]] = []
        poisoned = []
        for ev in events:
            items, poison = decode_batch(model, ev.message.value)
            poisoned.extend((bad, ev.key) for bad in poison)
            if items and placed:
                items = forward_misplaced(topo, source, ev.message.partition, items, out)
            if items:
                parts.append(Part(ev.message.partition, ev.key, items))
                counters[("stage", source, "items")] += len(items)
        for bad, key in poisoned:
            topo.emit.dead_letter(out, topic, bad.reason, bad.raw, key)
        if parts:
            try:
                await handle(parts, out)
            except Exception as exc:
                log.exception("handler failed on %s", source)
                out = topo.emit.outbox()  # nothing half-done goes out: every item is dead-lettered instead
                for bad, key in poisoned:
                    topo.emit.dead_letter(out, topic, bad.reason, bad.raw, key)
                for part in parts:
                    for item in part.items:
                        dead_letter_item(topo, out, source, item, f"internal_error: {exc!r}", part.key)
        await topo.resources.statuses.flush()
        await topo.resources.suppressions.flush()
        await out.flush()
        if after is not None:
            await after(events)


class ArrivalRate:
    """Events per second on one stream queue (shared by its actors), smoothed over ~100 ms."""

    def __init__(self, now: float) -> None:
        self.per_s = 0.0
        self.count = 0
        self.since = now

    def note(self, n: int, now: float) -> None:
        self.count += n
        elapsed = now - self.since
        if elapsed >= 0.05:
            self.per_s = 0.5 * self.per_s + 0.5 * self.count / elapsed
            self.count, self.since = 0, now


READY_WAIT_S = 0.001  # to take an event already queued (a few loop turns)
_rates: dict[int, ArrivalRate] = {}
_collecting: dict[int, asyncio.Lock] = {}


async def take_waiting(stream: faust.StreamT, max_records: int, window_s: float) -> AsyncIterator[list[faust.EventT]]:
    """The next event plus those that arrive behind it; acked once the consumer is done.

    faust hands events to a stream one at a time, yielding to the loop in between, so
    "whatever is already queued" is nearly always nothing. When events arrive often
    enough that another is expected within `window_s`, the batch stays open that long
    (or until `max_records`); a lone event on a quiet stream is handled at once.
    """
    stream.enable_acks = False  # acked below, after the batch is handled
    app = stream.app
    loop = asyncio.get_running_loop()
    queue = stream.channel.queue
    rate = _rates.setdefault(id(queue), ArrivalRate(loop.time()))
    # Actors of one agent share the queue: one collects a batch while the others handle
    # theirs, instead of all of them splitting each window's events between them.
    collecting = _collecting.setdefault(id(queue), asyncio.Lock())
    events = stream.events().__aiter__()
    pending: asyncio.Future[faust.EventT] | None = None

    def next_is_ready() -> bool:
        if queue.empty():
            return False
        # Peek (asyncio.Queue's deque) so as never to block on a record faust would skip
        # during a rebalance; those are waited for below, with a deadline.
        message = faust_compat.peek_message(queue)
        return message is None or faust_compat.is_current(app, message)

    while True:
        try:
            first = await (pending or events.__anext__())  # never wait for a first event holding the lock
            pending = None
            async with collecting:
                batch = [first]
                deadline = loop.time() + window_s if rate.per_s * window_s >= 2 else 0.0
                while len(batch) < max_records:
                    # Other actors wait on the same queue, so even a queued event can be gone
                    # by the time this one asks: never wait without a deadline in here.
                    remaining = max(deadline - loop.time(), READY_WAIT_S if next_is_ready() else 0.0)
                    if remaining <= 0:
                        break
                    pending = asyncio.ensure_future(events.__anext__())
                    done, _ = await asyncio.wait({pending}, timeout=remaining)
                    if not done:
                        break  # it becomes the first event of the next batch
                    batch.append(pending.result())
                    pending = None
        except StopAsyncIteration:  # the stream stopped (worker shutdown)
            return
        rate.note(len(batch), loop.time())
        yield batch
        for taken in batch:
            await stream.ack(taken)
