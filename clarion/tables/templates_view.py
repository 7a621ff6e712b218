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

log = logging.getLogger("clarion.templates")


class TemplatesView(dict):
    """template_id@version -> TemplateVersion, and template_id@latest -> version."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set once the topic has been read to its end

    def add(self, template: TemplateVersion) -> None:
        self[template.key] = template
        latest = latest_key(template.template_id)
        if template.version > self.get(latest, 0):
            self[latest] = template.version

    async def start(self) -> None:
        """Read the topic up to its end before returning, then keep following it."""
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
        end = (await self._consumer.end_offsets([tp]))[tp]
        while await self._consumer.position(tp) < end:
            await self._poll(timeout_ms=200)
        self.ready.set()
        self._task = asyncio.create_task(self._follow())

    async def _poll(self, timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batches.values():
            for record in records:
                try:
                    self.add(decode(TemplateVersion, record.value))
                except PoisonMessage as exc:
                    event(
                        log,
                        "unreadable template record skipped",
                        level=logging.ERROR,
                        reason=str(exc),
                        offset=record.offset,
                    )

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
