"""The loop every agent runs: decode explicitly, handle a batch, and never die on one item.

faust skips offsets after an agent crashes and acks on noack (FAUST-NOTES), so failures
are routed explicitly: undecodable or invalid items go to the DLQ with a reason, an
unexpected error dead-letters the items it hit, and the loop goes on with the next record.
Each record holds one item or a batch of items for one partition (schemas/codec.py); a
handler gets the decoded items and an outbox, which is flushed once per record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import faust
import msgspec

from clarion.schemas.codec import decode_batch, encode
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.agents")
R = TypeVar("R", bound=msgspec.Struct)
BatchHandler = Callable[[Sequence[R], faust.EventT, Outbox], Awaitable[None]]


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
    after: Callable[[faust.EventT], Awaitable[None]] | None = None,
) -> None:
    """Consume `stream` of raw `model` values (or batches of them) with `handle`.

    `after` runs once each record is fully handled (its output handed to the producer).
    """
    topic = topo.specs[source].topic
    async for ev in stream.events():
        out = topo.outbox()
        items, poison = decode_batch(model, ev.message.value)
        for bad in poison:
            topo.dead_letter(out, topic, bad.reason, bad.raw, ev.key)
        if items:
            try:
                await handle(items, ev, out)
            except Exception as exc:
                log.exception("handler failed on %s", source)
                out = topo.outbox()  # nothing half-done goes out: every item is dead-lettered instead
                for bad in poison:
                    topo.dead_letter(out, topic, bad.reason, bad.raw, ev.key)
                for item in items:
                    dead_letter_item(topo, out, source, item, f"internal_error: {exc!r}", ev.key)
        await out.flush()
        if after is not None:
            await after(ev)
