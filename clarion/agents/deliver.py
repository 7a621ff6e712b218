"""Deliver: render each task's template and hand it to the channel's provider.

One agent per lane and channel. The tasks of every record taken at once are rendered,
claimed in the delivery ledger with one Redis round trip, sent with concurrent provider
calls (at most `provider_concurrency` per lane), and settled with one more round trip.
Provider calls are I/O-bound, so each agent also runs `deliver_concurrency` actors, each
on its own records; they only read tables (FAUST-NOTES), and the delivery ledger, not a
table, guards against sending twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import faust
import msgspec

from clarion.agents.guard import Part, guarded
from clarion.providers.base import Delivered, OutboundMessage, PermanentFailure, SendResult, TransientFailure
from clarion.schemas.codec import encode
from clarion.schemas.records import CHANNELS, DeliveryTask
from clarion.tables.ledger import IN_FLIGHT, SENT
from clarion.tables.templates import Rendered, RenderError, render, resolve
from clarion.topology.catalog import lane_topic, retry_topic
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

LANES = ("critical",)
log = logging.getLogger("clarion.deliver")


def register(topo: Topology) -> None:
    for lane in LANES:
        for channel in CHANNELS:
            _register_lane(topo, lane_topic(lane, channel))


def _register_lane(topo: Topology, source: str) -> None:
    limit = asyncio.Semaphore(topo.settings.provider_concurrency)

    async def handle(parts: Sequence[Part[DeliveryTask]], out: Outbox) -> None:
        await deliver_batch(topo, [task for part in parts for task in part.items], out, limit)

    async def run(stream: faust.StreamT) -> None:
        await guarded(topo, source, stream, DeliveryTask, handle)

    run.__name__ = source.replace(".", "_")
    topo.app.agent(
        topo.topics[source], name=f"clarion.deliver.{source}", concurrency=topo.settings.deliver_concurrency
    )(run)


async def deliver_batch(
    topo: Topology, tasks: Sequence[DeliveryTask], out: Outbox, limit: asyncio.Semaphore | None = None
) -> None:
    """One attempt at each delivery, each ending in an outcome (and a retry or DLQ entry)."""
    await topo.templates.ready.wait()
    now = topo.clock()
    ready: list[tuple[DeliveryTask, Rendered]] = []
    for task in tasks:
        content = _prepare(topo, task, now)
        if isinstance(content, str):
            topo.outcome(out, "failed", task, reason=content, **_where(task))
        else:
            ready.append((task, content))
    if not ready:
        return
    claims = await topo.ledger.claim_many([task.delivery_id for task, _ in ready])
    to_send: list[tuple[DeliveryTask, Rendered]] = []
    for (task, content), (state, previous_id) in zip(ready, claims, strict=True):
        if state == SENT:
            topo.outcome(out, "sent", task, provider_message_id=previous_id, **_where(task))
        elif state == IN_FLIGHT:
            _settle(topo, out, task, TransientFailure("in_flight: another worker is sending this delivery"), now)
        else:
            to_send.append((task, content))
    results = await asyncio.gather(*(_send(topo, task, content, limit) for task, content in to_send))
    await _record_in_ledger(topo, to_send, results)
    for (task, _), result in zip(to_send, results, strict=True):
        _settle(topo, out, task, result, now)


def _where(task: DeliveryTask) -> dict[str, Any]:
    return {"channel": task.channel, "delivery_id": task.delivery_id, "attempt": task.attempt}


def _prepare(topo: Topology, task: DeliveryTask, now: float) -> Rendered | str:
    """The rendered content, or why this delivery fails permanently before any provider call."""
    if task.expires_at is not None and now >= task.expires_at:
        return "expired"
    template = resolve(topo.templates, task.template_id, task.template_version)
    if template is None:
        return f"unknown_template: {task.template_id}@{task.template_version}"
    try:
        return render(template, task.channel, task.params)
    except RenderError as exc:
        return f"render_error: {exc}"


async def _send(topo: Topology, task: DeliveryTask, content: Rendered, limit: asyncio.Semaphore | None) -> SendResult:
    message = OutboundMessage(task.delivery_id, task.notification_id, task.address, content, task.trace_id)
    client = topo.clients[task.channel]
    try:
        if limit is None:
            return await client.send(message)
        async with limit:
            return await client.send(message)
    except Exception as exc:  # a client bug must not take the batch down; retries are bounded
        log.exception("provider client failed on %s", task.delivery_id)
        return TransientFailure(f"client_error: {exc!r}")


async def _record_in_ledger(
    topo: Topology, sent: list[tuple[DeliveryTask, Rendered]], results: Sequence[SendResult]
) -> None:
    pairs = [(task.delivery_id, result) for (task, _), result in zip(sent, results, strict=True)]
    delivered = [(did, r.provider_message_id) for did, r in pairs if isinstance(r, Delivered)]
    failed = [did for did, r in pairs if not isinstance(r, Delivered)]
    try:
        await topo.ledger.mark_sent_many(delivered)
        await topo.ledger.release_many(failed)
    except Exception:  # the sends happened: report them; the claims expire on their own
        log.exception("delivery ledger update failed for %d deliveries", len(sent))


def _settle(topo: Topology, out: Outbox, task: DeliveryTask, result: SendResult, now: float) -> None:
    where = _where(task)
    if isinstance(result, Delivered):
        topo.outcome(out, "sent", task, provider_message_id=result.provider_message_id, **where)
    elif isinstance(result, PermanentFailure):
        topo.outcome(out, "failed", task, reason=result.reason, **where)
    elif task.attempt < topo.settings.max_attempts:
        delay = max(topo.settings.retry_delay(task.attempt), result.retry_after or 0.0)
        retry = msgspec.structs.replace(task, attempt=task.attempt + 1, not_before=now + delay)
        out.add(retry_topic(task.attempt), task.user_id, encode(retry))
        topo.outcome(out, "retrying", task, reason=result.reason, **where)
    else:
        reason = f"retries_exhausted: {result.reason}"
        topo.dead_letter(
            out,
            topo.specs[lane_topic(task.lane, task.channel)].topic,
            reason,
            encode(task),
            task.user_id,
            notification_id=task.notification_id,
            delivery_id=task.delivery_id,
            attempt=task.attempt,
            trace_id=task.trace_id,
        )
        topo.outcome(out, "dead_lettered", task, reason=reason, **where)
