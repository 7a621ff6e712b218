"""Campaign endpoints of the API: POST /promo, GET /promo/{id}, POST /promo/{id}/pause|resume|cancel,
and POST /audiences/preview (web/preview.py).

The API validates and produces to promo.jobs (keyed by client/campaign_id); the worker
that owns the job's partition folds it (agents/schedule.py). Reads are asked of a worker,
which routes them to that owner (web/campaign_pages.py). Campaign ids are idempotent per
client: posting the same id again changes nothing and answers 202 with the same id.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import aiohttp
from aiohttp import web
from yarl import URL

from clarion.schemas.audiences import ExpressionError
from clarion.schemas.codec import encode
from clarion.schemas.promo import CampaignEvent
from clarion.schemas.promo_validation import validate_campaign
from clarion.schemas.records import scoped
from clarion.schemas.validation import ID_ERROR, is_id
from clarion.tables.templates import resolve
from clarion.web.context import (
    HTTP,
    SETTINGS,
    TEMPLATES,
    Rejected,
    caller_of,
    check_render,
    error_response,
    json_response,
    produce,
    read_body,
    requires,
    trace_id_of,
)
from clarion.web.preview import post_audience_preview

ACTIONS = ("pause", "resume", "cancel")


@requires("send")
async def post_promo(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = caller_of(request, body)
    try:
        campaign = validate_campaign(body, caller.client_id, time.time(), trace_id_of(request))
    except ExpressionError as exc:
        raise Rejected(422, f"audience.where: {exc}", ExpressionError.field) from None
    template = resolve(request.app[TEMPLATES], caller.client_id, campaign.template_id, campaign.template_version)
    if template is None:
        field = "template_version" if campaign.template_version else "template_id"
        raise Rejected(404, f"unknown template {campaign.template_id}@{campaign.template_version or 'latest'}", field)
    missing = [ch for ch in campaign.channels if ch not in template.channels()]
    if missing:
        raise Rejected(422, f"template {template.ref} has no content for {', '.join(missing)}", "channels")
    for channel in campaign.channels:  # the user's id and attributes arrive under `user` at send time
        check_render(template, channel, {**campaign.params, "user": {"user_id": "preview"}})
    created = CampaignEvent(kind="create", campaign_key=campaign.key, campaign=campaign, ts=time.time())
    await produce(request, "promo.jobs", campaign.key, encode(created))
    return json_response(202, {"campaign_id": campaign.campaign_id, "send_at": campaign.send_at})


async def _ask_worker(request: web.Request, campaign_id: str) -> tuple[int, bytes]:
    settings = request.app[SETTINGS]
    url = URL(f"{settings.status_url}/promo/{quote(campaign_id, safe='')}/", encoded=True)
    try:
        headers = {"Authorization": request.headers["Authorization"]}
        async with request.app[HTTP].get(url, headers=headers) as resp:
            return resp.status, await resp.read()
    except aiohttp.ClientError as exc:
        raise Rejected(503, f"no worker answered for the campaign: {type(exc).__name__}") from None


def _checked_id(request: web.Request) -> str:
    campaign_id = request.match_info["campaign_id"]
    if not is_id(campaign_id):  # never forwarded: "..", "/" or "?" must not reach a worker page
        raise Rejected(404, f"unknown campaign_id: {ID_ERROR}", "campaign_id")
    return campaign_id


@requires("read")
async def get_promo(request: web.Request) -> web.Response:
    status, body = await _ask_worker(request, _checked_id(request))
    if status not in (200, 401, 403, 404):
        return error_response(503, f"the worker answered {status} for the campaign")
    return web.Response(status=status, body=body, content_type="application/json")


@requires("send")
async def post_promo_action(request: web.Request) -> web.Response:
    campaign_id = _checked_id(request)
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise Rejected(404, f"unknown action {action[:20]!r}; one of {', '.join(ACTIONS)}", "action")
    caller = caller_of(request, None)
    status, body = await _ask_worker(request, campaign_id)
    if status != 200:
        return web.Response(status=status if status in (401, 403, 404) else 503, body=body,
                            content_type="application/json")  # fmt: skip
    key = scoped(caller.client_id, campaign_id)
    command = CampaignEvent(kind=action, campaign_key=key, ts=time.time())  # type: ignore[arg-type]
    await produce(request, "promo.jobs", key, encode(command))
    return json_response(202, {"campaign_id": campaign_id, "requested": action})


def install_promo(app: web.Application) -> None:
    app.add_routes([
        web.post("/promo", post_promo),
        web.get("/promo/{campaign_id}", get_promo),
        web.post("/promo/{campaign_id}/{action}", post_promo_action),
        web.post("/audiences/preview", post_audience_preview),
    ])  # fmt: skip

