"""The embedded broker's quirks, each worked around here and nowhere else (Tansu 0.6.0).

`make run`, the tests and the bench run on Tansu, a memory-only Kafka-protocol broker;
production runs on Apache Kafka, where none of this applies (`broker_quirks` is empty).
tests/test_tansu.py checks each quirk is still there (so a workaround that is no longer
needed gets noticed) and that each workaround works.

- End offsets: ListOffsets(latest) answers the last record batch's base offset + 1
  (three records in one batch at offsets 0-2 give 1), while a Fetch response carries
  the right high watermark. `end_offsets` fetches once at the answer - 1 (where a batch
  is known to start) and reads the high watermark; `install` makes faust's recovery use
  it, so producers can batch and table recovery still reads changelogs to their end.
- Fetch wait: Tansu polls a held fetch instead of waking it; see FETCH_MAX_WAIT_MS.
- Growth: Tansu keeps every record in memory, ignores retention and refuses
  DeleteRecords, and a fetch gets slower with the number of record batches in a
  partition; batching records (schemas/codec.py) keeps batch counts down, the bench
  runs on fresh topics, and `clarion dev` says so in its banner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from clarion.topology import faust_compat
from clarion.topology.settings import Settings

# Tansu re-checks a held fetch at W/2, 3W/4, ... of its wait W (tansu-storage
# service/fetch.rs, 0.6.0-510f3e2), so a record arriving mid-fetch is seen up to W/2
# late: a short wait when busy, a longer one when idle, and a growing one when a
# partition with many batches cannot be listed within the wait (topology/fetching.py).
FETCH_MAX_WAIT_MS = 10
FETCH_IDLE_WAIT_MS = 50
BANNER = (
    "note: the embedded broker keeps every record in memory and slows down as topics grow; "
    "restart `make run` for a fresh one (production runs on Apache Kafka)"
)


# A consumer for end_offsets: the probing fetch must answer at once and carry little.
PROBE_CONSUMER = {"enable_auto_commit": False, "fetch_max_wait_ms": 50, "max_partition_fetch_bytes": 1}


def tuned(settings: Settings, bootstrap: str) -> Settings:
    """Point at an embedded Tansu broker, with the settings its quirks need."""
    return replace(
        settings,
        kafka=bootstrap,
        broker_quirks="tansu",
        session_timeout_s=6.0,  # Tansu holds a group join for half the session timeout
        heartbeat_interval_s=1.0,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        fetch_idle_wait_ms=FETCH_IDLE_WAIT_MS,
    )


async def end_offsets(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Correct end offsets on Tansu, from Fetch high watermarks (`consumer` is reassigned)."""
    tps = [TopicPartition(tp.topic, tp.partition) for tp in tps]  # faust's TP is not aiokafka's
    listed = await consumer.end_offsets(tps)
    out = {tp: 0 for tp, offset in listed.items() if offset == 0}  # no batch at all: empty
    probe = [tp for tp in tps if tp not in out]
    if not probe:
        return out
    consumer.assign(probe)
    for tp in probe:
        consumer.seek(tp, listed[tp] - 1)  # the base offset of the last batch: always fetchable
    for _ in range(50):
        if all(consumer.highwater(tp) is not None for tp in probe):
            break
        await consumer.getmany(*probe, timeout_ms=100)
    else:
        raise TimeoutError(f"no fetch answered for {probe}")
    out.update({tp: consumer.highwater(tp) for tp in probe})
    consumer.unsubscribe()  # nothing left assigned: no background fetching
    return out


async def fresh_end_offsets(bootstrap: str, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """`end_offsets` with a throwaway consumer (for callers that must not disturb theirs)."""
    consumer = AIOKafkaConsumer(**PROBE_CONSUMER, bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return await end_offsets(consumer, tps)
    finally:
        await consumer.stop()


def install(settings: Settings) -> None:
    """Make faust's recovery read changelog end offsets the correct way (no-op off Tansu)."""
    if settings.broker_quirks != "tansu":
        return
    original = faust_compat.original_thread_method("_highwaters")
    bootstrap = settings.bootstrap_servers

    async def highwaters(self: Any, partitions: list[TopicPartition]) -> Any:
        if self.consumer.in_transaction:
            return await original(self, partitions)
        return await fresh_end_offsets(bootstrap, partitions)

    faust_compat.patch_thread_method("_highwaters", highwaters)
