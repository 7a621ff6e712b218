"""The public HTTP API: stateless, produces to Kafka, runs as many processes as needed.

POST /notif, /notif/batch, /template, /users, GET /notif/{id} (asked of a worker, which
routes it to the owner of the status table partition), GET /healthz and /ready (web/health.py),
GET /metrics and an access log line per request (web/metrics.py), and the provider webhooks
POST /webhooks/twilio and /webhooks/ses (web/webhooks.py).

Every endpoint but /healthz and /ready needs `Authorization: Bearer <API key>` with the
endpoint's scope. The client is the key's: a body naming another client_id is refused
(403), and users, templates, idempotency keys and statuses are the key client's own.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from yarl import URL

from clarion.logs import event, log_context
from clarion.schemas.codec import encode
from clarion.schemas.records import NotificationRequest, TemplateVersion, scoped
from clarion.schemas.validation import (
    ID_ERROR,
    ValidationFailed,
    is_id,
    validate_notification,
    validate_template,
    validate_user,
)
from clarion.tables.api_keys import AuthError, Caller, KeysView
from clarion.tables.status import new_notification_id
from clarion.tables.templates import RenderError, check_template, render, resolve
from clarion.tables.templates_view import TemplatesView
from clarion.topology.admin import ensure_topics
from clarion.topology.catalog import catalog
from clarion.topology.partitioning import partition_for
from clarion.topology.settings import Settings
from clarion.web.batcher import PartitionBatcher
from clarion.web.health import ProducerProbe, view_check

log = logging.getLogger("clarion.api")
STARTED = time.monotonic()
TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

SETTINGS = web.AppKey("settings", Settings)
PRODUCER = web.AppKey("producer", AIOKafkaProducer)
TEMPLATES = web.AppKey("templates", TemplatesView)
HTTP = web.AppKey("http", aiohttp.ClientSession)
TOPICS = web.AppKey("topics", dict)
REQUESTS = web.AppKey("requests", PartitionBatcher)
PARTITIONS = web.AppKey("partitions", int)  # of critical.requests: a notification id names its partition
KEYS = web.AppKey("keys", KeysView)
PRODUCER_PROBE = web.AppKey("producer_probe", ProducerProbe)
CALLER = web.RequestKey("caller", Caller)  # who the API key says is calling
TRACE_ID = web.RequestKey("trace_id", str)  # once a handler asked for it (the access log line carries it)


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(status: int, error: str, field: str | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"error": error, **extra}
    if field:
        body["errors"] = [{"field": field, "error": error}]
    return _json(status, body)


def trace_id_of(request: web.Request) -> str:
    """The W3C traceparent's trace id when the caller sent one, else a new id (the same for the whole request)."""
    trace_id = request.get(TRACE_ID)
    if trace_id is None:
        match = TRACEPARENT_RE.match(request.headers.get("traceparent", ""))
        trace_id = request[TRACE_ID] = match.group(1) if match else secrets.token_hex(16)
    return trace_id


class Rejected(Exception):
    """A request the API answers with a 4xx, naming the field at fault."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.field:
            body["errors"] = [{"field": self.field, "error": self.error}]
        return body


async def _body(request: web.Request, limit: int | None = None) -> Any:
    limit = limit or request.app[SETTINGS].max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, f"request body is over the {limit} byte limit", "body")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise Rejected(415, f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed", "body")
    try:
        raw = await request.read()  # aiohttp enforces client_max_size (the largest limit) while reading
    except (web.RequestPayloadError, HttpProcessingError, ConnectionResetError) as exc:  # bad chunking, cut short
        raise Rejected(400, f"the body cannot be read: {exc}", "body") from None
    if len(raw) > limit:
        raise Rejected(413, f"request body is over the {limit} byte limit", "body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed([{"field": "body", "error": f"not valid JSON: {exc}"}]) from None


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error is JSON: ours, aiohttp's own (404, 405, 413) and, last, a server fault."""
    try:
        return await handler(request)
    except ValidationFailed as exc:
        return _json(400, {"error": "invalid request", "errors": exc.errors})
    except Rejected as exc:
        return _json(exc.status, exc.body())
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_batch_request_bytes
        return _error(413, f"request body is over the {limit} byte limit", "body")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return _error(500, "internal error")


