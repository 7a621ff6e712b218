"""The loop every agent runs: take what is waiting, decode it, handle it, never die on one item.

A faust event costs ~80 µs before any work is done, and each record a stage produces
becomes another event downstream. So a stage takes the next record and every record
already waiting behind it (up to `stage_batch_records`), handles them together, and
emits one record per topic partition for all of them. Nothing waits for a batch to
fill: an idle stage handles a lone record at once, a busy one takes what piled up while
it worked. (faust's `take(n, within)` wakes every actor every `within` even when idle;
with ~40 actors and a 2 ms window that cost more CPU than the work.) Each record holds
one item or a batch of items for one partition (schemas/codec.py).

faust skips offsets after an agent crashes and acks on noack (FAUST-NOTES), so failures
are routed explicitly: undecodable or invalid items go to the DLQ with a reason, an
unexpected error dead-letters the items it hit, and the loop goes on. Records are acked
only after the handler and the outbox flush are done.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import faust
import msgspec

from clarion.schemas.codec import decode_batch, encode
from clarion.topology.outbox import Outbox

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
    topo.dead_letter(out, topo.specs[source].topic, reason, encode(record), key, **ids_of(record))


async def guarded(
    topo: Topology,
    source: str,
    stream: faust.StreamT,
    model: type[R],
    handle: BatchHandler,
    after: Callable[[Sequence[faust.EventT]], Awaitable[None]] | None = None,
) -> None:
    """Consume `stream` of raw `model` values (or batches of them) with `handle`.

    `after` runs once the records taken are fully handled (their output handed to the producer).
    """
    topic = topo.specs[source].topic
    async for events in take_waiting(stream, topo.settings.stage_batch_records):
        out = topo.outbox()
        parts: list[Part[R]] = []
        poisoned = []
        for ev in events:
            items, poison = decode_batch(model, ev.message.value)
            poisoned.extend((bad, ev.key) for bad in poison)
            if items:
                parts.append(Part(ev.message.partition, ev.key, items))
        for bad, key in poisoned:
            topo.dead_letter(out, topic, bad.reason, bad.raw, key)
        if parts:
            try:
                await handle(parts, out)
            except Exception as exc:
                log.exception("handler failed on %s", source)
                out = topo.outbox()  # nothing half-done goes out: every item is dead-lettered instead
                for bad, key in poisoned:
                    topo.dead_letter(out, topic, bad.reason, bad.raw, key)
                for part in parts:
                    for item in part.items:
                        dead_letter_item(topo, out, source, item, f"internal_error: {exc!r}", part.key)
        await out.flush()
        if after is not None:
            await after(events)


async def take_waiting(stream: faust.StreamT, max_records: int) -> AsyncIterator[list[faust.EventT]]:
    """The next event plus those already queued behind it; acked once the consumer is done."""
    stream.enable_acks = False  # acked below, after the batch is handled
    app = stream.app
    queue = stream.channel.queue
    events = stream.events().__aiter__()

    def next_is_ready() -> bool:
        if queue.empty():
            return False
        # Peek (asyncio.Queue's deque) so as never to block on a record faust would skip
        # during a rebalance: it would hold the batch until some other record arrived.
        message = getattr(queue._queue[0], "message", None)
        return message is None or (app.flow_control.is_active() and message.generation_id == app.consumer_generation_id)

    while True:
        try:
            batch = [await events.__anext__()]
            while len(batch) < max_records and next_is_ready():
                batch.append(await events.__anext__())
        except StopAsyncIteration:  # the stream stopped (worker shutdown)
            return
        yield batch
        for event in batch:
            await stream.ack(event)
