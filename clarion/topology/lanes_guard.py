"""Which lanes the fleet's workers run: `promo` workers go beside `critical` ones, never beside `all`.

A worker running `all` consumes the promo lanes in the main consumer group, and a `promo`
worker consumes them in a group of its own, so side by side both would take every promo
delivery: the ledger still sends it once, but its outcome would be told twice. Each worker
keeps its name in a Redis sorted set per `lanes` value, scored by when it last said so
(every HEARTBEAT_S). A worker whose lanes clash with a live member's (seen within LIVE_S)
refuses to start; a clash that appears later (two started at once) is an alert on every
heartbeat. Without Redis (one process, its own ledger) there is no fleet to check.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import redis.asyncio as aioredis

from clarion.logs import event
from clarion.topology.settings import Settings, check_lanes

log = logging.getLogger("clarion.lanes")
CLASHES = {"all": "promo", "promo": "all"}  # lanes -> the lanes it must not run beside
HEARTBEAT_S = 5.0
LIVE_S = 15.0


class LanesClash(RuntimeError):
    """This worker's lanes clash with a live worker's."""


class LanesRegistry:
    def __init__(self, settings: Settings, member: str | None = None) -> None:
        self.lanes = check_lanes(settings)
        self.prefix = f"{settings.topic_prefix}:lanes"
        self.member = member or f"{socket.gethostname()}:{os.getpid()}"
        self.redis = aioredis.from_url(settings.redis) if settings.redis else None

    def _key(self, lanes: str) -> str:
        return f"{self.prefix}:{lanes}"

    async def heartbeat(self) -> list[str]:
        """Say this worker is live; the live workers whose lanes clash with its own."""
        if self.redis is None:
            return []
        now = time.time()
        other = CLASHES.get(self.lanes)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._key(self.lanes), {self.member: now})
            pipe.zremrangebyscore(self._key(self.lanes), "-inf", now - LIVE_S)
            if other:
                pipe.zrangebyscore(self._key(other), now - LIVE_S, "+inf")
            replies = await pipe.execute()
        return [m.decode() for m in replies[2]] if other else []

    async def join(self) -> None:
        """Register, or raise LanesClash (logged as an alert) when a live worker's lanes clash."""
        clashing = await self.heartbeat()
        if clashing:
            await self.leave()
            message = self._clash_message(clashing)
            event(log, message, logging.CRITICAL, alert=True, lanes=self.lanes, clashing=clashing)
            raise LanesClash(message)

    async def check(self) -> None:
        """A heartbeat; an alert while a clash lasts."""
        clashing = await self.heartbeat()
        if clashing:
            event(log, self._clash_message(clashing), logging.ERROR, alert=True, lanes=self.lanes, clashing=clashing)

    async def leave(self) -> None:
        if self.redis is not None:
            await self.redis.zrem(self._key(self.lanes), self.member)

    async def close(self) -> None:
        if self.redis is not None:
            await self.leave()
            await self.redis.aclose()

    def _clash_message(self, clashing: list[str]) -> str:
        return (f"lanes {self.lanes!r} clash with {len(clashing)} live worker(s) running {CLASHES[self.lanes]!r}: "
                "run promo workers beside critical ones, not beside all (README: Lanes in operation)")  # fmt: skip
