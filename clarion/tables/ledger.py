"""The delivery ledger: guards a provider call against being made twice.

A delivery can reach a deliver agent twice (a rebalance replays uncommitted offsets, a
request is routed again). Before calling a provider the agent claims the delivery_id;
after success it records `sent`. Redis makes the guard hold across workers; without
Redis it holds within one process only (fine for a single worker, said in the README).
A deliver agent handles a batch of tasks at once, so each step takes many ids and costs
one Redis round trip (a pipeline) for the whole batch.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from clarion.topology.settings import Settings

CLAIMED, IN_FLIGHT, SENT = "claimed", "in_flight", "sent"
# Final states besides SENT: a replay of a delivery in one of them is answered from the
# ledger (same outcome, no provider call, no second dead letter).
FAILED, DEAD = "failed", "dead"
CANCELLED = "cancelled"  # a campaign execution whose campaign was cancelled before it was sent
FINAL = (SENT, FAILED, DEAD, CANCELLED)


Claim = tuple[str, str | None]  # (CLAIMED, None), (IN_FLIGHT, None), or (a final state, its detail)


class DeliveryLedger(Protocol):
    async def claim_many(self, delivery_ids: Sequence[str]) -> list[Claim]: ...
    async def record_many(self, final: Sequence[tuple[str, str, str]], campaigns: Sequence[str] = ()) -> None:
        """(delivery_id, final state, detail): kept for the sent TTL.

        `campaigns`, when given, names each delivery's campaign ("" for none): the campaign's
        counter for the state is incremented when the delivery becomes final, once, however
        often it is recorded (a replay after a crash), so campaign counts are exact.
        """
        ...

    async def campaign_counts(self, campaign_key: str) -> dict[str, int]:
        """Final states of a campaign's deliveries: state -> how many."""
        ...

    async def release_many(self, delivery_ids: Sequence[str]) -> None: ...
    async def release_dead(self, delivery_ids: Sequence[str]) -> int:
        """Forget deliveries settled `dead` (a DLQ replay may try them again); `sent` ones stay. Returns how many."""
        ...

    async def close(self) -> None: ...


class _OneAtATime:
    """Single-id conveniences over the batch methods."""

    async def claim(self: DeliveryLedger, delivery_id: str) -> Claim:
        return (await self.claim_many([delivery_id]))[0]

    async def mark_sent(self: DeliveryLedger, delivery_id: str, provider_message_id: str) -> None:
        await self.record_many([(delivery_id, SENT, provider_message_id)])

    async def release(self: DeliveryLedger, delivery_id: str) -> None:
        await self.release_many([delivery_id])


# For each key: SET NX EX; 0 when this call claimed it, else the value that holds it.
CLAIM_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'EX', ARGV[2]) then
    out[i] = 0
  else
    out[i] = redis.call('GET', key) or ''
  end
end
return out
"""
# KEYS[i] gets ARGV[i + 1], expiring after ARGV[1] seconds.
MARK_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


# As MARK_SCRIPT, ARGV[1] the TTL and then (value, counter hash or '') per key: a delivery that
# was not final yet counts once in its campaign's hash, under the state (the value's prefix).
MARK_COUNT_SCRIPT = """
for i, key in ipairs(KEYS) do
  local value, counter = ARGV[2 * i], ARGV[2 * i + 1]
  local prev = redis.call('GET', key)
  redis.call('SET', key, value, 'EX', ARGV[1])
  if counter ~= '' then
    local state = prev and string.match(prev, '^[^:]*')
    local final = state == 'sent' or state == 'failed' or state == 'dead' or state == 'cancelled'
    if not final then
      redis.call('HINCRBY', counter, string.match(value, '^[^:]*'), 1)
      redis.call('EXPIRE', counter, ARGV[1])
    end
  end
