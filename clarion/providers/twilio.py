"""Twilio Programmable Messaging client (Messages.json, form-encoded, basic auth)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from clarion.providers.base import Delivered, HttpProvider, OutboundMessage, SendResult, TransientFailure
from clarion.providers.errors import ANY, Failure, failure, lookup

if TYPE_CHECKING:
    from clarion.topology.settings import Settings


def classify_answer(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Failure:
    """The class of a Twilio error answer (errors.py): by its error code, else the HTTP status.

    Twilio credentials (Account SID + auth token) do not expire: an AuthFailure is bad
    credentials or a sender/account misconfiguration that would fail every message alike.
    """
    code = body.get("code")
    detail = " ".join(str(part) for part in (code, body.get("message")) if part)
    (owner, _), verdict = lookup("twilio", status, *([str(code)] if isinstance(code, int) else []))
    if owner == ANY:  # decided by the status alone
        detail = detail or "(no error code)"
    return failure(verdict, f"{status} {detail}".strip(), headers)


def callback_prefix(url: str) -> str:
    """`url` ready for `nid=…&did=…`: `?` before them, or `&` when it already has a query."""
    if not url or url.endswith(("?", "&")):
        return url
    return url + ("&" if "?" in url else "?")


class TwilioClient(HttpProvider):
    channel = "sms"

    @classmethod
    def from_settings(cls, s: Settings) -> TwilioClient:
        return cls(
            s.twilio_url, s.twilio_account_sid, s.twilio_auth_token, s.twilio_from, s.status_callback_url,
            s.provider_timeout_s, messaging_service_sid=s.twilio_messaging_service_sid,
        )  # fmt: skip

    def __init__(
        self,
        base_url: str,
        account_sid: str,
        auth_token: str,
        sender: str,
        status_callback: str,
        timeout_s: float,
        messaging_service_sid: str = "",
    ) -> None:
        super().__init__(base_url, timeout_s)
        self.account_sid = account_sid
        authorization = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.headers = {"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"}
        self.path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.account = f"twilio:{messaging_service_sid or sender}"  # Twilio's rates are per sender
        self.status_callback = status_callback
        # The constant parts of the form, encoded once (urlencode costs ~25 µs a message).
        if messaging_service_sid:
            self._sender = "&MessagingServiceSid=" + quote_plus(messaging_service_sid)
        else:
            self._sender = "&From=" + quote_plus(sender)
        self._callback = quote_plus(callback_prefix(status_callback) + "nid=") if status_callback else ""

    def form(self, message: OutboundMessage) -> bytes:
        """The urlencoded Messages.json form for `message`."""
        form = f"To={quote_plus(message.address)}{self._sender}&Body={quote_plus(message.content.body or '')}"
        if self._callback:
            ids = f"{message.notification_id}&did={message.delivery_id}"
            for name, value in message.owner().items():  # a campaign's: it has no status entry to name its user
                ids += f"&{name}={quote(value, safe='')}"
            form += f"&StatusCallback={self._callback}{quote_plus(ids)}"
        return form.encode()

    async def send(self, message: OutboundMessage) -> SendResult:
        answer = await self.post(self.path, self.form(message), self.headers)
        if isinstance(answer, TransientFailure):
            return answer
        body = answer.json()
        if answer.status in (200, 201):
            return Delivered(body.get("sid", ""))
        return classify_answer(answer.status, body, answer.headers)
