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
import secrets
import time
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
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
from clarion.tables.templates import check_template, resolve
from clarion.tables.templates_view import TemplatesView
from clarion.topology.admin import ensure_topics_when_reachable
from clarion.topology.catalog import catalog
from clarion.topology.partitioning import partition_for
from clarion.topology.settings import Settings
from clarion.web.batcher import PartitionBatcher
from clarion.web.context import (
    CALLER,
    HTTP,
    KEYS,
    PARTITIONS,
    PRODUCER,
    PRODUCER_PROBE,
    REQUESTS,
    SETTINGS,
    TEMPLATES,
    TOPICS,
    Rejected,
    caller_of,
    check_render,
    claim,
    error_response,
    json_response,
    produce,
    public,
    read_body,
    requires,
    trace_id_of,
)
from clarion.web.health import ProducerProbe, view_check
from clarion.web.metrics import install_metrics
from clarion.web.openapi import install_openapi
from clarion.web.promo import install_promo
from clarion.web.ui import install_ui
from clarion.web.users_bulk import post_users_bulk
from clarion.web.webhooks import install_webhooks

log = logging.getLogger("clarion.api")
STARTED = time.monotonic()


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error is JSON: ours, aiohttp's own (404, 405, 413) and, last, a server fault."""
    try:
        return await handler(request)
    except ValidationFailed as exc:
        return json_response(400, {"error": "invalid request", "errors": exc.errors})
    except Rejected as exc:
        return json_response(exc.status, exc.body())
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_batch_request_bytes
        return error_response(413, f"request body is over the {limit} byte limit", "body")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(500, "internal error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Authenticate every request to a route; the scope is the route handler's."""
    if request.match_info.http_exception is not None or getattr(handler, "public", False):
        return await handler(request)  # 404 and 405 say nothing about anyone's data
    try:
        request[CALLER] = await request.app[KEYS].authenticate(request.headers.get("Authorization"), handler.scope)
    except AuthError as exc:
        resp = error_response(exc.status, exc.error, "Authorization")
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="clarion"'
        return resp
    return await handler(request)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        resp = error_response(405, f"method {request.method[:20]} is not allowed here; allowed: {allowed}", "method")
        resp.headers["Allow"] = allowed
        return resp
    if isinstance(exc, web.HTTPNotFound):
        return error_response(404, "no such endpoint", "path")
    return error_response(exc.status, exc.reason.lower())


def accept_notification(
    app: web.Application, body: Any, caller: Caller, trace_id: str, now: float
) -> NotificationRequest:
    """Validate one POST /notif body into a request; ValidationFailed or Rejected when it is not."""
    claim(body, caller)
    fields = validate_notification(body, caller.client_id, now)
    template = resolve(app[TEMPLATES], caller.client_id, fields["template_id"], fields["template_version"])
    if template is None:
        field = "template_version" if fields["template_version"] else "template_id"
        raise Rejected(404, f"unknown template {fields['template_id']}@{fields['template_version'] or 'latest'}", field)
    missing = [ch for ch in fields["channels"] if ch not in template.channels()]
    if missing:
        raise Rejected(422, f"template {template.ref} has no content for {', '.join(missing)}", "channels")
    for channel in fields["channels"]:
        check_render(template, channel, fields["params"])
    user_key = scoped(caller.client_id, fields["user_id"])
    nid = new_notification_id(partition_for(user_key, app[PARTITIONS]), secrets.token_hex(16))
    # The worker routes it only once its own templates view has read this version.
    templates_at = app[TEMPLATES].offset_of(template.key)
    return NotificationRequest(
        notification_id=nid, trace_id=trace_id, accepted_at=now, templates_at=templates_at, **fields
    )


async def _enqueue(app: web.Application, requests: list[NotificationRequest]) -> None:
    try:
        await app[REQUESTS].submit([(req.user_key, encode(req)) for req in requests])
    except KafkaError as exc:
        raise Rejected(503, f"the broker did not take the request: {type(exc).__name__}") from None


@requires("send")
async def post_notif(request: web.Request) -> web.Response:
    body = await read_body(request)
    trace_id = trace_id_of(request)
    req = accept_notification(request.app, body, request[CALLER], trace_id, time.time())
    await _enqueue(request.app, [req])
    if log.isEnabledFor(logging.DEBUG):
        with log_context(trace_id=trace_id, client_id=req.client_id, user_id=req.user_id):
            event(log, "notification accepted", level=logging.DEBUG, notification_id=req.notification_id)
    return json_response(202, {"notification_id": req.notification_id, "status": "accepted", "trace_id": trace_id})


@requires("send")
async def post_notif_batch(request: web.Request) -> web.Response:
    """Up to `max_batch_items` notifications in one request, each validated like POST /notif."""
    settings = request.app[SETTINGS]
    body = await read_body(request, settings.max_batch_request_bytes)
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
    return json_response(200, body)


@requires("templates")
async def post_template(request: web.Request) -> web.Response:
    body = await read_body(request)
    template = validate_template(body, caller_of(request, body).client_id)
    check_template(template)
    view = request.app[TEMPLATES]
    existing = view.get(template.key)
    if existing is not None:
        if existing == template:
            answer = {"template_id": template.template_id, "version": template.version, "created": False}
            return json_response(200, answer)
        error = f"template {template.ref} exists with other content; versions are immutable"
        return error_response(409, error, "version")
    _check_room(request.app, template)
    written = await produce(request, "templates", template.key, encode(template))
    view.add(template, written.offset)  # requests checked against it carry this offset
    return json_response(201, {"template_id": template.template_id, "version": template.version, "created": True})


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
    body = await read_body(request)
    user = validate_user(body, caller_of(request, body).client_id)
    await produce(request, "users", user.key, encode(user))
    return json_response(202, {"user_id": user.user_id})


@requires("read")
async def get_notif(request: web.Request) -> web.Response:
    nid = request.match_info["notification_id"]
    if not is_id(nid):  # never asked of a worker: "..", "/" or "?" must not reach another worker page
        errors = [{"field": "notification_id", "error": ID_ERROR}]
        return json_response(404, {"error": "unknown notification_id", "errors": errors})
    url = URL(f"{request.app[SETTINGS].status_url}/status/{quote(nid, safe='')}/", encoded=True)
    try:
        # the worker checks the same key, and answers 404 for another client's notification
        async with request.app[HTTP].get(url, headers={"Authorization": request.headers["Authorization"]}) as resp:
            body = await resp.read()
    except aiohttp.ClientError as exc:
        return error_response(503, f"no worker answered for status: {type(exc).__name__}")
    if resp.status not in (200, 401, 403, 404):
        return error_response(503, f"the worker answered {resp.status} for status")
    return web.Response(status=resp.status, body=body, content_type="application/json")


@public
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Nothing else is asked (see /ready)."""
    uptime_s = round(time.monotonic() - STARTED, 1)
    return json_response(200, {"ok": True, "checks": {"process": {"ok": True, "uptime_s": uptime_s}}})


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
    return json_response(200 if ok else 503, {"ready": ok, "checks": checks})


def create_api(settings: Settings) -> web.Application:
    """The API application; its startup connects the producer and reads the templates."""
    if not settings.status_url:
        settings = replace(settings, status_url=f"http://{settings.web_host}:{settings.web_port}")
    # auto_decompress off: aiohttp's own decoding answers some bad bodies in text/plain before any handler runs
    # and waits forever on a truncated deflate stream; compressed bodies are refused (415) in read_body instead.
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
        await ensure_topics_when_reachable(settings.bootstrap_servers, list(specs.values()))
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
