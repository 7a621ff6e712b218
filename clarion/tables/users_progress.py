"""Users before requests: how far the users table has folded each partition, and waiting for it.

A request must never fail `unknown_user` for a user whose upsert was acknowledged before
the request was accepted. users and requests are separate topics, so a worker can see
the request first: right after it is assigned a partition (it has not folded the users
topic yet), or in steady state (the upsert and the request were posted back to back).
So the ingest stage asks `caught_up(partition)` once per assignment, and again when a
user is missing: it looks up the users partition's end offset, then waits until the
users agent has folded everything below it. A partition whose committed offset is
already at the end is complete (the table was recovered from its changelog).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from faust.types import TP

from clarion.logs import event

if TYPE_CHECKING:
    from clarion.topology.offsets import BrokerOffsets

log = logging.getLogger("clarion.users")
CLOCK_SKEW_S = 1.0  # API hosts and workers stamp times with different clocks


class UsersProgress:
    def __init__(
        self, clock: Callable[[], float], offsets: BrokerOffsets, group: str, topic: str, wait_limit_s: float = 30.0
    ) -> None:
        self.clock = clock
        self.offsets = offsets
        self.group = group  # the consumer group whose committed offsets count as folded
        self.topic = topic
        self.wait_limit_s = wait_limit_s
        self.folded_to: dict[int, int] = {}  # next offset the users agent will fold, per partition
        self.verified_at: dict[int, float] = {}  # when each partition was last known complete
        self._waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = {}
        self._checks: set[asyncio.Future[bool]] = set()

    def folded(self, partition: int, next_offset: int) -> None:
        """The users agent has folded `partition` up to (not including) `next_offset`."""
        self.folded_to[partition] = next_offset
        waiters = self._waiters.get(partition)
        if waiters:
            for target, fut in waiters:
                if next_offset >= target and not fut.done():
                    fut.set_result(None)
            self._waiters[partition] = [(t, f) for t, f in waiters if not f.done()]

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: another worker may fold them before we get them back."""
        for partition in partitions:
            self.folded_to.pop(partition, None)
            self.verified_at.pop(partition, None)

    def check_soon(self, partitions: set[int]) -> None:
        """Start verifying newly assigned partitions in the background."""
        for partition in partitions:
            task = asyncio.ensure_future(self.caught_up(partition))
            self._checks.add(task)
            task.add_done_callback(self._checked)

    def _checked(self, task: asyncio.Future[bool]) -> None:
        self._checks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            event(log, "users partition check failed", level=logging.WARNING, error=repr(task.exception()))

    async def caught_up(self, partition: int, accepted_at: float | None = None) -> bool:
        """Wait until every users record written before `accepted_at` (default: now) is folded.

        Returns True when a wait (or a check) happened, False when an earlier check covers it.
        """
        verified = self.verified_at.get(partition)
        # accepted_at 0: a request produced straight to the topic, written at an unknown time: check
        unknown = accepted_at is not None and accepted_at <= 0
        if verified is not None and not unknown and (accepted_at is None or accepted_at + CLOCK_SKEW_S < verified):
            return False
        started = self.clock()
        tp = TP(self.topic, partition)
        end = (await self.offsets.end_offsets([tp]))[tp]
        if self.folded_to.get(partition, 0) < end:
            committed = (await self.offsets.committed(self.group, [tp])).get(tp, 0)
            if max(committed, self.folded_to.get(partition, 0)) < end:
                await self._wait(partition, end)
        self.verified_at[partition] = started
        return True

    async def _wait(self, partition: int, target: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(partition, []).append((target, fut))
        try:
            await asyncio.wait_for(fut, self.wait_limit_s)
        except TimeoutError:
            event(
                log,
                "users table still behind its topic; routing anyway",
                level=logging.WARNING,
                partition=partition,
                folded_to=self.folded_to.get(partition),
                end=target,
            )
