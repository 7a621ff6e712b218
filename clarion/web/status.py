"""Worker pages: notification status from the status table, routed to the key's owner.

The status table is keyed by notification_id but lives on the partition of the user
(co-partitioned with requests and lanes), so faust's key-hash routing cannot find it.
API-made ids name their partition (`n<partition>_<hex>`): the page asks the worker that
owns it. Other ids (records produced straight to the requests topic) are asked of every
worker. faust's generic /table/ views stay off (web_tables_enabled=False): the users
table holds personal data. Only these pages expose table contents, and they ask for
the same API key as the public API (the API passes the caller's key on): a key reads
only its own client's statuses and templates.

The worker's web port is internal (table routing between workers and the API); it is
not meant to face the internet, but what it answers needs a key all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
from faust.web import Request, Response, View

from clarion.logs import event
from clarion.schemas.records import scoped
from clarion.schemas.validation import ID_ERROR, is_id
from clarion.tables.api_keys import AuthError, Caller
from clarion.tables.status import decode_status, partition_of, public_status
from clarion.tables.templates import latest_key
from clarion.topology import faust_compat

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.status")


def malformed(web: View, field: str) -> Response:
    """404 for a path parameter that is not a well-formed id: nothing is looked up or forwarded."""
    return web.json({"error": f"unknown {field}", "errors": [{"field": field, "error": ID_ERROR}]}, status=404)


async def authenticated(topo: Topology, web: View, request: Request, scope: str) -> Caller | Response:
    """The caller the request's API key stands for, or the 401/403 to answer."""
    try:
        return await topo.resources.keys.authenticate(request.headers.get("Authorization"), scope)
    except AuthError as exc:
        body = {"error": exc.error, "errors": [{"field": "Authorization", "error": exc.error}]}
        return web.json(body, status=exc.status)


def versions_of(keys: Iterable[str], name: str) -> list[int]:
    """The versions of `name` (client/template_id) among templates-view keys (ids may contain @ themselves)."""
    versions = []
    for key in keys:
        owner, _, version = key.rpartition("@")
        if owner == name and version.isdigit():
            versions.append(int(version))
    return sorted(versions)


def owners(topo: Topology, notification_id: str) -> list[str]:
    """Other workers that may hold `notification_id`'s status: its partition's owner, or all."""
    changelog = topo.declared.status.changelog_topic.get_topic_name()
    partition = partition_of(notification_id)
    me = str(topo.declared.app.conf.canonical_url).rstrip("/")
    hosts = []
    for url, topics in topo.declared.app.router.table_metadata(topo.declared.status.name).items():
        if url.rstrip("/") != me and (partition is None or partition in topics.get(changelog, ())):
            hosts.append(url.rstrip("/"))
    return hosts


def register_status_pages(topo: Topology) -> None:
    app = topo.declared.app

    @app.page("/status/{notification_id}/", name="clarion.status")
    async def status(web: View, request: Request, notification_id: str) -> Response:
        caller = await authenticated(topo, web, request, "read")
        if not isinstance(caller, Caller):
            return caller
        if not is_id(notification_id):
            return malformed(web, "notification_id")
        if topo.declared.status is None:  # a promo-lanes worker (agents/__init__.py)
            return web.json({"error": "this worker runs the promo lanes only: ask a critical worker"}, status=503)
        raw = topo.declared.status.get(notification_id)  # every partition this worker holds
        if raw is not None:
            doc = decode_status(raw)
            if doc.client_id == caller.client_id:  # another client's is as good as unknown
                return web.json(public_status(doc))
            return web.json({"error": "unknown notification_id", "notification_id": notification_id}, status=404)
        if "local" not in request.query:
            unreachable = 0
            headers = {"Authorization": request.headers["Authorization"]}
            for url in owners(topo, notification_id):
                try:
                    page = f"{url}/status/{quote(notification_id, safe='')}/?local=1"
                    async with app.http_client.get(page, headers=headers) as resp:
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
        """The versions of one of the caller's templates this worker can render."""
        caller = await authenticated(topo, web, request, "templates")
        if not isinstance(caller, Caller):
            return caller
        if not is_id(template_id):
            return malformed(web, "template_id")
        latest = topo.resources.templates.get(latest_key(caller.client_id, template_id))
        if latest is None:
            return web.json({"error": "unknown template", "template_id": template_id}, status=404)
        # only the keys held: a range up to `latest` would spin for a version such as 10**12
        versions = versions_of(list(topo.resources.templates), scoped(caller.client_id, template_id))
        return web.json({"template_id": template_id, "latest": latest, "versions": versions})

    @app.page("/templates/", name="clarion.templates_summary")
    async def templates_summary(web: View, request: Request) -> Response:
        """The caller's template versions this worker holds."""
        caller = await authenticated(topo, web, request, "templates")
        if not isinstance(caller, Caller):
            return caller
        mine = scoped(caller.client_id, "")
        templates = topo.resources.templates
        versions = sorted(k[len(mine):] for k in templates if k.startswith(mine) and not k.endswith("@latest"))
        return web.json({"ready": topo.resources.templates.ready.is_set(), "versions": versions})

    @app.page("/ready", name="clarion.ready")
    async def ready(web: View, request: Request) -> Response:
        """200 once the worker holds partitions and is not rebalancing or recovering."""
        actives = faust_compat.active_assignment(app)
        ok = (
            bool(actives)
            and not app.rebalancing
            and faust_compat.recovered(app)
            and topo.resources.templates.ready.is_set()
            and topo.resources.keys.ready.is_set()
            and topo.resources.controls.ready.is_set()
        )
        return web.json({"ready": ok, "partitions": len(actives)}, status=200 if ok else 503)

    @app.page("/stats", name="clarion.stats")
    async def stats(web: View, request: Request) -> Response:
        """Counters of what this worker has done (outcomes by channel and status, dead letters)."""
        return web.json({"counters": {"/".join(key): n for key, n in sorted(topo.emit.counters.items())}})

    @app.page("/healthz", name="clarion.healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"ok": True, "app": app.conf.id})
