"""What the OpenAPI description says of each route beyond its schemas: summary, body, answers, extra rules.

Keyed by (method, path) as aiohttp names the route (`resource.canonical`). Security is not here: it is
read from the handler's own mark (@requires(scope) or @public), the one the auth middleware obeys.
Bodies and answers name Structs of schemas/requests.py and schemas/responses.py; other media types
(JSON lines, forms, HTML, Prometheus text) give their schema inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from clarion.providers.base import OWNER_FIELDS
from clarion.schemas import requests as rq
from clarion.schemas import responses as rs
from clarion.schemas.requests import Beyond

# A Struct: application/json with its component schema; a dict: media type -> schema; None: no body.
Content = type[msgspec.Struct] | dict[str, dict[str, Any]] | None


class Param(NamedTuple):
    name: str
    where: str  # query | header | path
    schema: dict[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Op:
    summary: str
    tag: str
    body: Content = None
    answers: dict[int, tuple[str, Content]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)  # answered with Error, beyond those every route has
    beyond: tuple[Beyond, ...] = ()  # rules of this route besides its body's
    params: tuple[Param, ...] = ()
    description: str = ""


def _schema(annotation: Any) -> dict[str, Any]:
    return msgspec.json.schema(annotation)


ID_PARAM = _schema(rq.PathId)
PATH_PARAMS = {
    "notification_id": Param("notification_id", "path", ID_PARAM, True, "as POST /notif answered it"),
    "campaign_id": Param("campaign_id", "path", ID_PARAM, True),
    "action": Param("action", "path", {"enum": ["pause", "resume", "cancel"]}, True),
    "template_id": Param("template_id", "path", {"type": "string"}, True),
    "version": Param("version", "path", {"type": "string", "pattern": "^(latest|[0-9]{1,9})$"}, True),
}
JSON_OBJECT: dict[str, dict[str, Any]] = {"application/json": {"type": "object"}}
UNKNOWN_TEMPLATE = (
    Beyond("template_id", 404, "names a template of the key's client"),
    Beyond("template_version", 404, "names a version of that template"),
    Beyond("channels", 422, "the template has content for every channel"),
    Beyond("params", 422, "the template renders with them"),
)
WORKER = "no worker answered; retry"
BROKER = "the broker did not take it; retry"

OPERATIONS: dict[tuple[str, str], Op] = {
    ("POST", "/notif"): Op(
        "Send a notification", "notifications", rq.NotificationBody,
        {202: ("On the broker: the worker takes it from there", rs.NotificationAccepted)},
        {404: "unknown template or version", 422: "the template has no content for a channel, or does not render",
         503: BROKER},
        UNKNOWN_TEMPLATE,
        description="A 202 means the request is on Kafka (acks=all). Idempotent per client by idempotency_key.",
    ),
    ("POST", "/notif/batch"): Op(
        "Send up to max_batch_items notifications", "notifications", rq.NotificationBatchBody,
        {200: ("Each item's result, in order (202, or what POST /notif would have answered)", rs.BatchAccepted)},
        {503: BROKER},
        (Beyond("notifications", 200, "an item is checked as POST /notif checks it; a bad one is refused in its "
                                      "result, not with the request"),),
    ),
    ("GET", "/notif/{notification_id}"): Op(
        "A notification's status", "notifications", None,
        {200: ("Its status and each delivery's", rs.NotificationStatus)},
        {404: "unknown id, or another client's", 503: WORKER},
    ),
    ("POST", "/template"): Op(
        "Publish a template version", "templates", rq.TemplateBody,
        {201: ("Published", rs.TemplateSaved), 200: ("The same version with the same content: nothing changed",
                                                     rs.TemplateSaved)},
        {409: "this version exists with other content", 422: "too many versions or templates", 503: BROKER},
        (Beyond("version", 409, "a version is immutable: the same content, or a new version"),
         Beyond("version", 422, "a template has at most max_template_versions versions"),
         Beyond("template_id", 422, "a client has at most max_templates templates")),
    ),
    ("POST", "/users"): Op(
        "Create or replace a user", "users", rq.UserBody, {202: ("On the broker", rs.UserAccepted)}, {503: BROKER}
    ),
    ("POST", "/users/bulk"): Op(
        "Create or replace many users (JSON lines)", "users",
        {"application/x-ndjson": {"type": "string", "description": "One UserBody per line (blank lines skipped)"}},
        {200: ("How many lines were accepted and rejected, with the first errors", rs.BulkUsers),
         413: ("Over 100,000 lines or 64 MiB: the lines before the limit were read", rs.BulkTooLarge)},
        {415: "not Content-Type application/x-ndjson, or compressed", 503: BROKER},
        (Beyond("body", 200, "a line is checked as POST /users checks a body; a bad one is counted in rejected"),),
    ),
    ("POST", "/promo"): Op(
        "Start or schedule a campaign", "campaigns", rq.CampaignBody,
        {202: ("On the broker; the same campaign_id again changes nothing", rs.CampaignAccepted)},
        {404: "unknown template or version", 422: "audience.where does not parse, or the template lacks a channel "
         "or does not render", 503: BROKER},
        UNKNOWN_TEMPLATE,
    ),
    ("GET", "/promo/{campaign_id}"): Op(
        "A campaign's state and counters", "campaigns", None, {200: ("Its state and counters", rs.CampaignStatus)},
        {404: "unknown campaign, or another client's", 503: WORKER},
    ),
    ("POST", "/promo/{campaign_id}/{action}"): Op(
        "Pause, resume or cancel a campaign", "campaigns", None,
        {202: ("The command is on the broker", rs.CampaignActionAccepted)},
        {404: "unknown campaign or action", 503: WORKER},
    ),
    ("POST", "/audiences/preview"): Op(
        "Count an audience", "campaigns", rq.AudiencePreviewBody,
        {200: ("How many of the key's users it holds, and a sample of their ids", rs.AudiencePreview)},
        {422: "audience.where does not parse", 503: WORKER},
    ),
    ("GET", "/healthz"): Op("Liveness", "operations", None, {200: ("The process answers", rs.Health)}),
    ("GET", "/ready"): Op(
        "Readiness", "operations", None,
        {200: ("Producer, templates and API keys ready", rs.Ready), 503: ("What is not ready yet", rs.Ready)},
    ),
    ("GET", "/metrics"): Op(
        "Prometheus metrics", "operations", None,
        {200: ("Prometheus text format", {"text/plain": {"type": "string"}})},
    ),
    ("GET", "/openapi.json"): Op(
        "This description", "operations", None, {200: ("OpenAPI 3.1", JSON_OBJECT)},
    ),
    ("GET", "/docs"): Op(
        "This description as a page", "operations", None, {200: ("HTML", {"text/html": {"type": "string"}})},
    ),
    ("POST", "/webhooks/twilio"): Op(
        "Twilio message status callbacks", "webhooks",
        {"application/x-www-form-urlencoded": _schema(rs.TwilioStatusCallback)},
        {200: ("Acknowledged: not a final status, or no notification of clarion's", rs.WebhookAnswer),
         202: ("Feedback produced", rs.WebhookAnswer)},
        {403: "not Twilio's signature of this URL and body", 503: BROKER},
        params=(Param("X-Twilio-Signature", "header", {"type": "string"}, True),
                Param("nid", "query", {"type": "string"}, description="the notification id clarion set"),
                Param("did", "query", {"type": "string"}, description="the delivery id clarion set"),
                *(Param(name, "query", {"type": "string"}, description=f"a campaign message's {name} id clarion set")
                  for name in OWNER_FIELDS)),
        description="Authenticated by X-Twilio-Signature, not by an API key: any other caller gets 403.",
    ),
    ("POST", "/webhooks/ses"): Op(
        "Amazon SNS notifications of SES events", "webhooks", {"application/json": _schema(rs.SnsMessage)},
        {200: ("Acknowledged: a topic not allowed, a confirmation, or no event of clarion's", rs.WebhookAnswer),
         202: ("Feedback produced", rs.WebhookAnswer)},
        {403: "not a message signed by SNS", 503: "the certificate or the broker did not answer; retry"},
        description="Authenticated by the SNS message signature, not by an API key: any other caller gets 403.",
    ),
    # The dashboard (web/ui.py, web/ui_data.py): public files (web/openapi.py describes each), and JSON
    # endpoints behind the key.
    ("GET", "/ui/"): Op("The dashboard's other address", "dashboard", None, {302: ("To /ui", None)}),
    ("GET", "/ui/api/me"): Op("The key's client and scopes", "dashboard", None, {200: ("", JSON_OBJECT)}),
    ("GET", "/ui/api/lanes"): Op("Outcomes per lane", "dashboard", None, {200: ("", JSON_OBJECT)}),
    ("GET", "/ui/api/outcomes"): Op(
        "Recent outcomes", "dashboard", None, {200: ("", JSON_OBJECT)}, {400: "limit is not a number"},
        params=(Param("limit", "query", {"type": "string", "description": "1-500"}),
                *(Param(name, "query", {"type": "string"}) for name in ("status", "channel", "lane",
                                                                        "notification_id"))),
    ),
    ("GET", "/ui/api/dlq"): Op("Recent dead letters", "dashboard", None, {200: ("", JSON_OBJECT)}),
    ("POST", "/ui/api/dlq/replay"): Op(
        "Replay dead letters", "dashboard", rq.DeadLetterReplayBody, {200: ("", JSON_OBJECT)},
        {404: "an id unknown for this key", 409: "no Redis ledger: use the CLI", 422: "not replayable here"},
    ),
    ("GET", "/ui/api/templates"): Op("The key's templates", "dashboard", None, {200: ("", JSON_OBJECT)}),
    ("GET", "/ui/api/templates/{template_id}/{version}"): Op(
        "One template version", "dashboard", None, {200: ("", JSON_OBJECT)}, {404: "unknown template or version"},
    ),
    ("POST", "/ui/api/templates/preview"): Op(
        "Render a template", "dashboard", rq.TemplatePreviewBody, {200: ("", JSON_OBJECT)},
        {404: "unknown template or version", 422: "does not render with these params"},
    ),
    **{
        ("GET", f"/ui/api/{table}"): Op(
            f"A page of the {table} table (personal fields masked)", "dashboard", None, {200: ("", JSON_OBJECT)},
            {503: WORKER},
            params=(Param("after", "query", {"type": "string"}), Param("limit", "query", {"type": "string"})),
        )
        for table in ("users", "suppressed", "campaigns")
    },
}
