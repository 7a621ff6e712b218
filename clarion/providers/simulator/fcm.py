"""FCM HTTP v1-shaped endpoints: POST /v1/projects/{project}/messages:send, and Google's OAuth2 token endpoint.

Like the real service, messages:send takes only access tokens this simulator's token
endpoint issued (POST /token, the JWT-bearer grant google-auth's service-account
credentials make) and that have not expired; a static bearer is accepted too when one is
configured (`clarion dev`, the tests' placeholder). Service accounts come from
`FcmAuth.service_account` (or POST /_sim/fcm/service_account): an RSA key whose public
half the token endpoint checks assertions against.

Magic tokens fail deterministically, like Twilio's test numbers: see MAGIC.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion.providers.simulator.core import Host
from clarion.providers.simulator.core import json_response as _json

STATIC_BEARER = "sim-fcm-token"  # pointed_at_simulator's placeholder when CLARION_FCM_BEARER is unset
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# What Google's token endpoint accepts as an assertion's `aud` (google-auth sends the first).
AUDIENCES = [
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
]
SEND_SCOPES = {"https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform"}
MAX_ASSERTION_LIFETIME_S = 3600
CLOCK_SKEW_S = 60
MAX_PAYLOAD_BYTES = 4096
QUOTA_RETRY_AFTER = "1"

# Token prefix -> (http status, google.rpc status, FcmError code, message).
MAGIC = {
    "unregistered-": (404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    "invalid-": (
        400,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "mismatch-": (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
    "quota-": (
        429,
        "RESOURCE_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "Quota exceeded for quota metric 'Messages' and limit 'Messages per minute'.",
    ),
    "unavailable-": (503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
    "internal-": (500, "INTERNAL", "INTERNAL", "Internal error encountered."),
    "thirdparty-": (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Auth error from APNS or Web Push Service"),
}

INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
    "authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
MISSING_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def error(status: int, rpc_status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    """A Google API error body."""
    body: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if details:
        body["details"] = list(details)
    return {"error": body}


def fcm_error(code: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}


def error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "fcm.googleapis.com", "method": "google.firebase.fcm.v1.FcmService.SendMessage"},
    }


def quota_exceeded() -> dict[str, Any]:
    """The 429 FCM answers when a project sends too fast."""
    status, rpc, code, message = MAGIC["quota-"]
    return error(status, rpc, message, fcm_error(code))


@dataclass
class Issued:
    """An access token the token endpoint handed out."""

    client_email: str
    project_id: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class FcmAuth:
    """The simulator's Google: service-account keys it knows, access tokens it issued."""

    static_bearer: str = STATIC_BEARER  # "": only tokens from the token endpoint
    token_lifetime_s: float = 3600
    # expires_in told to clients (None: the lifetime); longer plays a client clock behind Google's
    reported_lifetime_s: int | None = None
    keys: dict[str, dict[str, rsa.RSAPublicKey]] = field(default_factory=dict)  # client_email -> key id -> key
    projects: dict[str, str] = field(default_factory=dict)  # client_email -> project id
    tokens: dict[str, Issued] = field(default_factory=dict)
    issued: int = 0  # access tokens handed out
    expire_next: int = 0  # the next n sends are answered as if their token had expired

    def service_account(
        self, token_uri: str, project_id: str = "clarion-sim", client_email: str = ""
    ) -> dict[str, str]:
        """A new key for a service account (created when new), as the JSON file Google would give out."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        email = client_email or f"clarion-{key_id[:8]}@{project_id}.iam.gserviceaccount.com"
        self.keys.setdefault(email, {})[key_id] = key.public_key()
        self.projects[email] = project_id
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": pem.decode(),
            "client_email": email,
            "client_id": str(int(key_id[:15], 16)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }

    def revoke_key(self, key_id: str) -> None:
        """Delete a key, as an admin would: assertions signed with it are refused from now on."""
        for keys in self.keys.values():
            keys.pop(key_id, None)

    def grant(self, form: dict[str, str], now: float | None = None) -> tuple[int, dict[str, Any]]:
        """The token endpoint: an access token for a valid JWT-bearer assertion (RFC 7523), else an OAuth2 error."""
        now = time.time() if now is None else now
        if form.get("grant_type") != JWT_BEARER:
            return 400, oauth_error("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}")
        assertion = form.get("assertion", "")
        if not assertion:
            return 400, oauth_error("invalid_request", "Missing required parameter: assertion")
        try:
            header = jwt.get_unverified_header(assertion)
            email = str(jwt.decode(assertion, options={"verify_signature": False}).get("iss", ""))
        except jwt.InvalidTokenError:
            return 400, oauth_error("invalid_grant", "Invalid JWT: malformed")
        if email not in self.keys:
            return 400, oauth_error("invalid_grant", "Invalid grant: account not found")
        key = self.keys[email].get(header.get("kid", ""))
        if header.get("alg") != "RS256" or key is None:
            return 400, oauth_error("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=AUDIENCES,
                leeway=CLOCK_SKEW_S,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidSignatureError:
            return 400, oauth_error("invalid_grant", "Invalid JWT Signature.")
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            return 400, oauth_error("invalid_grant", SHORT_LIVED)
        except jwt.InvalidAudienceError:
            return 400, oauth_error("invalid_grant", "Invalid JWT: Failed audience check.")
        except jwt.InvalidTokenError as exc:
            return 400, oauth_error("invalid_grant", f"Invalid JWT: {exc}")
        if claims["exp"] - claims["iat"] > MAX_ASSERTION_LIFETIME_S:
            return 400, oauth_error("invalid_grant", SHORT_LIVED)
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            return 400, oauth_error("invalid_scope", "Empty or missing scope not allowed.")
        if not all(s.startswith("https://www.googleapis.com/auth/") for s in scopes):
            return 400, oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        self.tokens = {t: i for t, i in self.tokens.items() if i.expires_at > now}
        token = "ya29.sim-" + secrets.token_urlsafe(32)
        self.tokens[token] = Issued(email, self.projects[email], scopes, now + self.token_lifetime_s)
        self.issued += 1
        expires_in = self.token_lifetime_s if self.reported_lifetime_s is None else self.reported_lifetime_s
        return 200, {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}

    def refusal(self, authorization: str, project: str, now: float | None = None) -> tuple[int, dict[str, Any]] | None:
        """Why messages:send refuses these credentials for `project`, or None when it accepts them."""
        now = time.time() if now is None else now
        scheme, _, bearer = authorization.partition(" ")
        if scheme != "Bearer" or not bearer:
            return 401, error(401, "UNAUTHENTICATED", MISSING_CREDENTIALS, error_info("CREDENTIALS_MISSING"))
        issued = self.tokens.get(bearer)
        if issued is None and not (self.static_bearer and bearer == self.static_bearer):
            return 401, error(401, "UNAUTHENTICATED", INVALID_CREDENTIALS)
        if self.expire_next > 0 or (issued is not None and now >= issued.expires_at):
            self.expire_next = max(self.expire_next - 1, 0)
            return 401, error(401, "UNAUTHENTICATED", INVALID_CREDENTIALS, error_info("ACCESS_TOKEN_EXPIRED"))
        if issued is not None and not issued.scopes & SEND_SCOPES:
            return 403, error(
                403,
                "PERMISSION_DENIED",
                "Request had insufficient authentication scopes.",
                error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT"),
            )
        if issued is not None and issued.project_id != project:
            message = (
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."
            )
            return 403, error(403, "PERMISSION_DENIED", message, error_info("IAM_PERMISSION_DENIED"))
        return None


SHORT_LIVED = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
    "Check your iat and exp values in the JWT claim."
)


def oauth_error(code: str, description: str) -> dict[str, str]:
    return {"error": code, "error_description": description}


# The v1 Message's fields (snake_case; camelCase is accepted too, as by any proto JSON parser).
MESSAGE_FIELDS = {
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
}
NOTIFICATION_FIELDS = {"title", "body", "image"}
ANDROID_FIELDS = {
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
    "bandwidth_constrained_ok",
    "restricted_satellite_ok",
}
APNS_FIELDS = {"headers", "payload", "fcm_options", "live_activity_token"}
WEBPUSH_FIELDS = {"headers", "data", "notification", "fcm_options"}
TOPIC = re.compile(r"[a-zA-Z0-9\-_.~%]+")
DURATION = re.compile(r"\d+(\.\d{1,9})?s")
RESERVED_DATA = ("from", "message_type")
RESERVED_DATA_PREFIXES = ("google.", "gcm.notification.")


def snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def fields_of(value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
    """An object's fields by snake_case name; ValueError names the first that is not allowed."""
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected an object")
    out = {snake(k): v for k, v in value.items()}
    for name in out:
        if name not in allowed:
            raise ValueError(f"Invalid JSON payload received. Unknown name \"{name}\" at '{path}': Cannot find field.")
    return out


