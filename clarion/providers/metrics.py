"""Provider call metrics, observed in the worker from its dispatch replies.

Calls are made in the sender process (or inline), but every reply carries the call's
duration, account and result class back (dispatch.Reply), so the worker's /metrics has
them whichever way calls are made, and the sender needs no registry or port of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

from clarion.providers.dispatch import Order, Reply
from clarion.schemas.channels import PROVIDERS

SECONDS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ProviderMetrics:
    """clarion_provider_call_seconds{provider,account} and clarion_provider_calls_total{provider,account,result}."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "clarion_provider_call_seconds",
            "Provider call latency (the HTTP call only: rate and concurrency waits left out)",
            ["provider", "account"],
            buckets=SECONDS,
            registry=registry,
        )
        self.calls = Counter(
            "clarion_provider_calls",
            "Provider calls by result: ok, permanent, transient, rate_limited, auth, timeout, connection, client_error",
            ["provider", "account", "result"],
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Histogram, Counter]] = {}

    def observe(self, orders: Sequence[Order], replies: Sequence[Reply]) -> None:
        """Count the calls among a batch's replies (replies without a call are left out)."""
        for order, reply in zip(orders, replies, strict=True):
            if not reply.result_class:
                continue
            key = (order.channel, reply.account, reply.result_class)
            children = self._children.get(key)
            if children is None:  # labels() costs a lock and a sort: once per combination
                provider = PROVIDERS.get(order.channel, order.channel)
                account = "fallback" if reply.account.endswith("/fallback") else "primary"
                children = (self.seconds.labels(provider, account), self.calls.labels(provider, account, key[2]))
                self._children[key] = children
            children[0].observe(reply.call_s)
            children[1].inc()
