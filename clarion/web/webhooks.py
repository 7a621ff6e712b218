"""POST /webhooks/twilio and /webhooks/ses: provider feedback in, as Feedback records on Kafka.

Webhooks carry no API key: each is authenticated by its provider's signature (public
routes that check it themselves). A verified item goes to the `feedback` topic on the
partition its notification id names (`n<partition>_…`), where its status lives. Items
whose id names no partition (ids clarion's API did not make) are acknowledged and
dropped with a log line: looking them up would mean asking every worker, for records
that only replays and hand-produced requests create. Providers retry what is not 2xx,
so anything clarion will never be able to use is acknowledged too; only a bad signature
(403), a malformed body (400/413/415) or a broker that does not take the record (503,
so the provider retries) is not.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from clarion.feedback import campaign_owner, sns, twilio
from clarion.feedback import ses as ses_events
from clarion.logs import event
from clarion.providers.base import OWNER_FIELDS
from clarion.schemas.codec import encode
from clarion.schemas.records import Feedback
from clarion.schemas.validation import is_id
from clarion.tables.status import partition_of
from clarion.web.context import HTTP, PARTITIONS, PRODUCER, SETTINGS, TOPICS, Rejected, json_response, public

log = logging.getLogger("clarion.webhooks")
MAX_TWILIO_BYTES = 16 * 1024  # a status callback is well under 2 KB
MAX_SNS_BYTES = 300 * 1024  # SNS messages are at most 256 KB
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:@-]{1,200}")
CERTS = web.AppKey("sns_certificates", sns.CertificateCache)
SHARED_KEYS = web.AppKey("twilio_shared_keys", dict[str, str])


async def _raw(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, f"request body is over the {limit} byte limit", "body")
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise Rejected(415, "send the body uncompressed", "body")
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(16 * 1024):
            body += chunk
            if len(body) > limit:
                raise Rejected(413, f"request body is over the {limit} byte limit", "body")
    except (aiohttp.ClientPayloadError, web.RequestPayloadError, ConnectionResetError) as exc:
        raise Rejected(400, f"the body cannot be read: {exc}", "body") from None
    return bytes(body)


def public_url(request: web.Request) -> str:
    """The URL the provider called: webhook_base_url + the path and query as received."""
    base = request.app[SETTINGS].webhook_base_url.rstrip("/")
    return (base or f"{request.scheme}://{request.host}") + request.raw_path


async def _produce(request: web.Request, item: Feedback) -> bool:
    """Put `item` on the feedback partition its notification id names; False when it names none."""
    partition = partition_of(item.notification_id)
    well_formed = is_id(item.notification_id) and DELIVERY_ID.fullmatch(item.delivery_id)
    if partition is None or partition >= request.app[PARTITIONS] or not well_formed:
        event(log, "feedback for an id that names no partition dropped", logging.WARNING,
              notification_id=item.notification_id[:200], delivery_id=item.delivery_id[:200])  # fmt: skip
        return False
    topic = request.app[TOPICS]["feedback"]
    try:
        await request.app[PRODUCER].send_and_wait(
            topic, value=encode(item), key=item.notification_id.encode(), partition=partition
        )
    except KafkaError as exc:
        raise Rejected(503, f"the broker did not take the feedback: {type(exc).__name__}") from None
    return True


@public  # authenticated by X-Twilio-Signature
async def twilio_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    raw = await _raw(request, MAX_TWILIO_BYTES)
    try:
        params = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise Rejected(400, "the body is not a form (application/x-www-form-urlencoded)", "body") from None
    url, given = public_url(request), request.headers.get("X-Twilio-Signature", "")
    shared = request.headers.get(twilio.SETTINGS_HEADER)
    if shared is None:  # signed with the auth token: either account's messages
        secrets, algorithm = [settings.twilio_auth_token, settings.twilio_fallback_auth_token], "HMAC_SHA1"
    else:  # signed with a SharedKey of a Webhook Setting: only that key's secret, with its algorithm
        key_id, algorithm = twilio.signature_settings(shared)
        secrets = [request.app[SHARED_KEYS].get(key_id, "")]
    if not any(twilio.valid_signature(url, params, secret, given, algorithm) for secret in secrets):
        event(log, "Twilio webhook with a bad signature refused", logging.WARNING, url=url[:300],
              signature_settings=(shared or "")[:200])  # fmt: skip
        return json_response(403, {"error": "invalid X-Twilio-Signature", "errors": [
            {"field": "X-Twilio-Signature", "error": "not Twilio's signature of this URL and body"}]})  # fmt: skip
    nid, did = request.query.get("nid", ""), request.query.get("did", "")
    owner = campaign_owner(*(request.query.get(name, "") for name in OWNER_FIELDS))
    item = twilio.feedback_from(nid, did, dict(params), owner=owner)
    if item is None:
        return json_response(200, {"ignored": "not a final status"})
    produced = await _produce(request, item)
    return json_response(202 if produced else 200, {"feedback": int(produced)})


async def _fetch_certificate(app: web.Application, url: str) -> bytes:
    try:
        async with app[HTTP].get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise sns.Rejected(f"the SigningCertURL answered {resp.status}")
            if resp.content_length is not None and resp.content_length > sns.MAX_CERT_BYTES:
                raise sns.Rejected("the certificate is too large")
            pem = await resp.content.read(sns.MAX_CERT_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Rejected(503, f"the SNS certificate could not be fetched: {type(exc).__name__}") from None
    if len(pem) > sns.MAX_CERT_BYTES:
        raise sns.Rejected("the certificate is too large")
    return pem


@public  # authenticated by the SNS message signature
async def ses_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    raw = await _raw(request, MAX_SNS_BYTES)
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, f"not valid JSON: {exc}", "body") from None
    if not isinstance(message, dict):
        raise Rejected(400, "an SNS message is a JSON object", "body")
    try:
        await sns.verify(message, request.app[CERTS])
    except sns.Rejected as exc:
        event(log, "SNS message refused", logging.WARNING, reason=str(exc))
        errors = [{"field": "Signature", "error": str(exc)}]
        return json_response(403, {"error": f"invalid SNS message: {exc}", "errors": errors})
    topic = message["TopicArn"]
    allowed = {arn.strip() for arn in settings.sns_topic_arns.split(",") if arn.strip()}
    if topic not in allowed:
        event(log, "SNS message from a topic not in CLARION_SNS_TOPIC_ARNS ignored", logging.WARNING, topic=topic[:300])
        return json_response(200, {"ignored": "topic not allowed"})
    if message["Type"] == "SubscriptionConfirmation":
        return await _confirm(request, message)
    if message["Type"] != "Notification":
        return json_response(200, {"ignored": message["Type"]})
    try:
        items = ses_events.feedback_from(orjson.loads(message["Message"]))
    except (orjson.JSONDecodeError, ses_events.NotOurs) as exc:
        event(log, "SES event without clarion's ids ignored", logging.WARNING, reason=str(exc)[:200])
        return json_response(200, {"ignored": "not a clarion SES event"})
    produced = 0
    for item in items:
        produced += await _produce(request, item)
    return json_response(202 if produced else 200, {"feedback": produced})


async def _confirm(request: web.Request, message: dict[str, Any]) -> web.Response:
    """Subscribe to an allowed topic by visiting its SubscribeURL (only on SNS's own host)."""
    url = message["SubscribeURL"]
    if not sns.allowed_url(url, request.app[SETTINGS].sns_host_pattern):
        event(log, "SNS SubscribeURL not on an SNS host: not visited", logging.WARNING, url=url[:300])
        return json_response(200, {"ignored": "SubscribeURL not on an SNS host"})
    try:
        async with request.app[HTTP].get(url, allow_redirects=False) as resp:
            confirmed = resp.status == 200
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Rejected(503, f"the subscription could not be confirmed: {type(exc).__name__}") from None
    event(log, "SNS subscription confirmed" if confirmed else "SNS subscription confirmation refused",
          topic=message["TopicArn"][:300], status=resp.status)  # fmt: skip
    return json_response(200, {"confirmed": confirmed})


def install_webhooks(app: web.Application) -> None:
    """Add the webhook routes to the API, with the SNS certificate cache they share."""
    app[CERTS] = sns.CertificateCache(app[SETTINGS].sns_host_pattern, lambda url: _fetch_certificate(app, url))
    app[SHARED_KEYS] = twilio.shared_keys(app[SETTINGS].twilio_webhook_shared_keys)
    app.add_routes([web.post("/webhooks/twilio", twilio_webhook), web.post("/webhooks/ses", ses_webhook)])
