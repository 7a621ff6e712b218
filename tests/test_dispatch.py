"""Dispatch: claim, call, settle; a channel whose credentials are refused is held, not burned."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from clarion.providers.base import (
    AuthFailure,
    Delivered,
    OutboundMessage,
    SendResult,
    TransientFailure,
    retry_after,
)
from clarion.providers.dispatch import Dispatcher, dispatcher_for, order_for
from clarion.providers.ratelimit import CircuitBreaker
from clarion.providers.registry import build_clients, build_fallbacks
from clarion.providers.simulator import Simulator
from clarion.tables.ledger import CLAIMED, SENT, LocalLedger
from clarion.tables.templates import Rendered
from clarion.topology.embedded import free_port, pointed_at_simulator
from clarion.topology.settings import Settings


class Scripted:
    """A provider client answering from a script, counting calls."""

    channel = "sms"

    def __init__(self, *answers: SendResult) -> None:
        self.answers = list(answers)
        self.calls: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> SendResult:
        self.calls.append(message)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]  # the last answer repeats

    async def close(self) -> None:
        pass


def order(n: int, last: bool = False) -> Any:
    return order_for("critical", "sms", f"d{n}", f"n{n}", "+14155550100", Rendered(body="hi"), last)


async def test_refused_credentials_hold_the_channel_without_spending_or_settling() -> None:
    client = Scripted(AuthFailure("401 20003 Authenticate"))
    ledger = LocalLedger(60)
    dispatcher = Dispatcher({"sms": client}, ledger, 4, auth_hold_s=60)
    assert [(r.kind, r.detail) for r in await dispatcher.run([order(1, last=True)])] == [
        ("held", "401 20003 Authenticate")
    ]
    replies = await dispatcher.run([order(2), order(3)])
    assert [r.kind for r in replies] == ["held", "held"] and len(client.calls) == 1  # no call while held
    assert (await ledger.claim("d1"))[0] == CLAIMED  # released, not dead: a last attempt is not spent either
    await ledger.release("d1")


async def test_the_hold_ends_and_the_next_order_probes(monkeypatch: Any) -> None:
    client = Scripted(AuthFailure("403 ExpiredProviderToken"), Delivered("apns-1"))
    ledger = LocalLedger(60)
    dispatcher = Dispatcher({"sms": client}, ledger, 4, auth_hold_s=0.0)
    assert [r.kind for r in await dispatcher.run([order(1)])] == ["held"]
    assert [(r.kind, r.detail) for r in await dispatcher.run([order(1)])] == [("sent", "apns-1")]
    assert await ledger.claim("d1") == (SENT, "apns-1")


def test_retry_after_takes_seconds_and_http_dates() -> None:
    assert retry_after({"Retry-After": "120"}) == 120.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412480 - 90) == 90.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412480 + 5) == 0.0
    assert retry_after({"Retry-After": "soon"}) is None and retry_after({}) is None


# --- failover to a second account ---------------------------------------------------------


async def test_refused_credentials_fail_the_channel_over_to_its_fallback() -> None:
    primary, fallback = Scripted(AuthFailure("401 20003 Authenticate")), Scripted(Delivered("ok"))
    ledger = LocalLedger(60)
    dispatcher = Dispatcher({"sms": primary}, ledger, 4, auth_hold_s=60, fallbacks={"sms": fallback})
    assert [r.kind for r in await dispatcher.run([order(1)])] == ["held"]  # refused: released, looked at again
    replies = await dispatcher.run([order(1), order(2), order(3)])  # d1's retry, and new orders
    assert [(r.kind, r.detail) for r in replies] == [("sent", "ok")] * 3
    assert [m.delivery_id for m in primary.calls] == ["d1"]  # held: not called again
    assert sorted(m.delivery_id for m in fallback.calls) == ["d1", "d2", "d3"]  # each sent once overall
    assert [r.kind for r in await dispatcher.run([order(1), order(2), order(3)])] == ["final"] * 3
    assert len(fallback.calls) == 3
    assert dispatcher.held("sms") == "401 20003 Authenticate" and dispatcher.held("sms/fallback") is None


async def test_an_open_circuit_fails_the_channel_over_and_the_primary_comes_back(monkeypatch: Any) -> None:
    primary, fallback = Scripted(TransientFailure("503")), Scripted(Delivered("ok"))
    breaker = CircuitBreaker(failures=2, open_s=60)
    dispatcher = Dispatcher({"sms": primary}, LocalLedger(60), 4, breaker=breaker, fallbacks={"sms": fallback})
    assert [r.kind for r in await dispatcher.run([order(1), order(2)])] == ["transient"] * 2  # opens the circuit
    assert dispatcher.held("sms") == "circuit_open: the provider keeps failing"
    replies = await dispatcher.run([order(1), order(2), order(3)])
    assert [r.kind for r in replies] == ["sent"] * 3 and len(primary.calls) == 2
    assert sorted(m.delivery_id for m in fallback.calls) == ["d1", "d2", "d3"]
    # the circuit closes (its pause is over): the primary is the first choice again
    primary.answers = [Delivered("primary")]
    monkeypatch.setattr(breaker, "_open_until", {})
    assert [(r.kind, r.detail) for r in await dispatcher.run([order(4)])] == [("sent", "primary")]
    assert len(fallback.calls) == 3


async def test_without_a_fallback_the_channel_is_held_as_before() -> None:
    primary = Scripted(AuthFailure("401 20003 Authenticate"))
    dispatcher = Dispatcher({"sms": primary}, LocalLedger(60), 4, auth_hold_s=60,
                            fallbacks={"email": Scripted(Delivered("ok"))})  # another channel's fallback  # fmt: skip
    await dispatcher.run([order(1)])
    assert [(r.kind, r.detail) for r in await dispatcher.run([order(2)])] == [("held", "401 20003 Authenticate")]
    assert len(primary.calls) == 1


async def test_a_channel_is_held_when_primary_and_fallback_are_both_unavailable() -> None:
    primary = Scripted(AuthFailure("401 20003 Authenticate"))
    fallback = Scripted(TransientFailure("503"))
    ledger = LocalLedger(60)
    dispatcher = Dispatcher({"sms": primary}, ledger, 4, auth_hold_s=60, breaker=CircuitBreaker(failures=1, open_s=60),
                            fallbacks={"sms": fallback})  # fmt: skip
    assert [r.kind for r in await dispatcher.run([order(1)])] == ["held"]  # primary refused
    assert [r.kind for r in await dispatcher.run([order(1)])] == ["transient"]  # fallback failing: circuit open
    replies = await dispatcher.run([order(1), order(2)])
    assert [(r.kind, r.detail) for r in replies] == [
        ("held", "401 20003 Authenticate; fallback: circuit_open: the provider keeps failing")
    ] * 2
    assert (len(primary.calls), len(fallback.calls)) == (1, 1)
    assert (await ledger.claim("d2"))[0] == CLAIMED  # held orders were never claimed


def test_fallbacks_come_from_settings_only_where_configured() -> None:
    assert build_fallbacks(Settings()) == {}
    configured = Settings(
        ses_fallback_url="https://email.eu-west-1.amazonaws.com",
        ses_fallback_region="eu-west-1",
        twilio_fallback_account_sid="AC2",
        twilio_fallback_auth_token="t2",
        twilio_fallback_from="+15550000001",
    )
    fallbacks = build_fallbacks(configured)
    assert sorted(fallbacks) == ["email", "sms"]  # no APNs/FCM: a device token belongs to one app/project
    assert fallbacks["email"].region == "eu-west-1"  # type: ignore[attr-defined]
    assert fallbacks["sms"].path == "/2010-04-01/Accounts/AC2/Messages.json"  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        build_fallbacks(Settings(twilio_fallback_account_sid="AC2"))  # no token, no number of its own


async def test_fallback_accounts_get_their_own_rate_bucket() -> None:
    settings = Settings(provider_rates="sms=5,email=7", ses_fallback_url="http://127.0.0.1:1")
    dispatcher = dispatcher_for(settings, {}, LocalLedger(60))
    try:
        assert dispatcher.limiter.rates["email/fallback"] == dispatcher.limiter.rates["email"] == (7.0, 7.0)
        assert "sms/fallback" not in dispatcher.limiter.rates
        own = dispatcher_for(replace(settings, provider_rates="email=7,email/fallback=3"), {}, LocalLedger(60))
        assert own.limiter.rates["email/fallback"] == (3.0, 3.0)
        await own.close()
    finally:
        await dispatcher.close()


async def test_email_fails_over_to_a_second_ses_endpoint(simulator: tuple[Simulator, str]) -> None:
    sim, url = simulator
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, transient
    settings = replace(pointed_at_simulator(Settings(circuit_failures=2), url), ses_url=down, ses_fallback_url=url)
    dispatcher = dispatcher_for(settings, {"email": build_clients(settings)["email"]}, LocalLedger(60))
    content = Rendered(subject="s", text="t")
    orders = [
        order_for("critical", "email", f"n{i}.email.0", f"n{i}", f"u{i}@example.com", content, False) for i in range(4)
    ]
    try:
        assert [r.kind for r in await dispatcher.run(orders[:2])] == ["transient"] * 2  # the circuit opens
        assert [r.kind for r in await dispatcher.run(orders)] == ["sent"] * 4  # through the second endpoint
        assert [r.kind for r in await dispatcher.run(orders)] == ["final"] * 4
    finally:
        await dispatcher.close()
    assert sorted(d["did"] for d in sim.state.deliveries) == [f"n{i}.email.0" for i in range(4)]
