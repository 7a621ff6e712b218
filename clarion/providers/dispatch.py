"""Dispatch: the only place a provider is called. Claim, send, settle, in that order.

A batch of orders is claimed in the delivery ledger with one round trip; what this call
claimed is sent (at most `provider_concurrency` calls in flight per lane and channel);
the results are settled in the ledger with one more round trip before anyone hears of
them: `sent`, `failed` and (on a last attempt) `dead` stay, so a replay repeats the
outcome; a transient failure releases the claim, so the retry can claim it again.
Orders the ledger already holds are answered from it (`final` or `in_flight`). A
provider that refuses our credentials even after the client refreshed them holds its
channel: for `auth_hold_s` its orders are answered `held` without a call (they wait in
the retry schedule without spending attempts) and an alert is logged, rather than burning
every message against a bad key. The same holds a channel whose circuit is open.

A channel may have a fallback: a second account or region (providers/registry.py
build_fallbacks). While the primary is held or its circuit is open, the channel's orders
go to the fallback instead of being held; the fallback has its own hold, circuit and rate,
all under the name `<channel>/fallback` (its rate bucket is its own provider account's:
ratelimit.py). The primary is tried again as soon as its hold or circuit ends. Only when
both are unavailable are the orders held.

Dispatch runs in the worker (`InlineDispatch`) or, with Redis, in a sender process the
worker starts (providers/sender.py): then a worker killed mid-call leaves no claim
behind, because the process that claimed a delivery is the one that finishes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import msgspec

from clarion.logs import event
from clarion.providers.base import (
    AuthFailure,
    Delivered,
    OutboundMessage,
    PermanentFailure,
    ProviderClient,
    SendResult,
    TransientFailure,
)
from clarion.providers.errors import result_class
from clarion.providers.ratelimit import CircuitBreaker, RateLimiter, parse_rates
from clarion.tables.ledger import CLAIMED, DEAD, FAILED, IN_FLIGHT, SENT, DeliveryLedger
from clarion.tables.templates import Rendered

if TYPE_CHECKING:
    from clarion.topology.settings import Settings

log = logging.getLogger("clarion.dispatch")


class Order(msgspec.Struct, array_like=True):
    """One delivery to make (array_like: it crosses a pipe to the sender process)."""

    lane: str
    channel: str
    delivery_id: str
    notification_id: str
    address: str
    last_attempt: bool  # a transient failure now is final (dead), not a retry
    trace_id: str = ""
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    title: str | None = None
    body: str | None = None
    expires_at: float | None = None  # new fields go last, with a default: older frames still decode
    campaign: str = ""  # client/campaign_id: its counters count this delivery once it is final
    user_id: str = ""  # a campaign's: whose address it is, for the provider's feedback

    def message(self) -> OutboundMessage:
        content = Rendered(subject=self.subject, text=self.text, html=self.html, title=self.title, body=self.body)
        return OutboundMessage(self.delivery_id, self.notification_id, self.address, content, self.trace_id,
                               self.expires_at, self.campaign, self.user_id)  # fmt: skip


class Reply(msgspec.Struct, array_like=True):
    """What became of an order.

    kind: "sent" | "failed" | "transient" (this call's result), "final" (the ledger already
    held a final `state` for it: a replay), "in_flight" (someone else holds its claim),
    "held" (its channel's credentials are refused or its circuit open, and its fallback's too,
    if it has one: not sent, look again later).
    """

    kind: Literal["sent", "failed", "transient", "final", "in_flight", "held"]
    detail: str = ""  # provider message id, reason, or the final state's detail
    state: str = ""  # for "final": sent | failed | dead
    retry_after: float | None = None
    # When this order made a provider call (for the worker's metrics; new fields go last, with a
    # default: older frames still decode): how long it took, the account called (the channel or
    # `<channel>/fallback`) and its result class (errors.result_class). Empty: no call was made.
    call_s: float = 0.0
    account: str = ""
    result_class: str = ""

    def result(self) -> SendResult:
        if self.kind == "sent":
            return Delivered(self.detail)
        if self.kind == "failed":
            return PermanentFailure(self.detail)
        return TransientFailure(self.detail, self.retry_after)


def order_for(
    lane: str, channel: str, delivery_id: str, notification_id: str, address: str, content: Rendered,
    last_attempt: bool, trace_id: str = "", expires_at: float | None = None, campaign: str = "", user_id: str = "",
) -> Order:  # fmt: skip
    return Order(lane, channel, delivery_id, notification_id, address, last_attempt, trace_id,
                 content.subject, content.text, content.html, content.title, content.body, expires_at,
                 campaign, user_id if campaign else "")  # fmt: skip


def reply_for(result: SendResult, call_s: float = 0.0, account: str = "") -> Reply:
    """The reply for a provider call's result (`call_s`, `account`: the call, for the metrics)."""
    called = {"call_s": call_s, "account": account, "result_class": result_class(result)}
    if isinstance(result, Delivered):
        return Reply("sent", result.provider_message_id, **called)
    if isinstance(result, PermanentFailure):
        return Reply("failed", result.reason, **called)
    if isinstance(result, AuthFailure):
        return Reply("held", result.reason, **called)
    return Reply("transient", result.reason, retry_after=result.retry_after, **called)


