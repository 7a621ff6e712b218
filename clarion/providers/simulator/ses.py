"""SES v2-shaped endpoint: POST /v2/email/outbound-emails, as strict as the real one.

Requests must be SigV4-signed (service `ses`, any region) with the simulator's access key
and secret, and carry its session token when it has one; x-amz-date within 5 minutes.
Refusals are SES's: 403 SignatureDoesNotMatch (with the canonical request SES expected),
InvalidSignatureException (clock), UnrecognizedClientException (unknown key or token),
ExpiredTokenException (a token `SesAccount.rotate` retired). The body is checked like SES
does: Content with Simple or Raw (Template answers 400 NotImplemented here), at least one
and at most 50 recipients (To, Cc and Bcc), messages up to 40 MB, tag names and values of
[A-Za-z0-9_-] up to 256 characters. One receipt per accepted call (SES gives one MessageId
per call): its `address` is the first recipient (injected faults match on it), `recipients`
all of them. SES's mailbox simulator addresses (label suffixes allowed, e.g.
bounce+1@simulator.amazonses.com): success, ooto and bounce/complaint are accepted, the
latter two recorded in the receipt's `feedback` ({address: "bounce"|"complaint"}) for the
notifications SES sends later; suppressionlist is refused with 400 MessageRejected at once
(real SES accepts it and reports the bounce later).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from email.utils import getaddresses, parseaddr
from functools import partial
from typing import Any, Protocol
from urllib.parse import quote

import orjson
from aiohttp import web

from clarion.providers.ses import TAG_CHARS, TAG_MAX, decode_tag
from clarion.providers.simulator.callbacks import CallbacksHost
from clarion.providers.simulator.core import json_response as _json
from clarion.topology.settings import Settings

# The credentials the simulator expects by default: what pointed_at_simulator configures.
ACCESS_KEY = "AKIDSIMULATOR"
SECRET_KEY = "sim-secret"

MAX_SKEW_S = 300
MAX_MESSAGE_BYTES = 40 * 1024 * 1024
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a 40 MB raw message, base64 in JSON
MAX_RECIPIENTS = 50
MAILBOX_SIMULATOR = "simulator.amazonses.com"
FEEDBACK_TAGS = ("ses:feedback-id-a", "ses:feedback-id-b")  # the only names outside the alphabet SES takes
CORAL = "http://internal.amazon.com/coral/com.amazon.coral.service/"
SES_ERRORS_URI = "http://internal.amazon.com/coral/com.amazonaws.services.email/"


@dataclass
class SesAccount:
    """The credentials SES requests must be signed with."""

    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    session_token: str = ""  # when set, requests must carry it (x-amz-security-token)
    expired_tokens: set[str] = field(default_factory=set)

    def rotate(self, access_key: str, secret_key: str, session_token: str = "") -> None:
        """New credentials, as an STS refresh would issue; the old session token now answers ExpiredToken."""
        if self.session_token:
            self.expired_tokens.add(self.session_token)
        self.access_key, self.secret_key, self.session_token = access_key, secret_key, session_token


class SesHost(CallbacksHost, Protocol):
    """What this module uses of the simulator: the credentials requests must be signed with, and its
    callbacks (SES events over SNS)."""

    ses_account: SesAccount


def routes(sim: SesHost) -> list[web.RouteDef]:
    """The endpoints this module serves on the simulator's app."""
    return [
        web.post("/v2/email/outbound-emails", partial(send_email, sim)),
        web.post("/_sim/ses/credentials", partial(rotate_credentials, sim)),
    ]


def error(status: int, code: str, message: str, uri: str = SES_ERRORS_URI, **headers: str) -> web.Response:
    """SES v2's (REST-JSON) error: the code in x-amzn-ErrorType, the message in the body."""
    return web.Response(
        status=status,
        body=orjson.dumps({"message": message}),
        content_type="application/json",
        headers={"x-amzn-ErrorType": f"{code}:{uri}", "x-amzn-RequestId": str(uuid.uuid4()), **headers},
    )


