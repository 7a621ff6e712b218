"""What agents use besides topics and tables: provider clients, the ledger, views, offsets, the clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from clarion.providers.base import ProviderClient
from clarion.providers.dispatch import Dispatcher, dispatcher_for
from clarion.providers.metrics import ProviderMetrics
from clarion.providers.registry import build_clients
from clarion.providers.sender import SenderProcess
from clarion.tables.api_keys import KeysView
from clarion.tables.controls import CampaignControls
from clarion.tables.ledger import DeliveryLedger, ledger_for
from clarion.tables.suppression import SuppressionBook
from clarion.tables.templates_view import TemplatesView
from clarion.tables.users_progress import UsersProgress
from clarion.topology.declared import Declared
from clarion.topology.emitters import Emitters
from clarion.topology.offsets import BrokerOffsets
from clarion.topology.settings import Settings


class Resources:
    """Clients (built on first use), the delivery ledger, the views every worker tails, the clock."""

    def __init__(self, declared: Declared, emit: Emitters, clock: Callable[[], float]) -> None:
        settings, specs = declared.settings, declared.specs
        self.declared = declared
        self.clock = clock
        servers, quirks = settings.bootstrap_servers, settings.broker_quirks
        self.controls = CampaignControls(servers, specs["promo.controls"].topic, quirks)
        self.templates = TemplatesView(servers, specs["templates"].topic, quirks)
        self.keys = KeysView(servers, specs["api_keys"].topic, quirks)
        self.offsets = BrokerOffsets(settings)
        self.users_progress = UsersProgress(clock, self.offsets, settings.app_id, specs["users"].topic)
        self.statuses = emit.statuses
        self.suppressions = SuppressionBook(emit.writer(declared.suppressed), emit.writer(declared.users))
        self.registry = CollectorRegistry()  # this worker's /metrics (web/worker_metrics.py)
        self.provider_metrics = ProviderMetrics(self.registry)  # observed by the deliver stage
        self.jobs: Any = None  # agents/schedule.py's Jobs, for the campaign pages
        self._clients: dict[str, ProviderClient] | None = None
        self._ledger: DeliveryLedger | None = None
        self._dispatcher: Dispatcher | SenderProcess | None = None

    @property
    def settings(self) -> Settings:
        return self.declared.settings  # one copy: a test that points the settings elsewhere changes both

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

    async def start(self) -> None:
        await self.offsets.start()
        await self.templates.start()
        await self.keys.start()
        await self.controls.start()
        if isinstance(self.dispatcher, SenderProcess):
            await self.dispatcher.start()

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
