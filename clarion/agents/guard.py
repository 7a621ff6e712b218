"""The loop every agent runs: decode explicitly, handle, and never die on one message.

faust skips offsets after an agent crashes and acks on noack (FAUST-NOTES), so failures
are routed explicitly: undecodable or invalid values and unexpected errors go to the DLQ
with a reason, and the loop continues with the next message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import faust

from clarion.logs import log_context
from clarion.schemas.codec import PoisonMessage, decode

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.agents")
R = TypeVar("R", bound=faust.Record)
Handler = Callable[[R, faust.EventT], Awaitable[None]]


def _ids(record: Any) -> dict[str, Any]:
    return {
        "trace_id": getattr(record, "trace_id", None),
        "client_id": getattr(record, "client_id", None),
        "user_id": getattr(record, "user_id", None),
        "notification_id": getattr(record, "notification_id", None),
    }


async def guarded(topo: Topology, source: str, stream: faust.StreamT, model: type[R], handle: Handler) -> None:
    """Consume `stream` of raw `model` values with `handle`, sending failures to the DLQ."""
    async for ev in stream.events():
        raw = ev.value
        try:
            record = decode(model, raw)
        except PoisonMessage as exc:
            await topo.dead_letter(topo.specs[source].topic, str(exc), raw, ev.key)
            continue
        ids = _ids(record)
        with log_context(**ids):
            try:
                await handle(record, ev)
            except Exception as exc:
                log.exception("handler failed on %s", source)
                await topo.dead_letter(
                    topo.specs[source].topic,
                    f"internal_error: {exc!r}",
                    raw,
                    ev.key,
                    notification_id=ids["notification_id"],
                    trace_id=ids["trace_id"] or "",
                    delivery_id=getattr(record, "delivery_id", None),
                )
