"""Retry: hold failed deliveries until their backoff has passed, then requeue them.

One topic per lane and delay (doubling from `retry_base_delay_s` to `retry_max_delay_s`), and a
task waits exactly its topic's delay from when it was queued, rounded up from what it
needed (its attempt's backoff, or the provider's Retry-After, capped). So every topic is
FIFO by due time: waiting for the head never delays a message that is due earlier, and a
long Retry-After holds only its own delay topic, where everything waits that long.
Records taken together hold tasks queued within milliseconds; it waits for the last.
A task due later than its tier's delay (a campaign's execution deferred by hours for quiet
hours) waits one tier's delay at a time, so it never holds the tier longer than that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import Part, guarded
from clarion.schemas.codec import encode
from clarion.schemas.records import DeliveryTask
from clarion.topology.catalog import lane_topic, lanes, retry_topic
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology


def register(topo: Topology, only: Sequence[str] | None = None) -> None:
    for lane in lanes(topo.declared.settings):
        if only is None or lane.name in only:
            for delay in topo.declared.settings.retry_delays():
                _register_tier(topo, retry_topic(lane.name, delay), delay)


def _register_tier(topo: Topology, source: str, delay_s: float) -> None:
    settings = topo.declared.settings

    async def handle(parts: Sequence[Part[DeliveryTask]], out: Outbox) -> None:
        tasks = [task for part in parts for task in part.items]
        wait = min(max(task.not_before for task in tasks) - topo.resources.clock(), delay_s)
        if wait > 0:
            await asyncio.sleep(wait)
        now = topo.resources.clock()
        for task in tasks:
            if task.not_before - now > 0.5:  # due beyond this tier's delay: another round
                out.add(retry_topic(task.lane, settings.retry_bucket(task.not_before - now)), task.user_key,
                        encode(task))  # fmt: skip
            else:
                out.add(lane_topic(task.lane, task.channel), task.user_key, encode(task))

    async def run(stream: faust.StreamT) -> None:
        await guarded(topo, source, stream, DeliveryTask, handle)

    run.__doc__ = f"Hold tasks {delay_s:g}s (or until due), then send them back to their lane."
    topo.declared.app.agent(topo.declared.topics[source], name=f"clarion.{source}")(run)
