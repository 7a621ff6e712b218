"""Fleet-wide send rates per provider account, and a circuit breaker per provider.

Providers limit an account, not a process: Twilio queues or refuses past a sender's
rate, SES per account, FCM per project. Every sender process shares one token bucket
per channel in Redis (a Lua script, so taking tokens is atomic across the fleet), taken
in small chunks: one round trip serves every send waiting at that moment, up to 1/20 of
a second's worth. If Redis cannot be reached, each process falls back to
its own bucket at the full rate (logged): the fleet may then go faster than the limit,
never stop. Each send waits for its own permit, handed out evenly as tokens come, so a
batch does not go out in one burst after waiting for all of its tokens.

The circuit breaker opens after `failures` transient failures in a row on a channel
(5xx, timeouts: the provider is in trouble): for `open_s` its orders are held in the
retry schedule without spending attempts, then one batch probes; a success closes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from clarion.logs import event

log = logging.getLogger("clarion.ratelimit")

# KEYS[1]: the bucket. ARGV: rate/s, burst, tokens wanted, now (s). Returns {granted, ms to wait for one more}.
TAKE_SCRIPT = """
local rate, burst, want, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
local wait = 0
if granted < want then wait = math.ceil((1 - (tokens - math.floor(tokens))) / rate * 1000) end
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

    def take(self, want: int) -> tuple[int, float]:
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        return granted, 0.0 if granted == want else (1 - (self.tokens % 1)) / self.rate


class RateLimiter:
    """Token buckets per channel, shared through Redis when there is one."""

    def __init__(self, rates: dict[str, tuple[float, float]], redis_url: str = "", prefix: str = "clarion") -> None:
        self.rates = rates
        self.prefix = prefix
        self.redis = aioredis.from_url(redis_url) if redis_url and rates else None
        self._take = self.redis.register_script(TAKE_SCRIPT) if self.redis is not None else None
        self._local = {channel: LocalBucket(rate, burst) for channel, (rate, burst) in rates.items()}
        self._degraded = False
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {channel: deque() for channel in rates}
        self._pumps: dict[str, asyncio.Task[None]] = {}

    async def permit(self, channel: str) -> None:
        """Wait for one send on `channel` to fit in its rate.

        Waiters are served in order by one pump per channel, which takes tokens in small
        chunks (1/20 of a second's worth), so sends go out evenly, not in bursts of a batch.
        """
        if channel not in self.rates:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[channel].append(waiter)
        pump = self._pumps.get(channel)
        if pump is None or pump.done():
            self._pumps[channel] = asyncio.create_task(self._pump(channel))
        await waiter

    async def _pump(self, channel: str) -> None:
        waiters = self._waiters[channel]
        chunk = max(1, int(self.rates[channel][0] / 20))
        while waiters:
            want = min(len(waiters), chunk)
            granted, wait_s = await self._take_tokens(channel, want)
            for _ in range(granted):
                if waiters:
                    waiter = waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(None)
            if granted < want:
                await asyncio.sleep(max(wait_s, 0.001))

    async def acquire(self, channel: str, want: int) -> None:
        """Wait until `want` sends on `channel` fit in its rate (returns at once for unlimited channels)."""
        if channel not in self.rates:
            return
        while want > 0:
            granted, wait_s = await self._take_tokens(channel, want)
            want -= granted
            if want > 0:
                await asyncio.sleep(max(wait_s, 0.001))

    async def _take_tokens(self, channel: str, want: int) -> tuple[int, float]:
        if self._take is not None:
            rate, burst = self.rates[channel]
            try:
                granted, wait_ms = await self._take(
                    keys=[f"{self.prefix}:rate:{channel}"], args=[rate, burst, want, time.time()]
                )
                if self._degraded:
                    event(log, "rate limits shared through Redis again", channel=channel)
                    self._degraded = False
                return int(granted), int(wait_ms) / 1000
            except (aioredis.RedisError, OSError) as exc:
                if not self._degraded:
                    event(log, "Redis unreachable: rate limits are per process now", logging.ERROR, exc=repr(exc))
                    self._degraded = True
        return self._local[channel].take(want)

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
