"""Ingest: dedupe critical requests on the idempotency table, then route them.

Requests are keyed by user_id, and the idempotency and users tables are co-partitioned
with them, so both lookups are local reads and dedupe + route is one step. A record
holds one request or a batch of requests of one partition; the tasks it yields go out
as one record per lane and partition, its outcomes as one record per outcome partition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import Part, dead_letter_item, guarded
from clarion.agents.route import plan
from clarion.logs import event
from clarion.schemas.codec import decode, encode
from clarion.schemas.records import NotificationRequest, UserProfile
from clarion.tables.idempotency import IdempotencyWindow, dedupe_key
from clarion.tables.store import PartitionedStore
from clarion.topology import faust_compat
from clarion.topology.catalog import lane_topic
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "critical.requests"
LANE = "critical"
log = logging.getLogger("clarion.dedupe")


def register(topo: Topology) -> None:
    writer = topo.emit.writer(topo.declared.idempotency)
    window = IdempotencyWindow(writer, topo.declared.settings.dedupe_window_s)

    users = PartitionedStore(topo.declared.users)

    async def user_of(request: NotificationRequest, partition: int) -> UserProfile | None:
        key = request.user_key.encode()
        raw = users.get(partition, key)
        if raw is None and await topo.resources.users_progress.caught_up(partition, request.accepted_at):
            raw = users.get(partition, key)  # it was folded while we waited
        return decode(UserProfile, raw) if raw is not None else None

    async def route_one(request: NotificationRequest, partition: int, now: float, out: Outbox) -> None:
        key = dedupe_key(request.client_id, request.idempotency_key)
        first = window.first_seen(partition, key, now)
        if first is not None and first != request.notification_id:
            topo.emit.outcome(out, partition, "duplicate", request, duplicate_of=first)
            return
        window.remember(key, request.notification_id, partition, now)
        if request.templates_at >= topo.resources.templates.position:  # the API saw a version this worker has not yet
            await topo.resources.templates.caught_up_to(request.templates_at)
        suppressed = topo.resources.suppressions.of(partition, request.user_key)
        routed = plan(request, await user_of(request, partition), topo.resources.templates, LANE, now, suppressed)
        topo.emit.outcome(out, partition, "accepted", request, planned=len(routed.tasks))
        for channel, reason in routed.failures:
            topo.emit.outcome(out, partition, "failed", request, channel=channel, reason=reason)
        for channel, reason in routed.suppressed:
            topo.emit.outcome(out, partition, "suppressed", request, channel=channel, reason=reason)
        for task in routed.tasks:
            out.add(lane_topic(LANE, task.channel), task.user_key, encode(task))

    async def handle(parts: Sequence[Part[NotificationRequest]], out: Outbox) -> None:
        await topo.resources.templates.ready.wait()
        now = topo.resources.clock()
        for part in parts:
            await topo.resources.users_progress.caught_up(part.partition)  # once per assignment: users table complete
            for request in part.items:
                try:
                    await route_one(request, part.partition, now, out)
                except Exception as exc:
                    log.exception("routing failed for %s", request.notification_id)
                    dead_letter_item(topo, out, SOURCE, request, f"internal_error: {exc!r}", part.key)
        await writer.flush()

    @topo.declared.app.agent(topo.declared.topics[SOURCE], name="clarion.critical.dedupe_route")
    async def dedupe_route(stream: faust.StreamT) -> None:
        """Dedupe critical requests on the idempotency table, then route each to its channels' lanes."""
        await guarded(topo, SOURCE, stream, NotificationRequest, handle)

    @topo.declared.app.timer(topo.declared.settings.dedupe_prune_interval_s, name="clarion.critical.prune_idempotency")
    async def prune_idempotency() -> None:
        source = topo.declared.specs[SOURCE].topic
        owned = faust_compat.owned_partitions(topo.declared.app, source)
        removed = window.prune(owned, topo.resources.clock())
        await writer.flush()
        retention_s = topo.declared.settings.status_retention_s
        expired = topo.resources.statuses.prune(owned, topo.resources.clock(), retention_s)
        await topo.resources.statuses.flush()
        if removed or expired:
            event(log, "expired entries pruned", idempotency_keys=removed, statuses=expired)
