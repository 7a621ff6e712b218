"""Apple Push Notification service client (token-based auth, JSON payload)."""

from __future__ import annotations

from clarion.providers.base import Delivered, HttpProvider, OutboundMessage, SendResult, TransientFailure, classify


class ApnsClient(HttpProvider):
    channel = "apns"

    def __init__(self, base_url: str, topic: str, bearer: str, timeout_s: float) -> None:
        super().__init__(base_url, timeout_s)
        self.topic = topic
        self.bearer = bearer

    async def send(self, message: OutboundMessage) -> SendResult:
        payload = {
            "aps": {"alert": {"title": message.content.title or "", "body": message.content.body or ""}},
            "clarion": {"nid": message.notification_id, "did": message.delivery_id},
        }
        headers = {
            "authorization": f"bearer {self.bearer}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
        }
        answer = await self.request("POST", f"/3/device/{message.address}", json=payload, headers=headers)
        if isinstance(answer, TransientFailure):
            return answer
        status, resp_headers, body = answer
        if status == 200:
            return Delivered(resp_headers.get("apns-id", ""))
        return classify(status, body.get("reason", "unknown"), resp_headers)
