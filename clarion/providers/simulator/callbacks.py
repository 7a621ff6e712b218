"""Feedback the simulator sends after accepting a message, as the real services would.

Twilio: status callbacks (queued, sent, then delivered, or undelivered/failed with an
ErrorCode for the magic numbers in UNDELIVERED) POSTed to the message's StatusCallback,
signed with X-Twilio-Signature (the simulator's auth token). SES: SNS notifications of SES
events to the configured endpoint: Bounce (Permanent) for bounce@, Delivery then
Complaint for complaint@, Delivery for every other recipient, each carrying the message's
tags in `mail.tags`; signed SHA1withRSA (SignatureVersion 1) with a key whose self-signed
certificate the simulator serves at its SigningCertURL. SNS subscriptions: `subscribe()`
POSTs a signed SubscriptionConfirmation to an endpoint, as SNS does when an HTTP(S)
subscription is created; its SubscribeURL (GET /?Action=ConfirmSubscription on the
simulator, like sns.<region>.amazonaws.com) confirms it when the token is one it issued
for that topic, and counts every visit (`confirmations`).

Off until `enable()` is called. Sending never holds up the provider endpoint: each
message's callbacks run in their own task, at most MAX_PENDING at a time (more are dropped
and counted).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import aiohttp
import orjson
from aiohttp import web

from clarion.providers.simulator.core import Host

log = logging.getLogger("clarion.simulator.callbacks")
MAX_PENDING = 1000
STEP_S = 0.02  # between one status callback and the next
SNS_TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:clarion-ses-feedback"
CERT_PATH = "/_sim/sns/SimpleNotificationService-simulator.pem"

# Magic To numbers Twilio accepts (201) and then fails to deliver: number -> (MessageStatus, ErrorCode).
UNDELIVERED = {
    "+15005550010": ("undelivered", "30005"),  # unknown destination handset (the number is gone)
    "+15005550011": ("undelivered", "30003"),  # handset unreachable (off, out of coverage)
    "+15005550012": ("failed", "30004"),  # message blocked (the recipient opted out)
}


def twilio_signature(url: str, params: dict[str, str], auth_token: str, algorithm: str = "HMAC_SHA1") -> str:
    """Twilio's X-Twilio-Signature: HMAC-SHA1 (or a SharedKey's HMAC_SHA256) over the URL and the sorted
    name+value pairs, base64."""
    data = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}[algorithm]
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), digest).digest()).decode()


@dataclass
class SnsSigner:
    """A key and its self-signed certificate, as SNS signs with (SignatureVersion 1: SHA1withRSA)."""

    key: Any
    cert_pem: bytes

    @classmethod
    def generate(cls) -> SnsSigner:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.simulator.clarion")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256())
        )  # fmt: skip
        return cls(key, cert.public_bytes(serialization.Encoding.PEM))

    def sign(self, message: dict[str, str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        if message["Type"] != "Notification":
            names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        data = "".join(f"{n}\n{message[n]}\n" for n in names if n in message).encode()
        return base64.b64encode(self.key.sign(data, padding.PKCS1v15(), hashes.SHA1())).decode()


@dataclass
class Callbacks:
    enabled: bool = False
    sns_endpoint: str = ""  # where SES feedback goes (clarion's /webhooks/ses); empty: none
    topic_arn: str = SNS_TOPIC_ARN
    signer: SnsSigner | None = None
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)  # every callback made: kind, url, answer
    dropped: int = 0
    session: aiohttp.ClientSession | None = None
    subscription_tokens: dict[str, str] = field(default_factory=dict)  # token -> the topic it confirms
    # A Webhook Setting's SharedKey that signs Twilio callbacks instead of the auth token: (key id, secret,
    # algorithm), announced in X-Twilio-Webhooks-Signature-Settings. None: the auth token, HMAC-SHA1.
    twilio_shared_key: tuple[str, str, str] | None = None
    confirmations: list[dict[str, Any]] = field(default_factory=list)  # SubscribeURL visits: topic, token, confirmed

    def enable(self, sns_endpoint: str = "", topic_arn: str = SNS_TOPIC_ARN) -> None:
        self.enabled, self.sns_endpoint, self.topic_arn = True, sns_endpoint, topic_arn
        if self.signer is None:
            self.signer = SnsSigner.generate()

    # --- SNS subscriptions --------------------------------------------------------------------
    def subscription_confirmation(
        self, sim: CallbacksHost, topic_arn: str = "", subscribe_url: str = ""
    ) -> dict[str, str]:
        """A signed SubscriptionConfirmation for `topic_arn` (default: this topic), with a fresh token.

        Its SubscribeURL is the simulator's own unless `subscribe_url` is given (a message SNS
        would never send, for tests of what the receiver refuses to visit)."""
        if self.signer is None:
            self.signer = SnsSigner.generate()
        topic = topic_arn or self.topic_arn
        token = secrets.token_hex(64)  # SNS's tokens are long hex strings, valid for one topic
        self.subscription_tokens[token] = topic
        query = urlencode({"Action": "ConfirmSubscription", "TopicArn": topic, "Token": token})
        message = {
            "Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "Token": token, "TopicArn": topic,
            "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit "
                       "the SubscribeURL included in this message.",
            "SubscribeURL": subscribe_url or f"{sim.url}/?{query}", "Timestamp": _iso(), "SignatureVersion": "1",
            "SigningCertURL": sim.url + CERT_PATH,
        }  # fmt: skip
        message["Signature"] = self.signer.sign(message)
        return message

    async def subscribe(self, sim: CallbacksHost, endpoint: str, topic_arn: str = "") -> Any:
        """What SNS does when an HTTP(S) subscription is made: POST its SubscriptionConfirmation; the answer."""
        message = self.subscription_confirmation(sim, topic_arn)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "SubscriptionConfirmation",
            "x-amz-sns-message-id": message["MessageId"], "x-amz-sns-topic-arn": message["TopicArn"],
            "User-Agent": "Amazon Simple Notification Service Agent",
        }  # fmt: skip
        await self._post("sns:SubscriptionConfirmation", endpoint, orjson.dumps(message), headers)
        return self.sent[-1]["answer"]

    def _spawn(self, work: Any) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            work.close()
            return
        task = asyncio.ensure_future(work)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _post(self, kind: str, url: str, body: bytes, headers: dict[str, str]) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self.session.post(url, data=body, headers=headers) as resp:
                answer: Any = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            answer = repr(exc)
        self.sent.append({"kind": kind, "url": url, "answer": answer})

    # --- Twilio -----------------------------------------------------------------------------
    def twilio_accepted(self, sim: CallbacksHost, resource: dict[str, Any], callback: str) -> None:
        """After a Messages create answered 201: its status callbacks, if it asked for them."""
        if self.enabled and callback:
            self._spawn(self._twilio_statuses(sim, resource, callback))

    async def _twilio_statuses(self, sim: CallbacksHost, resource: dict[str, Any], callback: str) -> None:
        final, code = UNDELIVERED.get(resource["to"], ("delivered", ""))
        for status in ("queued", "sent", final):
            await asyncio.sleep(STEP_S)
            params = {
                "AccountSid": resource["account_sid"], "ApiVersion": "2010-04-01", "From": resource["from"] or "",
                "MessageSid": resource["sid"], "SmsSid": resource["sid"], "MessageStatus": status, "SmsStatus": status,
                "To": resource["to"],
            }  # fmt: skip
            if resource.get("messaging_service_sid"):
                params["MessagingServiceSid"] = resource["messaging_service_sid"]
            if status == final and code:
                params["ErrorCode"] = code
            headers = {
                "X-Twilio-Signature": twilio_signature(callback, params, sim.twilio_auth_token),
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "TwilioProxy/1.1",
            }
            if self.twilio_shared_key is not None:
                key_id, secret, algorithm = self.twilio_shared_key
                headers["X-Twilio-Signature"] = twilio_signature(callback, params, secret, algorithm)
                headers["X-Twilio-Webhooks-Signature-Settings"] = f"key={key_id},algorithm={algorithm}"
            await self._post(f"twilio:{status}", callback, urlencode(params).encode(), headers)

    # --- SES via SNS ------------------------------------------------------------------------
    def ses_accepted(self, sim: CallbacksHost, meta: dict[str, Any], message_id: str) -> None:
        """After SendEmail answered 200: SES's events for each recipient, as SNS notifications."""
        if self.enabled and self.sns_endpoint:
            self._spawn(self._ses_events(sim, meta, message_id))

    async def _ses_events(self, sim: CallbacksHost, meta: dict[str, Any], message_id: str) -> None:
        mail = {
            "timestamp": _iso(), "source": meta.get("from"), "sendingAccountId": "000000000000",
            "messageId": message_id, "destination": meta.get("recipients", []), "headersTruncated": False,
            "tags": {name: [value] for name, value in (meta.get("tags") or {}).items()},
        }  # fmt: skip
        feedback = meta.get("feedback") or {}
        for address in meta.get("recipients", []):
            await asyncio.sleep(STEP_S)
            kind = feedback.get(address)
            if kind == "bounce":
                await self._publish(sim, {"eventType": "Bounce", "mail": mail, "bounce": {
                    "bounceType": "Permanent", "bounceSubType": "General", "timestamp": _iso(),
                    "feedbackId": str(uuid.uuid4()), "reportingMTA": "dsn; simulator.amazonses.com",
                    "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1",
                                           "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}})  # fmt: skip
                continue
            await self._publish(sim, {"eventType": "Delivery", "mail": mail, "delivery": {
                "timestamp": _iso(), "processingTimeMillis": 20, "recipients": [address],
                "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "simulator.amazonses.com"}})  # fmt: skip
            if kind == "complaint":
                await asyncio.sleep(STEP_S)
                await self._publish(sim, {"eventType": "Complaint", "mail": mail, "complaint": {
                    "complainedRecipients": [{"emailAddress": address}], "timestamp": _iso(),
                    "feedbackId": str(uuid.uuid4()), "complaintFeedbackType": "abuse"}})  # fmt: skip

    def notification(self, sim: CallbacksHost, event: dict[str, Any]) -> dict[str, str]:
        """A signed SNS Notification carrying `event` as its Message."""
        assert self.signer is not None
        message = {
            "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": self.topic_arn,
            "Message": orjson.dumps(event).decode(), "Timestamp": _iso(), "SignatureVersion": "1",
            "SigningCertURL": sim.url + CERT_PATH,
            "UnsubscribeURL": f"{sim.url}/_sim/sns/unsubscribe?SubscriptionArn={self.topic_arn}:sim",
        }  # fmt: skip
        message["Signature"] = self.signer.sign(message)
        return message

    async def _publish(self, sim: CallbacksHost, event: dict[str, Any]) -> None:
        message = self.notification(sim, event)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": message["MessageId"], "x-amz-sns-topic-arn": self.topic_arn,
            "User-Agent": "Amazon Simple Notification Service Agent",
        }  # fmt: skip
        await self._post(f"ses:{event['eventType']}", self.sns_endpoint, orjson.dumps(message), headers)

    async def close(self) -> None:
        for task in list(self.pending):
            task.cancel()
        if self.session is not None:
            await self.session.close()


def _iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def certificate(sim: CallbacksHost, request: web.Request) -> web.Response:
    signer = sim.callbacks.signer
    if signer is None:
        return web.Response(status=404, text="callbacks are not enabled")
    return web.Response(body=signer.cert_pem, content_type="application/x-pem-file")


SNS_XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"


async def confirm_subscription(sim: CallbacksHost, request: web.Request) -> web.Response:
    """GET /?Action=ConfirmSubscription&TopicArn=…&Token=…: SNS's SubscribeURL (its Query API, XML answers)."""
    query = request.query
    if query.get("Action") != "ConfirmSubscription":
        return _sns_error(400, "InvalidAction", f"Unknown action {query.get('Action', '')[:40]}")
    topic, token = query.get("TopicArn", ""), query.get("Token", "")
    confirmed = bool(token) and sim.callbacks.subscription_tokens.get(token) == topic
    sim.callbacks.confirmations.append({"topic": topic, "token": token, "confirmed": confirmed})
    if not confirmed:
        return _sns_error(400, "InvalidParameter", "Invalid token")
    arn = f"{topic}:{uuid.uuid5(uuid.NAMESPACE_URL, token)}"
    body = (
        f'<ConfirmSubscriptionResponse xmlns="{SNS_XMLNS}"><ConfirmSubscriptionResult>'
        f"<SubscriptionArn>{escape(arn)}</SubscriptionArn></ConfirmSubscriptionResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></ConfirmSubscriptionResponse>"
    )
    return web.Response(status=200, text=body, content_type="text/xml")


def _sns_error(status: int, code: str, message: str) -> web.Response:
    body = (
        f'<ErrorResponse xmlns="{SNS_XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=body, content_type="text/xml")


class CallbacksHost(Host, Protocol):
    """What this module uses of the simulator: its callbacks, and the auth token Twilio's are signed with."""

    callbacks: Callbacks
    twilio_auth_token: str


def routes(sim: CallbacksHost) -> list[web.RouteDef]:
    """The SigningCertURL SNS messages name, and the SubscribeURL of its confirmations."""
    return [web.get(CERT_PATH, partial(certificate, sim)), web.get("/", partial(confirm_subscription, sim))]
