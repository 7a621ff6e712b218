"""What the public API's route modules share: the application's keys, the request helpers, the scope marks.

web/api.py creates the application and installs the other modules' routes; they take what they
share with it from here, so that none of them imports web/api.py (nor does this module import any
of them).
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from clarion.logs import event
from clarion.schemas.records import TemplateVersion
from clarion.schemas.validation import ValidationFailed
from clarion.tables.api_keys import Caller, KeysView
from clarion.tables.templates import RenderError, render
from clarion.tables.templates_view import TemplatesView
from clarion.topology.settings import Settings
from clarion.web.batcher import PartitionBatcher
from clarion.web.health import ProducerProbe

log = logging.getLogger("clarion.api")
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


def json_response(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def error_response(status: int, error: str, field: str | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"error": error, **extra}
    if field:
        body["errors"] = [{"field": field, "error": error}]
    return json_response(status, body)


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


async def read_body(request: web.Request, limit: int | None = None) -> Any:
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


def caller_of(request: web.Request, body: Any) -> Caller:
    """The API key's caller; a body naming another client_id is refused."""
    caller: Caller = request[CALLER]
    claim(body, caller)
    return caller


def claim(body: Any, caller: Caller) -> None:
    """Refuse (403) a body naming a client_id other than the caller's."""
    if isinstance(body, dict) and "client_id" in body and body["client_id"] != caller.client_id:
        raise Rejected(403, "client_id is not the API key's client (leave it out: the key names the client)",
                       "client_id")  # fmt: skip


def check_render(template: TemplateVersion, channel: str, params: dict[str, Any]) -> None:
    """Render once to refuse params that do not render (422), whatever the template raises."""
    try:
        render(template, channel, params)
    except RenderError as exc:
        raise Rejected(422, f"params do not render: {exc}", "params") from None
    except Exception as exc:  # e.g. {{ 1/0 }} or {{ n + "x" }}: the template and params, not the server, are at fault
        event(log, "template raised while rendering", level=logging.WARNING, template=template.key, exc=repr(exc))
        raise Rejected(422, f"params do not render: {type(exc).__name__}: {exc}"[:500], "params") from None


async def produce(request: web.Request, name: str, key: str, value: bytes) -> RecordMetadata:
    """Write one record to the topic the API calls `name`; 503 when the broker does not take it."""
    try:
        return await request.app[PRODUCER].send_and_wait(request.app[TOPICS][name], value=value, key=key.encode())
    except KafkaError as exc:
        raise Rejected(503, f"the broker did not take the request: {type(exc).__name__}") from None
