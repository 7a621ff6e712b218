"""Fleet-wide send rates per provider account, critical before promo, and a circuit breaker per provider.

Providers limit an account, not a process: Twilio queues or refuses past a sender
number's rate, SES per account and region, FCM per project, APNs per team and topic. Each
provider client names its account (`account`: `twilio:<From or MessagingServiceSid>`,
`ses:<region>`, `fcm:<project>`, `apns:<team>/<topic>`), and every sender process of the
fleet shares one token bucket per account in Redis (a Lua script, so taking tokens is
atomic across the fleet), taken in small chunks: one round trip serves every send waiting
at that moment, up to 1/20 of a second's worth. Rates stay configured per channel
(`provider_rates`, `<channel>/fallback=…` for a fallback account): every account of a
channel gets that rate, so two Twilio senders each send at the sms rate. If Redis cannot
be reached, each process falls back to its own buckets at the full rate (logged): the
fleet may then go faster than the limit, never stop. Each send waits for its own permit,
handed out evenly as tokens come, so a batch does not go out in one burst after waiting
for all of its tokens.

Lanes: a critical send takes any token; any other lane (promo) takes tokens only while the
bucket holds more than a reserve (`provider_rate_reserve` of its burst, at most burst - 1),
in Redis as in the local fallback. So under contention the reserve is critical's alone,
and as soon as critical sends drain the bucket below it promo sends wait for them, across
the fleet: critical goes first. Alone, promo still gets the whole rate (only a smaller burst).
In one process, waiting critical sends are always served before waiting promo ones.

The circuit breaker opens after `failures` transient failures in a row on a channel
(5xx, timeouts: the provider is in trouble): for `open_s` its orders are held in the
retry schedule without spending attempts, then one batch probes; a success closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from clarion.logs import event

log = logging.getLogger("clarion.ratelimit")

CRITICAL = "critical"  # the lane that may take a bucket's reserve; every other lane waits above it

# KEYS[1]: the bucket. ARGV: rate/s, burst, tokens wanted, now (s), reserve (tokens this caller may not take).
# Returns {granted, ms to wait until one more is there for this caller}.
TAKE_SCRIPT = """
local rate, burst, want, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local reserve = tonumber(ARGV[5]) or 0
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = math.max(0, math.min(want, math.floor(tokens - reserve)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
local wait = 0
if granted < want then wait = math.ceil((reserve + 1 - tokens) / rate * 1000) end
return {granted, wait}
"""


def parse_rates(text: str) -> dict[str, tuple[float, float]]:
    """`sms=100,email=14/28` -> {channel: (rate per second, burst)}; burst defaults to one second's worth."""
    rates = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        channel, _, spec = item.partition("=")
        rate_text, _, burst_text = spec.partition("/")
        rate = float(rate_text)
        if rate <= 0:
            raise ValueError(f"rate for {channel!r} must be positive")
        rates[channel.strip()] = (rate, float(burst_text) if burst_text else max(rate, 1.0))
    return rates


@dataclass
class LocalBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    at: float = field(default_factory=time.monotonic)

    def take(self, want: int, reserve: float = 0.0) -> tuple[int, float]:
        """(tokens granted, seconds until one more is there for this caller); `reserve` is not for it."""
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        granted = max(0, min(want, int(self.tokens - reserve)))
        self.tokens -= granted
        return granted, 0.0 if granted == want else (reserve + 1 - self.tokens) / self.rate


@dataclass
class Waiting:
    """The sends waiting for one bucket, by lane class, and a signal that a critical one arrived."""

    critical: deque[asyncio.Future[None]] = field(default_factory=deque)
    promo: deque[asyncio.Future[None]] = field(default_factory=deque)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


Bucket = tuple[str, str]  # (rate name: a channel or <channel>/fallback, provider account)


class RateLimiter:
    """Token buckets per provider account (rates per channel), shared through Redis when there is one."""

    def __init__(
        self, rates: dict[str, tuple[float, float]], redis_url: str = "", prefix: str = "clarion",
        reserve: float = 0.2,
    ) -> None:  # fmt: skip
        if not 0.0 <= reserve < 1.0:
            raise ValueError(f"the critical reserve is a share of the burst in [0, 1), not {reserve}")
        self.rates = rates
        self.prefix = prefix
        self.reserve_share = reserve
        self.redis = aioredis.from_url(redis_url) if redis_url and rates else None
        self._take = self.redis.register_script(TAKE_SCRIPT) if self.redis is not None else None
        self._local: dict[Bucket, LocalBucket] = {}
        self._degraded = False
        self._waiting: dict[Bucket, Waiting] = {}
        self._pumps: dict[Bucket, asyncio.Task[None]] = {}

    def reserve(self, name: str) -> float:
        """Tokens of `name`'s buckets only critical sends may take (burst - 1 at most: promo must fit above it)."""
        burst = self.rates[name][1]
        return max(0.0, min(burst * self.reserve_share, burst - 1.0))

    async def permit(self, name: str, account: str = "", lane: str = CRITICAL) -> None:
        """Wait for one send to `account` to fit in the rate configured for `name` (its channel).

        `account` is the provider account's bucket (default: one bucket for the name). Waiters
        are served by one pump per bucket, critical ones first, in small chunks (1/20 of a
        second's worth), so sends go out evenly, not in bursts of a batch.
        """
        if name not in self.rates:
            return
        bucket = (name, account or name)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(bucket, Waiting())
        if lane == CRITICAL:
            waiting.critical.append(waiter)
            waiting.arrived.set()
        else:
            waiting.promo.append(waiter)
        pump = self._pumps.get(bucket)
        if pump is None or pump.done():
            self._pumps[bucket] = asyncio.create_task(self._pump(bucket))
        await waiter

    async def _pump(self, bucket: Bucket) -> None:
        name, account = bucket
        waiting = self._waiting[bucket]
        chunk = max(1, int(self.rates[name][0] / 20))
        while waiting.critical or waiting.promo:
            critical = bool(waiting.critical)
            queue = waiting.critical if critical else waiting.promo
            want = min(len(queue), chunk)
            waiting.arrived.clear()
            granted, wait_s = await self._take_tokens(name, account, want, 0.0 if critical else self.reserve(name))
            for _ in range(granted):
                if queue:
                    waiter = queue.popleft()
                    if not waiter.done():
                        waiter.set_result(None)
            if granted < want:
                if critical:
                    await asyncio.sleep(max(wait_s, 0.001))
                else:  # a critical send arriving meanwhile is served at once
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiting.arrived.wait(), max(wait_s, 0.001))

    async def _take_tokens(self, name: str, account: str, want: int, reserve: float = 0.0) -> tuple[int, float]:
        rate, burst = self.rates[name]
        if self._take is not None:
            try:
                granted, wait_ms = await self._take(
                    keys=[f"{self.prefix}:rate:{account}"], args=[rate, burst, want, time.time(), reserve]
                )
                if self._degraded:
                    event(log, "rate limits shared through Redis again", account=account)
                    self._degraded = False
                return int(granted), int(wait_ms) / 1000
            except (aioredis.RedisError, OSError) as exc:
                if not self._degraded:
                    event(log, "Redis unreachable: rate limits are per process now", logging.ERROR, exc=repr(exc))
                    self._degraded = True
        local = self._local.get((name, account))
        if local is None:
            local = self._local[name, account] = LocalBucket(rate, burst)
        return local.take(want, reserve)

    async def close(self) -> None:
        for pump in self._pumps.values():
            pump.cancel()
        if self.redis is not None:
            await self.redis.aclose()


@dataclass
class CircuitBreaker:
    """Per channel: open after `failures` transient failures in a row, for `open_s`; a success closes it."""

    failures: int = 20
    open_s: float = 5.0
    _streak: dict[str, int] = field(default_factory=dict)
    _open_until: dict[str, float] = field(default_factory=dict)

    def is_open(self, channel: str) -> bool:
        return time.monotonic() < self._open_until.get(channel, 0.0)

    def record(self, channel: str, transient: bool) -> None:
        if not transient:
            self._streak[channel] = 0
            return
        self._streak[channel] = self._streak.get(channel, 0) + 1
        if self._streak[channel] >= self.failures and not self.is_open(channel):
            self._open_until[channel] = time.monotonic() + self.open_s
            self._streak[channel] = self.failures - 1  # the probe after the pause reopens it if it fails
            event(log, "provider failing: circuit open", logging.ERROR, alert=True, channel=channel,
                  open_s=self.open_s)  # fmt: skip
