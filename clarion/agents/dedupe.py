"""Ingest: dedupe critical requests on the idempotency table, then route them.

Requests are keyed by user_id, and the idempotency and users tables are co-partitioned
with them, so both lookups are local reads and dedupe + route is one step.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import guarded
from clarion.agents.route import plan
from clarion.logs import event
from clarion.schemas.records import NotificationRequest, UserProfile
from clarion.tables.idempotency import IdempotencyWindow, dedupe_key

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "critical.requests"
log = logging.getLogger("clarion.dedupe")


def register(topo: Topology) -> None:
    window = IdempotencyWindow(topo.idempotency, topo.settings.dedupe_window_s)

    async def handle(request: NotificationRequest, ev: faust.EventT) -> None:
        await topo.templates.ready.wait()
        now = time.time()
        key = dedupe_key(request.client_id, request.idempotency_key)
        first = window.first_seen(key, now)
        if first is not None and first != request.notification_id:
            await topo.outcome("duplicate", request, duplicate_of=first)
            return
        window.remember(key, request.notification_id, ev.message.partition, now)
        profile = topo.users.get(request.user_id)
        user = UserProfile(**profile) if profile else None
        routed = plan(request, user, topo.templates, "critical", now)
        await topo.outcome("accepted", request, planned=len(routed.tasks))
        for channel, reason in routed.failures:
            await topo.outcome("failed", request, channel=channel, reason=reason)
        for task in routed.tasks:
            await topo.send(f"critical.{task.channel}", task.user_id, task)

    @topo.app.agent(topo.topics[SOURCE], name="clarion.critical.dedupe_route")
    async def dedupe_route(stream: faust.StreamT) -> None:
        await guarded(topo, SOURCE, stream, NotificationRequest, handle)

    @topo.app.timer(topo.settings.dedupe_prune_interval_s, name="clarion.critical.prune_idempotency")
    async def prune_idempotency() -> None:
        source = topo.specs[SOURCE].topic
        owned = {tp.partition for tp in topo.app.assignor.assigned_actives() if tp.topic == source}
        removed = window.prune(topo.idempotency, owned, time.time())
        if removed:
            event(log, "idempotency keys pruned", removed=removed)
