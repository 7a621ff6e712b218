"""Group commit for accepted requests: one Kafka record per partition per flush.

Every accepted notification must be on the broker before the API answers 202. Sending
each as its own record would make each its own faust event (and its own broker batch),
which caps a worker at a few thousand events/s. The batcher keeps one queue per
partition; a flush sends everything queued as one JSON array per partition and answers
all the waiting requests at once. A flush starts as soon as the previous one is done, so
an idle API adds no delay, and under load each record carries whatever arrived during
the previous flush's round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from aiokafka import AIOKafkaProducer

from clarion.schemas.codec import encode_batch
from clarion.topology.outbox import split_by_size
from clarion.topology.partitioning import partition_for


class PartitionBatcher:
    """Produce items to one topic, grouped by the partition of their key."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.queued: dict[int, list[tuple[str, bytes, asyncio.Future[None]]]] = defaultdict(list)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for items in self.queued.values():
            for _, _, fut in items:
                if not fut.done():
                    fut.set_exception(ConnectionError("API shutting down"))

    async def submit(self, items: list[tuple[str, bytes]]) -> None:
        """Queue (key, encoded item) pairs; returns once all of them are on the broker."""
        loop = asyncio.get_running_loop()
        futures = []
        for key, item in items:
            fut: asyncio.Future[None] = loop.create_future()
            self.queued[partition_for(key, self.partitions)].append((key, item, fut))
            futures.append(fut)
        self._wakeup.set()
        await asyncio.gather(*futures)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            queued, self.queued = self.queued, defaultdict(list)
            await asyncio.gather(*(self._send(p, items) for p, items in queued.items()))

    async def _send(self, partition: int, items: list[tuple[str, bytes, asyncio.Future[None]]]) -> None:
        for chunk in split_by_size(items, lambda entry: len(entry[1])):
            try:
                value = encode_batch(item for _, item, _ in chunk)
                sent = await self.producer.send(self.topic, value, key=chunk[0][0].encode(), partition=partition)
                await sent
            except Exception as exc:
                for _, _, fut in chunk:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for _, _, fut in chunk:
                if not fut.done():
                    fut.set_result(None)
