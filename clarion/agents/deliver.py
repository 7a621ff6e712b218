"""Deliver: render each task's template and hand it to the channel's provider.

One agent per lane and channel (lanes: topology/catalog.py), so promo never waits behind
critical or takes its actors. The tasks of every record taken at once are rendered
and handed to dispatch as one batch of orders (providers/dispatch.py: claimed in the
delivery ledger, sent, settled; in the sender process when there is Redis). Each answer
becomes an outcome here: sent, failed, a retry on the delay topic, or a dead letter; a
replay answered from the ledger repeats its outcome. Provider calls are I/O-bound, so
each agent runs its lane's `concurrency` actors, each on its own records; they only read
tables (FAUST-NOTES), and the delivery ledger, not a table, guards against sending twice.

A campaign's execution (lane promo) also obeys its campaign's state on promo.controls:
a cancelled campaign's executions end `cancelled` without a call, a paused one's wait in
the retry schedule without spending attempts, and an execution deferred past quiet hours
waits until its `not_before`. Its final state counts once in the campaign's counters (the
ledger's), and it has no status entry (promo partitions are not the users').
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
import msgspec

from clarion.agents.guard import Part, guarded
from clarion.logs import event
from clarion.providers.base import Delivered, PermanentFailure, SendResult, TransientFailure
from clarion.providers.dispatch import Order, Reply, order_for
from clarion.providers.sender import SenderGone
from clarion.schemas.channels import CHANNELS
from clarion.schemas.codec import encode
from clarion.schemas.records import DeliveryTask, Feedback
from clarion.tables.ledger import CANCELLED, FAILED, SENT
from clarion.tables.status import partition_of
from clarion.tables.suppression import suppresses
from clarion.tables.templates import Rendered, RenderError, RenderLimit, render, resolve
from clarion.topology.catalog import Lane, lane_topic, lanes, retry_topic
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.deliver")


def register(topo: Topology, only: Sequence[str] | None = None) -> None:
    for lane in lanes(topo.declared.settings):
        if only is None or lane.name in only:
            for channel in CHANNELS:
                _register_lane(topo, lane, channel)


def _register_lane(topo: Topology, lane: Lane, channel: str) -> None:
    source = lane_topic(lane.name, channel)

    async def handle(parts: Sequence[Part[DeliveryTask]], out: Outbox) -> None:
        await deliver_batch(topo, parts, out)

    # a promo record holds hundreds of executions (written by fanout): a few records are a big batch
    most = topo.declared.settings.promo_batch_records if lane.name == "promo" else None

    async def run(stream: faust.StreamT) -> None:
        await guarded(topo, source, stream, DeliveryTask, handle, max_records=most)

    run.__name__ = source.replace(".", "_")
    run.__doc__ = f"Deliver {lane.name} {channel} tasks: render, dispatch (claim, send, settle), emit outcomes."
    agent = topo.declared.app.agent
    agent(topo.declared.topics[source], name=f"clarion.deliver.{source}", concurrency=lane.concurrency)(run)


@dataclass
class Attempt:
    """One delivery task on its way through a batch (partition: where its status lives)."""

    partition: int
    task: DeliveryTask
    content: Rendered | None = None
    result: SendResult | None = None


async def deliver_batch(topo: Topology, parts: Sequence[Part[DeliveryTask]], out: Outbox) -> None:
    """One attempt at each delivery, each ending in an outcome (and a retry or DLQ entry)."""
    await topo.resources.templates.ready.wait()
    now = topo.resources.clock()
    ready: list[Attempt] = []
    settled: list[DeliveryTask] = []  # campaign executions ended here, without a call
    endings: list[tuple[str, str, str]] = []
    for part in parts:
        for task in part.items:
            if task.campaign and not _campaign_allows(topo, out, part.partition, task, now, endings):
                settled += [task] * (len(endings) - len(settled))
                continue
            content = _prepare(topo, task, now)
            if isinstance(content, str):
                topo.emit.outcome(out, part.partition, "failed", task, reason=content, **_where(task))
                if task.campaign:
                    endings.append((task.delivery_id, FAILED, content))
                    settled.append(task)
            else:
                ready.append(Attempt(part.partition, task, content))
    if endings:  # counted in their campaigns, once
        await topo.resources.ledger.record_many(endings, [task.campaign for task in settled])
    if not ready:
        return
    last = topo.declared.settings.max_attempts
    orders = [_order(a.task, a.content, a.task.attempt >= last) for a in ready]
    try:
        replies = await topo.resources.dispatcher.run(orders)
    except SenderGone as exc:  # what it did is in the ledger: look again later, spending no attempt
        event(log, "deliveries handed to a sender that exited", logging.ERROR, deliveries=len(ready), exc=str(exc))
        replies = [Reply("in_flight") for _ in ready]
    topo.resources.provider_metrics.observe(orders, replies)
    for attempt, reply in zip(ready, replies, strict=True):
        if reply.kind == "final":  # a replay of a settled delivery: the same outcome again, nothing else
            _replay_final(topo, out, attempt, reply.state, reply.detail)
        elif reply.kind == "in_flight":
            _look_again(topo, out, attempt, now, topo.declared.settings.retry_delays()[0],
                        "in_flight: another worker holds this delivery's claim")  # fmt: skip
        elif reply.kind == "held":
            _look_again(topo, out, attempt, now, topo.declared.settings.provider_auth_hold_s, f"held: {reply.detail}")
        else:
            attempt.result = reply.result()
            _settle(topo, out, attempt, now)


def _order(task: DeliveryTask, content: Any, last_attempt: bool) -> Order:
    return order_for(task.lane, task.channel, task.delivery_id, task.notification_id, task.address, content,
                     last_attempt, task.trace_id, task.expires_at, task.campaign, task.user_id)  # fmt: skip


def _campaign_allows(
    topo: Topology, out: Outbox, partition: int, task: DeliveryTask, now: float, endings: list[tuple[str, str, str]]
) -> bool:
    """Whether a campaign's execution may go now; if not, it ends (cancelled: added to `endings`) or waits."""
    state = topo.resources.controls.get(task.campaign)
    if state == "cancelled":
        topo.emit.outcome(out, partition, "cancelled", task, reason="campaign cancelled", **_where(task))
        endings.append((task.delivery_id, CANCELLED, "campaign cancelled"))
        return False
    if state == "paused":
        _put_off(topo, out, task, now, topo.declared.settings.retry_delays()[0])
        return False
    if task.not_before > now + 0.5:  # deferred (quiet hours, send window) and back early: wait on
        _put_off(topo, out, task, now, task.not_before - now, keep_due=True)
        return False
    return True


