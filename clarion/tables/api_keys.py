"""API keys: minted once, stored hashed on a compacted topic, checked in memory.

A key is `clk_<key_id>_<secret>`. The topic holds the key id, its client, its scopes and
the SHA-256 of the secret, never the secret. The secret is 256 random bits, so a fast
hash is enough (nobody can search that space) and checking a key costs about a
microsecond, with no database round trip: every API process and worker tails the topic
into memory (`KeysView`). A key created or revoked elsewhere is seen within about one
fetch wait; an unknown key id makes the view read to the topic's end before answering.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from clarion.schemas.records import ApiKey
from clarion.tables.mirror import TopicMirror

# send, users, templates, read: a client's own data. metrics: GET /metrics on the API and the workers,
# figures summed over every client, for the operator's Prometheus (not in `clarion keys create`'s default).
SCOPES = ("send", "users", "templates", "read", "metrics")
KEY_RE = re.compile(r"^clk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint(client_id: str, scopes: list[str], now: float, name: str = "") -> tuple[str, ApiKey]:
    """A new key: the string to hand out once, and the record to store."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(key_id=key_id, client_id=client_id, scopes=sorted(set(scopes)),
                    secret_sha256=_digest(secret), created_at=now, name=name)  # fmt: skip
    return f"clk_{key_id}_{secret}", record


@dataclass(frozen=True)
class Caller:
    """Who a request is from, as its key says."""

    client_id: str
    key_id: str
    scopes: frozenset[str]


class AuthError(Exception):
    """401 (no or bad key) or 403 (a key without the scope)."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


class KeysView(TopicMirror[ApiKey]):
    """key_id -> ApiKey, as the api_keys topic says now (revoked keys included, marked)."""

    model = ApiKey
    # A key a request names but this view lacks is read on demand (`refresh`), so the tail can be
    # lazy: a revocation still reaches every process within about a second, at a tenth of the polling.
    fetch_wait_ms = 500

    def add(self, value: ApiKey, offset: int | None = None) -> None:
        self[value.key_id] = value

    def check(self, presented: str) -> Caller | None:
        """The caller a presented key stands for, or None (malformed, unknown, wrong secret, revoked)."""
        match = KEY_RE.match(presented)
        if match is None:
            return None
        record = self.get(match.group(1))
        if record is None or record.revoked_at is not None:
            return None
        if not hmac.compare_digest(record.secret_sha256, _digest(match.group(2))):
            return None
        return Caller(record.client_id, record.key_id, frozenset(record.scopes))

    async def authenticate(self, authorization: str | None, scope: str) -> Caller:
        """The caller behind an `Authorization: Bearer KEY` header, holding `scope`; AuthError if not."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthError(401, "missing API key: send Authorization: Bearer <key>")
        presented = presented.strip()
        caller = self.check(presented)
        match = KEY_RE.match(presented)
        if caller is None and match is not None and match.group(1) not in self:
            await self.refresh()  # created a moment ago, elsewhere?
            caller = self.check(presented)
        if caller is None:
            raise AuthError(401, "invalid or revoked API key")
        if scope not in caller.scopes:
            raise AuthError(403, f"this key lacks the {scope!r} scope")
        return caller
