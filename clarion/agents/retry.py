"""Retry: hold failed deliveries until their backoff has passed, then requeue them.

One topic per attempt number, each with one delay (base * 2**(n-1)), so every topic is
FIFO by due time and waiting for the head never delays a message that is due earlier.
Records taken together hold tasks retried within milliseconds; it waits for the last of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import Part, guarded
from clarion.schemas.codec import encode
from clarion.schemas.records import DeliveryTask
from clarion.topology.catalog import lane_topic, retry_topic
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology


def register(topo: Topology) -> None:
    for attempt in range(1, topo.settings.max_attempts):
        _register_tier(topo, retry_topic(attempt))


def _register_tier(topo: Topology, source: str) -> None:
    async def handle(parts: Sequence[Part[DeliveryTask]], out: Outbox) -> None:
        tasks = [task for part in parts for task in part.items]
        wait = max(task.not_before for task in tasks) - topo.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        for task in tasks:
            out.add(lane_topic(task.lane, task.channel), task.user_id, encode(task))

    async def run(stream: faust.StreamT) -> None:
        await guarded(topo, source, stream, DeliveryTask, handle)

    topo.app.agent(topo.topics[source], name=f"clarion.{source}")(run)
