"""Deliver: render a task's template and hand it to the channel's provider.

One agent per lane and channel. Provider calls are I/O-bound, so each agent runs with
`deliver_concurrency` actors; they only read tables (FAUST-NOTES), and the delivery
ledger, not a table, guards against sending twice.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import guarded
from clarion.providers.base import Delivered, OutboundMessage, PermanentFailure, SendResult, TransientFailure
from clarion.schemas.records import CHANNELS, DeliveryTask
from clarion.tables.ledger import IN_FLIGHT, SENT
from clarion.tables.templates import RenderError, render, resolve
from clarion.topology.catalog import lane_topic, retry_topic

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

LANES = ("critical",)


def register(topo: Topology) -> None:
    for lane in LANES:
        for channel in CHANNELS:
            _register_lane(topo, lane_topic(lane, channel))


def _register_lane(topo: Topology, source: str) -> None:
    async def handle(task: DeliveryTask, ev: faust.EventT) -> None:
        await deliver(topo, task)

    async def run(stream: faust.StreamT) -> None:
        await guarded(topo, source, stream, DeliveryTask, handle)

    run.__name__ = source.replace(".", "_")
    topo.app.agent(
        topo.topics[source], name=f"clarion.deliver.{source}", concurrency=topo.settings.deliver_concurrency
    )(run)


async def deliver(topo: Topology, task: DeliveryTask) -> None:
    """One attempt at one delivery, ending in an outcome (and a retry or DLQ entry)."""
    await topo.templates.ready.wait()
    now = time.time()
    base = {"channel": task.channel, "delivery_id": task.delivery_id, "attempt": task.attempt}
    if task.expires_at is not None and now >= task.expires_at:
        await topo.outcome("failed", task, reason="expired", **base)
        return
    template = resolve(topo.templates, task.template_id, task.template_version)
    if template is None:
        await topo.outcome(
            "failed", task, reason=f"unknown_template: {task.template_id}@{task.template_version}", **base
        )
        return
    try:
        content = render(template, task.channel, task.params)
    except RenderError as exc:
        await topo.outcome("failed", task, reason=f"render_error: {exc}", **base)
        return
    state, previous_id = await topo.ledger.claim(task.delivery_id)
    if state == SENT:
        await topo.outcome("sent", task, provider_message_id=previous_id, **base)
        return
    result: SendResult
    if state == IN_FLIGHT:
        result = TransientFailure("in_flight: another worker is sending this delivery")
    else:
        message = OutboundMessage(task.delivery_id, task.notification_id, task.address, content, task.trace_id)
        result = await topo.clients[task.channel].send(message)
    if isinstance(result, Delivered):
        await topo.ledger.mark_sent(task.delivery_id, result.provider_message_id)
        await topo.outcome("sent", task, provider_message_id=result.provider_message_id, **base)
        return
    if state != IN_FLIGHT:
        await topo.ledger.release(task.delivery_id)
    if isinstance(result, PermanentFailure):
        await topo.outcome("failed", task, reason=result.reason, **base)
    elif task.attempt < topo.settings.max_attempts:
        delay = max(topo.settings.retry_delay(task.attempt), result.retry_after or 0.0)
        retry = task.derive(attempt=task.attempt + 1, not_before=now + delay)
        await topo.send(retry_topic(task.attempt), task.user_id, retry)
        await topo.outcome("retrying", task, reason=result.reason, **base)
    else:
        reason = f"retries_exhausted: {result.reason}"
        await topo.dead_letter(
            topo.specs[lane_topic(task.lane, task.channel)].topic,
            reason,
            task.dumps(serializer="orjson"),
            task.user_id,
            notification_id=task.notification_id,
            delivery_id=task.delivery_id,
            attempt=task.attempt,
            trace_id=task.trace_id,
        )
        await topo.outcome("dead_lettered", task, reason=reason, **base)
