"""Twilio SMS: clarion's client and the strict simulator, the simulator checked with the official SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from clarion.providers.base import (
    AuthFailure,
    Delivered,
    OutboundMessage,
    PermanentFailure,
    SendResult,
    TransientFailure,
)
from clarion.providers.dispatch import Dispatcher, order_for
from clarion.providers.errors import TABLE
from clarion.providers.registry import build_clients
from clarion.providers.simulator import Fault, Simulator
from clarion.providers.simulator.twilio import ACCOUNT_SID, AUTH_TOKEN, segments
from clarion.providers.twilio import TwilioClient, classify_answer
from clarion.tables.ledger import LocalLedger
from clarion.tables.templates import Rendered
from clarion.topology.embedded import pointed_at_simulator
from clarion.topology.settings import Settings

SENDER = "+15550000000"
SERVICE = "MG" + "0123456789abcdef" * 2
CALLBACK = "https://hooks.example.com/twilio/status?tenant=acme"


def message(address: str = "+14155550100", body: str = "Héllo & bye=1 +x", n: int = 1) -> OutboundMessage:
    return OutboundMessage(f"n_{n}.sms.0", f"n_{n}", address, Rendered(body=body), "t")


def client(url: str, **overrides: Any) -> TwilioClient:
    args: dict[str, Any] = {
        "base_url": url,
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "sender": SENDER,
        "status_callback": CALLBACK,
        "timeout_s": 5.0,
        **overrides,
    }
    return TwilioClient(**args)


# -- the request clarion builds ------------------------------------------------------------


def test_a_callback_with_a_query_gets_its_ids_appended_with_ampersands() -> None:
    form = client("http://x").form(message())
    expected = {
        "To": "+14155550100",
        "From": SENDER,
        "Body": "Héllo & bye=1 +x",
        "StatusCallback": "https://hooks.example.com/twilio/status?tenant=acme&nid=n_1&did=n_1.sms.0",
    }
    assert form == urlencode(expected).encode()
    dangling = client("http://x", status_callback="http://api/cb?").form(message())
    assert dangling == urlencode({**expected, "StatusCallback": "http://api/cb?nid=n_1&did=n_1.sms.0"}).encode()


def test_a_messaging_service_is_sent_instead_of_from() -> None:
    form = client("http://x", messaging_service_sid=SERVICE).form(message())
    expected = {
        "To": "+14155550100",
        "MessagingServiceSid": SERVICE,
        "Body": "Héllo & bye=1 +x",
        "StatusCallback": "https://hooks.example.com/twilio/status?tenant=acme&nid=n_1&did=n_1.sms.0",
    }
    assert form == urlencode(expected).encode()


def test_the_registry_passes_the_messaging_service_on() -> None:
    sms = build_clients(Settings(twilio_messaging_service_sid=SERVICE))["sms"]
    assert isinstance(sms, TwilioClient) and b"MessagingServiceSid=" + SERVICE.encode() in sms.form(message())


def test_the_simulator_expects_the_credentials_pointed_at_simulator_configures() -> None:
    s = pointed_at_simulator(Settings(), "http://sim")
    sim = Simulator()
    assert (s.twilio_account_sid, s.twilio_auth_token) == (sim.twilio_account_sid, sim.twilio_auth_token)


def test_the_simulator_counts_segments_like_twilio() -> None:
    assert [segments("x" * 160), segments("x" * 161), segments("x" * 306), segments("x" * 307)] == [1, 2, 2, 3]
    assert [segments("€" * 80), segments("€" * 81)] == [1, 2]  # extension characters take two septets
    assert [segments("😀" * 35), segments("😀" * 36), segments("ж" * 70), segments("ж" * 71)] == [1, 2, 1, 2]


# -- the taxonomy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, 21211, PermanentFailure),  # invalid To
        (400, 21614, PermanentFailure),  # not a mobile number
        (400, 21610, PermanentFailure),  # unsubscribed
        (400, 21408, PermanentFailure),  # region not enabled
        (400, 21606, PermanentFailure),  # From not ours
        (400, 21212, PermanentFailure),  # From invalid
        (429, 20429, TransientFailure),
        (400, 21611, TransientFailure),  # From's queue full
        (503, 20503, TransientFailure),
        (401, 20003, AuthFailure),
        (404, 20404, AuthFailure),
        (400, 21705, AuthFailure),  # our Messaging Service SID is malformed
    ],
)
def test_each_twilio_code_has_its_class(status: int, code: int, kind: type) -> None:
    result = classify_answer(status, {"code": code, "message": "m"}, {})
    assert type(result) is kind and result.reason == f"{status} {code} m"
    assert EXPECTED[TABLE["twilio", str(code)].kind] is kind


EXPECTED = {"permanent": PermanentFailure, "transient": TransientFailure, "rate_limited": TransientFailure,
            "auth": AuthFailure}  # fmt: skip


def test_without_a_known_code_the_http_status_decides() -> None:
    date = {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert classify_answer(429, {}, {"Retry-After": "7"}) == TransientFailure("429 (no error code)", 7.0)
    assert classify_answer(429, {"code": 20429, "message": "Too Many Requests"}, date) == TransientFailure(
        "429 20429 Too Many Requests", 0.0
    )  # an HTTP-date in the past: retry now
    assert classify_answer(502, {}, {}) == TransientFailure("502 (no error code)")
    assert classify_answer(401, {}, {}) == AuthFailure("401")
    assert classify_answer(400, {"code": 99999, "message": "new"}, {}) == PermanentFailure("400 99999 new")


# -- clarion's client against the strict simulator -----------------------------------------


async def test_a_message_is_sent_with_its_ids_in_the_callback_query(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    twilio = client(url)
    try:
        result = await twilio.send(message())
    finally:
        await twilio.close()
    assert isinstance(result, Delivered) and result.provider_message_id.startswith("SM")
    [row] = sim.state.deliveries
    assert (row["address"], row["nid"], row["did"], row["from"]) == ("+14155550100", "n_1", "n_1.sms.0", SENDER)
    assert row["body"] == "Héllo & bye=1 +x" and row["messaging_service_sid"] is None


async def test_a_messaging_service_sends(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    twilio = client(url, messaging_service_sid=SERVICE)
    try:
        assert isinstance(await twilio.send(message()), Delivered)
    finally:
        await twilio.close()
    [row] = sim.state.deliveries
    assert (row["messaging_service_sid"], row["from"], row["nid"]) == (SERVICE, None, "n_1")


@pytest.mark.parametrize(
    ("to", "sender", "kind", "reason"),
    [
        ("+15005550001", SENDER, PermanentFailure, "21211 The 'To' number +15005550001 is not a valid phone number."),
        ("+15005550009", SENDER, PermanentFailure, "21614 To number: +15005550009, is not a mobile number"),
        ("+15005550004", SENDER, PermanentFailure, "21610 Attempt to send to unsubscribed recipient"),
        ("+15005550003", SENDER, PermanentFailure, "21408 Permission to send an SMS has not been enabled for the "
                                                   "region indicated by the 'To' number: +15005550003."),
        ("hello", SENDER, PermanentFailure, "21211 The 'To' number hello is not a valid phone number."),
        ("+14155550100", "+15005550007", PermanentFailure, "21606 The 'From' phone number provided (+15005550007) "
                                                           "is not a valid message-capable Twilio phone number for "
                                                           "this destination."),
        ("+14155550100", "not a number!", PermanentFailure, "21212 The 'From' number not a number! is not a valid "
                                                            "phone number, shortcode, or alphanumeric sender ID."),
        ("+14155550100", "+15005550008", TransientFailure, "21611 This 'From' number has exceeded the maximum "
                                                           "number of queued messages."),
    ],
)  # fmt: skip
async def test_twilio_refusals_get_their_class(
    simulator: tuple[Simulator, str], to: str, sender: str, kind: type, reason: str
) -> None:
    sim, url = simulator
    twilio = client(url, sender=sender)
    try:
        assert await twilio.send(message(to)) == kind(f"400 {reason}")
    finally:
        await twilio.close()
    assert not sim.state.deliveries and len(sim.state.rejected) == 1


async def test_throttling_and_outages_are_transient(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    sim.state.faults.append(Fault("sms", "throttle", "+14155550101", times=1, retry_after="7"))
    sim.state.faults.append(Fault("sms", "transient", "+14155550102", times=1))
    twilio, impatient = client(url), client(url, timeout_s=0.05)
    try:
        throttled = await twilio.send(message("+14155550101"))
        down = await twilio.send(message("+14155550102"))
        sim.state.latency_ms = 300
        slow = await impatient.send(message("+14155550103"))
        sim.state.latency_ms = 0
        again = await twilio.send(message("+14155550101"))
    finally:
        await twilio.close()
        await impatient.close()
    assert throttled == TransientFailure("429 20429 Too Many Requests", 7.0)
    assert down == TransientFailure("503 20503 Service Unavailable")
    assert slow == TransientFailure("timeout")
    assert isinstance(again, Delivered)


async def test_a_long_body_is_refused(simulator: tuple[Simulator, str]) -> None:
    _, url = simulator
    twilio = client(url)
    try:
        ok = await twilio.send(message(body="x" * 1600))
        long = await twilio.send(message(body="x" * 1601))
    finally:
        await twilio.close()
    assert isinstance(ok, Delivered)
    assert long == PermanentFailure("400 21617 The concatenated message body exceeds the 1600 character limit.")


async def test_wrong_credentials_or_account_are_auth_failures(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    wrong_token, wrong_account = client(url, auth_token="nope"), client(url)
    wrong_account.path = wrong_account.path.replace(ACCOUNT_SID, "AC" + "1" * 32)  # our credentials, not our account
    try:
        assert await wrong_token.send(message()) == AuthFailure("401 20003 Authenticate")
        refused = await wrong_account.send(message())
    finally:
        await wrong_token.close()
        await wrong_account.close()
    assert isinstance(refused, AuthFailure) and refused.reason.startswith("404 20404 The requested resource")
    assert not sim.state.deliveries


class Counting(TwilioClient):
    """clarion's client, counting the calls it makes."""

    calls = 0

    async def send(self, message: OutboundMessage) -> SendResult:
        self.calls += 1
        return await super().send(message)


