"""Worker pages: notification status from the status table, routed to the key's owner.

The status table is keyed by notification_id but lives on the partition of the user
(co-partitioned with requests and lanes), so faust's key-hash routing cannot find it.
API-made ids name their partition (`n<partition>_<hex>`): the page asks the worker that
owns it. Other ids (records produced straight to the requests topic) are asked of every
worker. faust's generic /table/ views stay off (web_tables_enabled=False): the users
table holds personal data. Only these pages expose table contents.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
from faust.web import Request, Response, View

from clarion.logs import event
from clarion.schemas.validation import ID_ERROR, is_id
from clarion.tables.status import decode_status, partition_of, public_status
from clarion.tables.templates import latest_key

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.status")


def malformed(web: View, field: str) -> Response:
    """404 for a path parameter that is not a well-formed id: nothing is looked up or forwarded."""
    return web.json({"error": f"unknown {field}", "errors": [{"field": field, "error": ID_ERROR}]}, status=404)


def versions_of(keys: Iterable[str], template_id: str) -> list[int]:
    """The versions of `template_id` among templates-view keys (`id@version`; ids may contain @ themselves)."""
    versions = []
    for key in keys:
        owner, _, version = key.rpartition("@")
        if owner == template_id and version.isdigit():
            versions.append(int(version))
    return sorted(versions)


def owners(topo: Topology, notification_id: str) -> list[str]:
    """Other workers that may hold `notification_id`'s status: its partition's owner, or all."""
    changelog = topo.status.changelog_topic.get_topic_name()
    partition = partition_of(notification_id)
    me = str(topo.app.conf.canonical_url).rstrip("/")
    hosts = []
    for url, topics in topo.app.router.table_metadata(topo.status.name).items():
        if url.rstrip("/") != me and (partition is None or partition in topics.get(changelog, ())):
            hosts.append(url.rstrip("/"))
    return hosts


def register_status_pages(topo: Topology) -> None:
    app = topo.app

    @app.page("/status/{notification_id}/", name="clarion.status")
    async def status(web: View, request: Request, notification_id: str) -> Response:
        if not is_id(notification_id):
            return malformed(web, "notification_id")
        raw = topo.status.get(notification_id)  # every partition this worker holds
        if raw is not None:
            return web.json(public_status(decode_status(raw)))
        if "local" not in request.query:
            unreachable = 0
            for url in owners(topo, notification_id):
                try:
                    async with app.http_client.get(f"{url}/status/{quote(notification_id, safe='')}/?local=1") as resp:
                        if resp.status == 200:
                            return web.json(await resp.json())
                except aiohttp.ClientError as exc:
                    unreachable += 1
                    event(log, "status owner unreachable", level=logging.WARNING, url=url, exc=repr(exc))
            if unreachable:
                return web.json({"error": f"{unreachable} worker(s) that may hold it did not answer"}, status=503)
        return web.json({"error": "unknown notification_id", "notification_id": notification_id}, status=404)

    @app.page("/templates/{template_id}/", name="clarion.templates")
    async def template_versions(web: View, request: Request, template_id: str) -> Response:
        """The versions of a template this worker can render (templates are not personal data)."""
        if not is_id(template_id):
            return malformed(web, "template_id")
        latest = topo.templates.get(latest_key(template_id))
        if latest is None:
            return web.json({"error": "unknown template", "template_id": template_id}, status=404)
        # only the keys held: a range up to `latest` would spin for a version such as 10**12
        versions = versions_of(list(topo.templates), template_id)
        return web.json({"template_id": template_id, "latest": latest, "versions": versions})

    @app.page("/templates/", name="clarion.templates_summary")
    async def templates_summary(web: View, request: Request) -> Response:
        versions = sorted(k for k in topo.templates if not k.endswith("@latest"))
        return web.json({"ready": topo.templates.ready.is_set(), "versions": versions})

    @app.page("/ready", name="clarion.ready")
    async def ready(web: View, request: Request) -> Response:
        """200 once the worker holds partitions and is not rebalancing or recovering."""
        actives = app.assignor.assigned_actives()
        ok = (
            bool(actives)
            and not app.rebalancing
            and app.tables.recovery.completed.is_set()
            and topo.templates.ready.is_set()
        )
        return web.json({"ready": ok, "partitions": len(actives)}, status=200 if ok else 503)

    @app.page("/stats", name="clarion.stats")
    async def stats(web: View, request: Request) -> Response:
        """Counters of what this worker has done (outcomes by channel and status, dead letters)."""
        return web.json({"counters": {"/".join(key): n for key, n in sorted(topo.counters.items())}})

    @app.page("/healthz", name="clarion.healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"ok": True, "app": app.conf.id})
