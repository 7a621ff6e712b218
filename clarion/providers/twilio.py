"""Twilio Programmable Messaging client (Messages.json, form-encoded, basic auth)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

from clarion.providers.base import (
    AuthFailure,
    Delivered,
    HttpProvider,
    OutboundMessage,
    PermanentFailure,
    SendResult,
    TransientFailure,
    classify,
    retry_after,
)

Failure = TransientFailure | PermanentFailure | AuthFailure

# The one place a Twilio error code gets its class. Codes not listed fall back on the HTTP
# status: 401 refuses our credentials, 408/429/5xx are transient, other 4xx permanent.
# Twilio credentials (Account SID + auth token) do not expire, so there is nothing to refresh:
# an AuthFailure is bad credentials or a sender/account misconfiguration that would fail every
# message alike, so dispatch holds the channel and alerts instead of burning messages.
ERRORS: dict[int, type[Failure]] = {
    20003: AuthFailure,  # authentication failed: wrong Account SID or auth token
    20005: AuthFailure,  # account not active
    20404: AuthFailure,  # the account in the path does not exist (or is not ours)
    20429: TransientFailure,  # too many requests (Retry-After)
    20500: TransientFailure,  # internal server error
    20503: TransientFailure,  # service unavailable
    21211: PermanentFailure,  # invalid 'To' number
    21212: PermanentFailure,  # invalid 'From' number
    21408: PermanentFailure,  # sending to the To number's region is not enabled
    21602: PermanentFailure,  # no Body (nor MediaUrl)
    21603: AuthFailure,  # config: neither From nor MessagingServiceSid configured
    21604: PermanentFailure,  # no To
    21606: PermanentFailure,  # From is not a message-capable number of ours (for this destination)
    21609: AuthFailure,  # config: the StatusCallback URL is not one Twilio accepts
    21610: PermanentFailure,  # recipient unsubscribed (replied STOP): the reason keeps "21610" for suppression
    21611: TransientFailure,  # the From number's outgoing queue is full
    21612: PermanentFailure,  # To is not reachable from this From
    21614: PermanentFailure,  # To is not a mobile number
    21617: PermanentFailure,  # body over 1600 characters
    21701: AuthFailure,  # config: the Messaging Service does not exist in this account
    21705: AuthFailure,  # config: the Messaging Service SID is malformed
}


def classify_answer(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Failure:
    """The class of a Twilio error answer: ERRORS by its code, else the HTTP status."""
    code = body.get("code")
    detail = " ".join(str(part) for part in (code, body.get("message")) if part)
    reason = f"{status} {detail}".strip()
    kind = ERRORS.get(code) if isinstance(code, int) else None
    if kind is TransientFailure:
        return TransientFailure(reason, retry_after(headers))
    if kind is not None:
        return kind(reason)
    if status == 401:
        return AuthFailure(reason)
    return classify(status, detail or "(no error code)", headers)


def callback_prefix(url: str) -> str:
    """`url` ready for `nid=…&did=…`: `?` before them, or `&` when it already has a query."""
    if not url or url.endswith(("?", "&")):
        return url
    return url + ("&" if "?" in url else "?")


class TwilioClient(HttpProvider):
    channel = "sms"

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
            ids = quote_plus(f"{message.notification_id}&did={message.delivery_id}")
            form += f"&StatusCallback={self._callback}{ids}"
        return form.encode()

    async def send(self, message: OutboundMessage) -> SendResult:
        answer = await self.post(self.path, self.form(message), self.headers)
        if isinstance(answer, TransientFailure):
            return answer
        body = answer.json()
        if answer.status in (200, 201):
            return Delivered(body.get("sid", ""))
        return classify_answer(answer.status, body, answer.headers)
