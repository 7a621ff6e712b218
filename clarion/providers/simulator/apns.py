"""APNs-shaped endpoint: POST /3/device/{token}, over HTTP/2 only, as strict as Apple.

Served by the small HTTP/2 server in h2c.py on the simulator's own port (an HTTP/1.1
request gets 505). It answers with APNs's statuses and reasons:

- the provider token (ES256 JWT) must carry the trusted key's `kid` and the team's `iss`,
  verify with the key's public half, and have an `iat` under an hour old and not in the
  future (403 MissingProviderToken, InvalidProviderToken, ExpiredProviderToken);
  `ProviderTokens.expire_next = n` expires the tokens the next n requests carry (a token
  is then refused every time it comes back: only a re-minted one passes);
- `apns-topic` is required; `apns-push-type`, `apns-priority`, `apns-expiration`,
  `apns-collapse-id` (≤ 64 bytes) and `apns-id` (a UUID) must be valid when present;
- the payload is a JSON object with an `aps` dictionary, ≤ 4096 bytes (413 PayloadTooLarge);
- the device token is hex (400 BadDeviceToken);
- device tokens starting with a magic prefix always get one answer (MAGIC, like Twilio's
  test numbers); injected faults and failure rates apply as to every provider.

The key it trusts by default is derived from a fixed seed (`dev_key`), like the other
providers' placeholder credentials: separate processes (bench's `clarion simulator`, a
worker's sender) agree on it without exchanging files, and `dev_key_file()` writes its
`.p8` for the client. Tests pass their own key (`Account`) to prove the check is real.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import clarion.providers.simulator.h2c as h2c
from clarion.providers.simulator.core import Host
from clarion.providers.simulator.core import json_response as _json

KEY_ID = "SIMKEY0001"  # Apple's key ids and team ids are 10 characters
TEAM_ID = "SIMTEAM001"
MAX_PAYLOAD_BYTES = 4096
MAX_TOKEN_AGE_S = 3600
CLOCK_SKEW_S = 60  # an iat this far in the future still passes
PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk"}
)
PRIORITIES = frozenset({"1", "5", "10"})
DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")
PATH = re.compile(r"^/3/device/([^/?]*)$")
# Device tokens starting with these always get this answer.
MAGIC: dict[str, tuple[int, str]] = {
    "dead": (410, "Unregistered"),
    "0429": (429, "TooManyRequests"),  # with Retry-After: 1
    "0500": (500, "InternalServerError"),
}


@dataclass
class ProviderTokens:
    """Provider tokens the simulator has expired early (an hour passing in a test that takes seconds)."""

    expire_next: int = 0  # the tokens the next n requests carry expire now
    expired: set[str] = field(default_factory=set)

    def refusal(self, authorization: str) -> str | None:
        """ExpiredProviderToken for a token expired here (marking the one this request carries if due)."""
        token = authorization.partition(" ")[2].strip()
        if token not in self.expired and self.expire_next > 0:
            self.expire_next -= 1
            self.expired.add(token)
        return "ExpiredProviderToken" if token in self.expired else None


@dataclass(frozen=True, eq=False)
class Account:
    """Whom the simulated APNs trusts: one signing key (its public half), its key id, the team."""

    public_key: ec.EllipticCurvePublicKey
    key_id: str = KEY_ID
    team_id: str = TEAM_ID


def dev_key() -> ec.EllipticCurvePrivateKey:
    """The simulator's well-known P-256 signing key (derived from a fixed seed: not a secret)."""
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # of P-256
    seed = int.from_bytes(hashlib.sha256(b"clarion simulator APNs signing key").digest(), "big")
    return ec.derive_private_key(seed % (order - 1) + 1, ec.SECP256R1())


def dev_account() -> Account:
    return Account(dev_key().public_key())