def fallback_key(channel: str) -> str:
    """The name of a channel's fallback account: for its hold, its circuit and its configured rate."""
    return channel + "/fallback"


class Dispatcher:
    """Claims, sends and settles orders against a ledger and one client per channel (plus fallbacks)."""

    def __init__(
        self,
        clients: dict[str, ProviderClient],
        ledger: DeliveryLedger,
        concurrency: int,
        auth_hold_s: float = 30.0,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        fallbacks: dict[str, ProviderClient] | None = None,
    ) -> None:
        self.clients = clients
        self.fallbacks = fallbacks or {}
        self.ledger = ledger
        self.concurrency = concurrency
        self.auth_hold_s = auth_hold_s
        self.limiter = limiter or RateLimiter({})
        self.breaker = breaker or CircuitBreaker()
        self._limits: dict[tuple[str, str], asyncio.Semaphore] = {}
        self._held: dict[str, tuple[float, str]] = {}  # account (channel or channel/fallback) -> (until, why)

    def held(self, account: str) -> str | None:
        """Why `account` (a channel, or `fallback_key(channel)`) is held, while it is (refused
        credentials, or a provider failing: circuit open)."""
        until, why = self._held.get(account, (0.0, ""))
        if time.monotonic() < until:
            return why
        return "circuit_open: the provider keeps failing" if self.breaker.is_open(account) else None

    def route(self, channel: str) -> tuple[str | None, str]:
        """(account, "") to send `channel`'s orders to now: the primary (named `channel`) unless
        it is held, then its fallback (`fallback_key(channel)`) unless that is held too; else
        (None, why the channel is held)."""
        why = self.held(channel)
        if why is None:
            return channel, ""
        if channel not in self.fallbacks:
            return None, why
        fallback_why = self.held(fallback_key(channel))
        if fallback_why is None:
            return fallback_key(channel), ""
        return None, f"{why}; fallback: {fallback_why}"

    def client(self, account: str) -> ProviderClient:
        """The client of an account `route` named (KeyError for a channel without one)."""
        channel, _, fallback = account.partition("/")
        return self.fallbacks[channel] if fallback else self.clients[channel]

    async def run(self, orders: Sequence[Order]) -> list[Reply]:
        """One reply per order, in order."""
        replies: list[Reply | None] = [None] * len(orders)
        open_orders = []
        accounts: dict[int, str] = {}  # order index -> the account it goes to
        for i, order in enumerate(orders):
            account, why = self.route(order.channel)
            if account is None:
                replies[i] = Reply("held", why)
            else:
                accounts[i] = account
                open_orders.append(i)
        claims = await self.ledger.claim_many([orders[i].delivery_id for i in open_orders])
        to_send: list[int] = []
        for i, (state, detail) in zip(open_orders, claims, strict=True):
            if state == CLAIMED:
                to_send.append(i)
            elif state == IN_FLIGHT:
                replies[i] = Reply("in_flight")
            else:
                replies[i] = Reply("final", detail or "", state)
        calls = await asyncio.gather(*(self._send(orders[i], accounts[i]) for i in to_send))
        results = [result for result, _ in calls]
        await self._settle([(orders[i], r) for i, r in zip(to_send, results, strict=True)])
        for i, (result, call_s) in zip(to_send, calls, strict=True):
            replies[i] = reply_for(result, call_s, accounts[i])
            account = accounts[i]
            self.breaker.record(account, isinstance(result, TransientFailure))
            if isinstance(result, AuthFailure):
                self._hold(account, result.reason)
        return [r for r in replies if r is not None]

    def _hold(self, account: str, why: str) -> None:
        if self.held(account) is None:
            event(log, "provider refused our credentials: account held", logging.ERROR, alert=True,
                  channel=account, reason=why, hold_s=self.auth_hold_s,
                  failover=account in self.fallbacks)  # fmt: skip
        self._held[account] = (time.monotonic() + self.auth_hold_s, why)

    async def _send(self, order: Order, account: str) -> tuple[SendResult, float]:
        """The call's result and how long the call took (seconds; waits for a rate or a slot left out)."""
        limit = self._limits.setdefault((order.lane, account), asyncio.Semaphore(self.concurrency))
        started = 0.0
        try:
            client = self.client(account)
            # the fleet-wide rate of the provider account (no wait when its channel has none), critical first
            await self.limiter.permit(account, getattr(client, "account", "") or account, order.lane)
            async with limit:
                started = time.perf_counter()
                result = await client.send(order.message())
                return result, time.perf_counter() - started
        except Exception as exc:  # a client bug must not take the batch down; retries are bounded
            log.exception("provider client failed on %s", order.delivery_id)
            return TransientFailure(f"client_error: {exc!r}"), time.perf_counter() - started if started else 0.0

    async def _settle(self, sent: list[tuple[Order, SendResult]]) -> None:
        """Final results stay in the ledger (a replay repeats the outcome); a retry releases its claim."""
        final: list[tuple[str, str, str]] = []
        campaigns: list[str] = []
        retrying: list[str] = []
        for order, result in sent:
            if isinstance(result, Delivered):
                final.append((order.delivery_id, SENT, result.provider_message_id))
            elif isinstance(result, PermanentFailure):
                final.append((order.delivery_id, FAILED, result.reason))
            elif order.last_attempt and not isinstance(result, AuthFailure):
                final.append((order.delivery_id, DEAD, f"retries_exhausted: {result.reason}"))
            else:
                retrying.append(order.delivery_id)
                continue
            campaigns.append(order.campaign)
        try:
            await self.ledger.record_many(final, campaigns)
            await self.ledger.release_many(retrying)
        except Exception:  # the sends happened: report them; the claims expire on their own
            log.exception("delivery ledger update failed for %d deliveries", len(sent))

    async def close(self) -> None:
        for client in [*self.clients.values(), *self.fallbacks.values()]:
            await client.close()
        await self.ledger.close()
        await self.limiter.close()