def requires(scope: str) -> Any:
    """Mark a handler as needing an API key with `scope`."""

    def mark(handler: Any) -> Any:
        handler.scope = scope
        return handler

    return mark


def public(handler: Any) -> Any:
    """Mark a handler as answering without an API key: liveness, readiness, and provider
    webhooks, which check their provider's signature themselves (web/webhooks.py)."""
    handler.public = True
    return handler


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Authenticate every request to a route; the scope is the route handler's."""
    if request.match_info.http_exception is not None or getattr(handler, "public", False):
        return await handler(request)  # 404 and 405 say nothing about anyone's data
    try:
        request[CALLER] = await request.app[KEYS].authenticate(request.headers.get("Authorization"), handler.scope)
    except AuthError as exc:
        resp = _error(exc.status, exc.error, "Authorization")
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="clarion"'
        return resp
    return await handler(request)


def caller_of(request: web.Request, body: Any) -> Caller:
    """The API key's caller; a body naming another client_id is refused."""
    caller: Caller = request[CALLER]
    _claim(body, caller)
    return caller


def _claim(body: Any, caller: Caller) -> None:
    if isinstance(body, dict) and "client_id" in body and body["client_id"] != caller.client_id:
        raise Rejected(403, "client_id is not the API key's client (leave it out: the key names the client)",
                       "client_id")  # fmt: skip


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        resp = _error(405, f"method {request.method[:20]} is not allowed here; allowed: {allowed}", "method")
        resp.headers["Allow"] = allowed
        return resp
    if isinstance(exc, web.HTTPNotFound):
        return _error(404, "no such endpoint", "path")
    return _error(exc.status, exc.reason.lower())


def accept_notification(
    app: web.Application, body: Any, caller: Caller, trace_id: str, now: float
) -> NotificationRequest:
    """Validate one POST /notif body into a request; ValidationFailed or Rejected when it is not."""
    _claim(body, caller)
    fields = validate_notification(body, caller.client_id, now)
    template = resolve(app[TEMPLATES], caller.client_id, fields["template_id"], fields["template_version"])
    if template is None:
        field = "template_version" if fields["template_version"] else "template_id"
        raise Rejected(404, f"unknown template {fields['template_id']}@{fields['template_version'] or 'latest'}", field)
    missing = [ch for ch in fields["channels"] if ch not in template.channels()]
    if missing:
        raise Rejected(422, f"template {template.ref} has no content for {', '.join(missing)}", "channels")
    for channel in fields["channels"]:
        _check_render(template, channel, fields["params"])
    user_key = scoped(caller.client_id, fields["user_id"])
    nid = new_notification_id(partition_for(user_key, app[PARTITIONS]), secrets.token_hex(16))
    # The worker routes it only once its own templates view has read this version.
    templates_at = app[TEMPLATES].offset_of(template.key)
    return NotificationRequest(
        notification_id=nid, trace_id=trace_id, accepted_at=now, templates_at=templates_at, **fields
    )


def _check_render(template: TemplateVersion, channel: str, params: dict[str, Any]) -> None:
    """Render once to refuse params that do not render (422), whatever the template raises."""
    try:
        render(template, channel, params)
    except RenderError as exc:
        raise Rejected(422, f"params do not render: {exc}", "params") from None
    except Exception as exc:  # e.g. {{ 1/0 }} or {{ n + "x" }}: the template and params, not the server, are at fault
        event(log, "template raised while rendering", level=logging.WARNING, template=template.key, exc=repr(exc))
        raise Rejected(422, f"params do not render: {type(exc).__name__}: {exc}"[:500], "params") from None


async def _enqueue(app: web.Application, requests: list[NotificationRequest]) -> None:
    try:
        await app[REQUESTS].submit([(req.user_key, encode(req)) for req in requests])
    except KafkaError as exc:
        raise Rejected(503, f"the broker did not take the request: {type(exc).__name__}") from None


