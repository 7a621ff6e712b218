"""Twilio-shaped endpoint: POST /2010-04-01/Accounts/{sid}/Messages.json, as strict as the real one.

Basic auth is checked against the simulator's Account SID and auth token, the account in
the path must be that account, the form is validated like Twilio does (codes 21602-21705),
and Twilio's magic test numbers fail the way they fail with test credentials. Status
callbacks (callbacks.py, when enabled) follow each accepted message; the magic To numbers
in callbacks.UNDELIVERED are accepted and then reported undelivered or failed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from multidict import MultiDictProxy

from clarion.providers.simulator.callbacks import CallbacksHost
from clarion.providers.simulator.core import json_response as _json
from clarion.topology.settings import Settings

# The credentials the simulator expects by default: what pointed_at_simulator configures.
ACCOUNT_SID = Settings.twilio_account_sid
AUTH_TOKEN = "sim-token"

E164 = re.compile(r"\+[1-9]\d{1,14}")
SHORT_CODE = re.compile(r"\d{5,6}")
ALPHANUMERIC_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
MAX_BODY = 1600
MAX_VALIDITY_S = 36_000

# Twilio's magic test numbers (https://www.twilio.com/docs/iam/test-credentials): number -> (code, message).
BAD_FROM = "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID."
MAGIC_FROM = {
    "+15005550001": (21212, BAD_FROM),
    "+15005550007": (
        21606,
        "The 'From' phone number provided ({from_}) is not a valid message-capable Twilio phone number "
        "for this destination.",
    ),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum number of queued messages."),
}
MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {from_} via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "To number: {to}, is not a mobile number"),
}

# GSM 03.38: the basic set costs one septet, the extension set two; anything else makes the body UCS-2.
GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = set("^{}\\[~]|€\f")


class TwilioHost(CallbacksHost, Protocol):
    """What this module uses of the simulator: the credentials requests must carry, and its callbacks
    (status callbacks)."""

    twilio_account_sid: str


def routes(sim: TwilioHost) -> list[web.RouteDef]:
    """The endpoints this module serves on the simulator's app."""
    return [web.post("/2010-04-01/Accounts/{sid}/Messages.json", partial(twilio, sim))]


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Twilio's error body."""
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    return _json(status, {"code": code, "message": message, "more_info": more_info, "status": status}, headers)


def authorized(header: str, account_sid: str, auth_token: str) -> bool:
    """Whether an Authorization header carries exactly `account_sid:auth_token` (HTTP basic)."""
    if header[:6] != "Basic ":
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user.encode(), account_sid.encode()) & hmac.compare_digest(
        password.encode(), auth_token.encode()
    )


def is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in (parts.hostname or "")


def valid_sender(value: str) -> bool:
    return bool(E164.fullmatch(value) or SHORT_CODE.fullmatch(value) or ALPHANUMERIC_ID.fullmatch(value))


def segments(body: str) -> int:
    """SMS segments of `body`: 160/153 GSM-7 septets, or 70/67 UCS-2 code units."""
    if all(c in GSM_BASIC or c in GSM_EXTENDED for c in body):
        size, single, multi = sum(2 if c in GSM_EXTENDED else 1 for c in body), 160, 153
    else:
        size, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if size <= single else -(-size // multi)


def problem(form: MultiDictProxy[Any]) -> tuple[int, str] | None:
    """The first reason Twilio would refuse this Messages form: (code, message), or None."""
    to, from_ = str(form.get("To", "")), str(form.get("From", ""))
    service, body = str(form.get("MessagingServiceSid", "")), str(form.get("Body", ""))
    media = [str(url) for url in form.getall("MediaUrl", [])]
    callback, validity = str(form.get("StatusCallback", "")), str(form.get("ValidityPeriod", ""))
    if not to:
        return 21604, "A 'To' phone number is required."
    if not E164.fullmatch(to.removeprefix("whatsapp:")):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if not from_ and not service:
        return 21603, "A 'From' phone number is required."
    if from_ and not valid_sender(from_.removeprefix("whatsapp:")):
        return 21212, BAD_FROM.format(from_=from_)
    if service and not MESSAGING_SERVICE_SID.fullmatch(service):
        return 21705, f"The Messaging Service Sid {service} is invalid."
    if not body and not media:
        return 21602, "Message body is required."
    if len(body) > MAX_BODY:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    if not all(is_url(url) for url in media):
        return 21620, "Invalid media URL(s)"
    if callback and (len(callback) > 4000 or not is_url(callback)):
        return 21609, f"The StatusCallback URL {callback} is not a valid URL."
    if validity and not (validity.isdigit() and 1 <= int(validity) <= MAX_VALIDITY_S):
        return 21624, "Invalid validity period value"
    if (fault := MAGIC_FROM.get(from_)) or (fault := MAGIC_TO.get(to)):
        return fault[0], fault[1].format(to=to, from_=from_)
    return None


def message_resource(receipt: dict[str, Any], account_sid: str, form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The Message resource Twilio answers a create with."""
    sid = f"SM{receipt['seq']:032x}"
    now = format_datetime(datetime.fromtimestamp(receipt["at"], UTC))
    uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}"
    body, from_ = str(form.get("Body", "")), form.get("From")
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": str(len(form.getall("MediaUrl", []))),
        "num_segments": str(segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued" if from_ else "accepted",  # a Messaging Service picks the sender later
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": form["To"],
        "uri": f"{uri}.json",
    }


async def twilio(sim: TwilioHost, request: web.Request) -> web.Response:
    if not authorized(request.headers.get("Authorization", ""), sim.twilio_account_sid, sim.twilio_auth_token):
        return error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})
    sid = request.match_info["sid"]
    if sid != sim.twilio_account_sid:
        return error(404, 20404, f"The requested resource {request.path} was not found")
    form = await request.post()
    if (refused := problem(form)) is not None:
        code, message = refused
        to = str(form.get("To", ""))
        sim.state.rejected.append({"channel": "sms", "address": to, "kind": "invalid", "code": code})
        return error(400, code, message)
    query = parse_qs(urlsplit(str(form.get("StatusCallback", ""))).query)
    meta = {
        "nid": query.get("nid", [None])[0],
        "did": query.get("did", [None])[0],
        "body": str(form.get("Body", "")),
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
    }
    def accepted(receipt: dict[str, Any]) -> web.Response:
        resource = message_resource(receipt, sid, form)
        sim.callbacks.twilio_accepted(sim, resource, str(form.get("StatusCallback", "")))
        return _json(201, resource)

    return await sim._answer("sms", str(form["To"]), meta, accepted)
