"""The templates every process holds: the compacted templates topic, tailed into memory.

API processes and workers both use it. It replaces a faust GlobalTable, which in a
two-worker test never reached the worker that did not own the templates partition.
Templates are few and small; a restart simply reads the topic again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from clarion.logs import event
from clarion.schemas.codec import PoisonMessage, decode
from clarion.schemas.records import TemplateVersion
from clarion.tables.templates import latest_key
from clarion.topology import tansu

log = logging.getLogger("clarion.templates")


class TemplatesView(dict):
    """template_id@version -> TemplateVersion, and template_id@latest -> version.

    It also knows where on the topic each version was written, so a request can carry
    the position of the version the API checked it against, and a worker can wait until
    its own view has read that far before routing it (`caught_up_to`).
    """

    def __init__(self, bootstrap: str, topic: str, broker_quirks: str = "") -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = topic
        self.broker_quirks = broker_quirks
        self.offsets: dict[str, int] = {}  # template_id@version -> its offset on the topic
        self.position = 0  # the next offset this view will read
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._moved = asyncio.Event()
        self.ready = asyncio.Event()  # set once the topic has been read to its end

    def add(self, template: TemplateVersion, offset: int | None = None) -> None:
        self[template.key] = template
        if offset is not None:
            self.offsets[template.key] = offset
        latest = latest_key(template.template_id)
        if template.version > self.get(latest, 0):
            self[latest] = template.version

    def offset_of(self, key: str) -> int:
        """Where version `key` was written (-1 when not known)."""
        return self.offsets.get(key, -1)

    async def caught_up_to(self, offset: int, timeout_s: float = 10.0) -> bool:
        """Wait until this view has read the record at `offset`; False if it has not in time."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.position <= offset:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), remaining)
        return True

    async def start(self) -> None:
        """Read the topic up to its end before returning, then keep following it."""
        # A short fetch wait: a request may be waiting for this view to see a new version.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        if self.broker_quirks == "tansu":
            end = (await tansu.end_offsets(self._consumer, [tp]))[tp]
        else:
            end = (await self._consumer.end_offsets([tp]))[tp]
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
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
                    self.add(decode(TemplateVersion, record.value), record.offset)
                except PoisonMessage as exc:
                    event(
                        log,
                        "unreadable template record skipped",
                        level=logging.ERROR,
                        reason=str(exc),
                        offset=record.offset,
                    )
                self.position = record.offset + 1
        if batches:
            self._moved.set()

    async def _follow(self) -> None:
        while True:
            await self._poll(timeout_ms=1000)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
