"""Tables survive a worker replaced by one with an empty data dir (changelog recovery)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from clarion.topology.worker import WorkerProcess
from tests.conftest import test_settings
from tests.replay_harness import Replayer, Scenario, canonical, normalize

TEMPLATE = {"template_id": "w", "version": 1, "sms_body": "Hi {{ name }}"}
USER = {"user_id": "u1", "phone": "+14155550100"}


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
    return {"input": "critical.requests", "key": "u1", "value": value}


def outcome(nid: str, status: str, **kw: Any) -> dict[str, Any]:
    return normalize("outcomes", {"notification_id": nid, "status": status, "client_id": "c", "user_id": "u1", **kw})


def sent(nid: str) -> dict[str, Any]:
    return outcome(nid, "sent", channel="sms", delivery_id=f"{nid}.sms.0", attempt=1)


async def test_new_worker_recovers_every_table_from_changelogs(broker, redis_server, simulator, tmp_path: Path) -> None:
    sim, sim_url = simulator
    settings = test_settings(broker, redis_server.url, sim_url, tmp_path)
    replayer = Replayer(settings, sim)
    await replayer.prepare()

    first = Scenario(
        steps=[
            {"input": "templates", "key": "w@1", "value": TEMPLATE},
            {"input": "users", "key": "u1", "value": USER},
            {"barrier": {"users": 1, "templates": 1}},
            request("n-1", "k-1"),
        ]
    )
    first.expected["outcomes"] = [outcome("n-1", "accepted", planned=1), sent("n-1")]
    worker = WorkerProcess(settings, tmp_path / "first.log").start()
    try:
        await worker.wait_ready()
        await replayer.feed(first)
        got = await replayer.collect(first)
        await replayer.barrier({"status": 1}, live=True)
    finally:
        worker.stop()
    assert canonical(got["outcomes"]) == canonical(first.expected["outcomes"])

    fresh = replace(settings, data_dir=str(tmp_path / "fresh-data"))
    second = Scenario(steps=[request("n-2", "k-1"), request("n-3", "k-3")])
    second.expected["outcomes"] = [
        *first.expected["outcomes"],
        outcome("n-2", "duplicate", duplicate_of="n-1"),
        outcome("n-3", "accepted", planned=1),
        sent("n-3"),
    ]
    worker = WorkerProcess(fresh, tmp_path / "second.log").start()
    try:
        await worker.wait_ready()
        async with aiohttp.ClientSession() as http, http.get(f"{worker.url}/status/n-1/") as resp:
            status = orjson.loads(await resp.read())
        await replayer.feed(second)
        got = await replayer.collect(second)
    finally:
        worker.stop()
    assert status["status"] == "sent"
    assert canonical(got["outcomes"]) == canonical(second.expected["outcomes"])
    assert [d["nid"] for d in sim.state.deliveries] == ["n-1", "n-3"]
