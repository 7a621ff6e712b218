"""Apple Push Notification service client: HTTP/2 (httpx), ES256 provider tokens, APNs's answers.

Apple serves APNs over HTTP/2 only. One `httpx.AsyncClient(http2=True, http1=False)` per
client: TLS with ALPN `h2` for https URLs, HTTP/2 with prior knowledge (h2c) for the
simulator's http URL; it never speaks HTTP/1.1. Requests multiplex over one kept-alive
connection (a small bounded pool), with a timeout on every call.

The provider token is an ES256 JWT signed with the team's `.p8` key (`SigningKey`): cached,
re-minted after 50 minutes (Apple refuses tokens over an hour old and throttles re-minting
more often than every 20 minutes), and re-minted at once when APNs refuses it, after which
the request is tried once more; a second refusal is an `AuthFailure` (dispatch holds the
channel and alerts). Without a key file, the static `apns_bearer` is sent (`StaticToken`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.logs import event
from clarion.providers.base import (
    AuthFailure,
    Delivered,
    OutboundMessage,
    PermanentFailure,
    SendResult,
    TransientFailure,
)
from clarion.providers.errors import failure, lookup
from clarion.topology.settings import Settings

log = logging.getLogger("clarion.providers.apns")

MAX_PAYLOAD_BYTES = 4096  # Apple's limit for a remote notification (413 PayloadTooLarge above)
MAX_COLLAPSE_ID_BYTES = 64
TOKEN_MAX_AGE_S = 50 * 60  # re-mint before Apple's 60 minutes, not before its 20-minute throttle
KEEPALIVE_S = 300.0  # Apple asks providers to keep connections open rather than reconnect per push
APNS_ID_NAMESPACE = uuid.UUID("6f2b9c1e-4a57-4d0c-9a53-1f1e0c3b7a01")  # apns-id: uuid5 of the delivery id

def outcome(status: int, reason: str, headers: httpx.Headers) -> SendResult:
    """What an APNs answer means for the message (errors.py classifies it by its reason, else status)."""
    if status == 200:
        return Delivered(headers.get("apns-id", ""))
    _, verdict = lookup("apns", status, reason)
    return failure(verdict, f"{status} {reason}", headers)


class TokenSource(Protocol):
    def current(self) -> str:
        """The provider token to send now."""
        ...

    def refused(self, token: str) -> bool:
        """APNs refused `token`: is there a new one worth a retry?"""
        ...


class StaticToken:
    """A provider token given in the settings (`apns_bearer`): nothing to re-mint."""

    def __init__(self, token: str) -> None:
        self.token = token

    def current(self) -> str:
        return self.token

    def refused(self, token: str) -> bool:
        return False


class SigningKey:
    """Provider tokens (ES256 JWTs) signed with a team's APNs key, each used for at most `max_age_s`."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        max_age_s: float = TOKEN_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an APNs key is a P-256 key, not {key.curve.name}")
        if not key_id or not team_id:
            raise ValueError("an APNs key needs its key id and the team id (CLARION_APNS_KEY_ID, _TEAM_ID)")
        self.key, self.key_id, self.team_id = key, key_id, team_id
        self.max_age_s = max_age_s
        self.clock = clock
        self._token = ""
        self._minted_at = -math.inf

    @classmethod
    def from_file(cls, path: str, key_id: str, team_id: str) -> SigningKey:
        """From the .p8 file Apple's developer portal hands out (PKCS#8 PEM)."""
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key")
        return cls(key, key_id, team_id)

    def current(self) -> str:
        now = self.clock()
        if now - self._minted_at >= self.max_age_s:
            self._mint(now)
        return self._token

    def refused(self, token: str) -> bool:
        if token == self._token:  # the first refusal of this token re-mints; concurrent ones find the new one
            self._mint(self.clock())
            event(log, "APNs refused the provider token: minted a new one", logging.WARNING, key_id=self.key_id)
        return True

    def _mint(self, now: float) -> None:
        claims = {"iss": self.team_id, "iat": int(now)}
        self._token = jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.key_id})
        self._minted_at = now


def token_source(key_file: str, key_id: str, team_id: str, bearer: str) -> TokenSource:
    """Tokens minted from the .p8 key when a key file is set, else the static bearer."""
    return SigningKey.from_file(key_file, key_id, team_id) if key_file else StaticToken(bearer)


def collapse_id(delivery_id: str) -> str:
    """The delivery id as an apns-collapse-id (≤ 64 bytes: a longer id is replaced by its SHA-256)."""
    if len(delivery_id.encode()) <= MAX_COLLAPSE_ID_BYTES:
        return delivery_id
    return hashlib.sha256(delivery_id.encode()).hexdigest()


class ApnsClient:
    channel = "apns"

    def __init__(
        self, base_url: str, topic: str, tokens: TokenSource, timeout_s: float, max_connections: int = 4
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.topic = topic
        self.tokens = tokens
        team = tokens.team_id if isinstance(tokens, SigningKey) else "-"  # a static bearer names no team
        self.account = f"apns:{team}/{topic}"
        self.timeout = httpx.Timeout(timeout_s)
        self.limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=KEEPALIVE_S
        )
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> ApnsClient:
        tokens = token_source(s.apns_key_file, s.apns_key_id, s.apns_team_id, s.apns_bearer)
        return cls(s.apns_url, s.apns_topic, tokens, s.provider_timeout_s)

    @property
    def http(self) -> httpx.AsyncClient:
        """The one HTTP/2 client (made on first use, so in the loop that uses it)."""
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(
                base_url=self.base_url, http1=False, http2=True, timeout=self.timeout, limits=self.limits
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def payload(self, message: OutboundMessage) -> bytes:
        content = message.content
        return orjson.dumps(
            {
                "aps": {"alert": {"title": content.title or "", "body": content.body or ""}},
                "clarion": {"nid": message.notification_id, "did": message.delivery_id},
            }
        )

    def headers(self, message: OutboundMessage, token: str) -> dict[str, str]:
        headers = {
            "authorization": f"bearer {token}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-id": str(uuid.uuid5(APNS_ID_NAMESPACE, message.delivery_id)),
            "apns-collapse-id": collapse_id(message.delivery_id),  # a duplicate shows once on the device
            "content-type": "application/json",
        }
        if message.expires_at is not None:  # absent, APNs stores and retries per its own policy (0: never stores)
            headers["apns-expiration"] = str(math.ceil(message.expires_at))
        return headers

    async def send(self, message: OutboundMessage) -> SendResult:
        body = self.payload(message)
        if len(body) > MAX_PAYLOAD_BYTES:
            return PermanentFailure(f"PayloadTooLarge: {len(body)} bytes, APNs takes {MAX_PAYLOAD_BYTES}")
        token = self.tokens.current()
        result = await self._post(message, body, token)
        if isinstance(result, AuthFailure) and result.refresh and self.tokens.refused(token):
            result = await self._post(message, body, self.tokens.current())
        return result

    async def _post(self, message: OutboundMessage, body: bytes, token: str) -> SendResult:
        try:
            response = await self.http.post(
                f"/3/device/{message.address}", content=body, headers=self.headers(message, token)
            )
        except httpx.TimeoutException:
            return TransientFailure("timeout")
        except httpx.TransportError as exc:
            return TransientFailure(f"connection: {type(exc).__name__}")
        reason = ""
        if response.status_code != 200:
            try:
                answer = orjson.loads(response.content)
                reason = str(answer.get("reason", "")) if isinstance(answer, dict) else ""
            except orjson.JSONDecodeError:
                pass
        return outcome(response.status_code, reason or "unknown", response.headers)
