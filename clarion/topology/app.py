"""Create the faust app for a settings object and wire clarion onto it."""

from __future__ import annotations

import faust

from clarion.logs import LOGGING_CONFIG
from clarion.topology.settings import Settings
from clarion.topology.topology import Topology, wire


def create_app(settings: Settings | None = None) -> tuple[faust.App, Topology]:
    """A faust App configured from `settings` (default: the environment) with the topology."""
    s = settings or Settings.from_env()
    app = faust.App(
        s.app_id,
        broker=s.broker_url,
        store="rocksdb://",
        datadir=s.data_dir,
        web_host=s.web_host,
        web_port=s.web_port,
        canonical_url=f"http://{s.web_host}:{s.web_port}",
        web_tables_enabled=False,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=s.heartbeat_interval_s,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        logging_config=LOGGING_CONFIG,
        producer_linger_ms=1,
    )
    topo = wire(app, s)

    return app, topo
