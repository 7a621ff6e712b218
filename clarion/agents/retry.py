"""Retry: hold a failed delivery until its backoff has passed, then requeue it.

One topic per attempt number, each with one delay (base * 2**(n-1)), so every topic is
FIFO by due time and waiting for the head never delays a message that is due earlier.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import guarded
from clarion.schemas.records import DeliveryTask
from clarion.topology.catalog import lane_topic, retry_topic

if TYPE_CHECKING:
    from clarion.topology.topology import Topology


def register(topo: Topology) -> None:
    for attempt in range(1, topo.settings.max_attempts):
        _register_tier(topo, retry_topic(attempt))


def _register_tier(topo: Topology, source: str) -> None:
    async def handle(task: DeliveryTask, ev: faust.EventT) -> None:
        wait = task.not_before - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        await topo.send(lane_topic(task.lane, task.channel), task.user_id, task)

    async def run(stream: faust.StreamT) -> None:
        await guarded(topo, source, stream, DeliveryTask, handle)

    topo.app.agent(topo.topics[source], name=f"clarion.{source}")(run)