def dispatcher_for(
    settings: Settings, clients: dict[str, ProviderClient], ledger: DeliveryLedger,
    fallbacks: dict[str, ProviderClient] | None = None,
) -> Dispatcher:  # fmt: skip
    """A dispatcher with the settings' concurrency, holds, fleet-wide rates, circuit breaker and fallbacks.

    `fallbacks` default to the settings' (registry.build_fallbacks). A fallback account's
    rate is `<channel>/fallback=…` in provider_rates, else the same rate as its channel's
    primary. Buckets are per provider account (each client's
    `account`), so two sender numbers or projects of one channel each get the channel's rate.
    """
    if fallbacks is None:
        from clarion.providers.registry import build_fallbacks  # it imports every client module

        fallbacks = build_fallbacks(settings)
    rates = parse_rates(settings.provider_rates)
    for channel in fallbacks:
        if channel in rates:
            rates.setdefault(fallback_key(channel), rates[channel])
    limiter = RateLimiter(rates, settings.redis, settings.topic_prefix, settings.provider_rate_reserve)
    breaker = CircuitBreaker(settings.circuit_failures, settings.circuit_open_s)
    return Dispatcher(clients, ledger, settings.provider_concurrency, settings.provider_auth_hold_s, limiter, breaker,
                      fallbacks)  # fmt: skip
