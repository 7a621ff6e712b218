"""Amazon SES v2 SendEmail client, signed with AWS Signature Version 4."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson

from clarion.providers.base import Delivered, HttpProvider, OutboundMessage, SendResult, TransientFailure, classify

PATH = "/v2/email/outbound-emails"


class SesClient(HttpProvider):
    channel = "email"

    def __init__(
        self, base_url: str, region: str, access_key: str, secret_key: str, sender: str, timeout_s: float
    ) -> None:
        super().__init__(base_url, timeout_s)
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.sender = sender

    async def send(self, message: OutboundMessage) -> SendResult:
        content = message.content
        body_parts = {}
        if content.text is not None:
            body_parts["Text"] = {"Data": content.text, "Charset": "UTF-8"}
        if content.html is not None:
            body_parts["Html"] = {"Data": content.html, "Charset": "UTF-8"}
        payload = orjson.dumps(
            {
                "FromEmailAddress": self.sender,
                "Destination": {"ToAddresses": [message.address]},
                "Content": {
                    "Simple": {"Subject": {"Data": content.subject or "", "Charset": "UTF-8"}, "Body": body_parts}
                },
                "EmailTags": [
                    {"Name": "clarion_nid", "Value": message.notification_id},
                    {"Name": "clarion_did", "Value": message.delivery_id},
                ],
            }
        )
        headers = sigv4_headers(
            self.base_url + PATH,
            payload,
            self.region,
            "ses",
            self.access_key,
            self.secret_key,
            datetime.now(UTC),
        )
        answer = await self.post(PATH, payload, headers)
        if isinstance(answer, TransientFailure):
            return answer
        body = answer.json()
        if answer.status == 200:
            return Delivered(body.get("MessageId", ""))
        code = str(answer.headers.get("x-amzn-ErrorType", body.get("__type", ""))).split(":")[0]
        return classify(answer.status, code or str(body.get("message", "unknown")), answer.headers)


def sigv4_headers(
    url: str, payload: bytes, region: str, service: str, access_key: str, secret_key: str, now: datetime
) -> dict[str, str]:
    """Headers for an AWS SigV4-signed JSON POST (no query string)."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload_hash = hashlib.sha256(payload).hexdigest()
    headers = {"content-type": "application/json", "host": parts.netloc, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            "POST",
            parts.path or "/",
            "",
            *(f"{k}:{headers[k]}" for k in sorted(headers)),
            "",
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    headers["x-amz-content-sha256"] = payload_hash
    return headers
