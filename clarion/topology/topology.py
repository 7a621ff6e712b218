"""The Topology object: a faust app with clarion's topics, tables and emit helpers.

`wire(app, settings)` is the one function that builds clarion onto an app; the worker
(`clarion.app`) and the tests both call it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from clarion.agents import check_lanes
from clarion.logs import event
from clarion.providers.base import ProviderClient
from clarion.providers.dispatch import Dispatcher, dispatcher_for
from clarion.providers.metrics import ProviderMetrics
from clarion.providers.registry import build_clients
from clarion.providers.sender import SenderProcess
from clarion.schemas.codec import encode
from clarion.schemas.records import DeadLetter, Outcome
from clarion.tables.api_keys import KeysView
from clarion.tables.changelog import ChangelogWriter
from clarion.tables.controls import CampaignControls
from clarion.tables.ledger import DeliveryLedger, ledger_for
from clarion.tables.status import StatusBoard
from clarion.tables.suppression import SuppressionBook
from clarion.tables.templates_view import TemplatesView
from clarion.tables.users_progress import UsersProgress
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import TopicSpec, catalog
from clarion.topology.gaps import GapHealer
from clarion.topology.offsets import BrokerOffsets
from clarion.topology.outbox import Outbox
from clarion.topology.settings import Settings

log = logging.getLogger("clarion.topology")


class Topology:
    """Everything the agents share: topics by logical name, tables, clients, emitters."""

    def __init__(self, app: faust.App, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
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
        # Raw keys and values: table routing hashes the changelog key, which must match the
        # source topic's; values are clarion's own JSON, written through ChangelogWriter.
        # A promo-lanes worker (`--lanes promo`) holds no tables: they are None (agents/__init__.py).
        self.holds_tables = check_lanes(settings) != "promo"
        new_table: Any = app.Table if self.holds_tables else _no_table
        table = {"key_type": bytes, "value_type": bytes}
        self.idempotency = new_table("idempotency", partitions=settings.critical_partitions, **table)
        self.users = new_table("users", partitions=settings.critical_partitions, **table)
        # Status lives with the user's requests and lanes, so each stage folds its own outcomes.
        self.status = new_table("status", partitions=settings.critical_partitions, **table)
        self.suppressed = new_table("suppressed", partitions=settings.critical_partitions, **table)
        # Campaigns: the jobs on promo.jobs' partitions (their owner drives them); each users
        # partition's expansion cursor and each user's recent campaigns (frequency cap) beside the users.
        self.campaigns = new_table("campaigns", partitions=settings.promo_partitions, **table)
        self.cursors = new_table("cursors", partitions=settings.critical_partitions, **table)
        self.frequency = new_table("frequency", partitions=settings.critical_partitions, **table)
        self.controls = CampaignControls(
            settings.bootstrap_servers, self.specs["promo.controls"].topic, settings.broker_quirks
        )
        self.templates = TemplatesView(
            settings.bootstrap_servers, self.specs["templates"].topic, settings.broker_quirks
        )
        self.keys = KeysView(settings.bootstrap_servers, self.specs["api_keys"].topic, settings.broker_quirks)
        self.offsets = BrokerOffsets(settings)
        self.users_progress = UsersProgress(self, self.specs["users"].topic)
        self.statuses = StatusBoard(ChangelogWriter(self, self.status))
        self.suppressions = SuppressionBook(ChangelogWriter(self, self.suppressed), ChangelogWriter(self, self.users))
        self.counters: Counter[tuple[str, ...]] = Counter()
        self.outcomes: Counter[tuple[str, str, str]] = Counter()  # (lane, channel, status): /metrics reads it
        self.registry = CollectorRegistry()  # this worker's /metrics (web/worker_metrics.py)
        self.provider_metrics = ProviderMetrics(self.registry)  # observed by the deliver stage
        self.jobs: Any = None  # agents/schedule.py's Jobs, for the campaign pages
        self._clients: dict[str, ProviderClient] | None = None
        self._ledger: DeliveryLedger | None = None
        self._dispatcher: Dispatcher | SenderProcess | None = None

    @property
    def clients(self) -> dict[str, ProviderClient]:
        if self._clients is None:
            self._clients = build_clients(self.settings)
        return self._clients

    @property
    def ledger(self) -> DeliveryLedger:
        if self._ledger is None:
            self._ledger = ledger_for(self.settings)
        return self._ledger

    @property
    def dispatcher(self) -> Dispatcher | SenderProcess:
        """Where deliveries are claimed, sent and settled: a sender process when the ledger is
        shared (Redis), so a crash of this worker leaves nothing half done; else in process."""
        if self._dispatcher is None:
            if self.settings.redis and self.settings.sender == "process":
                self._dispatcher = SenderProcess(self.settings)
            else:
                self._dispatcher = dispatcher_for(self.settings, self.clients, self.ledger)
        return self._dispatcher

    def writer(self, table: Any) -> ChangelogWriter:
        return ChangelogWriter(self, table)

    def outbox(self) -> Outbox:
        return Outbox(self)

    async def close(self) -> None:
        await self.templates.stop()
        await self.keys.stop()
        await self.controls.stop()
        await self.offsets.close()
        if isinstance(self._dispatcher, SenderProcess):
            await self._dispatcher.close()  # lets it finish the calls in flight
        elif self._dispatcher is not None:  # inline: its clients are ours (below), its fallbacks its own
            for client in self._dispatcher.fallbacks.values():
                await client.close()
        for client in (self._clients or {}).values():
            await client.close()
        if self._ledger is not None:
            await self._ledger.close()

    async def produce(self, name: str, key: str, value: bytes, partition: int | None = None) -> Awaitable[Any]:
        """Hand one record for the catalog topic `name` to faust's producer."""
        return await self.send_record(self.specs[name].topic, key.encode(), value, partition)

    async def send_record(self, topic: str, key: bytes, value: bytes | None, partition: int | None) -> Awaitable[Any]:
        """Every record the worker writes goes through here (faust's producer, flushed before commits)."""
        return await self.app.producer.send(topic, key, value, partition, None, None)

    def outcome(self, out: Outbox, partition: int, status: str, source: Any, **fields: Any) -> None:
        """Fold an outcome for `source` (a request or a delivery task) into its status and queue it."""
        record = Outcome(
            notification_id=source.notification_id,
            status=status,
            client_id=source.client_id,
            user_id=source.user_id,
            trace_id=source.trace_id,
            ts=self.clock(),
            lane=getattr(source, "lane", "") or ("promo" if getattr(source, "campaign", "") else "critical"),
            **fields,
        )
        if not getattr(source, "campaign", ""):  # a campaign's executions have no status entry: its job counts them
            self.statuses.fold(partition, record)
        self.counters[("outcome", fields.get("channel") or "-", status)] += 1
        self.outcomes[(record.lane, fields.get("channel") or "none", status)] += 1
        if log.isEnabledFor(logging.DEBUG):
            event(log, "outcome", level=logging.DEBUG, notification_id=record.notification_id, status=status, **fields)
        out.add("outcomes", record.notification_id, encode(record))

    def dead_letter(
        self,
        out: Outbox,
        source_topic: str,
        reason: str,
        payload: bytes | str | None,
        key: bytes | str | None,
        **ids: Any,
    ) -> None:
        """Queue a message for the DLQ with the reason; the agent then goes on."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else (payload or "")
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        letter = DeadLetter(
            source_topic=source_topic, reason=reason, payload=text, key=key_text, ts=self.clock(), **ids
        )
        self.counters[("dead_letter", source_topic)] += 1
        event(log, "dead-lettered", level=logging.WARNING, source_topic=source_topic, reason=reason, **ids)
        out.add("dlq", key_text or "", encode(letter))


def _no_table(name: str, **kwargs: Any) -> None:
    """What a worker without tables has in their place."""
    return None


def wire(app: faust.App, settings: Settings) -> Topology:
    """Build clarion's whole topology onto `app`."""
    from clarion.agents import register_all
    from clarion.web.audience_pages import register_audience_pages
    from clarion.web.campaign_pages import register_campaign_pages
    from clarion.web.status import register_status_pages
    from clarion.web.table_pages import register_table_pages
    from clarion.web.worker_metrics import register_metrics_page

    topo = Topology(app, settings)
    register_all(topo)
    register_status_pages(topo)
    register_metrics_page(topo)
    if topo.holds_tables:  # a promo-lanes worker answers /ready, /stats, /metrics and /healthz only
        register_campaign_pages(topo)
        register_audience_pages(topo)
        register_table_pages(topo)

    @app.task
    async def prepare() -> None:
        # faust declares only topics it consumes; the DLQ and templates need creating too.
        await ensure_topics(settings.bootstrap_servers, list(topo.specs.values()))
        await topo.offsets.start()
        await topo.templates.start()
        await topo.keys.start()
        await topo.controls.start()
        if isinstance(topo.dispatcher, SenderProcess):
            await topo.dispatcher.start()

    healer = GapHealer(app)

    @app.timer(5.0, name="clarion.heal_gaps")
    async def heal_gaps() -> None:
        """Read again a record faust dropped below acked ones (topology/gaps.py)."""
        if not app.rebalancing and app.tables.recovery.completed.is_set():
            await healer.check()

    @app.on_partitions_assigned.connect
    async def check_users_progress(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        # Verify the users table for each new partition now, not on its first request.
        users = topo.specs["users"].topic
        topo.users_progress.check_soon({tp.partition for tp in assigned if tp.topic == users})

    @app.on_partitions_revoked.connect
    async def forget_users_progress(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        users = topo.specs["users"].topic
        topo.users_progress.forget({tp.partition for tp in revoked if tp.topic == users})

    @app.on_before_shutdown.connect
    async def close_clients(app: faust.App, **kwargs: Any) -> None:
        await topo.close()

    return topo
