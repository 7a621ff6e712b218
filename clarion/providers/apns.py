"""Apple Push Notification service client (token-based auth, JSON payload)."""

from __future__ import annotations

import orjson

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
            "content-type": "application/json",
        }
        answer = await self.post(f"/3/device/{message.address}", orjson.dumps(payload), headers)
        if isinstance(answer, TransientFailure):
            return answer
        if answer.status == 200:
            return Delivered(answer.headers.get("apns-id", ""))
        return classify(answer.status, answer.json().get("reason", "unknown"), answer.headers)