async def test_refused_credentials_hold_the_sms_channel(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    twilio = Counting(url, ACCOUNT_SID, "nope", SENDER, CALLBACK, 5.0)
    dispatcher = Dispatcher({"sms": twilio}, LocalLedger(60), 4, auth_hold_s=60)
    orders = [order_for("critical", "sms", f"d{i}", f"n{i}", "+14155550100", Rendered(body="hi"), True)
              for i in range(3)]  # fmt: skip
    try:
        first = await dispatcher.run(orders[:1])
        rest = await dispatcher.run(orders[1:])
    finally:
        await dispatcher.close()
    assert [(r.kind, r.detail) for r in first] == [("held", "401 20003 Authenticate")]
    assert [r.kind for r in rest] == ["held", "held"] and twilio.calls == 1  # no more calls while held
    assert not sim.state.deliveries


# -- the official SDK against the simulator ------------------------------------------------


class SimulatorHttpClient(TwilioHttpClient):
    """The SDK's own HTTP client, sending what it addresses to api.twilio.com to the simulator instead."""

    def __init__(self, simulator_url: str) -> None:
        super().__init__(timeout=10)
        self.simulator_url = simulator_url.rstrip("/")

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("https", "api.twilio.com"), url
        local = self.simulator_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, local, params, data, headers, auth, timeout, allow_redirects)


