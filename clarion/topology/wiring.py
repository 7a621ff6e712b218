"""`wire(app, settings)`: the one function that builds clarion onto a faust app."""

from __future__ import annotations

from typing import Any

import faust

from clarion.agents import register_all
from clarion.topology import faust_compat
from clarion.topology.admin import ensure_topics
from clarion.topology.gaps import GapHealer
from clarion.topology.lanes_guard import HEARTBEAT_S, LanesRegistry
from clarion.topology.settings import Settings
from clarion.topology.topology import Topology
from clarion.web.audience_pages import register_audience_pages
from clarion.web.campaign_pages import register_campaign_pages
from clarion.web.status import register_status_pages
from clarion.web.table_pages import register_table_pages
from clarion.web.worker_metrics import register_metrics_page


def wire(app: faust.App, settings: Settings) -> Topology:
    """Build clarion's whole topology onto `app`: agents, web pages, startup and shutdown."""
    topo = Topology(app, settings)
    register_all(topo)
    register_status_pages(topo)
    register_metrics_page(topo)
    if topo.declared.holds_tables:  # a promo-lanes worker answers /ready, /stats, /metrics and /healthz only
        register_campaign_pages(topo)
        register_audience_pages(topo)
        register_table_pages(topo)

    lanes = LanesRegistry(settings)

    @app.task
    async def prepare() -> None:
        # faust declares only topics it consumes; the DLQ and templates need creating too.
        await ensure_topics(settings.bootstrap_servers, list(topo.declared.specs.values()))
        await lanes.join()  # LanesClash: this worker does not start beside one whose lanes clash
        await topo.resources.start()

    @app.timer(HEARTBEAT_S, name="clarion.lanes")
    async def lanes_heartbeat() -> None:
        """Say this worker's lanes are live; alert while they clash with another's (topology/lanes_guard.py)."""
        await lanes.check()

    healer = GapHealer(app)

    @app.timer(5.0, name="clarion.heal_gaps")
    async def heal_gaps() -> None:
        """Read again a record faust dropped below acked ones (topology/gaps.py)."""
        if not app.rebalancing and faust_compat.recovered(app):
            await healer.check()

    users = topo.declared.specs["users"].topic

    @app.on_partitions_assigned.connect
    async def check_users_progress(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        # Verify the users table for each new partition now, not on its first request.
        topo.resources.users_progress.check_soon({tp.partition for tp in assigned if tp.topic == users})

    @app.on_partitions_revoked.connect
    async def forget_users_progress(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        topo.resources.users_progress.forget({tp.partition for tp in revoked if tp.topic == users})

    @app.on_before_shutdown.connect
    async def close_clients(app: faust.App, **kwargs: Any) -> None:
        await lanes.close()
        await topo.resources.close()

    return topo
