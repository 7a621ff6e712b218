"""Twilio status callbacks: X-Twilio-Signature checked as Twilio computes it, and mapped to Feedback.

Twilio signs each webhook with HMAC-SHA1 keyed by the account's auth token over the full
URL it called followed by every POST parameter, sorted by name, as name + value; the
header is the base64 digest. Twilio is inconsistent about default ports, so (like its SDK)
the URL is tried both without a port and with the scheme's default one.

When a Webhook Rule of the account matches the URL (Twilio's Webhooks configuration API),
Twilio signs with that Setting's SharedKey instead, with its algorithm (HMAC_SHA256, or
HMAC_SHA1), over the same string, still in X-Twilio-Signature, and says so in
`X-Twilio-Webhooks-Signature-Settings: key=<shared key id>,algorithm=<algorithm>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from clarion.schemas.records import Feedback

MAX_ID = 200  # nid/did are [A-Za-z0-9._:@-]{1,128} plus a channel and index


SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
HASHES = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def signature(url: str, params: Iterable[tuple[str, str]], secret: str, algorithm: str = "HMAC_SHA1") -> str:
    """The X-Twilio-Signature Twilio sends for a POST of `params` to `url` (secret: the auth token or a SharedKey's)."""
    data = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(secret.encode(), data.encode(), HASHES[algorithm]).digest()
    return base64.b64encode(digest).decode()


def signature_settings(header: str) -> tuple[str, str]:
    """(shared key id, algorithm) from X-Twilio-Webhooks-Signature-Settings; "" for what it does not name."""
    fields = dict(part.strip().partition("=")[::2] for part in header.split(","))
    return fields.get("key", "").strip(), (fields.get("algorithm", "").strip().upper() or "HMAC_SHA1")


def shared_keys(text: str) -> dict[str, str]:
    """`twilio_webhook_shared_keys` ("<key id>=<secret>[,…]") as {key id: secret}."""
    keys = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key_id, _, secret = item.partition("=")
        if not key_id.strip() or not secret:
            raise ValueError("CLARION_TWILIO_WEBHOOK_SHARED_KEYS is '<key id>=<secret>[,…]'")
        keys[key_id.strip()] = secret
    return keys


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    host = parts.netloc.rpartition(":")[0] if parts.port else parts.netloc
    default = {"https": 443, "http": 80}.get(parts.scheme)
    with_port = parts.netloc if parts.port else f"{host}:{default}"
    return [urlunsplit(parts._replace(netloc=host)), urlunsplit(parts._replace(netloc=with_port))]


def valid_signature(
    url: str, params: list[tuple[str, str]], secret: str, header: str, algorithm: str = "HMAC_SHA1"
) -> bool:
    """Whether `header` is Twilio's signature of this request (never true without a secret or algorithm)."""
    if not secret or not header or algorithm not in HASHES:
        return False
    try:
        variants = _port_variants(url)
    except ValueError:  # a port that is not a number
        return False
    given = header.strip().encode()
    return any(hmac.compare_digest(signature(v, params, secret, algorithm).encode(), given) for v in variants)


# MessageStatus values that are feedback; the rest (queued, sending, sent, accepted, scheduled,
# read, canceled, …) are progress clarion does not record.
FINAL = {"delivered": "delivered", "undelivered": "undelivered", "failed": "undelivered"}


def feedback_from(
    nid: str, did: str, params: dict[str, str], now: float | None = None, owner: dict[str, str] | None = None
) -> Feedback | None:
    """The Feedback a callback carries, or None when its MessageStatus is not final (`owner`: a campaign's
    execution's client, user and campaign, from its callback URL: feedback.campaign_owner)."""
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    mapped = FINAL.get(status)
    if mapped is None:
        return None
    code = params.get("ErrorCode", "").strip()
    reason = f"{code} {status}" if code else (None if mapped == "delivered" else status)
    return Feedback(
        notification_id=nid,
        delivery_id=did,
        channel="sms",
        status=mapped,  # type: ignore[arg-type]
        reason=reason[:500] if reason else None,
        provider_message_id=(params.get("MessageSid") or params.get("SmsSid") or "")[:64] or None,
        address=params.get("To", "")[:64],
        ts=time.time() if now is None else now,
        **(owner or {}),
    )
