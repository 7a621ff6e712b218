"""The delivery ledger: guards a provider call against being made twice.

A delivery can reach a deliver agent twice (a rebalance replays uncommitted offsets, a
request is routed again). Before calling a provider the agent claims the delivery_id;
after success it records `sent`. Redis makes the guard hold across workers; without
Redis it holds within one process only (fine for a single worker, said in the README).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis

CLAIMED, IN_FLIGHT, SENT = "claimed", "in_flight", "sent"


class DeliveryLedger(Protocol):
    async def claim(self, delivery_id: str) -> tuple[str, str | None]:
        """(CLAIMED, None), (IN_FLIGHT, None) or (SENT, provider_message_id)."""
        ...

    async def mark_sent(self, delivery_id: str, provider_message_id: str) -> None: ...
    async def release(self, delivery_id: str) -> None: ...
    async def close(self) -> None: ...


class RedisLedger:
    def __init__(self, url: str, sent_ttl_s: float, claim_ttl_s: float = 120.0, prefix: str = "clarion") -> None:
        self.redis = aioredis.from_url(url)
        self.sent_ttl = int(sent_ttl_s)
        self.claim_ttl = int(claim_ttl_s)
        self.prefix = prefix

    def _key(self, delivery_id: str) -> str:
        return f"{self.prefix}:dlv:{delivery_id}"

    async def claim(self, delivery_id: str) -> tuple[str, str | None]:
        key = self._key(delivery_id)
        if await self.redis.set(key, IN_FLIGHT, nx=True, ex=self.claim_ttl):
            return CLAIMED, None
        value = (await self.redis.get(key) or b"").decode()
        if value.startswith(SENT + ":"):
            return SENT, value[len(SENT) + 1 :]
        return IN_FLIGHT, None

    async def mark_sent(self, delivery_id: str, provider_message_id: str) -> None:
        await self.redis.set(self._key(delivery_id), f"{SENT}:{provider_message_id}", ex=self.sent_ttl)

    async def release(self, delivery_id: str) -> None:
        await self.redis.delete(self._key(delivery_id))

    async def close(self) -> None:
        await self.redis.aclose()


class LocalLedger:
    """Process-local ledger, bounded in size and time."""

    def __init__(self, sent_ttl_s: float, max_entries: int = 1_000_000) -> None:
        self.sent_ttl = sent_ttl_s
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[str, str | None, float]] = OrderedDict()

    async def claim(self, delivery_id: str) -> tuple[str, str | None]:
        entry = self.entries.get(delivery_id)
        if entry is not None and entry[2] > time.monotonic():
            return (SENT, entry[1]) if entry[0] == SENT else (IN_FLIGHT, None)
        self._put(delivery_id, IN_FLIGHT, None, 120.0)
        return CLAIMED, None

    async def mark_sent(self, delivery_id: str, provider_message_id: str) -> None:
        self._put(delivery_id, SENT, provider_message_id, self.sent_ttl)

    async def release(self, delivery_id: str) -> None:
        self.entries.pop(delivery_id, None)

    async def close(self) -> None:
        self.entries.clear()

    def _put(self, delivery_id: str, state: str, pmid: str | None, ttl: float) -> None:
        self.entries[delivery_id] = (state, pmid, time.monotonic() + ttl)
        self.entries.move_to_end(delivery_id)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
