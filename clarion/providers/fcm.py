"""Firebase Cloud Messaging HTTP v1 client."""

from __future__ import annotations

import orjson

from clarion.providers.base import Delivered, HttpProvider, OutboundMessage, SendResult, TransientFailure, classify


class FcmClient(HttpProvider):
    channel = "fcm"

    def __init__(self, base_url: str, project: str, bearer: str, timeout_s: float) -> None:
        super().__init__(base_url, timeout_s)
        self.project = project
        self.bearer = bearer

    async def send(self, message: OutboundMessage) -> SendResult:
        body = {
            "message": {
                "token": message.address,
                "notification": {"title": message.content.title or "", "body": message.content.body or ""},
                "data": {"clarion_nid": message.notification_id, "clarion_did": message.delivery_id},
            }
        }
        headers = {"Authorization": f"Bearer {self.bearer}", "Content-Type": "application/json"}
        answer = await self.post(f"/v1/projects/{self.project}/messages:send", orjson.dumps(body), headers)
        if isinstance(answer, TransientFailure):
            return answer
        resp = answer.json()
        if answer.status == 200:
            return Delivered(resp.get("name", ""))
        error = resp.get("error", {})
        error = error if isinstance(error, dict) else {}
        codes = [d.get("errorCode") for d in error.get("details", []) if isinstance(d, dict)]
        reason = next((c for c in codes if c), error.get("status", "UNKNOWN"))
        return classify(answer.status, str(reason), answer.headers)
