"""Twilio status callbacks: X-Twilio-Signature checked as Twilio computes it, and mapped to Feedback.

Twilio signs each webhook with HMAC-SHA1 keyed by the account's auth token over the full
URL it called followed by every POST parameter, sorted by name, as name + value; the
header is the base64 digest. Twilio is inconsistent about default ports, so (like its SDK)
the URL is tried both without a port and with the scheme's default one.
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


def signature(url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """The X-Twilio-Signature Twilio sends for a POST of `params` to `url`."""
    data = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    host = parts.netloc.rpartition(":")[0] if parts.port else parts.netloc
    default = {"https": 443, "http": 80}.get(parts.scheme)
    with_port = parts.netloc if parts.port else f"{host}:{default}"
    return [urlunsplit(parts._replace(netloc=host)), urlunsplit(parts._replace(netloc=with_port))]


def valid_signature(url: str, params: list[tuple[str, str]], auth_token: str, header: str) -> bool:
    """Whether `header` is Twilio's signature of this request (never true without an auth token)."""
    if not auth_token or not header:
        return False
    try:
        variants = _port_variants(url)
    except ValueError:  # a port that is not a number
        return False
    given = header.strip().encode()
    return any(hmac.compare_digest(signature(v, params, auth_token).encode(), given) for v in variants)


# MessageStatus values that are feedback; the rest (queued, sending, sent, accepted, scheduled,
# read, canceled, …) are progress clarion does not record.
FINAL = {"delivered": "delivered", "undelivered": "undelivered", "failed": "undelivered"}


def feedback_from(nid: str, did: str, params: dict[str, str], now: float | None = None) -> Feedback | None:
    """The Feedback a callback carries, or None when its MessageStatus is not final."""
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
    )
