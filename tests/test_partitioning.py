"""Records produced with another partitioner than Kafka's murmur2 are forwarded, not failed.

librdkafka-based clients (kcat, confluent-kafka) hash keys with CRC32 by default; a user
and a request placed that way land on partitions whose tables do not hold that user.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from clarion.topology.partitioning import partition_for
from clarion.topology.worker import WorkerProcess
from tests.conftest import test_settings
from tests.replay_harness import Replayer, Scenario, normalize

PARTITIONS = 4


def crc32_partition(key: str) -> int:
    """librdkafka's default ("consistent_random" over CRC32) for a non-empty key."""
    return zlib.crc32(key.encode()) % PARTITIONS


def misplaced_users(n: int) -> list[str]:
    """User ids whose CRC32 partition differs from their murmur2 one."""
    out, i = [], 0
    while len(out) < n:
        key = f"c/u{i}"
        if crc32_partition(key) != partition_for(key, PARTITIONS):
            out.append(f"u{i}")
        i += 1
    return out


async def test_records_on_the_wrong_partition_are_forwarded_and_delivered_once(
    broker, redis_server, simulator, tmp_path: Path
) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path, critical_partitions=PARTITIONS)
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    users = misplaced_users(6)
    template = {"client_id": "c", "template_id": "w", "version": 1, "sms_body": "Hi"}
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()

    async def produce(name: str, key: str, value: dict[str, Any]) -> None:
        topic = replayer.specs[name].topic
        await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode(), partition=crc32_partition(key))

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        await producer.send_and_wait(replayer.specs["templates"].topic, orjson.dumps(template), key=b"c/w@1")
        for n, user_id in enumerate(users):
            await produce("users", f"c/{user_id}", {"client_id": "c", "user_id": user_id, "phone": f"+1415555{n:04d}"})
        await worker.wait_ready()
        # a user counts once it is where its key says: forwarded, then folded into the users table
        await replayer.barrier({"users": len(users)}, live=True)
        scenario = Scenario(steps=[])
        for n, user_id in enumerate(users):
            request = {"notification_id": f"n-{n}", "client_id": "c", "idempotency_key": f"k-{n}",
                       "user_id": user_id, "channels": ["sms"], "template_id": "w"}  # fmt: skip
            await produce("critical.requests", f"c/{user_id}", request)
            ids = {"notification_id": f"n-{n}", "client_id": "c", "user_id": user_id}
            sent = {**ids, "status": "sent", "channel": "sms", "delivery_id": f"n-{n}.sms.0", "attempt": 1}
            scenario.expected["outcomes"] += [
                normalize("outcomes", {**ids, "status": "accepted", "planned": 1}),
                normalize("outcomes", sent),
            ]
        got = await replayer.collect(scenario)
    finally:
        worker.stop()
        await producer.stop()
    statuses = {(o["notification_id"], o["status"]) for o in got["outcomes"]}
    assert statuses == {(f"n-{n}", s) for n in range(len(users)) for s in ("accepted", "sent")}, statuses
    assert sorted(d["nid"] for d in sim.state.deliveries) == sorted(f"n-{n}" for n in range(len(users)))
    assert "wrong partition for their key forwarded" in (tmp_path / "worker.log").read_text()
