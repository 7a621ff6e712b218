"""Create the faust app for a settings object and wire clarion onto it."""

from __future__ import annotations

import socket

import faust

from clarion.logs import LOGGING_CONFIG
from clarion.topology import faust_compat, fetching, tansu
from clarion.topology.settings import Settings, group_id
from clarion.topology.topology import Topology
from clarion.topology.wiring import wire


def create_app(settings: Settings | None = None) -> tuple[faust.App, Topology]:
    """A faust App configured from `settings` (default: the environment) with the topology."""
    s = settings or Settings.from_env()
    app = faust.App(
        group_id(s),  # `app_id`, or its promo workers' own group (agents/__init__.py)
        broker=s.broker_url,
        store="rocksdb://",
        datadir=s.data_dir,
        web_host=s.web_host,
        web_port=s.web_port,
        canonical_url=canonical_url(s),
        web_tables_enabled=False,
        topic_replication_factor=s.replication_factor,  # the topics faust creates: clarion's, changelogs
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=s.heartbeat_interval_s,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        logging_config=LOGGING_CONFIG,
        producer_linger_ms=s.producer_linger_ms,
        producer_max_batch_size=s.producer_max_batch_bytes,
        producer_max_request_size=2 * 1024 * 1024,
    )
    fetching.install(s)
    tansu.install(s)
    faust_compat.patch_fetcher_close()
    topo = wire(app, s)

    return app, topo


def canonical_url(s: Settings) -> str:
    """The URL other workers use to reach this one's web server (table routing)."""
    if s.canonical_url:
        return s.canonical_url
    host = socket.gethostname() if s.web_host in ("0.0.0.0", "::") else s.web_host
    return f"http://{host}:{s.web_port}"


def agent_symbols(app: faust.App) -> dict[str, faust.types.AgentT]:
    """The app's agents by Python name (`clarion.deliver.critical.email` -> `deliver_critical_email`)."""
    return {name.removeprefix("clarion.").replace(".", "_"): agent for name, agent in app.agents.items()}
