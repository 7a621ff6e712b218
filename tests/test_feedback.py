"""Delivery feedback: webhook signatures both ways, and callbacks from the simulator end to end."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from multidict import MultiDict
from twilio.request_validator import RequestValidator, get_signature_algorithm

from clarion.feedback import ses as ses_events
from clarion.feedback import sns, twilio
from clarion.providers.simulator.callbacks import SNS_TOPIC_ARN, SnsSigner, twilio_signature
from clarion.schemas.records import Outcome
from clarion.tables.status import fold
from clarion.tables.suppression import feedback_suppresses
from clarion.topology.embedded import free_port
from tests.api_stack import Stack, api_stack_fixture
from tests.drain import drained

on_stack = pytest.mark.asyncio(loop_scope="module")
SHARED_ID, SHARED_SECRET = "webhooks_sharedkey_01JSIMULATOR0000000000000", "shared-key-secret="
stack = api_stack_fixture(twilio_webhook_shared_keys=f"{SHARED_ID}={SHARED_SECRET}")
TOKEN = "12345"
URL = "https://hooks.example.com/webhooks/twilio?nid=n1_ab&did=n1_ab.sms.0"
PARAMS = [("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "30005"), ("To", "+14155550100"),
          ("Body", "a b&c=d ü"), ("Multi", "2"), ("Multi", "1")]  # fmt: skip


# --- Twilio's signature, against the twilio SDK's RequestValidator ----------------------------
def test_clarion_accepts_what_the_sdk_signs_and_the_sdk_accepts_what_clarion_signs() -> None:
    sdk = RequestValidator(TOKEN)
    multi = MultiDict
    for url in (URL, "https://hooks.example.com:443/webhooks/twilio?nid=x", "http://127.0.0.1:8080/webhooks/twilio"):
        theirs = sdk.compute_signature(url, multi(PARAMS))
        assert twilio.valid_signature(url, PARAMS, TOKEN, theirs)
        ours = twilio.signature(url, PARAMS, TOKEN)
        assert ours == theirs and sdk.validate(url, multi(PARAMS), ours)
    # Twilio signs with or without the default port; both are accepted, like the SDK does
    theirs = sdk.compute_signature(URL, multi(PARAMS))
    assert twilio.valid_signature(URL.replace(".com/", ".com:443/"), PARAMS, TOKEN, theirs)


def test_a_tampered_body_url_or_token_fails_the_signature() -> None:
    good = RequestValidator(TOKEN).compute_signature(URL, MultiDict(PARAMS))
    assert twilio.valid_signature(URL, PARAMS, TOKEN, good)
    tampered = [(k, "delivered" if k == "MessageStatus" else v) for k, v in PARAMS]
    assert not twilio.valid_signature(URL, tampered, TOKEN, good)
    assert not twilio.valid_signature(URL.replace("n1_ab&", "n0_ab&"), PARAMS, TOKEN, good)
    assert not twilio.valid_signature(URL, PARAMS, "other", good)
    assert not twilio.valid_signature(URL, PARAMS, "", good)  # no auth token configured: nothing is valid
    assert not twilio.valid_signature(URL, PARAMS, TOKEN, "")


def test_shared_key_signatures_are_the_sdks_both_ways() -> None:
    """Webhook Settings sign with a SharedKey, HMAC_SHA256, and say so in X-Twilio-Webhooks-Signature-Settings."""
    sdk = RequestValidator(SHARED_SECRET)
    header = f"key={SHARED_ID},algorithm=HMAC_SHA256"
    algorithm = get_signature_algorithm(header)
    assert twilio.signature_settings(header) == (SHARED_ID, algorithm) == (SHARED_ID, "HMAC_SHA256")
    for url in (URL, "https://hooks.example.com:443/webhooks/twilio?nid=x"):
        theirs = sdk.compute_signature(url, MultiDict(PARAMS), algorithm)
        assert twilio.signature(url, PARAMS, SHARED_SECRET, algorithm) == theirs
        assert twilio.valid_signature(url, PARAMS, SHARED_SECRET, theirs, algorithm)
        assert not twilio.valid_signature(url, PARAMS, SHARED_SECRET, theirs)  # read as HMAC-SHA1 it is not one
        assert not twilio.valid_signature(url, PARAMS, "other", theirs, algorithm)
        assert sdk.validate(url, MultiDict(PARAMS), twilio.signature(url, PARAMS, SHARED_SECRET, algorithm), algorithm)
    assert twilio.signature_settings("key=k1") == ("k1", "HMAC_SHA1")  # no algorithm named: Twilio's default
    assert not twilio.valid_signature(URL, PARAMS, SHARED_SECRET, "x", "HMAC_MD5")  # one we do not know fails
    assert twilio.shared_keys(f" {SHARED_ID}={SHARED_SECRET}, k2=s2") == {SHARED_ID: SHARED_SECRET, "k2": "s2"}
    with pytest.raises(ValueError):
        twilio.shared_keys("no-secret")


def test_the_simulators_signature_is_twilios() -> None:
    params = dict(PARAMS[:5])
    assert RequestValidator(TOKEN).validate(URL, params, twilio_signature(URL, params, TOKEN))


def test_twilio_statuses_map_to_feedback() -> None:
    def fb(status: str, code: str = "") -> Any:
        return twilio.feedback_from("n1_a", "n1_a.sms.0", {"MessageStatus": status, "ErrorCode": code, "To": "+1"})

    assert fb("sent") is None and fb("queued") is None
    assert (fb("delivered").status, fb("delivered").reason) == ("delivered", None)
    gone = fb("undelivered", "30005")
    assert (gone.status, gone.reason) == ("undelivered", "30005 undelivered")
    assert fb("failed", "30004").status == "undelivered"
    assert feedback_suppresses("sms", "undelivered", "30005 undelivered")
    assert feedback_suppresses("sms", "undelivered", "30004 failed")
    assert not feedback_suppresses("sms", "undelivered", "30003 undelivered")  # a phone that is off comes back
    assert not feedback_suppresses("sms", "delivered", None)


# --- SNS signatures --------------------------------------------------------------------------
SIGNER = SnsSigner.generate()
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"


def signed(message: dict[str, str], version: str = "1") -> dict[str, str]:
    message = {"Type": "Notification", "MessageId": "m1", "TopicArn": SNS_TOPIC_ARN, "Message": "{}",
               "Timestamp": "2030-01-01T00:00:00.000Z", "SigningCertURL": CERT_URL, **message}  # fmt: skip
    message["SignatureVersion"] = version
    if version == "1":
        message["Signature"] = SIGNER.sign(message)
    else:  # SHA256withRSA over the same canonical string
        data = sns.canonical(message)
        message["Signature"] = base64.b64encode(SIGNER.key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()
    return message


def certificates(fetched: list[str]) -> sns.CertificateCache:
    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return SIGNER.cert_pem

    return sns.CertificateCache(r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?", fetch)


async def test_sns_signatures_v1_and_v2_verify_and_the_certificate_is_fetched_once() -> None:
    fetched: list[str] = []
    certs = certificates(fetched)
    await sns.verify(signed({}), certs)
    await sns.verify(signed({"Subject": "s"}, "2"), certs)
    await sns.verify(signed({"Type": "SubscriptionConfirmation", "Token": "t", "SubscribeURL": CERT_URL}), certs)
    assert fetched == [CERT_URL]


async def test_a_tampered_sns_message_is_refused() -> None:
    certs = certificates([])
    message = signed({"Message": '{"eventType":"Delivery"}'})
    changes = [
        {"Message": '{"eventType":"Bounce"}'},
        {"TopicArn": "arn:aws:sns:us-east-1:1:other"},
        {"SignatureVersion": "2"},
        {"Signature": "not base64!"},
        {"Signature": None},
        {"Type": "Other"},
    ]
    for change in changes:
        with pytest.raises(sns.Rejected):
            await sns.verify({**message, **change}, certs)


async def test_a_certificate_url_off_the_allowed_hosts_is_never_fetched() -> None:
    fetched: list[str] = []
    certs = certificates(fetched)
    for url in ("https://evil.example.com/cert.pem", "http://sns.us-east-1.amazonaws.com/c.pem",
                "https://sns.us-east-1.amazonaws.com.evil.com/c.pem", "https://sns.us-east-1.amazonaws.com@evil.com/c.pem",
                "https://evil.com/?x=https://sns.us-east-1.amazonaws.com/c.pem", "https://sns.us-east-1.amazonaws.com:x/c.pem",
                "https://sns.us-east-1.amazonaws.com/c.txt"):  # fmt: skip
        with pytest.raises(sns.Rejected):
            await sns.verify(signed({"SigningCertURL": url}), certs)
    assert fetched == []


def test_ses_events_map_to_feedback() -> None:
    tags = {"clarion_nid": ["n1__ab"], "clarion_did": ["n1__ab-email-0"]}
    bounce = {"eventType": "Bounce", "mail": {"tags": tags, "messageId": "m"}, "bounce": {
        "bounceType": "Permanent", "bounceSubType": "General",
        "bouncedRecipients": [{"emailAddress": "x@y.com", "diagnosticCode": "550"}]}}  # fmt: skip
    (item,) = ses_events.feedback_from(bounce)
    assert (item.notification_id, item.delivery_id, item.status, item.address) == ("n1_ab", "n1_ab.email.0", "bounced",
                                                                                   "x@y.com")  # fmt: skip
    bounce["bounce"]["bounceType"] = "Transient"
    assert ses_events.feedback_from(bounce)[0].status == "undelivered"
    assert not feedback_suppresses("email", "undelivered", "Transient/MailboxFull: 552")
    complaint = {"eventType": "Complaint", "mail": {"tags": tags}, "complaint": {"complainedRecipients": [
        {"emailAddress": "x@y.com"}]}}  # fmt: skip
    assert [f.status for f in ses_events.feedback_from(complaint)] == ["complained"]
    assert ses_events.feedback_from({"eventType": "Open", "mail": {"tags": tags}}) == []
    with pytest.raises(ses_events.NotOurs):
        ses_events.feedback_from({"notificationType": "Bounce", "mail": {}, "bounce": {}})  # no tags: not clarion's


def test_emails_name_the_configuration_set_whose_events_carry_the_tags_back() -> None:
    from clarion.providers.ses import AwsCredentials, SesClient, StaticCredentials
    from tests.test_ses import message

    def payload(*configuration_set: str) -> dict[str, Any]:
        source = StaticCredentials(AwsCredentials("k", "s"))
        client = SesClient("http://x", "us-east-1", source, "a@b.co", 5, *configuration_set)
        return orjson.loads(client.payload(message()))

    assert payload("clarion-events")["ConfigurationSetName"] == "clarion-events"
    assert "ConfigurationSetName" not in payload()


def test_a_campaigns_provider_metadata_names_its_user_and_comes_back_on_its_feedback() -> None:
    """A campaign's execution has no status entry: its SES tags and Twilio callback URL carry client,
    campaign and user, and the feedback parsed from what comes back names them; a critical message's don't."""
    from urllib.parse import parse_qs, urlsplit

    from clarion.feedback import campaign_owner
    from clarion.providers.base import OutboundMessage
    from clarion.providers.ses import AwsCredentials, SesClient, StaticCredentials
    from clarion.providers.twilio import TwilioClient
    from clarion.tables.templates import Rendered

    content = Rendered(subject="s", text="t", body="b")
    promo = OutboundMessage("n1_ab.sms.0", "n1_ab", "+14155550100", content, campaign="acme/spring:2", user_id="u@1")
    critical = OutboundMessage("n1_cd.sms.0", "n1_cd", "+14155550100", content)
    sms = TwilioClient("http://x", "AC1", "tok", "+14155550199", "https://hooks.example.com/webhooks/twilio?t=1", 5)

    def callback(message: OutboundMessage) -> dict[str, list[str]]:
        return parse_qs(urlsplit(parse_qs(sms.form(message).decode())["StatusCallback"][0]).query)

    query = callback(promo)
    assert {k: v[0] for k, v in query.items()} == {"t": "1", "nid": "n1_ab", "did": "n1_ab.sms.0", "client": "acme",
                                                   "campaign": "spring:2", "user": "u@1"}  # fmt: skip
    assert set(callback(critical)) == {"t", "nid", "did"}
    owner = campaign_owner(*(query[name][0] for name in ("client", "campaign", "user")))
    item = twilio.feedback_from(
        "n1_ab", "n1_ab.sms.0", {"MessageStatus": "undelivered", "ErrorCode": "30005"}, owner=owner
    )
    assert (item.client_id, item.user_id, item.campaign) == ("acme", "u@1", "acme/spring:2")

    email = SesClient("http://x", "us-east-1", StaticCredentials(AwsCredentials("k", "s")), "a@b.co", 5)
    for message, owned in ((promo, True), (critical, False)):
        tags = {t["Name"]: [t["Value"]] for t in orjson.loads(email.payload(message))["EmailTags"]}
        bounce = {"eventType": "Bounce", "mail": {"tags": tags}, "bounce": {"bounceType": "Permanent",
                  "bouncedRecipients": [{"emailAddress": "x@y.com"}]}}  # fmt: skip
        (item,) = ses_events.feedback_from(bounce)
        assert (item.client_id, item.user_id, item.campaign) == (("acme", "u@1", "acme/spring:2") if owned else
                                                                 ("", "", ""))  # fmt: skip
    # what does not spell three well-formed ids names nobody
    assert campaign_owner("acme", "spring", "") == {} and campaign_owner("acme", "spring", "a/b") == {}
    assert campaign_owner("acme", "..", "u1") == {}


# --- the status fold -------------------------------------------------------------------------
def outcome(status: str, **kw: Any) -> Outcome:
    return Outcome(notification_id="n1_a", status=status, client_id="c", user_id="u", ts=time.time(), **kw)


def test_feedback_is_final_over_a_late_sent_and_sets_the_overall_status() -> None:
    d0, d1 = {"channel": "sms", "delivery_id": "n1_a.sms.0"}, {"channel": "email", "delivery_id": "n1_a.email.0"}
    doc = fold(None, outcome("accepted", planned=2))
    doc = fold(doc, outcome("delivered", **d0))  # the callback beat the deliver stage's outcome
    doc = fold(doc, outcome("sent", attempt=2, provider_message_id="SM1", **d0))
    assert (doc.deliveries["n1_a.sms.0"].status, doc.deliveries["n1_a.sms.0"].attempts) == ("delivered", 2)
    assert doc.status == "accepted"  # the email is still on its way
    doc = fold(doc, outcome("sent", attempt=1, **d1))
    assert doc.status == "sent"
    doc = fold(doc, outcome("delivered", **d1))
    assert doc.status == "delivered"
    doc = fold(doc, outcome("bounced", reason="Permanent", **d1))
    assert doc.status == "partially_sent" and doc.deliveries["n1_a.email.0"].status == "bounced"
    lone = fold(fold(fold(None, outcome("accepted", planned=1)), outcome("sent", attempt=1, **d0)),
                outcome("undelivered", reason="30005 undelivered", **d0))  # fmt: skip
    assert lone.status == "failed"


# --- end to end: API + worker + simulator sending callbacks ----------------------------------
@pytest.fixture
def feedback_stack(stack: Stack) -> Stack:
    stack.sim.callbacks.enable(sns_endpoint=stack.url + "/webhooks/ses")
    return stack


async def send(s: Stack, user: dict[str, Any], channels: list[str]) -> str:
    assert (await s.call("POST", "/users", user))[0] == 202
    status, body = await s.call("POST", "/notif", s.notif(user_id=user["user_id"], channels=channels))
    assert status == 202, body
    return body["notification_id"]


async def wait_delivery(s: Stack, nid: str, want: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, doc = await s.call("GET", f"/notif/{nid}")
        if status == 200 and any(d["status"] == want for d in doc["deliveries"].values()):
            return doc
        assert time.monotonic() < deadline, f"{nid}: no delivery {want}: {doc}"
        await asyncio.sleep(0.1)


@on_stack
async def test_sms_undelivered_for_a_gone_number_then_suppressed(feedback_stack: Stack) -> None:
    s = feedback_stack
    user = {"user_id": "gone-phone", "phone": "+15005550010"}  # accepted, then undelivered 30005
    nid = await send(s, user, ["sms"])
    doc = await wait_delivery(s, nid, "undelivered")
    (delivery,) = doc["deliveries"].values()
    assert delivery["reason"] == "30005 undelivered" and delivery["provider_message_id"].startswith("SM")
    assert (await s.wait_status(nid, {"failed"}))["status"] == "failed"
    calls = len([d for d in s.sim.state.deliveries if d["address"] == user["phone"]])
    again = await send(s, user, ["sms"])
    doc = await s.wait_status(again, {"failed", "sent"})
    assert doc["failures"] == {"sms": "suppressed: undelivered: 30005 undelivered"} and doc["deliveries"] == {}
    assert len([d for d in s.sim.state.deliveries if d["address"] == user["phone"]]) == calls  # no provider call


@on_stack
async def test_sms_unreachable_is_undelivered_but_not_suppressed(feedback_stack: Stack) -> None:
    s = feedback_stack
    user = {"user_id": "phone-off", "phone": "+15005550011"}  # 30003: the handset was off
    await wait_delivery(s, await send(s, user, ["sms"]), "undelivered")
    nid = await send(s, user, ["sms"])
    doc = await wait_delivery(s, nid, "undelivered")
    assert doc["failures"] == {}


@on_stack
async def test_email_bounce_is_bounced_and_the_address_suppressed(feedback_stack: Stack) -> None:
    s = feedback_stack
    user = {"user_id": "bouncer", "email": "bounce@simulator.amazonses.com"}
    nid = await send(s, user, ["email"])
    doc = await wait_delivery(s, nid, "bounced")
    (delivery,) = doc["deliveries"].values()
    assert doc["status"] == "failed" and delivery["reason"].startswith("Permanent/General")
    again = await send(s, user, ["email"])
    doc = await s.wait_status(again, {"failed", "sent"})
    assert doc["failures"]["email"].startswith("suppressed: bounced: Permanent/General")
    assert len([d for d in s.sim.state.deliveries if d["address"] == user["email"]]) == 1


@on_stack
async def test_delivered_callbacks_show_delivered(feedback_stack: Stack) -> None:
    s = feedback_stack
    user = {"user_id": "happy", "email": "success@simulator.amazonses.com", "phone": "+14155550199"}
    nid = await send(s, user, ["email", "sms"])
    doc = await s.wait_status(nid, {"delivered"})
    assert sorted(d["status"] for d in doc["deliveries"].values()) == ["delivered", "delivered"]
    assert all(d["attempts"] == 1 for d in doc["deliveries"].values())


@on_stack
async def test_complaint_suppresses_the_address(feedback_stack: Stack) -> None:
    s = feedback_stack
    user = {"user_id": "complainer", "email": "complaint@simulator.amazonses.com"}
    nid = await send(s, user, ["email"])
    await wait_delivery(s, nid, "complained")
    doc = await s.wait_status(await send(s, user, ["email"]), {"failed", "sent", "delivered"})
    assert doc["failures"]["email"].startswith("suppressed: complained")


@on_stack
async def test_a_campaigns_bounce_and_gone_number_suppress_its_users_addresses(feedback_stack: Stack) -> None:
    """Feedback on a campaign's executions (no status entry) finds their users by what the provider
    carried back: a promo-lane outcome each, and the addresses suppressed for later notifications."""
    s = feedback_stack
    template = {"template_id": "news", "version": 1, "email_subject": "News", "email_text": "News", "sms_body": "News"}
    assert (await s.call("POST", "/template", template))[0] == 201
    users = [{"user_id": "promo-bouncer", "email": "bounce+promo@simulator.amazonses.com"},
             {"user_id": "promo-gone", "phone": "+15005550010"}]  # fmt: skip
    for user in users:
        assert (await s.call("POST", "/users", user))[0] == 202
    await drained(s.settings)  # the users are in the table the campaign expands from
    campaign = {"campaign_id": "news-1", "template_id": "news", "channels": ["email", "sms"],
                "audience": {"user_ids": [u["user_id"] for u in users]}}  # fmt: skip
    assert (await s.call("POST", "/promo", campaign))[0] == 202
    deadline = time.monotonic() + 60
    while True:
        status, body = await s.call("GET", "/ui/api/suppressed")
        assert status == 200, body
        held = {(row["user_id"], e["channel"]): e["reason"] for row in body["rows"] for e in row["entries"]}
        if {("promo-bouncer", "email"), ("promo-gone", "sms")} <= held.keys():
            break
        assert time.monotonic() < deadline, f"campaign feedback never suppressed: {held}"
        await asyncio.sleep(0.2)
    assert held[("promo-bouncer", "email")].startswith("bounced: Permanent/General")
    assert held[("promo-gone", "sms")] == "undelivered: 30005 undelivered"
    status, body = await s.call("GET", "/ui/api/outcomes?lane=promo&limit=500")
    told = {(row["user_id"], row["channel"], row["status"]) for row in body["outcomes"]}
    assert {("promo-bouncer", "email", "bounced"), ("promo-gone", "sms", "undelivered")} <= told
    for user, channel in (("promo-bouncer", "email"), ("promo-gone", "sms")):
        doc = await s.wait_status(await send(s, {**next(u for u in users if u["user_id"] == user)}, [channel]),
                                  {"failed", "sent", "delivered"})  # fmt: skip
        assert doc["failures"][channel].startswith("suppressed: "), doc


# --- the webhooks over HTTP: what they refuse ---------------------------------------------------
async def post(s: Stack, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with s.http.post(s.url + path, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


@on_stack
async def test_twilio_webhook_refuses_a_bad_signature_and_needs_no_api_key(feedback_stack: Stack) -> None:
    s = feedback_stack
    path = "/webhooks/twilio?nid=n0_abc&did=n0_abc.sms.0"
    params = {"MessageSid": "SM9", "MessageStatus": "delivered", "To": "+14155550100"}
    sig = twilio_signature(s.settings.webhook_base_url + path, params, s.settings.twilio_auth_token)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    tampered = urlencode({**params, "MessageStatus": "undelivered", "ErrorCode": "30005"}).encode()
    status, body = await post(s, path, tampered, {**form, "X-Twilio-Signature": sig})
    assert status == 403 and body["error"] == "invalid X-Twilio-Signature"
    assert (await post(s, path, urlencode(params).encode(), form))[0] == 403  # no signature
    # the signature is the API's only check: a valid one is taken without an Authorization header
    signed_form = {**form, "X-Twilio-Signature": sig}
    assert await post(s, path, urlencode(params).encode(), signed_form) == (202, {"feedback": 1})
    other = "/webhooks/twilio?nid=abc&did=abc.sms.0"  # not an id clarion made: no partition to send it to
    sig = twilio_signature(s.settings.webhook_base_url + other, params, s.settings.twilio_auth_token)
    dropped = await post(s, other, urlencode(params).encode(), {**form, "X-Twilio-Signature": sig})
    assert dropped == (200, {"feedback": 0})
    assert (await post(s, path, b"%zz=\xff", {**form, "X-Twilio-Signature": sig}))[0] == 400
    assert (await post(s, path, b"a=" + b"x" * 20_000, {**form, "X-Twilio-Signature": sig}))[0] == 413


@on_stack
async def test_ses_webhook_refuses_bad_signatures_and_never_fetches_from_other_hosts(feedback_stack: Stack) -> None:
    s = feedback_stack
    hits: list[str] = []

    async def evil(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=SIGNER.cert_pem)

    app = web.Application()
    app.router.add_get("/{tail:.*}", evil)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        sns_json = {"Content-Type": "text/plain; charset=UTF-8"}
        event = {"eventType": "Bounce", "mail": {"tags": {"clarion_nid": ["n0__x"], "clarion_did": ["n0__x-email-0"]}},
                 "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "a@b.co"}]}}  # fmt: skip
        # signed with a key of its own, its certificate served from a host the pattern does not allow
        message = signed({"Message": orjson.dumps(event).decode(),
                          "SigningCertURL": f"http://127.0.0.1:{port}/cert.pem"})  # fmt: skip
        status, body = await post(s, "/webhooks/ses", orjson.dumps(message), sns_json)
        assert status == 403 and "SigningCertURL" in body["error"]
        assert hits == []
        # the simulator's own certificate URL, with a signature that is not its key's
        message["SigningCertURL"] = s.sim.url + "/_sim/sns/SimpleNotificationService-simulator.pem"
        status, body = await post(s, "/webhooks/ses", orjson.dumps(message), sns_json)
        assert status == 403 and "does not match" in body["error"]
        genuine = s.sim.callbacks.notification(s.sim, event)
        genuine["Message"] = genuine["Message"].replace("Permanent", "Transient")
        assert (await post(s, "/webhooks/ses", orjson.dumps(genuine), sns_json))[0] == 403
        assert (await post(s, "/webhooks/ses", b"{not json", sns_json))[0] == 400
        assert (await post(s, "/webhooks/ses", b"[]", sns_json))[0] == 400
        assert (await post(s, "/webhooks/ses", b"{}", sns_json))[0] == 403
        # a genuine message from a topic clarion was not told to take is acknowledged and dropped
        s.sim.callbacks.topic_arn = "arn:aws:sns:us-east-1:000000000000:someone-else"
        try:
            other = s.sim.callbacks.notification(s.sim, event)
        finally:
            s.sim.callbacks.topic_arn = SNS_TOPIC_ARN
        assert await post(s, "/webhooks/ses", orjson.dumps(other), sns_json) == (200, {"ignored": "topic not allowed"})
        assert hits == []
    finally:
        await runner.cleanup()


@on_stack
async def test_sns_subscription_is_confirmed_by_visiting_its_subscribe_url_on_sns_only(feedback_stack: Stack) -> None:
    s = feedback_stack
    callbacks, sns_json = s.sim.callbacks, {"Content-Type": "text/plain; charset=UTF-8"}
    hits: list[str] = []

    async def evil(request: web.Request) -> web.Response:
        hits.append(request.path_qs)
        return web.Response(text="<ConfirmSubscriptionResponse/>")

    app = web.Application()
    app.router.add_get("/{tail:.*}", evil)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    evil_url = f"http://127.0.0.1:{port}/?Action=ConfirmSubscription&TopicArn={SNS_TOPIC_ARN}&Token=x"
    try:
        before = len(callbacks.confirmations)
        # SNS subscribes the endpoint: it POSTs a signed SubscriptionConfirmation of the allowed topic
        assert await callbacks.subscribe(s.sim, s.url + "/webhooks/ses") == 200
        (visit,) = callbacks.confirmations[before:]
        assert visit["confirmed"] and visit["topic"] == SNS_TOPIC_ARN
        again = callbacks.subscription_confirmation(s.sim)
        assert await post(s, "/webhooks/ses", orjson.dumps(again), sns_json) == (200, {"confirmed": True})
        assert [c["token"] for c in callbacks.confirmations[before:]] == [visit["token"], again["Token"]]
        # a token SNS did not issue for the topic: SNS refuses it, and clarion says it is not confirmed
        forged_token = callbacks.subscription_confirmation(
            s.sim, subscribe_url=f"{s.sim.url}/?Action=ConfirmSubscription&TopicArn={SNS_TOPIC_ARN}&Token=bad"
        )
        assert await post(s, "/webhooks/ses", orjson.dumps(forged_token), sns_json) == (200, {"confirmed": False})
        assert callbacks.confirmations[-1] == {"topic": SNS_TOPIC_ARN, "token": "bad", "confirmed": False}
        visits = len(callbacks.confirmations)
        # a topic clarion was not told to take: acknowledged, never visited
        other = callbacks.subscription_confirmation(s.sim, "arn:aws:sns:us-east-1:000000000000:someone-else")
        assert await post(s, "/webhooks/ses", orjson.dumps(other), sns_json) == (200, {"ignored": "topic not allowed"})
        # a SubscribeURL changed after signing: refused before anything is fetched
        tampered = {**callbacks.subscription_confirmation(s.sim), "SubscribeURL": evil_url}
        status, body = await post(s, "/webhooks/ses", orjson.dumps(tampered), sns_json)
        assert status == 403 and "does not match" in body["error"]
        # even a validly signed one is not followed off SNS's hosts
        off_host = callbacks.subscription_confirmation(s.sim, subscribe_url=evil_url)
        assert await post(s, "/webhooks/ses", orjson.dumps(off_host), sns_json) == (
            200, {"ignored": "SubscribeURL not on an SNS host"})  # fmt: skip
        assert hits == [] and len(callbacks.confirmations) == visits
    finally:
        await runner.cleanup()


@on_stack
async def test_twilio_callbacks_signed_with_a_shared_key(feedback_stack: Stack) -> None:
    s = feedback_stack
    s.sim.callbacks.twilio_shared_key = (SHARED_ID, SHARED_SECRET, "HMAC_SHA256")
    try:
        nid = await send(s, {"user_id": "shared-key", "phone": "+15005550010"}, ["sms"])  # then undelivered 30005
        doc = await wait_delivery(s, nid, "undelivered")
    finally:
        s.sim.callbacks.twilio_shared_key = None
    assert [d["reason"] for d in doc["deliveries"].values()] == ["30005 undelivered"]
    answers = [c["answer"] for c in s.sim.callbacks.sent if c["kind"].startswith("twilio:") and nid in c["url"]]
    assert answers == [200, 200, 202]  # queued and sent acknowledged, the final status taken
    # what the webhook refuses: a key it does not hold, a downgrade to the auth token, a missing announcement
    path = "/webhooks/twilio?nid=n0_abc&did=n0_abc.sms.0"
    params = {"MessageSid": "SM9", "MessageStatus": "delivered", "To": "+14155550100"}
    url, body = s.settings.webhook_base_url + path, urlencode(params).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    sha256 = twilio_signature(url, params, SHARED_SECRET, "HMAC_SHA256")
    settings = {"X-Twilio-Webhooks-Signature-Settings": f"key={SHARED_ID},algorithm=HMAC_SHA256"}
    assert await post(s, path, body, {**form, **settings, "X-Twilio-Signature": sha256}) == (202, {"feedback": 1})
    unknown = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_other,algorithm=HMAC_SHA256"}
    assert (await post(s, path, body, {**form, **unknown, "X-Twilio-Signature": sha256}))[0] == 403
    sha1 = twilio_signature(url, params, s.settings.twilio_auth_token)
    assert (await post(s, path, body, {**form, **settings, "X-Twilio-Signature": sha1}))[0] == 403
    assert (await post(s, path, body, {**form, "X-Twilio-Signature": sha256}))[0] == 403