@requires("send")
async def post_notif(request: web.Request) -> web.Response:
    body = await _body(request)
    trace_id = trace_id_of(request)
    req = accept_notification(request.app, body, request[CALLER], trace_id, time.time())
    await _enqueue(request.app, [req])
    if log.isEnabledFor(logging.DEBUG):
        with log_context(trace_id=trace_id, client_id=req.client_id, user_id=req.user_id):
            event(log, "notification accepted", level=logging.DEBUG, notification_id=req.notification_id)
    return _json(202, {"notification_id": req.notification_id, "status": "accepted", "trace_id": trace_id})


@requires("send")
async def post_notif_batch(request: web.Request) -> web.Response:
    """Up to `max_batch_items` notifications in one request, each validated like POST /notif."""
    settings = request.app[SETTINGS]
    body = await _body(request, settings.max_batch_request_bytes)
    items = body.get("notifications") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise Rejected(400, "must be a non-empty list of POST /notif bodies", "notifications")
    if len(items) > settings.max_batch_items:
        raise Rejected(400, f"at most {settings.max_batch_items} notifications per request", "notifications")
    trace_id = trace_id_of(request)
    now = time.time()
    results: list[dict[str, Any]] = []
    accepted: list[NotificationRequest] = []
    for index, item in enumerate(items):
        try:
            req = accept_notification(request.app, item, request[CALLER], trace_id, now)
        except ValidationFailed as exc:
            results.append({"index": index, "status": 400, "error": "invalid request", "errors": exc.errors})
        except Rejected as exc:
            results.append({"index": index, "status": exc.status, **exc.body()})
        else:
            accepted.append(req)
            results.append({"index": index, "status": 202, "notification_id": req.notification_id})
    if accepted:
        await _enqueue(request.app, accepted)
    body = {"accepted": len(accepted), "rejected": len(items) - len(accepted), "trace_id": trace_id, "results": results}
    return _json(200, body)


@requires("templates")
async def post_template(request: web.Request) -> web.Response:
    body = await _body(request)
    template = validate_template(body, caller_of(request, body).client_id)
    check_template(template)
    view = request.app[TEMPLATES]
    existing = view.get(template.key)
    if existing is not None:
        if existing == template:
            return _json(200, {"template_id": template.template_id, "version": template.version, "created": False})
        return _error(409, f"template {template.ref} exists with other content; versions are immutable", "version")
    _check_room(request.app, template)
    written = await _produce(request, "templates", template.key, encode(template))
    view.add(template, written.offset)  # requests checked against it carry this offset
    return _json(201, {"template_id": template.template_id, "version": template.version, "created": True})


def _check_room(app: web.Application, template: TemplateVersion) -> None:
    """Versions per template and templates per client are bounded: each one is held by every process."""
    settings, view = app[SETTINGS], app[TEMPLATES]
    if view.versions(template.client_id, template.template_id) >= settings.max_template_versions:
        raise Rejected(422, f"template {template.template_id} has {settings.max_template_versions} versions, "
                       "the most one template may have", "version")  # fmt: skip
    if view.versions(template.client_id, template.template_id) == 0 and (
        view.templates_of(template.client_id) >= settings.max_templates
    ):
        raise Rejected(422, f"this client has {settings.max_templates} templates, the most allowed", "template_id")


@requires("users")
async def post_users(request: web.Request) -> web.Response:
    body = await _body(request)
    user = validate_user(body, caller_of(request, body).client_id)
    await _produce(request, "users", user.key, encode(user))
    return _json(202, {"user_id": user.user_id})


@requires("read")
async def get_notif(request: web.Request) -> web.Response:
    nid = request.match_info["notification_id"]
    if not is_id(nid):  # never asked of a worker: "..", "/" or "?" must not reach another worker page
        errors = [{"field": "notification_id", "error": ID_ERROR}]
        return _json(404, {"error": "unknown notification_id", "errors": errors})
    url = URL(f"{request.app[SETTINGS].status_url}/status/{quote(nid, safe='')}/", encoded=True)
    try:
        # the worker checks the same key, and answers 404 for another client's notification
        async with request.app[HTTP].get(url, headers={"Authorization": request.headers["Authorization"]}) as resp:
            body = await resp.read()
    except aiohttp.ClientError as exc:
        return _error(503, f"no worker answered for status: {type(exc).__name__}")
    if resp.status not in (200, 401, 403, 404):
        return _error(503, f"the worker answered {resp.status} for status")
    return web.Response(status=resp.status, body=body, content_type="application/json")


