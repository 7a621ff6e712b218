"""The public HTTP API: stateless, produces to Kafka, runs as many processes as needed.

POST /notif, POST /template, POST /users, GET /notif/{id} (asked of a worker, which
routes it to the owner of the status table partition), GET /healthz.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from clarion.logs import event, log_context
from clarion.schemas.codec import encode
from clarion.schemas.records import NotificationRequest
from clarion.schemas.validation import ValidationFailed, validate_notification, validate_template, validate_user
from clarion.tables.templates import RenderError, check_template, render, resolve
from clarion.tables.templates_view import TemplatesView
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import catalog
from clarion.topology.settings import Settings

log = logging.getLogger("clarion.api")
TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

SETTINGS = web.AppKey("settings", Settings)
PRODUCER = web.AppKey("producer", AIOKafkaProducer)
TEMPLATES = web.AppKey("templates", TemplatesView)
HTTP = web.AppKey("http", aiohttp.ClientSession)
TOPICS = web.AppKey("topics", dict)


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(status: int, error: str, field: str | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"error": error, **extra}
    if field:
        body["errors"] = [{"field": field, "error": error}]
    return _json(status, body)


def trace_id_of(request: web.Request) -> str:
    """The W3C traceparent's trace id when the caller sent one, else a new id."""
    match = TRACEPARENT_RE.match(request.headers.get("traceparent", ""))
    return match.group(1) if match else uuid.uuid4().hex


async def _body(request: web.Request) -> Any:
    limit = request.app[SETTINGS].max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    raw = await request.read()  # aiohttp enforces client_max_size while reading
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed([{"field": "body", "error": f"not valid JSON: {exc}"}]) from None


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationFailed as exc:
        return _json(400, {"error": "invalid request", "errors": exc.errors})
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_bytes
        return _error(413, f"request body is over the {limit} byte limit", "body")


async def post_notif(request: web.Request) -> web.Response:
    body = await _body(request)
    fields = validate_notification(body)
    trace_id = trace_id_of(request)
    with log_context(trace_id=trace_id, client_id=fields["client_id"], user_id=fields["user_id"]):
        template = resolve(request.app[TEMPLATES], fields["template_id"], fields["template_version"])
        if template is None:
            field = "template_version" if fields["template_version"] else "template_id"
            return _error(
                404, f"unknown template {fields['template_id']}@{fields['template_version'] or 'latest'}", field
            )
        missing = [ch for ch in fields["channels"] if ch not in template.channels()]
        if missing:
            return _error(422, f"template {template.key} has no content for {', '.join(missing)}", "channels")
        for channel in fields["channels"]:
            try:
                render(template, channel, fields["params"])
            except RenderError as exc:
                return _error(422, f"params do not render: {exc}", "params")
        nid = "n_" + uuid.uuid4().hex
        req = NotificationRequest(notification_id=nid, trace_id=trace_id, accepted_at=time.time(), **fields)
        await _produce(request, "critical.requests", req.user_id, encode(req))
        event(log, "notification accepted", notification_id=nid, channels=req.channels)
    return _json(202, {"notification_id": nid, "status": "accepted", "trace_id": trace_id})


async def post_template(request: web.Request) -> web.Response:
    template = validate_template(await _body(request))
    check_template(template)
    view = request.app[TEMPLATES]
    existing = view.get(template.key)
    if existing is not None:
        if existing.asdict() == template.asdict():
            return _json(200, {"template_id": template.template_id, "version": template.version, "created": False})
        return _error(409, f"template {template.key} exists with other content; versions are immutable", "version")
    await _produce(request, "templates", template.key, encode(template))
    view.add(template)
    return _json(201, {"template_id": template.template_id, "version": template.version, "created": True})


async def post_users(request: web.Request) -> web.Response:
    user = validate_user(await _body(request))
    await _produce(request, "users", user.user_id, encode(user))
    return _json(202, {"user_id": user.user_id})


async def get_notif(request: web.Request) -> web.Response:
    nid = request.match_info["notification_id"]
    url = f"{request.app[SETTINGS].status_url}/status/{nid}/"
    try:
        async with request.app[HTTP].get(url) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")
    except aiohttp.ClientError as exc:
        return _error(503, f"no worker answered for status: {type(exc).__name__}")


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"ok": True})


async def _produce(request: web.Request, name: str, key: str, value: bytes) -> None:
    await request.app[PRODUCER].send_and_wait(request.app[TOPICS][name], value=value, key=key.encode())


def create_api(settings: Settings) -> web.Application:
    """The API application; its startup connects the producer and reads the templates."""
    if not settings.status_url:
        settings = replace(settings, status_url=f"http://{settings.web_host}:{settings.web_port}")
    app = web.Application(client_max_size=settings.max_request_bytes, middlewares=[errors_middleware])
    app[SETTINGS] = settings
    specs = catalog(settings)
    app[TOPICS] = {name: spec.topic for name, spec in specs.items()}
    app.add_routes(
        [
            web.post("/notif", post_notif),
            web.get("/notif/{notification_id}", get_notif),
            web.post("/template", post_template),
            web.post("/users", post_users),
            web.get("/healthz", healthz),
        ]
    )

    async def lifecycle(app: web.Application) -> Any:
        await ensure_topics(settings.bootstrap_servers, list(specs.values()))
        app[PRODUCER] = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            linger_ms=1,
            max_batch_size=settings.producer_max_batch_bytes,
        )
        await app[PRODUCER].start()
        app[TEMPLATES] = TemplatesView(settings.bootstrap_servers, specs["templates"].topic)
        await app[TEMPLATES].start()
        app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        yield
        await app[HTTP].close()
        await app[TEMPLATES].stop()
        await app[PRODUCER].stop()

    app.cleanup_ctx.append(lifecycle)
    return app
