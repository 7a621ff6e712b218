"""What the worker's /metrics asks of the broker and its tables, at most every few seconds.

Consumer lag (end offsets minus the group's committed offsets, for the partitions this
worker holds) needs two broker round trips, and campaign progress a scan of the
campaigns table plus one ledger read per running campaign: too much for every scrape of
every Prometheus, and nothing on the hot path. A scrape refreshes them when they are
older than `ttl_s` (concurrent scrapes share one refresh) and answers from what it has
when the broker is slow or away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from clarion.logs import event
from clarion.schemas.promo import TERMINAL
from clarion.topology import faust_compat

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

log = logging.getLogger("clarion.metrics")
MAX_CAMPAIGNS = 50  # running campaigns given series of their own (each costs a ledger read per refresh)


class ScrapeProbes:
    """Lag per topic and campaigns by state, refreshed on demand and cached for `ttl_s`."""

    def __init__(self, topo: Topology, ttl_s: float = 5.0, timeout_s: float = 5.0) -> None:
        self.topo = topo
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.lag: dict[str, int] = {}  # topic -> records not yet committed, over this worker's partitions
        self.campaigns: Counter[str] = Counter()  # state -> campaigns whose job this worker holds
        self.progress: dict[str, dict[str, Any]] = {}  # running campaign key -> counters (campaign_pages.counters)
        self.refreshed_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Refresh what is older than `ttl_s`; on failure the last values stay (and a warning is logged)."""
        if time.monotonic() - self.refreshed_at < self.ttl_s:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        try:
            await asyncio.wait_for(self._read(), self.timeout_s)
        except Exception as exc:  # a scrape must answer: with the last values
            event(log, "metrics probe failed", level=logging.WARNING, exc=repr(exc))
        self.refreshed_at = time.monotonic()

    async def _read(self) -> None:
        self.lag = await self._lag()
        if self.topo.resources.jobs is not None:
            self.campaigns, self.progress = await self._campaigns()

    async def _lag(self) -> dict[str, int]:
        app, offsets = self.topo.declared.app, self.topo.resources.offsets
        sources = {spec.topic for spec in self.topo.declared.specs.values()}
        tps = sorted(TopicPartition(tp.topic, tp.partition) for tp in faust_compat.active_assignment(app)
                     if tp.topic in sources)  # fmt: skip
        if not tps:
            return {}
        ends = await offsets.end_offsets(tps)
        committed = await offsets.committed(app.conf.id, tps)
        lag: dict[str, int] = {}
        for tp, end in ends.items():  # a partition without a committed offset counts from 0 (as fanout does)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - committed.get(tp, 0))
        return lag

    async def _campaigns(self) -> tuple[Counter[str], dict[str, dict[str, Any]]]:
        from clarion.web.campaign_pages import counters

        jobs = self.topo.resources.jobs
        states: Counter[str] = Counter()
        running = []
        for partition in sorted(jobs.indexed):
            for raw_key in jobs.writer.store.keys(partition):
                job = jobs.get(partition, raw_key.decode())
                if job is None:
                    continue
                states[job.state] += 1
                if job.state not in TERMINAL and job.state != "scheduled" and len(running) < MAX_CAMPAIGNS:
                    running.append((raw_key.decode(), job))
        progress = {key: counters(job, await self.topo.resources.ledger.campaign_counts(key)) for key, job in running}
        return states, progress
