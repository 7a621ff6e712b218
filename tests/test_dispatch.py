"""Dispatch: claim, call, settle; a channel whose credentials are refused is held, not burned."""

from __future__ import annotations

from typing import Any

from clarion.providers.base import AuthFailure, Delivered, OutboundMessage, SendResult, retry_after
from clarion.providers.dispatch import Dispatcher, order_for
from clarion.tables.ledger import CLAIMED, SENT, LocalLedger
from clarion.tables.templates import Rendered


class Scripted:
    """A provider client answering from a script, counting calls."""

    channel = "sms"

    def __init__(self, *answers: SendResult) -> None:
        self.answers = list(answers)
        self.calls: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> SendResult:
        self.calls.append(message)
        return self.answers.pop(0)

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