async def send_email(sim: SesHost, request: web.Request) -> web.Response:
    body = await read_body(request)
    if body is None:
        return error(400, "MessageRejected", f"Message length is more than {MAX_MESSAGE_BYTES} bytes long.")
    if (refused := check_signature(sim.ses_account, request, body)) is not None:
        return refused
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return error(400, "SerializationException", "Start of structure or map found where not expected.")
    parsed = parse_send_email(doc)
    if isinstance(parsed, web.Response):
        return parsed
    recipients, meta = parsed
    feedback: dict[str, str] = {}
    for address in recipients:
        mailbox = simulator_mailbox(address)
        if mailbox == "suppressionlist":
            sim.state.rejected.append({"channel": "email", "address": address, "kind": "suppressed", **meta})
            why = f"Email address is on the suppression list for your account: {address}"
            return error(400, "MessageRejected", why)
        if mailbox in ("bounce", "complaint"):
            feedback[address] = mailbox
    if feedback:
        meta["feedback"] = feedback
    taken = await sim.take("email", recipients[0], meta)
    if isinstance(taken, dict):
        message_id = f"0100{taken['seq']:012d}-sim"
        sim.callbacks.ses_accepted(sim, meta, message_id)  # SES events over SNS, when enabled
        return _json(200, {"MessageId": message_id})
    code = str(taken.body.get("__type", "InternalFailure"))  # an injected fault, in SES's shape
    return error(taken.status, code, str(taken.body.get("message", "")), **taken.headers)


async def rotate_credentials(sim: SesHost, request: web.Request) -> web.Response:
    """Control: {"access_key", "secret_key", "session_token"} replace the account's credentials."""
    body = await request.json(loads=orjson.loads)
    acct = sim.ses_account
    acct.rotate(
        body.get("access_key", acct.access_key), body.get("secret_key", acct.secret_key), body.get("session_token", "")
    )
    return _json(200, {"access_key": acct.access_key, "expired_tokens": len(acct.expired_tokens)})


async def read_body(request: web.Request) -> bytes | None:
    """The whole body, or None past MAX_REQUEST_BYTES (read past aiohttp's 1 MB client_max_size)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# --- SigV4, checked the way AWS checks it --------------------------------------------------
NO_DATE = "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
HOST_UNSIGNED = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
BAD_TOKEN = "The security token included in the request is invalid."
EXPIRED_TOKEN = "The security token included in the request is expired"
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access "
    "Key and signing method. Consult the service documentation for details.\n\n"
    "The Canonical String for this request should have been\n'{canonical}'\n\n"
    "The String-to-Sign should have been\n'{to_sign}'\n"
)


def auth_error(status: int, code: str, message: str) -> web.Response:
    """The AWS front end's refusal (its error URI is Coral's, not SES's)."""
    return error(status, code, message, CORAL)


def check_signature(acct: SesAccount, request: web.Request, body: bytes) -> web.Response | None:
    """None when the request is signed with the account's credentials; otherwise AWS's refusal."""
    authorization = request.headers.get("Authorization", "")
    if not authorization:
        return auth_error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    algorithm, _, rest = authorization.partition(" ")
    parts = dict(item.strip().partition("=")[::2] for item in rest.split(","))
    scope = parts.get("Credential", "").split("/")
    signed = parts.get("SignedHeaders", "").split(";")
    if algorithm != "AWS4-HMAC-SHA256" or not parts.get("Signature") or len(scope) != 5 or scope[4] != "aws4_request":
        return auth_error(400, "IncompleteSignatureException", f"Authorization header requires 'Credential', "
                          f"'Signature' and 'SignedHeaders' parameters. Authorization={authorization}")  # fmt: skip
    if "host" not in signed:
        return auth_error(400, "IncompleteSignatureException", HOST_UNSIGNED)
    amz_date = request.headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return auth_error(400, "IncompleteSignatureException", NO_DATE)
    if (refused := check_clock(signed_at, amz_date)) is not None:
        return refused
    access_key, day, _region, service = scope[:4]  # any region: the simulator serves them all
    if day != amz_date[:8]:
        return auth_error(403, "InvalidSignatureException", f"Date in Credential scope does not match YYYYMMDD "
                          f"from ISO-8601 version of date from HTTP: '{day}' != '{amz_date[:8]}'.")  # fmt: skip
    if service != "ses":
        return auth_error(403, "InvalidSignatureException", "Credential should be scoped to correct service: 'ses'. ")
    token = request.headers.get("x-amz-security-token", "")
    if token and token in acct.expired_tokens:
        return auth_error(403, "ExpiredTokenException", EXPIRED_TOKEN)
    if access_key != acct.access_key or token != acct.session_token:
        return auth_error(403, "UnrecognizedClientException", BAD_TOKEN)
    canonical = canonical_request(request, signed, hashlib.sha256(body).hexdigest())
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, "/".join(scope[1:]), digest])
    if not hmac.compare_digest(signature(acct.secret_key, scope[1:4], to_sign), parts["Signature"]):
        return auth_error(403, "SignatureDoesNotMatch", MISMATCH.format(canonical=canonical, to_sign=to_sign))
    return None