def _put_off(
    topo: Topology, out: Outbox, task: DeliveryTask, now: float, wait_s: float, keep_due: bool = False
) -> None:
    """Back to the lane's retry schedule for about `wait_s`, spending no attempt and emitting no outcome."""
    delay = topo.declared.settings.retry_bucket(wait_s)
    later = task if keep_due else msgspec.structs.replace(task, not_before=now + delay)
    out.add(retry_topic(task.lane, delay), task.user_key, encode(later))


def _where(task: DeliveryTask) -> dict[str, Any]:
    return {"channel": task.channel, "delivery_id": task.delivery_id, "attempt": task.attempt}


def _prepare(topo: Topology, task: DeliveryTask, now: float) -> Rendered | str:
    """The rendered content, or why this delivery fails permanently before any provider call."""
    if task.expires_at is not None and now >= task.expires_at:
        return "expired"
    template = resolve(topo.resources.templates, task.client_id, task.template_id, task.template_version)
    if template is None:
        return f"unknown_template: {task.template_id}@{task.template_version}"
    try:
        return render(template, task.channel, task.params)
    except RenderError as exc:
        if isinstance(exc, RenderLimit):  # the template's owner needs to know; it is not the message's fault
            event(log, "template over a render limit", logging.WARNING, template_id=task.template_id,
                  template_version=task.template_version, delivery_id=task.delivery_id, reason=str(exc))
        return f"{exc.reason}: {exc}"


