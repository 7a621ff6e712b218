"""Create the catalog's topics on the broker (faust creates only its internal ones)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError

from clarion.logs import event
from clarion.topology.catalog import TopicSpec

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create missing topics with their partitions, replicas and cleanup policy; returns those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=spec.topic,
                num_partitions=spec.partitions,
                replication_factor=spec.replication,
                topic_configs={"cleanup.policy": "compact" if spec.compacted else "delete"},
            )
            for spec in specs
            if spec.topic not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
            event(log, "topics created", topics=[t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()


async def ensure_topics_when_reachable(bootstrap: str, specs: list[TopicSpec], max_delay_s: float = 10.0) -> list[str]:
    """ensure_topics, retried with a growing delay (each wait logged) until the broker answers: a process
    started before its broker waits for it instead of failing."""
    delay, attempt = 0.5, 0
    while True:
        try:
            return await ensure_topics(bootstrap, specs)
        except (KafkaConnectionError, KafkaTimeoutError) as exc:
            attempt += 1
            event(log, "broker not reachable; waiting for it", logging.WARNING, bootstrap=bootstrap,
                  attempt=attempt, retry_in_s=delay, error=str(exc)[:200])  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