end
return #KEYS
"""


# For each key: DEL when it holds a dead delivery; the count deleted.
RELEASE_DEAD_SCRIPT = """
local n = 0
for _, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value and string.sub(value, 1, 5) == 'dead:' then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
"""


class RedisLedger(_OneAtATime):
    def __init__(self, url: str, sent_ttl_s: float, claim_ttl_s: float = 120.0, prefix: str = "clarion") -> None:
        self.redis = aioredis.from_url(url)
        self.sent_ttl = int(sent_ttl_s)
        self.claim_ttl = int(claim_ttl_s)
        self.prefix = prefix
        # One command per batch: a pipeline of N SETs costs redis-py ~15-25 µs per command.
        self._claim = self.redis.register_script(CLAIM_SCRIPT)
        self._mark = self.redis.register_script(MARK_SCRIPT)
        self._mark_count = self.redis.register_script(MARK_COUNT_SCRIPT)
        self._release_dead = self.redis.register_script(RELEASE_DEAD_SCRIPT)

    def _key(self, delivery_id: str) -> str:
        return f"{self.prefix}:dlv:{delivery_id}"

    async def claim_many(self, delivery_ids: Sequence[str]) -> list[Claim]:
        if not delivery_ids:
            return []
        keys = [self._key(d) for d in delivery_ids]
        held = await self._claim(keys=keys, args=[IN_FLIGHT, self.claim_ttl])
        return [(CLAIMED, None) if value == 0 else _held(value) for value in held]

    def _campaign_key(self, campaign_key: str) -> str:
        return f"{self.prefix}:campaign:{campaign_key}"

    async def record_many(self, final: Sequence[tuple[str, str, str]], campaigns: Sequence[str] = ()) -> None:
        if not final:
            return
        keys = [self._key(delivery_id) for delivery_id, _, _ in final]
        values = [f"{state}:{detail}" for _, state, detail in final]
        if not any(campaigns):
            await self._mark(keys=keys, args=[self.sent_ttl, *values])
            return
        args: list[str | int] = [self.sent_ttl]
        for value, campaign in zip(values, campaigns, strict=True):
            args += [value, self._campaign_key(campaign) if campaign else ""]
        await self._mark_count(keys=keys, args=args)

    async def campaign_counts(self, campaign_key: str) -> dict[str, int]:
        counts = await self.redis.hgetall(self._campaign_key(campaign_key))
        return {k.decode(): int(v) for k, v in counts.items()}

    async def release_many(self, delivery_ids: Sequence[str]) -> None:
        if delivery_ids:
            await self.redis.delete(*(self._key(d) for d in delivery_ids))

    async def release_dead(self, delivery_ids: Sequence[str]) -> int:
        if not delivery_ids:
            return 0
        return int(await self._release_dead(keys=[self._key(d) for d in delivery_ids]))

    async def close(self) -> None:
        await self.redis.aclose()


def _held(value: bytes | str | None) -> Claim:
    text = value.decode() if isinstance(value, bytes) else (value or "")
    state, sep, detail = text.partition(":")
    if sep and state in FINAL:
        return state, detail
    return IN_FLIGHT, None


class LocalLedger(_OneAtATime):
    """Process-local ledger, bounded in size and time."""

    def __init__(self, sent_ttl_s: float, max_entries: int = 1_000_000) -> None:
        self.sent_ttl = sent_ttl_s
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[str, str | None, float]] = OrderedDict()
        self.campaigns: dict[str, dict[str, int]] = {}

    async def claim_many(self, delivery_ids: Sequence[str]) -> list[Claim]:
        return [self._claim(d) for d in delivery_ids]

    def _claim(self, delivery_id: str) -> Claim:
        entry = self.entries.get(delivery_id)
        if entry is not None and entry[2] > time.monotonic():
            return (entry[0], entry[1]) if entry[0] in FINAL else (IN_FLIGHT, None)
        self._put(delivery_id, IN_FLIGHT, None, 120.0)
        return CLAIMED, None

    async def record_many(self, final: Sequence[tuple[str, str, str]], campaigns: Sequence[str] = ()) -> None:
        for i, (delivery_id, state, detail) in enumerate(final):
            if campaigns and campaigns[i]:
                held = self.entries.get(delivery_id)
                if held is None or held[0] not in FINAL:
                    counts = self.campaigns.setdefault(campaigns[i], {})
                    counts[state] = counts.get(state, 0) + 1
            self._put(delivery_id, state, detail, self.sent_ttl)

    async def campaign_counts(self, campaign_key: str) -> dict[str, int]:
        return dict(self.campaigns.get(campaign_key, {}))

    async def release_many(self, delivery_ids: Sequence[str]) -> None:
        for delivery_id in delivery_ids:
            self.entries.pop(delivery_id, None)

    async def release_dead(self, delivery_ids: Sequence[str]) -> int:
        dead = [d for d in delivery_ids if self.entries.get(d, ("",))[0] == DEAD]
        await self.release_many(dead)
        return len(dead)

    async def close(self) -> None:
        self.entries.clear()

    def _put(self, delivery_id: str, state: str, pmid: str | None, ttl: float) -> None:
        self.entries[delivery_id] = (state, pmid, time.monotonic() + ttl)
        self.entries.move_to_end(delivery_id)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


def ledger_for(settings: Settings) -> DeliveryLedger:
    """Redis when the settings name one (shared by every worker and sender), else process-local."""
    window = settings.dedupe_window_s
    if settings.redis:
        return RedisLedger(settings.redis, window, prefix=settings.topic_prefix)
    return LocalLedger(window)