def sdk(url: str, auth_token: str = AUTH_TOKEN) -> Client:
    return Client(ACCOUNT_SID, auth_token, http_client=SimulatorHttpClient(url), environment={})


async def sdk_error(call: Callable[[], object]) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(call)
    return caught.value


async def test_the_sdk_sends_and_the_simulator_records(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    messages = sdk(url).messages
    sent = await asyncio.to_thread(
        messages.create, to="+14155550100", from_=SENDER, body="hello", status_callback=CALLBACK, validity_period=600
    )
    assert sent.sid.startswith("SM") and len(sent.sid) == 34 and sent.status == "queued"
    assert (sent.account_sid, sent.to, sent.from_, sent.body, sent.num_segments) == (
        ACCOUNT_SID, "+14155550100", SENDER, "hello", "1"
    )  # fmt: skip
    assert sent.date_created is not None and sent.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sent.sid}.json"
    [row] = sim.state.deliveries
    assert (row["address"], row["body"], row["from"]) == ("+14155550100", "hello", SENDER)


async def test_the_sdk_sends_with_a_messaging_service_or_media_only(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    messages = sdk(url).messages
    by_service = await asyncio.to_thread(messages.create, to="+14155550100", messaging_service_sid=SERVICE, body="é")
    media_only = await asyncio.to_thread(
        messages.create, to="+14155550101", from_=SENDER, media_url=["https://example.com/cat.jpg"]
    )
    assert (by_service.messaging_service_sid, by_service.from_, by_service.status) == (SERVICE, None, "accepted")
    assert media_only.num_media == "1" and media_only.body == ""
    assert [row["address"] for row in sim.state.deliveries] == ["+14155550100", "+14155550101"]


async def test_the_sdk_sees_twilios_errors(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    messages = sdk(url).messages

    def send(**overrides: Any) -> Callable[[], object]:
        args = {"to": "+14155550100", "from_": SENDER, "body": "hi", **overrides}
        return lambda: messages.create(**args)

    refused = await sdk_error(lambda: sdk(url, "wrong").messages.create(to="+14155550100", from_=SENDER, body="hi"))
    assert (refused.status, refused.code) == (401, 20003)
    assert (await sdk_error(send(to="+15005550001"))).code == 21211
    assert (await sdk_error(send(to="+15005550009"))).code == 21614
    assert (await sdk_error(send(to="+15005550004"))).code == 21610
    assert (await sdk_error(send(to="+15005550003"))).code == 21408
    assert (await sdk_error(send(from_="+15005550001"))).code == 21212
    assert (await sdk_error(send(from_="+15005550007"))).code == 21606
    assert (await sdk_error(send(body="x" * 1601))).code == 21617
    assert (await sdk_error(send(status_callback="not a url"))).code == 21609
    assert (await sdk_error(send(validity_period=36001))).code == 21624
    assert (await sdk_error(send(body=None))).code == 21602
    assert (await sdk_error(send(from_=None))).code == 21603
    assert (await sdk_error(send(from_=None, messaging_service_sid="MG123"))).code == 21705
    error = await sdk_error(send(to="+15005550001"))
    assert error.status == 400 and error.msg.endswith(": The 'To' number +15005550001 is not a valid phone number.")
    assert not sim.state.deliveries