def p8(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as Apple's .p8 file holds it (PKCS#8 PEM)."""
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(pem, pkcs8, serialization.NoEncryption())


def dev_key_file() -> str:
    """The path of the dev key's .p8 (written once into the temp dir, atomically)."""
    path = Path(tempfile.gettempdir()) / f"clarion-sim-AuthKey_{KEY_ID}.p8"
    pem = p8(dev_key())
    if not path.exists() or path.read_bytes() != pem:
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_bytes(pem)
        os.replace(scratch, path)
    return str(path)


class ApnsHost(Host, Protocol):
    """What this module uses of the simulator: the key provider tokens must be signed with, and the tokens
    it expired early."""

    apns_account: Account
    apns_tokens: ProviderTokens


def routes(sim: ApnsHost) -> list[web.RouteDef]:
    """What the simulator's HTTP/1.1 side serves for APNs: a refusal (Apple speaks HTTP/2 only), and its control."""
    return [web.post("/3/device/{token}", http1_refused), web.post("/_sim/apns/expire", partial(expire_next, sim))]


async def expire_next(sim: ApnsHost, request: web.Request) -> web.Response:
    """The provider tokens the next `times` requests carry expire (403 ExpiredProviderToken from then on)."""
    body = await request.json(loads=orjson.loads)
    sim.apns_tokens.expire_next = int(body.get("times", 1))
    return _json(200, {"expire_next": sim.apns_tokens.expire_next})


async def http1_refused(request: web.Request) -> web.Response:
    return _json(505, {"reason": "HTTP/2 required"})


@lru_cache(maxsize=256)
def signed_at(token: str, account: Account) -> int | str:
    """The `iat` of a provider token the account's key signed, else the reason APNs refuses it."""
    try:
        if jwt.get_unverified_header(token).get("kid") != account.key_id:
            return "InvalidProviderToken"
        claims = jwt.decode(
            token,
            account.public_key,
            algorithms=["ES256"],
            options={"verify_iat": False, "verify_exp": False, "verify_nbf": False, "require": ["iss", "iat"]},
        )
    except jwt.PyJWTError:
        return "InvalidProviderToken"
    if claims["iss"] != account.team_id or not isinstance(claims["iat"], int):
        return "InvalidProviderToken"
    return claims["iat"]


def token_refusal(authorization: str, account: Account, now: float) -> str | None:
    """Why APNs would refuse this authorization header (403), or None."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return "MissingProviderToken"
    iat = signed_at(token.strip(), account)
    if isinstance(iat, str):
        return iat
    if iat > now + CLOCK_SKEW_S:
        return "InvalidProviderToken"
    if now - iat > MAX_TOKEN_AGE_S:
        return "ExpiredProviderToken"
    return None


def header_refusal(headers: dict[str, str]) -> str | None:
    """Why APNs would refuse these request headers (400), or None."""
    if not headers.get("apns-topic"):
        return "MissingTopic"
    if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
        return "InvalidPushType"
    if headers.get("apns-priority", "10") not in PRIORITIES:
        return "BadPriority"
    if not headers.get("apns-expiration", "0").isdigit():
        return "BadExpirationDate"
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return "BadCollapseId"
    if "apns-id" in headers:
        try:
            uuid.UUID(headers["apns-id"])
        except ValueError:
            return "BadMessageId"
    return None


def refused(status: int, reason: str, headers: dict[str, str] | None = None) -> h2c.Response:
    body = {"reason": reason, **({"timestamp": int(time.time() * 1000)} if status == 410 else {})}
    return h2c.Response(status, {"content-type": "application/json", **(headers or {})}, orjson.dumps(body))


async def handle(sim: ApnsHost, request: h2c.Request) -> h2c.Response:
    """One APNs request over HTTP/2."""
    match = PATH.match(request.path)
    if match is None:
        return refused(404, "BadPath")
    if request.method != "POST":
        return refused(405, "MethodNotAllowed")
    token, headers, body = match.group(1), request.headers, bytes(request.body)
    status, reason = 0, None
    authorization = headers.get("authorization", "")
    if reason := token_refusal(authorization, sim.apns_account, time.time()) or sim.apns_tokens.refusal(authorization):
        status = 403
    elif reason := header_refusal(headers):
        status = 400
    elif len(body) > MAX_PAYLOAD_BYTES:
        status, reason = 413, "PayloadTooLarge"
    elif (payload := _payload(body)) is None:
        status, reason = 400, "PayloadEmpty"
    elif not DEVICE_TOKEN.match(token):
        status, reason = 400, ("BadDeviceToken" if token else "MissingDeviceToken")
    elif magic := MAGIC.get(token[:4].lower()):
        status, reason = magic
    if reason is not None:
        sim.state.rejected.append({"channel": "apns", "address": token, "kind": "refused", "reason": reason})
        return refused(status, reason, {"retry-after": "1"} if status == 429 else None)
    alert = payload["aps"].get("alert")
    meta: dict[str, Any] = {
        **(payload.get("clarion") or {}),
        "title": alert.get("title") if isinstance(alert, dict) else None,
        "body": alert.get("body") if isinstance(alert, dict) else alert,
        "topic": headers["apns-topic"],
        "push_type": headers.get("apns-push-type"),
        "priority": headers.get("apns-priority"),
        "expiration": headers.get("apns-expiration"),
        "collapse_id": headers.get("apns-collapse-id"),
        "http": "HTTP/2",
    }
    apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
    taken = await sim.take("apns", token, meta)
    if isinstance(taken, dict):
        return h2c.Response(200, {"apns-id": apns_id})
    return h2c.Response(taken.status, {"content-type": "application/json", "apns-id": apns_id, **taken.headers},
                        orjson.dumps(taken.body))  # fmt: skip


def _payload(body: bytes) -> dict[str, Any] | None:
    """The JSON payload, when it is an object with an `aps` dictionary."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) and isinstance(payload.get("aps"), dict) else None
