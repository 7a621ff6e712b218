"""Twilio Programmable Messaging client (Messages.json, form-encoded, basic auth)."""

from __future__ import annotations

import base64

from clarion.providers.base import Delivered, HttpProvider, OutboundMessage, SendResult, TransientFailure, classify


class TwilioClient(HttpProvider):
    channel = "sms"

    def __init__(
        self, base_url: str, account_sid: str, auth_token: str, sender: str, status_callback: str, timeout_s: float
    ) -> None:
        super().__init__(base_url, timeout_s)
        self.account_sid = account_sid
        self.authorization = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.sender = sender
        self.status_callback = status_callback

    async def send(self, message: OutboundMessage) -> SendResult:
        form = {"To": message.address, "From": self.sender, "Body": message.content.body or ""}
        if self.status_callback:
            form["StatusCallback"] = f"{self.status_callback}?nid={message.notification_id}&did={message.delivery_id}"
        answer = await self.request(
            "POST",
            f"/2010-04-01/Accounts/{self.account_sid}/Messages.json",
            data=form,
            headers={"Authorization": self.authorization},
        )
        if isinstance(answer, TransientFailure):
            return answer
        status, headers, body = answer
        if status in (200, 201):
            return Delivered(body.get("sid", ""))
        return classify(status, f"{body.get('code', '')} {body.get('message', '')}".strip(), headers)
