"""The one interface every provider client implements, and its HTTP plumbing."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
import orjson

from clarion.tables.templates import Rendered

# What a campaign's message names in its provider metadata (SES tags `clarion_<name>`, the Twilio
# callback URL's `<name>=`); feedback.campaign_owner reads them back.
OWNER_FIELDS = ("client", "campaign", "user")


@dataclass(frozen=True)
class OutboundMessage:
    """One rendered message for one address."""

    delivery_id: str
    notification_id: str
    address: str
    content: Rendered
    trace_id: str = ""
    expires_at: float | None = None  # epoch seconds after which the message is worthless (APNs apns-expiration)
    # A campaign's execution has no status entry to find its user by, so the provider's metadata
    # (SES tags, Twilio's callback URL) carries them back to the feedback stage: client/campaign_id, user id.
    campaign: str = ""
    user_id: str = ""

    def owner(self) -> dict[str, str]:
        """A campaign's execution: its OWNER_FIELDS (client, campaign and user ids); {} for any other message."""
        if not self.campaign:
            return {}
        client_id, _, campaign_id = self.campaign.partition("/")
        return dict(zip(OWNER_FIELDS, (client_id, campaign_id, self.user_id), strict=True))


@dataclass(frozen=True)
class Delivered:
    provider_message_id: str


@dataclass(frozen=True)
class TransientFailure:
    """Worth retrying later (throttling, 5xx, timeouts, connection errors)."""

    reason: str
    retry_after: float | None = None
    rate_limited: bool = field(default=False, compare=False)  # we went too fast (errors.py): for the metrics


@dataclass(frozen=True)
class PermanentFailure:
    """Retrying cannot help (bad address, unregistered token, rejected content)."""

    reason: str


@dataclass(frozen=True)
class AuthFailure:
    """The provider refused our credentials (expired, revoked, misconfigured): never the message's fault.

    A client refreshes its credentials and tries once more before answering this; dispatch
    then holds the channel (no provider calls for a while, messages waiting without
    spending attempts) and logs an alert, rather than burn messages against a bad key.
    `refresh`: whether fresh credentials may help (errors.py); false when the account itself
    is refused, so the client answers at once.
    """

    reason: str
    refresh: bool = field(default=True, compare=False)  # a hint to the client, not part of the answer


SendResult = Delivered | TransientFailure | PermanentFailure | AuthFailure


class ProviderClient(Protocol):
    channel: str
    # The provider account its sends count against, e.g. "twilio:+15550000000": fleet-wide rate
    # buckets are per account (ratelimit.py). Clients without one share their channel's bucket.
    account: str

    async def send(self, message: OutboundMessage) -> SendResult: ...
    async def close(self) -> None: ...


class HttpProvider:
    """Shared session handling; subclasses build the request and read the answer."""

    channel = ""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=aiohttp.TCPConnector(limit=256))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer | TransientFailure:
        """POST an encoded body; network trouble becomes a TransientFailure.

        Bodies come encoded (orjson, urlencode) with their content-type: aiohttp's own
        form and JSON encoding cost more CPU than the rest of a delivery's bookkeeping.
        """
        try:
            async with self.session.post(self.base_url + path, data=body, headers=headers) as resp:
                return Answer(resp.status, resp.headers, await resp.read())
        except TimeoutError:
            return TransientFailure("timeout")
        except aiohttp.ClientError as exc:
            return TransientFailure(f"connection: {type(exc).__name__}")


@dataclass(frozen=True)
class Answer:
    """A provider's HTTP answer: status, headers, raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object ({} when it is empty or not a JSON object)."""
        try:
            value = orjson.loads(self.body) if self.body else {}
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    value = (headers.get("Retry-After") or headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
