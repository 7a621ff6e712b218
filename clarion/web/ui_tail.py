"""A topic followed from a little before its end, every record handed to a fold function.

The dashboard's recent outcomes and dead letters come from the `outcomes` and `dlq`
topics, read by the API process itself (no consumer group, nothing committed): on start
each partition is read from `backfill` records before its end, so a dashboard opened
after the fact still shows the latest, and then followed. Unlike TopicMirror
(tables/mirror.py), which keeps a whole one-partition topic, what is kept here is up to
the fold (bounded rings per client, web/ui_books.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from clarion.logs import event
from clarion.topology import tansu
from clarion.topology.settings import Settings

log = logging.getLogger("clarion.ui")
Fold = Callable[[int, int, bytes | None, bytes | None], None]  # (partition, offset, key, value)


class TopicTail:
    """Follows every partition of `topic` from `backfill` records before its end."""

    fetch_wait_ms = 500  # a dashboard polls every few seconds: no need to ask the broker more often

    def __init__(self, settings: Settings, topic: str, backfill: int, fold: Fold) -> None:
        self.settings, self.topic, self.backfill, self.fold = settings, topic, backfill, fold
        self.caught_up = asyncio.Event()  # set once the backfill has been read
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_wait_ms,
        )
        self._consumer = consumer
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer.topics()  # metadata may not be loaded yet
            partitions = consumer.partitions_for_topic(self.topic) or set()
        parts = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if self.settings.broker_quirks == "tansu":  # ListOffsets(latest) is wrong there (topology/tansu.py)
            ends = await tansu.fresh_end_offsets(self.settings.bootstrap_servers, parts)
        else:
            ends = await consumer.end_offsets(parts)
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, max(0, ends[tp] - self.backfill))
        self._task = asyncio.create_task(self._follow(ends))

    async def _follow(self, ends: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        behind = {tp for tp, end in ends.items() if end > 0}
        if not behind:
            self.caught_up.set()
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000, max_records=2000)
            except Exception as exc:  # the broker away for a while: keep trying, show what is held
                event(log, "dashboard tail: fetch failed", level=logging.WARNING, topic=self.topic, exc=repr(exc))
                await asyncio.sleep(1)
                continue
            for tp, records in batches.items():
                for record in records:
                    self.fold(tp.partition, record.offset, record.key, record.value)
                if records and records[-1].offset + 1 >= ends.get(tp, 0):
                    behind.discard(tp)
            if not behind and not self.caught_up.is_set():
                self.caught_up.set()
            await asyncio.sleep(0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