@public
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Nothing else is asked (see /ready)."""
    uptime_s = round(time.monotonic() - STARTED, 1)
    return _json(200, {"ok": True, "checks": {"process": {"ok": True, "uptime_s": uptime_s}}})


@public
async def ready(request: web.Request) -> web.Response:
    """200 when the producer reaches a broker and the templates and API keys have been read; what was checked."""
    app = request.app
    probe = app.get(PRODUCER_PROBE)
    checks = {
        "producer": await probe.check() if probe is not None else {"ok": False, "error": "not started"},
        "templates": view_check(app.get(TEMPLATES)),
        "api_keys": view_check(app.get(KEYS)),
    }
    ok = all(check["ok"] for check in checks.values())
    return _json(200 if ok else 503, {"ready": ok, "checks": checks})


async def _produce(request: web.Request, name: str, key: str, value: bytes) -> RecordMetadata:
    try:
        return await request.app[PRODUCER].send_and_wait(request.app[TOPICS][name], value=value, key=key.encode())
    except KafkaError as exc:
        raise Rejected(503, f"the broker did not take the request: {type(exc).__name__}") from None


def create_api(settings: Settings) -> web.Application:
    """The API application; its startup connects the producer and reads the templates."""
    from clarion.web.metrics import install_metrics  # these import this module
    from clarion.web.openapi import install_openapi
    from clarion.web.promo import install_promo
    from clarion.web.ui import install_ui
    from clarion.web.users_bulk import post_users_bulk
    from clarion.web.webhooks import install_webhooks

    if not settings.status_url:
        settings = replace(settings, status_url=f"http://{settings.web_host}:{settings.web_port}")
    # auto_decompress off: aiohttp's own decoding answers some bad bodies in text/plain before any handler runs
    # and waits forever on a truncated deflate stream; compressed bodies are refused (415) in _body instead.
    app = web.Application(
        client_max_size=settings.max_batch_request_bytes,
        middlewares=[errors_middleware, auth_middleware],
        handler_args={"auto_decompress": False},
    )
    app[SETTINGS] = settings
    specs = catalog(settings)
    app[TOPICS] = {name: spec.topic for name, spec in specs.items()}
    app[PARTITIONS] = specs["critical.requests"].partitions
    app.add_routes(
        [
            web.post("/notif", post_notif),
            web.post("/notif/batch", post_notif_batch),
            web.get("/notif/{notification_id}", get_notif),
            web.post("/template", post_template),
            web.post("/users", post_users),
            web.post("/users/bulk", post_users_bulk),
            web.get("/healthz", healthz),
            web.get("/ready", ready),
        ]
    )
    install_webhooks(app)
    install_promo(app)
    install_ui(app)  # the dashboard at /ui (web/ui.py)
    install_metrics(app)
    install_openapi(app)  # GET /openapi.json and /docs, public (web/openapi.py)
    for route in app.router.routes():  # a route without a scope would answer anyone
        handler = route.handler
        assert getattr(handler, "public", False) or getattr(handler, "scope", None), f"{route}: no scope"

    async def lifecycle(app: web.Application) -> Any:
        await ensure_topics(settings.bootstrap_servers, list(specs.values()))
        app[PRODUCER] = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            linger_ms=1,
            max_batch_size=settings.producer_max_batch_bytes,
            max_request_size=2 * 1024 * 1024,
        )
        await app[PRODUCER].start()
        app[PRODUCER_PROBE] = ProducerProbe(app[PRODUCER])
        app[REQUESTS] = PartitionBatcher(
            app[PRODUCER], specs["critical.requests"].topic, specs["critical.requests"].partitions
        )
        app[REQUESTS].start()
        app[TEMPLATES] = TemplatesView(settings.bootstrap_servers, specs["templates"].topic, settings.broker_quirks)
        await app[TEMPLATES].start()
        app[KEYS] = KeysView(settings.bootstrap_servers, specs["api_keys"].topic, settings.broker_quirks)
        await app[KEYS].start()
        app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        yield
        await app[HTTP].close()
        await app[KEYS].stop()
        await app[TEMPLATES].stop()
        await app[REQUESTS].stop()
        await app[PRODUCER].stop()

    app.cleanup_ctx.append(lifecycle)
    return app
