"""A small compacted topic (one partition), tailed into memory by every process that needs it.

Templates and API keys are few and small, read on every request, and changed rarely:
each API process and worker keeps the whole topic in a dict and follows it. It
replaces a faust GlobalTable, which in a two-worker test never reached the worker that
did not own the partition. A restart simply reads the topic again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Generic, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from clarion.logs import event
from clarion.schemas.codec import PoisonMessage, decode
from clarion.topology import tansu

log = logging.getLogger("clarion.mirror")
V = TypeVar("V", bound=msgspec.Struct)


class TopicMirror(dict, Generic[V]):  # type: ignore[type-arg]
    """The records of a one-partition topic, folded by `add`, with the read position kept.

    `position` is the next offset this mirror will read, so a caller holding the offset
    of a record can wait until the mirror has read it (`caught_up_to`), and a caller that
    wants everything written so far can wait for the topic's current end (`refresh`).
    """

    model: type[V]
    fetch_wait_ms = 50  # how soon a record written elsewhere is seen without asking (a fetch per wait when idle)

    def __init__(self, bootstrap: str, topic: str, broker_quirks: str = "") -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = topic
        self.broker_quirks = broker_quirks
        self.position = 0
        self._tp = TopicPartition(topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._moved = asyncio.Event()
        self._refreshing: asyncio.Task[bool] | None = None
        self.ready = asyncio.Event()  # set once the topic has been read to its end

    def add(self, value: V, offset: int | None = None) -> None:
        raise NotImplementedError

    @property
    def following(self) -> bool:
        """Whether it still follows its topic (read to the end once, and its reader has not died)."""
        return self.ready.is_set() and self._task is not None and not self._task.done()

    async def caught_up_to(self, offset: int, timeout_s: float = 10.0) -> bool:
        """Wait until this mirror has read the record at `offset`; False if it has not in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.position <= offset:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), remaining)
        return True

    async def refresh(self, timeout_s: float = 2.0) -> bool:
        """Wait until everything on the topic now has been read (concurrent callers share one wait)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._to_end(timeout_s))
        return await asyncio.shield(self._refreshing)

    async def _to_end(self, timeout_s: float) -> bool:
        try:
            end = await self._end_offset()
        except Exception as exc:  # the broker is away: answer from what is held
            event(log, "end offset unavailable", level=logging.WARNING, topic=self.topic, exc=repr(exc))
            return False
        return await self.caught_up_to(end - 1, timeout_s)

    async def _end_offset(self) -> int:
        assert self._consumer is not None
        if self.broker_quirks != "tansu":
            return (await self._consumer.end_offsets([self._tp]))[self._tp]
        # Tansu's end offset comes from a fetch, which reassigns the consumer: use one of our own.
        if self._probe is None:
            self._probe = AIOKafkaConsumer(**tansu.PROBE_CONSUMER, bootstrap_servers=self.bootstrap)
            await self._probe.start()
        return (await tansu.end_offsets(self._probe, [self._tp]))[self._tp]

    async def start(self) -> None:
        """Read the topic up to its end before returning, then keep following it."""
        # A short fetch wait: a request may be waiting for this mirror to see a new record.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=self.fetch_wait_ms
        )
        await self._consumer.start()
        end = await self._end_offset()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        while self.position < end:
            await self._poll(timeout_ms=200)
        self.ready.set()
        self._task = asyncio.create_task(self._follow())

    async def _poll(self, timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batches.values():
            for record in records:
                try:
                    self.add(decode(self.model, record.value), record.offset)
                except PoisonMessage as exc:
                    event(log, "unreadable record skipped", level=logging.ERROR, topic=self.topic,
                          reason=str(exc), offset=record.offset)  # fmt: skip
                self.position = record.offset + 1
        if batches:
            self._moved.set()

    async def _follow(self) -> None:
        while True:
            await self._poll(timeout_ms=1000)

    async def stop(self) -> None:
        for task in (self._task, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for consumer in (self._consumer, self._probe):
            if consumer is not None:
                await consumer.stop()
