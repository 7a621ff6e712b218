"""Barriers on the broker: wait until a worker group has consumed (and committed) what is on its topics.

faust flushes its producer before it commits, so once a group has committed a topic up to its end,
every record it produced for those inputs is on its topic: the point after which a test may say
"nothing more will come" without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from aiokafka import TopicPartition

from clarion.topology.catalog import STAGES, TopicSpec, catalog
from clarion.topology.offsets import BrokerOffsets
from clarion.topology.settings import Settings


def consumed_topics(settings: Settings) -> list[TopicSpec]:
    """The catalog topics some stage consumes."""
    return [spec for spec in catalog(settings).values() if set(spec.readers) & set(STAGES)]


async def committed_to_end(
    settings: Settings, groups: Sequence[str], specs: Iterable[TopicSpec], timeout_s: float = 90.0
) -> dict[str, dict[TopicPartition, int]]:
    """Wait until every partition of `specs` is committed to its end by one of `groups`; each group's commits."""
    tps = [TopicPartition(spec.topic, p) for spec in specs for p in range(spec.partitions)]
    offsets = BrokerOffsets(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            ends = await offsets.end_offsets(tps)
            commits = {group: await offsets.committed(group, tps) for group in groups}
            behind = {
                tp: end for tp, end in ends.items() if end > max(c.get(tp, 0) for c in commits.values())
            }
            if not behind:
                return commits
            if time.monotonic() > deadline:
                raise TimeoutError(f"{groups} never caught up: {behind} (committed {commits})")
            await asyncio.sleep(0.2)
    finally:
        await offsets.close()


async def drained(settings: Settings, timeout_s: float = 90.0) -> None:
    """The worker group of `settings` has handled everything on every topic a stage consumes."""
    await committed_to_end(settings, [settings.app_id], consumed_topics(settings), timeout_s)
