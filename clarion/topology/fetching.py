"""How long the worker's consumer lets the broker hold a fetch: short when busy, longer when idle.

faust builds its aiokafka consumer with fetch_max_wait_ms=1500 and no setting for it.
Apache Kafka answers a held fetch as soon as data arrives, so the wait only bounds
idle polling there. Tansu instead re-checks a held fetch at W/2, 3W/4, ... of the wait
W, so a record that arrives mid-fetch is seen up to W/2 late; and aiokafka keeps one
fetch in flight per broker, so a record for another partition waits for it too.
A short wait (10 ms on Tansu) keeps each hop within a few ms under load, but polls the
broker ~100 times a second when nothing happens. So the worker switches to
`fetch_idle_wait_ms` after `fetch_idle_after_s` without records, and back to
`fetch_max_wait_ms` as soon as a fetch returns records.

One more Tansu behaviour: before answering a fetch below the high watermark it lists the
partition's record batches, and gives up when the wait runs out (~1.5-2 ms per 1,000
batches). A short wait on a partition with many batches would then never return its
records. So an empty fetch while some partition has records to read doubles the wait,
up to STALLED_MAX_MS, until records come back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from clarion.topology import faust_compat
from clarion.topology.settings import Settings

STALLED_MAX_MS = 2000


@dataclass
class FetchWait:
    """The wait to ask for next, from whether recent fetches returned records."""

    busy_ms: int
    idle_ms: int
    idle_after_s: float
    last_records_at: float = field(default_factory=time.monotonic)
    stalled_ms: int = 0  # > 0 while fetches come back empty though records are waiting

    def after_fetch(self, got_records: bool, lagging: bool, now: float) -> int:
        if got_records:
            self.last_records_at = now
            self.stalled_ms = 0
            return self.busy_ms
        if lagging:
            self.stalled_ms = min(max(self.stalled_ms * 2, self.busy_ms * 2), STALLED_MAX_MS)
            return self.stalled_ms
        self.stalled_ms = 0
        return self.idle_ms if now - self.last_records_at >= self.idle_after_s else self.busy_ms


def lagging(consumer: Any) -> bool:
    """Whether an assigned, unpaused partition has records past the consumer's position."""
    for state in faust_compat.partition_states(consumer):
        if (
            not state.paused
            and state.has_valid_position
            and state.highwater is not None
            and state.highwater > state.position
        ):
            return True
    return False


def install(settings: Settings) -> None:
    """Patch faust's consumer thread to use (and adapt) the configured fetch wait."""
    create = faust_compat.original_thread_method("_create_worker_consumer")
    fetch = faust_compat.original_thread_method("_fetch_records")
    busy, idle = settings.fetch_max_wait_ms, max(settings.fetch_idle_wait_ms, settings.fetch_max_wait_ms)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        faust_compat.set_fetch_wait(consumer, busy)  # read by the fetcher that start() creates
        self._clarion_wait = FetchWait(busy, idle, settings.fetch_idle_after_s)
        return consumer

    async def fetch_records(self: Any, consumer: Any, *args: Any, **kwargs: Any) -> Any:
        records = await fetch(self, consumer, *args, **kwargs)
        wait = getattr(self, "_clarion_wait", None)
        if wait is not None and faust_compat.has_fetcher(consumer):
            behind = not records and lagging(consumer)
            faust_compat.set_fetch_wait(consumer, wait.after_fetch(bool(records), behind, time.monotonic()))
        return records

    faust_compat.patch_thread_method("_create_worker_consumer", create_worker_consumer)
    faust_compat.patch_thread_method("_fetch_records", fetch_records)
