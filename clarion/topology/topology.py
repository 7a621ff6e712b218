"""The Topology object: a faust app with clarion's topics, tables and emit helpers.

`wire(app, settings)` is the one function that builds clarion onto an app; the worker
(`clarion.app`) and the tests both call it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from clarion.logs import event
from clarion.providers.base import ProviderClient
from clarion.providers.registry import build_clients
from clarion.schemas.codec import encode
from clarion.schemas.records import DeadLetter, Outcome
from clarion.tables.ledger import DeliveryLedger, LocalLedger, RedisLedger
from clarion.tables.templates_view import TemplatesView
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import TopicSpec, catalog
from clarion.topology.settings import Settings

log = logging.getLogger("clarion.topology")


class Topology:
    """Everything the agents share: topics by logical name, tables, clients, emitters."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.specs: dict[str, TopicSpec] = catalog(settings)
        self.topics: dict[str, faust.TopicT] = {
            name: app.topic(
                spec.topic,
                partitions=spec.partitions,
                key_serializer="raw",
                value_serializer="raw",
                internal=True,  # lets faust create it (with partitions and policy) before subscribing
                compacting=spec.compacted or None,
            )
            for name, spec in self.specs.items()
        }
        # Raw keys: table routing hashes the changelog key, which must match the source topic's.
        table = {"key_type": bytes}
        self.idempotency = app.Table("idempotency", partitions=settings.critical_partitions, **table)
        self.users = app.Table("users", partitions=settings.critical_partitions, **table)
        self.status = app.Table("status", partitions=settings.outcome_partitions, **table)
        self.templates = TemplatesView(settings.bootstrap_servers, self.specs["templates"].topic)
        self._clients: dict[str, ProviderClient] | None = None
        self._ledger: DeliveryLedger | None = None

    @property
    def clients(self) -> dict[str, ProviderClient]:
        if self._clients is None:
            self._clients = build_clients(self.settings)
        return self._clients

    @property
    def ledger(self) -> DeliveryLedger:
        if self._ledger is None:
            window = self.settings.dedupe_window_s
            self._ledger = (
                RedisLedger(self.settings.redis, window, prefix=self.settings.topic_prefix)
                if self.settings.redis
                else LocalLedger(window)
            )
        return self._ledger

    async def close(self) -> None:
        await self.templates.stop()
        for client in (self._clients or {}).values():
            await client.close()
        if self._ledger is not None:
            await self._ledger.close()

    async def send(self, name: str, key: str, record: faust.Record) -> None:
        """Produce `record` to the catalog topic `name`, keyed by `key`."""
        await self.topics[name].send(key=key.encode(), value=encode(record))

    async def outcome(self, status: str, source: Any, **fields: Any) -> None:
        """Emit an outcome for `source` (a request or a delivery task)."""
        out = Outcome(
            notification_id=source.notification_id,
            status=status,
            client_id=source.client_id,
            user_id=source.user_id,
            trace_id=source.trace_id,
            ts=time.time(),
            **fields,
        )
        event(
            log,
            "outcome",
            status=status,
            channel=out.channel,
            delivery_id=out.delivery_id,
            attempt=out.attempt,
            reason=out.reason,
        )
        await self.send("outcomes", out.notification_id, out)

    async def dead_letter(
        self, source_topic: str, reason: str, payload: bytes | str | None, key: bytes | str | None, **ids: Any
    ) -> None:
        """Park a message in the DLQ with the reason; the agent then goes on."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else (payload or "")
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        letter = DeadLetter(source_topic=source_topic, reason=reason, payload=text, key=key_text, ts=time.time(), **ids)
        event(log, "dead-lettered", level=logging.WARNING, source_topic=source_topic, reason=reason)
        await self.send("dlq", key_text or "", letter)


def wire(app: faust.App, settings: Settings) -> Topology:
    """Build clarion's whole topology onto `app`."""
    from clarion.agents import register_all
    from clarion.web.status import register_status_pages

    topo = Topology(app, settings)
    register_all(topo)
    register_status_pages(topo)

    @app.task
    async def prepare() -> None:
        # faust declares only topics it consumes; the DLQ and templates need creating too.
        await ensure_topics(settings.bootstrap_servers, list(topo.specs.values()))
        await topo.templates.start()

    @app.on_before_shutdown.connect
    async def close_clients(app: faust.App, **kwargs: Any) -> None:
        await topo.close()

    return topo
