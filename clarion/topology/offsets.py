"""End offsets and committed offsets, asked of the broker outside faust's consumer.

End offsets go through `clarion.topology.tansu` on the embedded broker, whose ListOffsets
answer is wrong after multi-record batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from clarion.topology import tansu
from clarion.topology.settings import Settings


class BrokerOffsets:
    """A group-less consumer and an admin client, started on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._clients()

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        async with self._lock:
            if self._consumer is None or self._admin is None:
                bootstrap = self.settings.bootstrap_servers
                consumer = AIOKafkaConsumer(**tansu.PROBE_CONSUMER, bootstrap_servers=bootstrap)
                admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
                await consumer.start()
                await admin.start()
                self._consumer, self._admin = consumer, admin
            return self._consumer, self._admin

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset the next record of each partition will get."""
        consumer, _ = await self._clients()
        if self.settings.broker_quirks == "tansu":
            async with self._lock:  # the Tansu path reassigns the consumer
                return await tansu.end_offsets(consumer, tps)
        return dict(await consumer.end_offsets(list(tps)))

    async def committed(self, group: str, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offset per partition (partitions without one are left out)."""
        _, admin = await self._clients()
        offsets = await admin.list_consumer_group_offsets(group, partitions=list(tps))
        return {TopicPartition(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
