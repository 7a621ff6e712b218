"""`clarion dlq list|show|replay`: what clarion gave up on, and sending it again.

A dead letter is named by where it sits on the DLQ topic, `<partition>:<offset>`. Replay
puts its payload back on the topic it came from: a delivery task goes back to its lane
with its attempts reset and **its delivery id kept**, after the ledger forgets that the
delivery was `dead` (only `dead`: a delivery the ledger knows as `sent` stays sent). So a
replay after the fault is fixed delivers, and a second replay of the same letter sends
nothing: the ledger answers `sent` and the outcome is repeated. A replayed request or
user record goes back as it was (dedupe and upserts make that safe). Replaying needs the
Redis ledger the workers use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from clarion.schemas.codec import PoisonMessage, decode, encode
from clarion.schemas.records import DeadLetter, DeliveryTask
from clarion.tables.ledger import ledger_for
from clarion.topology import tansu
from clarion.topology.catalog import catalog, lane_topic
from clarion.topology.settings import Settings


@dataclass(frozen=True)
class Letter:
    """A dead letter and where it sits on the DLQ topic."""

    partition: int
    offset: int
    letter: DeadLetter

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"


async def read_letters(settings: Settings) -> list[Letter]:
    """Every dead letter on the DLQ topic now, oldest first per partition."""
    topic = catalog(settings)["dlq"].topic
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            await consumer.topics()  # metadata may not be loaded yet
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if settings.broker_quirks == "tansu":
            ends = await tansu.fresh_end_offsets(settings.bootstrap_servers, parts)
        else:
            ends = await consumer.end_offsets(parts)
        parts = [tp for tp in parts if ends[tp] > 0]
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[Letter] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    if record.offset < ends[tp]:
                        out.append(Letter(tp.partition, record.offset, _letter(record.value)))
        return sorted(out, key=lambda x: (x.letter.ts, x.partition, x.offset))
    finally:
        await consumer.stop()


def _letter(raw: bytes | None) -> DeadLetter:
    try:
        return decode(DeadLetter, raw)
    except PoisonMessage as exc:  # a DLQ record clarion did not write: show it, never replay it
        return DeadLetter(source_topic="", reason=f"unreadable dead letter: {exc}", payload=repr(raw)[:2000])


def select(letters: list[Letter], ids: list[str], reason: str | None, everything: bool) -> Iterator[Letter]:
    """The letters named by id, or whose reason contains `reason`, or all of them."""
    wanted = set(ids)
    for item in letters:
        if everything or item.id in wanted or (reason is not None and reason in item.letter.reason):
            yield item


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0  # not replayable: unreadable, or from a topic clarion does not know
    dead_released: int = 0  # ledger entries that were `dead` and may now be tried again


async def replay(settings: Settings, letters: list[Letter]) -> ReplayReport:
    """Put each letter's payload back where it came from (see the module docstring)."""
    specs = catalog(settings)
    by_topic = {spec.topic: name for name, spec in specs.items()}
    report = ReplayReport()
    outgoing: list[tuple[str, str, bytes]] = []  # (topic, key, value)
    delivery_ids = []
    for item in letters:
        letter = item.letter
        source = by_topic.get(letter.source_topic)
        if source is None:
            report.skipped += 1
            continue
        if specs[source].value is DeliveryTask:
            try:
                task = decode(DeliveryTask, letter.payload.encode())
            except PoisonMessage:
                report.skipped += 1
                continue
            task = msgspec.structs.replace(task, attempt=1, not_before=0.0)
            delivery_ids.append(task.delivery_id)
            outgoing.append((specs[lane_topic(task.lane, task.channel)].topic, task.user_key, encode(task)))
        else:
            outgoing.append((letter.source_topic, letter.key or "", letter.payload.encode()))
    ledger = ledger_for(settings)
    try:
        report.dead_released = await ledger.release_dead(delivery_ids)
    finally:
        await ledger.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for topic, key, value in outgoing:
            await producer.send_and_wait(topic, value, key=key.encode())
            report.replayed += 1
    finally:
        await producer.stop()
    return report