def _replay_final(topo: Topology, out: Outbox, attempt: Attempt, state: str, detail: str) -> None:
    task, where = attempt.task, _where(attempt.task)
    if state == SENT:
        topo.emit.outcome(out, attempt.partition, "sent", task, provider_message_id=detail, **where)
    elif state == FAILED:
        topo.emit.outcome(out, attempt.partition, "failed", task, reason=detail, **where)
    elif state == CANCELLED:
        topo.emit.outcome(out, attempt.partition, "cancelled", task, reason=detail, **where)
    else:  # DEAD: already in the DLQ once
        topo.emit.outcome(out, attempt.partition, "dead_lettered", task, reason=detail, **where)


def _look_again(topo: Topology, out: Outbox, attempt: Attempt, now: float, wait_s: float, reason: str) -> None:
    """Not sent, and not the message's fault: look again after `wait_s`, spending no attempt.

    Another worker holds the delivery's claim (or a dead one did: the claim expires, or
    turns final, and the next look settles it), or the channel is held because its
    provider refused our credentials. Neither may burn the delivery's attempts.
    """
    _put_off(topo, out, attempt.task, now, wait_s)
    topo.emit.outcome(out, attempt.partition, "retrying", attempt.task, reason=reason, **_where(attempt.task))


def _rejected(task: DeliveryTask, reason: str) -> Feedback:
    return Feedback(notification_id=task.notification_id, delivery_id=task.delivery_id, channel=task.channel,
                    status="rejected", reason=reason, address=task.address, client_id=task.client_id,
                    user_id=task.user_id)  # fmt: skip


def _settle(topo: Topology, out: Outbox, attempt: Attempt, now: float) -> None:
    task, result, partition = attempt.task, attempt.result, attempt.partition
    where = _where(task)
    if isinstance(result, Delivered):
        topo.emit.outcome(out, partition, "sent", task, provider_message_id=result.provider_message_id, **where)
    elif isinstance(result, PermanentFailure):
        topo.emit.outcome(out, partition, "failed", task, reason=result.reason, **where)
        if suppresses(task.channel, result.reason):  # a dead token, an opted-out number: never again
            if task.campaign:  # promo partitions are not the users': suppress where the user lives
                home = partition_of(task.notification_id)
                out.add("feedback", task.notification_id, encode(_rejected(task, result.reason)), home)
            else:
                topo.resources.suppressions.add(partition, task.user_key, task.channel, task.address, result.reason)
    elif isinstance(result, TransientFailure) and task.attempt < topo.declared.settings.max_attempts:
        settings = topo.declared.settings
        wait = max(settings.retry_delay(task.attempt), min(result.retry_after or 0.0, settings.retry_max_delay_s))
        delay = settings.retry_bucket(wait)
        retry = msgspec.structs.replace(task, attempt=task.attempt + 1, not_before=now + delay)
        out.add(retry_topic(task.lane, delay), task.user_key, encode(retry))
        topo.emit.outcome(out, partition, "retrying", task, reason=result.reason, **where)
    else:
        reason = f"retries_exhausted: {getattr(result, 'reason', 'unknown')}"
        topo.emit.dead_letter(
            out,
            topo.declared.specs[lane_topic(task.lane, task.channel)].topic,
            reason,
            encode(task),
            task.user_key,
            notification_id=task.notification_id,
            delivery_id=task.delivery_id,
            attempt=task.attempt,
            trace_id=task.trace_id,
        )
        topo.emit.outcome(out, partition, "dead_lettered", task, reason=reason, **where)
