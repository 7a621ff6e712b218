"""Tables survive a worker replaced by one with an empty data dir (changelog recovery)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from clarion.keys import create_key
from clarion.topology.worker import WorkerProcess
from tests.conftest import test_settings
from tests.replay_harness import Replayer, Scenario, canonical, normalize

TEMPLATE = {"client_id": "c", "template_id": "w", "version": 1, "sms_body": "Hi {{ name }}"}
USER = {"client_id": "c", "user_id": "u1", "phone": "+14155550100"}


def request(nid: str, key: str) -> dict[str, Any]:
    value = {
        "notification_id": nid,
        "client_id": "c",
        "idempotency_key": key,
        "user_id": "u1",
        "channels": ["sms"],
        "template_id": "w",
        "params": {"name": "Ann"},
    }
    return {"input": "critical.requests", "key": "c/u1", "value": value}


def batch(nids: list[str], keys: list[str]) -> dict[str, Any]:
    """One record holding many requests: their changelog writes go out as multi-record batches."""
    return {
        "input": "critical.requests",
        "key": "c/u1",
        "value": [request(n, k)["value"] for n, k in zip(nids, keys, strict=True)],
    }


def outcome(nid: str, status: str, **kw: Any) -> dict[str, Any]:
    return normalize("outcomes", {"notification_id": nid, "status": status, "client_id": "c", "user_id": "u1", **kw})


def sent(nid: str) -> dict[str, Any]:
    return outcome(nid, "sent", channel="sms", delivery_id=f"{nid}.sms.0", attempt=1)


async def test_new_worker_recovers_every_table_from_changelogs(broker, redis_server, simulator, tmp_path: Path) -> None:
    """Also with multi-record changelog batches, whose end offset Tansu gets wrong (tansu.py)."""
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path)
    replayer = Replayer(settings, sim)
    await replayer.prepare()
    many = [f"n-b{i}" for i in range(30)]

    first = Scenario(
        steps=[
            {"input": "templates", "key": "c/w@1", "value": TEMPLATE},
            {"input": "users", "key": "c/u1", "value": USER},
            {"barrier": {"users": 1, "templates": 1}},
            request("n-1", "k-1"),
            batch(many, [f"k-b{i}" for i in range(30)]),
        ]
    )
    first.expected["outcomes"] = [outcome("n-1", "accepted", planned=1), sent("n-1")]
    first.expected["outcomes"] += [o for nid in many for o in (outcome(nid, "accepted", planned=1), sent(nid))]
    worker = WorkerProcess(settings, tmp_path / "first.log").start()
    try:
        await worker.wait_ready()
        await replayer.feed(first)
        got = await replayer.collect(first)
        await replayer.barrier({"status": 31, "idempotency": 31}, live=True)
    finally:
        worker.stop()
    assert canonical(got["outcomes"]) == canonical(first.expected["outcomes"])
    assert await naive_end_offsets_fall_short(settings, "idempotency"), "no multi-record changelog batch: test is moot"

    fresh = replace(settings, data_dir=str(tmp_path / "fresh-data"))
    again = [f"n-again{i}" for i in range(30)]
    second = Scenario(
        steps=[request("n-2", "k-1"), request("n-3", "k-3"), batch(again, [f"k-b{i}" for i in range(30)])]
    )
    second.expected["outcomes"] = [
        *first.expected["outcomes"],
        outcome("n-2", "duplicate", duplicate_of="n-1"),
        outcome("n-3", "accepted", planned=1),
        sent("n-3"),
        *(outcome(nid, "duplicate", duplicate_of=first_nid) for nid, first_nid in zip(again, many, strict=True)),
    ]
    worker = WorkerProcess(fresh, tmp_path / "second.log").start()
    try:
        await worker.wait_ready()
        key, _ = await create_key(settings, "c", ["read"])
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as http, http.get(f"{worker.url}/status/n-1/", headers=headers) as resp:
            status = orjson.loads(await resp.read())
        await replayer.feed(second)
        got = await replayer.collect(second)
    finally:
        worker.stop()
    assert status["status"] == "sent"
    assert canonical(got["outcomes"]) == canonical(second.expected["outcomes"])
    assert sorted(d["nid"] for d in sim.state.deliveries) == sorted(["n-1", "n-3", *many])

    # The same worker again, on its own data dir: faust checks its persisted changelog
    # offsets against the end offsets, which Tansu undercounts after multi-record batches.
    third = Scenario(steps=[request("n-4", "k-b7")])
    third.expected["outcomes"] = [*second.expected["outcomes"], outcome("n-4", "duplicate", duplicate_of="n-b7")]
    got = await replayer.through_worker(third, tmp_path / "third.log", fresh)
    assert canonical(got["outcomes"]) == canonical(third.expected["outcomes"])


async def naive_end_offsets_fall_short(settings: Any, table: str) -> bool:
    """Whether ListOffsets undercounts some partition of a table's changelog (a multi-record batch)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from clarion.topology import tansu

    topic = f"{settings.app_id}-{table}-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.critical_partitions)]
        naive = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    right = await tansu.fresh_end_offsets(settings.bootstrap_servers, tps)
    return any(naive[tp] < right[tp] for tp in tps)