def check_clock(signed_at: float, amz_date: str) -> web.Response | None:
    now = time.time()
    if signed_at < now - MAX_SKEW_S:
        late = f"is now earlier than {stamp(now - MAX_SKEW_S)} ({stamp(now)} - 5 min.)"
        return auth_error(403, "InvalidSignatureException", f"Signature expired: {amz_date} {late}")
    if signed_at > now + MAX_SKEW_S:
        early = f"is still later than {stamp(now + MAX_SKEW_S)} ({stamp(now)} + 5 min.)"
        return auth_error(403, "InvalidSignatureException", f"Signature not yet current: {amz_date} {early}")
    return None


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")


def canonical_request(request: web.Request, signed: list[str], payload_hash: str) -> str:
    """SigV4's canonical request for the headers the client signed (paths URI-encoded again, as for all but S3)."""
    path, _, query = request.raw_path.partition("?")
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&") if pair)
    headers = [f"{name}:{','.join(' '.join(v.split()) for v in request.headers.getall(name, []))}" for name in signed]
    return "\n".join(
        ["POST", quote(path, safe="/~"), "&".join(f"{k}={v}" for k, v in pairs), *headers, "", ";".join(signed),
         payload_hash]
    )  # fmt: skip


def signature(secret_key: str, scope: list[str], to_sign: str) -> str:
    key = ("AWS4" + secret_key).encode()
    for part in (*scope, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


# --- the SendEmail body ---------------------------------------------------------------------
def parse_send_email(doc: Any) -> tuple[list[str], dict[str, Any]] | web.Response:
    """(recipients, receipt fields) of a valid SendEmail body, or SES's 400."""
    if not isinstance(doc, dict) or not isinstance(doc.get("Content"), dict):
        return bad_request("1 validation error detected: Value null at 'content' failed to satisfy constraint: "
                           "Member must not be null")  # fmt: skip
    content = doc["Content"]
    kinds = [k for k in ("Simple", "Raw", "Template") if content.get(k) is not None]
    if len(kinds) != 1:
        return bad_request("Content must contain exactly one of Simple, Raw or Template.")
    if kinds == ["Template"]:
        return error(400, "NotImplemented", "The clarion simulator does not store templates: send Simple or Raw.")
    dest = doc.get("Destination") or {}
    lists = {k: dest.get(f"{k.title()}Addresses") or [] for k in ("to", "cc", "bcc")}
    if not all(isinstance(v, list) and all(isinstance(a, str) for a in v) for v in lists.values()):
        return bad_request("Destination addresses must be lists of strings.")
    sender = doc.get("FromEmailAddress")
    if kinds == ["Simple"]:
        message = simple_message(content["Simple"])
    else:
        message = raw_message(content["Raw"], lists)
    if isinstance(message, web.Response):
        return message
    size, fields = message
    sender = sender or fields.pop("from", None)
    recipients = [a for k in ("to", "cc", "bcc") for a in lists[k]]
    if not sender:
        return error(400, "MessageRejected", "Missing required header 'From'.")
    if not recipients:
        return error(400, "MessageRejected", "Missing required header 'To'.")
    if len(recipients) > MAX_RECIPIENTS:
        return bad_request(f"Recipient count exceeds {MAX_RECIPIENTS}.")
    for address in (sender, *recipients):
        if not valid_address(address):
            return bad_request(f"Illegal address: {address}")
    if size > MAX_MESSAGE_BYTES:
        return error(400, "MessageRejected", f"Message length is more than {MAX_MESSAGE_BYTES} bytes long: '{size}'.")
    tags = doc.get("EmailTags") or []
    if (problem := tag_problem(tags)) is not None:
        return bad_request(problem)
    named = {t["Name"]: t["Value"] for t in tags}
    meta = {
        "nid": decoded(named.get("clarion_nid")),
        "did": decoded(named.get("clarion_did")),
        **fields,
        "from": sender,
        "recipients": recipients,
        **{k: v for k, v in lists.items() if v},
        "tags": named,
    }
    if doc.get("ConfigurationSetName"):
        meta["configuration_set"] = doc["ConfigurationSetName"]
    return recipients, meta


def simple_message(simple: Any) -> tuple[int, dict[str, Any]] | web.Response:
    if not isinstance(simple, dict) or not isinstance(simple.get("Subject"), dict) or "Body" not in simple:
        return bad_request("Simple content requires Subject and Body.")
    subject = simple["Subject"].get("Data")
    body = simple.get("Body") or {}
    parts = {k.lower(): (body.get(k) or {}).get("Data") for k in ("Text", "Html") if body.get(k) is not None}
    if not isinstance(subject, str) or not all(isinstance(v, str) for v in parts.values()):
        return bad_request("Subject, Text and Html require Data.")
    size = sum(len(v.encode()) for v in (subject, *parts.values()))
    return size, {"subject": subject, "text": parts.get("text"), "html": parts.get("html")}


def raw_message(raw: Any, lists: dict[str, list[str]]) -> tuple[int, dict[str, Any]] | web.Response:
    """A MIME message (base64 in the JSON); without a Destination its To/Cc/Bcc headers name the recipients."""
    try:
        data = base64.b64decode(raw["Data"], validate=True)
    except (TypeError, KeyError, binascii.Error):
        return bad_request("Raw content requires Data, base64-encoded.")
    mime = message_from_bytes(data, policy=default_policy)
    if not any(lists.values()):
        for k in lists:
            lists[k] = [a for _, a in getaddresses([str(v) for v in mime.get_all(k, [])]) if a]
    text = mime.get_body(("plain",))
    html = mime.get_body(("html",))
    return len(data), {
        "subject": str(mime.get("Subject", "")),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "from": str(mime.get("From", "")) or None,
    }


def tag_problem(tags: Any) -> str | None:
    if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
        return "EmailTags must be a list of {Name, Value}."
    for tag in tags:
        name, value = tag.get("Name"), tag.get("Value")
        if not isinstance(name, str) or not isinstance(value, str):
            return "Tag Name and Value are required."
        if name not in FEEDBACK_TAGS and not TAG_CHARS.fullmatch(name):
            return f"Invalid tag name <{name}>: only alphanumeric ASCII characters, '_', and '-' are allowed."
        if not TAG_CHARS.fullmatch(value):
            return f"Invalid tag value <{value}>: only alphanumeric ASCII characters, '_', and '-' are allowed."
        if not name or len(name) > TAG_MAX or len(value) > TAG_MAX:
            return f"Invalid tag <{name}>: names take 1-{TAG_MAX} characters, values up to {TAG_MAX}."
    return None


def bad_request(message: str) -> web.Response:
    return error(400, "BadRequestException", message)


def valid_address(address: str) -> bool:
    _, addr = parseaddr(address)
    local, at, domain = addr.rpartition("@")
    return bool(at and local and "." in domain and not domain.startswith(".") and not domain.endswith("."))


def simulator_mailbox(address: str) -> str | None:
    """The mailbox simulator's scenario for `address` (success, bounce, ooto, complaint, suppressionlist), if any."""
    local, _, domain = parseaddr(address)[1].lower().rpartition("@")
    return local.partition("+")[0] if domain == MAILBOX_SIMULATOR else None


def decoded(tag: str | None) -> str | None:
    if tag is None:
        return None
    try:
        return decode_tag(tag)
    except ValueError:
        return tag  # not one of clarion's: recorded as sent


def options(settings: Settings) -> dict[str, str]:
    """Simulator keyword arguments accepting the SES keys `settings` sign with (as pointed_at_simulator fills them)."""
    return {
        "ses_access_key": settings.ses_access_key or ACCESS_KEY,
        "ses_secret_key": settings.ses_secret_key or SECRET_KEY,
        "ses_session_token": settings.ses_session_token,
    }
