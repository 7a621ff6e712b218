"""Worker page: a campaign's state and counters, answered by the owner of its job.

The campaigns table is keyed by client/campaign_id (raw bytes, murmur2 like the topic),
so faust's router knows which worker holds a job; another worker forwards the request
there. Counters come from the job's expansion totals and the delivery ledger's campaign
counts (exact: a delivery counts once when it becomes final).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from faust.web import Request, Response, View

from clarion.logs import event
from clarion.schemas.promo import Job
from clarion.schemas.records import scoped
from clarion.schemas.validation import is_id
from clarion.tables.api_keys import Caller
from clarion.topology.partitioning import partition_for
from clarion.web.status import authenticated, malformed

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.campaigns")


def counters(job: Job, counts: dict[str, int]) -> dict[str, Any]:
    """A campaign's counters from its job's expansion totals and its ledger counts."""
    skipped: dict[str, int] = {}
    for progress in job.progress.values():
        for reason, n in progress.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    targeted = sum(p.targeted for p in job.progress.values())
    return {
        "targeted": targeted,
        "expanded": targeted - sum(skipped.values()),
        "executions": sum(p.executions for p in job.progress.values()),
        "deferred": sum(p.deferred for p in job.progress.values()),
        "skipped": skipped,
        "partitions_expanded": sum(1 for p in job.progress.values() if p.done),
        **{state: counts.get(state, 0) for state in ("sent", "failed", "dead", "cancelled")},
    }


def describe(job: Job, counts: dict[str, int]) -> dict[str, Any]:
    campaign = job.campaign
    return {
        "campaign_id": campaign.campaign_id,
        "state": job.state,
        "template": f"{campaign.template_id}@{job.template_version or campaign.template_version or 'latest'}",
        "channels": campaign.channels,
        "send_at": campaign.send_at,
        "created_at": campaign.created_at,
        "started_at": job.started_at or None,
        "finished_at": job.finished_at or None,
        "pacing_per_s": campaign.pacing_per_s or None,
        "counters": counters(job, counts),
    }


def register_campaign_pages(topo: Topology) -> None:
    app = topo.declared.app

    @app.page("/promo/{campaign_id}/", name="clarion.campaign")
    async def campaign(web: View, request: Request, campaign_id: str) -> Response:
        """A campaign's state and counters, from the worker that owns its job."""
        caller = await authenticated(topo, web, request, "read")
        if not isinstance(caller, Caller):
            return caller
        if not is_id(campaign_id):
            return malformed(web, "campaign_id")
        key = scoped(caller.client_id, campaign_id)
        partition = partition_for(key, topo.declared.settings.promo_partitions)
        owner = str(app.router.key_store(topo.declared.campaigns.name, key.encode())).rstrip("/")
        me = str(app.conf.canonical_url).rstrip("/")
        if owner != me and "local" not in request.query:
            try:
                page = f"{owner}/promo/{quote(campaign_id, safe='')}/?local=1"
                async with app.http_client.get(page, headers={"Authorization": request.headers["Authorization"]}) as r:
                    return web.json(await r.json(), status=r.status)
            except aiohttp.ClientError as exc:
                event(log, "campaign owner unreachable", logging.WARNING, url=owner, exc=repr(exc))
                return web.json({"error": "the worker that holds the campaign did not answer"}, status=503)
        job = topo.resources.jobs.get(partition, key) if topo.resources.jobs is not None else None
        if job is None:
            return web.json({"error": "unknown campaign_id", "campaign_id": campaign_id}, status=404)
        return web.json(describe(job, await topo.resources.ledger.campaign_counts(key)))
