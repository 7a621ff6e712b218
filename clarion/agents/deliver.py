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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
import msgspec

from clarion.agents.guard import Part, guarded
from clarion.logs import event
from clarion.providers.base import Delivered, OutboundMessage, PermanentFailure, SendResult, TransientFailure
from clarion.schemas.codec import encode
from clarion.schemas.records import CHANNELS, DeliveryTask
from clarion.tables.ledger import DEAD, FAILED, FINAL, IN_FLIGHT, SENT
from clarion.tables.templates import Rendered, RenderError, RenderLimit, render, resolve
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
        await deliver_batch(topo, parts, out, limit)

    async def run(stream: faust.StreamT) -> None:
        await guarded(topo, source, stream, DeliveryTask, handle)

    run.__name__ = source.replace(".", "_")
    topo.app.agent(
        topo.topics[source], name=f"clarion.deliver.{source}", concurrency=topo.settings.deliver_concurrency
    )(run)


@dataclass
class Attempt:
    """One delivery task on its way through a batch (partition: where its status lives)."""

    partition: int
    task: DeliveryTask
    content: Rendered | None = None
    result: SendResult | None = None


async def deliver_batch(
    topo: Topology, parts: Sequence[Part[DeliveryTask]], out: Outbox, limit: asyncio.Semaphore | None = None
) -> None:
    """One attempt at each delivery, each ending in an outcome (and a retry or DLQ entry)."""
    await topo.templates.ready.wait()
    now = topo.clock()
    ready: list[Attempt] = []
    for part in parts:
        for task in part.items:
            content = _prepare(topo, task, now)
            if isinstance(content, str):
                topo.outcome(out, part.partition, "failed", task, reason=content, **_where(task))
            else:
                ready.append(Attempt(part.partition, task, content))
    if not ready:
        return
    claims = await topo.ledger.claim_many([a.task.delivery_id for a in ready])
    to_send: list[Attempt] = []
    for attempt, (state, previous_id) in zip(ready, claims, strict=True):
        if state in FINAL:  # a replay of a settled delivery: the same outcome again, nothing else
            _replay_final(topo, out, attempt, state, previous_id or "")
        elif state == IN_FLIGHT:
            _wait_for_claim(topo, out, attempt, now)
        else:
            to_send.append(attempt)
    results = await asyncio.gather(*(_send(topo, a.task, a.content, limit) for a in to_send))
    for attempt, result in zip(to_send, results, strict=True):
        attempt.result = result
    await _record_in_ledger(topo, to_send)
    for attempt in to_send:
        _settle(topo, out, attempt, now)


def _where(task: DeliveryTask) -> dict[str, Any]:
    return {"channel": task.channel, "delivery_id": task.delivery_id, "attempt": task.attempt}


def _prepare(topo: Topology, task: DeliveryTask, now: float) -> Rendered | str:
    """The rendered content, or why this delivery fails permanently before any provider call."""
    if task.expires_at is not None and now >= task.expires_at:
        return "expired"
    template = resolve(topo.templates, task.client_id, task.template_id, task.template_version)
    if template is None:
        return f"unknown_template: {task.template_id}@{task.template_version}"
    try:
        return render(template, task.channel, task.params)
    except RenderError as exc:
        if isinstance(exc, RenderLimit):  # the template's owner needs to know; it is not the message's fault
            event(log, "template over a render limit", logging.WARNING, template_id=task.template_id,
                  template_version=task.template_version, delivery_id=task.delivery_id, reason=str(exc))
        return f"{exc.reason}: {exc}"


async def _send(topo: Topology, task: DeliveryTask, content: Any, limit: asyncio.Semaphore | None) -> SendResult:
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


async def _record_in_ledger(topo: Topology, sent: list[Attempt]) -> None:
    """Final results stay in the ledger (a replay repeats the outcome); a retry releases its claim."""
    final: list[tuple[str, str, str]] = []
    retrying: list[str] = []
    for a in sent:
        did, result = a.task.delivery_id, a.result
        if isinstance(result, Delivered):
            final.append((did, SENT, result.provider_message_id))
        elif isinstance(result, PermanentFailure):
            final.append((did, FAILED, result.reason))
        elif a.task.attempt >= topo.settings.max_attempts:
            final.append((did, DEAD, f"retries_exhausted: {getattr(result, 'reason', 'unknown')}"))
        else:
            retrying.append(did)
    try:
        await topo.ledger.record_many(final)
        await topo.ledger.release_many(retrying)
    except Exception:  # the sends happened: report them; the claims expire on their own
        log.exception("delivery ledger update failed for %d deliveries", len(sent))


def _replay_final(topo: Topology, out: Outbox, attempt: Attempt, state: str, detail: str) -> None:
    task, where = attempt.task, _where(attempt.task)
    if state == SENT:
        topo.outcome(out, attempt.partition, "sent", task, provider_message_id=detail, **where)
    elif state == FAILED:
        topo.outcome(out, attempt.partition, "failed", task, reason=detail, **where)
    else:  # DEAD: already in the DLQ once
        topo.outcome(out, attempt.partition, "dead_lettered", task, reason=detail, **where)


def _wait_for_claim(topo: Topology, out: Outbox, attempt: Attempt, now: float) -> None:
    """Another worker claimed this delivery (or died holding the claim): look again later.

    Waiting spends no attempt: a replay after a crash must not burn the delivery's
    attempts and dead-letter it while the claim is outstanding. The claim expires on its
    own (`claim_ttl_s`), or turns into `sent`, and the next look settles it.
    """
    task = attempt.task
    delay = topo.settings.retry_delays()[0]
    later = msgspec.structs.replace(task, not_before=now + delay)
    out.add(retry_topic(delay), task.user_key, encode(later))
    reason = "in_flight: another worker holds this delivery's claim"
    topo.outcome(out, attempt.partition, "retrying", task, reason=reason, **_where(task))


def _settle(topo: Topology, out: Outbox, attempt: Attempt, now: float) -> None:
    task, result, partition = attempt.task, attempt.result, attempt.partition
    where = _where(task)
    if isinstance(result, Delivered):
        topo.outcome(out, partition, "sent", task, provider_message_id=result.provider_message_id, **where)
    elif isinstance(result, PermanentFailure):
        topo.outcome(out, partition, "failed", task, reason=result.reason, **where)
    elif isinstance(result, TransientFailure) and task.attempt < topo.settings.max_attempts:
        settings = topo.settings
        wait = max(settings.retry_delay(task.attempt), min(result.retry_after or 0.0, settings.retry_max_delay_s))
        delay = settings.retry_bucket(wait)
        retry = msgspec.structs.replace(task, attempt=task.attempt + 1, not_before=now + delay)
        out.add(retry_topic(delay), task.user_key, encode(retry))
        topo.outcome(out, partition, "retrying", task, reason=result.reason, **where)
    else:
        reason = f"retries_exhausted: {getattr(result, 'reason', 'unknown')}"
        topo.dead_letter(
            out,
            topo.specs[lane_topic(task.lane, task.channel)].topic,
            reason,
            encode(task),
            task.user_key,
            notification_id=task.notification_id,
            delivery_id=task.delivery_id,
            attempt=task.attempt,
            trace_id=task.trace_id,
        )
        topo.outcome(out, partition, "dead_lettered", task, reason=reason, **where)
