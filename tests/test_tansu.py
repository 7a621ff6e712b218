"""The embedded broker's quirks (clarion/topology/tansu.py): each still there, each worked around.

A test named `..._quirk_is_still_there` failing means Tansu changed: the workaround it
justifies may be dropped. The others fail when a workaround stops working.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from clarion.topology import tansu


async def topic_with(bootstrap: str, batches: list[int]) -> tuple[TopicPartition, int]:
    """A fresh 1-partition topic holding record batches of the given sizes; returns it and its record count."""
    name = "quirk-" + uuid.uuid4().hex[:8]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        for size in batches:  # records sent together within the linger share one batch
            await asyncio.gather(*[await producer.send(name, b"v%d" % i) for i in range(size)])
    finally:
        await producer.stop()
    return TopicPartition(name, 0), sum(batches)


async def list_offsets(bootstrap: str, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def test_list_offsets_after_a_multi_record_batch_quirk_is_still_there(broker) -> None:
    tp, records = await topic_with(broker.bootstrap, [1, 5])
    assert records == 6
    assert await list_offsets(broker.bootstrap, tp) == 2  # the last batch's base offset + 1, not 6


async def test_end_offsets_are_right_whatever_the_batches(broker) -> None:
    cases = [[], [1], [1, 1, 1], [3], [1, 5], [40, 2, 7]]
    for batches in cases:
        tp, records = await topic_with(broker.bootstrap, batches)
        assert await tansu.fresh_end_offsets(broker.bootstrap, [tp]) == {tp: records}, batches


async def test_a_held_fetch_is_polled_not_woken_quirk_is_still_there(broker) -> None:
    """A record produced while a 1 s fetch is held is only seen at Tansu's re-check, W/2 later."""
    tp, _ = await topic_with(broker.bootstrap, [])
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=1000)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.getmany(tp, timeout_ms=1100)  # an idle fetch: the next one starts now
        started = time.monotonic()
        await asyncio.sleep(0.1)
        await producer.send_and_wait(tp.topic, b"late")
        produced = time.monotonic()
        got = await consumer.getmany(tp, timeout_ms=3000)
        seen = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()
    assert got.get(tp), "the record never arrived"
    # Apache Kafka would answer within milliseconds of the produce; Tansu waits for its
    # next check of the held fetch (~500 ms after it started for a 1 s wait).
    assert seen - produced > 0.2, (
        f"seen {seen - produced:.3f}s after the produce ({seen - started:.3f}s into the fetch)"
    )


async def test_faust_recovery_reads_the_right_end_offsets(broker, tmp_path) -> None:
    """faust asks its consumer thread for changelog end offsets before recovering a table."""
    from types import SimpleNamespace

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from clarion.topology.app import create_app
    from clarion.topology.settings import Settings

    create_app(tansu.tuned(Settings(data_dir=str(tmp_path)), broker.bootstrap))  # installs the workaround
    tp, records = await topic_with(broker.bootstrap, [1, 30])
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        thread = SimpleNamespace(consumer=SimpleNamespace(in_transaction=False), _ensure_consumer=lambda: consumer)
        highwaters = await AIOKafkaConsumerThread._highwaters(thread, [tp])
    finally:
        await consumer.stop()
    assert highwaters == {tp: records}  # ListOffsets alone says 2