def check_string_map(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"Invalid value at '{path}': expected a map of strings")
    return value


def check_message(body: Any) -> tuple[dict[str, Any], bool]:
    """The message and validate_only of a messages:send body; ValueError says what the real API would refuse."""
    top = fields_of(body, "", {"message", "validate_only"})
    if "message" not in top:
        raise ValueError("Request contains an invalid argument: message is required")
    message = fields_of(top["message"], "message", MESSAGE_FIELDS)
    targets = [t for t in ("token", "topic", "condition") if t in message]
    if not targets:
        raise ValueError("Recipient of the message is not set.")
    if len(targets) > 1:
        raise ValueError(
            f"Invalid value at 'message' (oneof), oneof field 'target' is already set. Cannot set '{targets[1]}'"
        )
    target = message[targets[0]]
    if not isinstance(target, str) or not target:
        raise ValueError(f"Invalid value at 'message.{targets[0]}' (TYPE_STRING)")
    if "topic" in message and not TOPIC.fullmatch(target):
        raise ValueError(f"Invalid topic name: {target}")
    if "condition" in message and "in topics" not in target:
        raise ValueError(f"Invalid condition expression provided: {target}")
    for key in check_string_map(message.get("data", {}), "message.data"):
        if key in RESERVED_DATA or key.startswith(RESERVED_DATA_PREFIXES):
            raise ValueError(f"Invalid data payload key: {key}")
    for name, value in fields_of(message.get("notification", {}), "message.notification", NOTIFICATION_FIELDS).items():
        if not isinstance(value, str):
            raise ValueError(f"Invalid value at 'message.notification.{name}' (TYPE_STRING)")
    if "android" in message:
        check_android(message["android"])
    if "apns" in message:
        apns = fields_of(message["apns"], "message.apns", APNS_FIELDS)
        check_string_map(apns.get("headers", {}), "message.apns.headers")
        if not isinstance(apns.get("payload", {}), dict):
            raise ValueError("Invalid value at 'message.apns.payload' (type.googleapis.com/google.protobuf.Struct)")
    if "webpush" in message:
        webpush = fields_of(message["webpush"], "message.webpush", WEBPUSH_FIELDS)
        check_string_map(webpush.get("headers", {}), "message.webpush.headers")
        check_string_map(webpush.get("data", {}), "message.webpush.data")
    payload = {k: v for k, v in message.items() if k not in ("token", "topic", "condition")}
    if len(orjson.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise ValueError("Message is too big")
    return message, top.get("validate_only") is True


def check_android(value: Any) -> None:
    android = fields_of(value, "message.android", ANDROID_FIELDS)
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        raise ValueError(
            f"Invalid value at 'message.android.priority' (type.googleapis.com/"
            f'google.firebase.fcm.v1.AndroidMessagePriority), "{android["priority"]}"'
        )
    if "ttl" in android and not (isinstance(android["ttl"], str) and DURATION.fullmatch(android["ttl"])):
        raise ValueError("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)")
    check_string_map(android.get("data", {}), "message.android.data")
    if not isinstance(android.get("notification", {}), dict):
        raise ValueError("Invalid value at 'message.android.notification'")


class FcmHost(Host, Protocol):
    """What this module uses of the simulator: its Google (service-account keys, access tokens)."""

    fcm: FcmAuth


def routes(sim: FcmHost) -> list[web.RouteDef]:
    """The endpoints this module serves on the simulator's app."""
    return [
        web.post("/v1/projects/{project}/messages:send", partial(fcm, sim)),
        web.post("/token", partial(token_endpoint, sim)),
        web.post("/_sim/fcm/service_account", partial(new_service_account, sim)),
        web.post("/_sim/fcm/expire", partial(expire_next, sim)),
    ]


async def token_endpoint(sim: FcmHost, request: web.Request) -> web.Response:
    form = await request.post()
    status, body = sim.fcm.grant({k: str(v) for k, v in form.items()})
    return _json(status, body, {"Cache-Control": "no-store"})


async def new_service_account(sim: FcmHost, request: web.Request) -> web.Response:
    """A service-account JSON whose token_uri is this simulator: {"project_id"?, "client_email"?}."""
    body = await request.json(loads=orjson.loads) if request.can_read_body else {}
    token_uri = f"{request.scheme}://{request.host}/token"
    info = sim.fcm.service_account(token_uri, body.get("project_id", "clarion-sim"), body.get("client_email", ""))
    return _json(200, info)


async def expire_next(sim: FcmHost, request: web.Request) -> web.Response:
    """The next `times` sends are answered 401 ACCESS_TOKEN_EXPIRED, whatever token they carry."""
    body = await request.json(loads=orjson.loads)
    sim.fcm.expire_next = int(body.get("times", 1))
    return _json(200, {"expire_next": sim.fcm.expire_next})


async def fcm(sim: FcmHost, request: web.Request) -> web.Response:
    project = request.match_info["project"]
    try:
        body = await request.json(loads=orjson.loads)
    except ValueError:
        body = None
    raw = body.get("message") if isinstance(body, dict) else None
    raw = raw if isinstance(raw, dict) else {}
    address = next((raw[t] for t in ("token", "topic", "condition") if isinstance(raw.get(t), str)), "")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    notification = raw.get("notification") if isinstance(raw.get("notification"), dict) else {}
    meta = {
        "nid": data.get("clarion_nid"),
        "did": data.get("clarion_did"),
        "title": notification.get("title"),
        "body": notification.get("body"),
    }

    refused = sim.fcm.refusal(request.headers.get("Authorization", ""), project)
    if refused is not None:
        status, answer = refused
        sim.state.rejected.append({"channel": "fcm", "address": address, "kind": answer["error"]["status"], **meta})
        headers = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'}
        return _json(status, answer, headers if status == 401 else None)
    try:
        message, validate_only = check_message(body)
    except ValueError as exc:
        return _json(400, error(400, "INVALID_ARGUMENT", str(exc)))
    target = next(t for t in ("token", "topic", "condition") if t in message)
    if validate_only:
        return _json(200, {"name": f"projects/{project}/messages/fake_message_id"})
    if target == "token" and (magic := next((v for p, v in MAGIC.items() if address.startswith(p)), None)):
        if sim.state.latency_ms:
            await asyncio.sleep(sim.state.latency_ms / 1000.0)
        status, rpc, code, text = magic
        sim.state.rejected.append({"channel": "fcm", "address": address, "kind": code, **meta})
        headers = {"Retry-After": QUOTA_RETRY_AFTER} if code == "QUOTA_EXCEEDED" else None
        return _json(status, error(status, rpc, text, fcm_error(code)), headers)
    return await sim._answer(
        "fcm",
        address,
        {**meta, "target": target},
        lambda r: _json(200, {"name": f"projects/{project}/messages/{r['seq']}"}),
    )
